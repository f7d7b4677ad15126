"""``microturn eval items``: Full-Duplex-Bench-style evaluation items from conversation records.

``microturn eval items --records OUT [OUT ...] --output ITEMS [--split test] [--splits NAME=RATIO,...] [--tasks ...]
[--context-s S] [--max-per-conversation N] [--seed S]``: for every conversation of the split,
items of smooth turn-taking, pause handling, user interruption and backchannel (rules in
:mod:`microturn.pipelines.duplex.items_select`) and of the behaviours visual_cue, repetition,
background_result and simultaneous (:mod:`microturn.pipelines.duplex.items_behaviours`), each
with the user stream (``input.wav``), the true second speaker's stream (``reference.wav``), its
words, the event annotation and ``item.json``; visual items also the video (``input.mp4``).
Without ``--tasks``, every task present in the records.
"""

from __future__ import annotations

import argparse
import math

# The task names only (no imports behind them): the item maker is imported when the command runs.
from microturn.pipelines.duplex.tasks import TASKS as TASK_NAMES


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def add_items_parser(sub) -> None:
    """Add the ``items`` subcommand to ``microturn eval``'s subparsers."""
    p = sub.add_parser("items", help="evaluation items (Full-Duplex-Bench layout) from conversation records",
                       allow_abbrev=False)
    p.add_argument("--records", required=True, nargs="+", metavar="OUT",
                   help="output folders of `microturn ingest` / `microturn synthesize`")
    p.add_argument("--output", required=True, metavar="ITEMS", help="the items folder (new, empty, or an earlier "
                                                                     "output of this command)")
    p.add_argument("--split", default="test", help="only conversations of this split give items (default test)")
    p.add_argument("--splits", metavar="NAME=RATIO,...",
                   help="the shard stage's --splits, if the shards were cut with other ratios: the split of a "
                        "conversation is then computed as the shard stage does (default: the records' split column)")
    p.add_argument("--tasks", nargs="+", choices=TASK_NAMES, metavar="TASK",
                   help=f"tasks to make items for, of {', '.join(TASK_NAMES)} (default: every task present "
                        "in the records: the first four always, a behaviour task when some conversation holds "
                        "its events)")
    p.add_argument("--context-s", type=_seconds, default=8.0,
                   help="at most this many seconds of conversation before an event (default 8)")
    p.add_argument("--max-per-conversation", type=_positive, metavar="N",
                   help="at most N items per conversation and task, drawn with --seed (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-per-conversation draw (default 0)")


def run_items(args: argparse.Namespace) -> int:
    """Make the items; prints conversations per split and items per task."""
    from microturn.pipelines.duplex.items import ItemsConfig, build_items

    config = ItemsConfig(records=tuple(args.records), output=args.output, split=args.split,
                         splits=args.splits,
                         tasks=tuple(t for t in TASK_NAMES if t in set(args.tasks)) if args.tasks else None,
                         context_s=args.context_s,
                         max_per_conversation=args.max_per_conversation, seed=args.seed)
    summary = build_items(config)
    splits = ", ".join(f"{k}: {v}" for k, v in summary.conversations_per_split.items()) or "none"
    print(f"conversations per split: {splits}")
    print(f"items from {summary.conversations_used} conversation(s) of split {args.split!r} in {summary.output}:")
    for task, n in summary.items_per_task.items():
        print(f"  {task:<20} {n:>6}")
    return 0
