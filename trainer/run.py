"""``microturn train``: the command line of the trainer.

::

    microturn train --config tiny-cpu --shards 'SHARDS/train/*.tar' --output RUN [section.key=value ...]
    microturn train plot RUN [--output curves.png]
    deepspeed --num_gpus 8 -m microturn.trainer --config small-gpu --shards ... --output RUN
    torchrun --nproc_per_node 2 -m microturn.trainer --config tiny-cpu --shards ... --output RUN train.ep_size=2

Overrides take the form ``train.lr=3e-4`` or ``model.layers=4``. An unknown or abbreviated flag,
a value that is not an override, or an override that does not parse is a usage error (exit 2,
naming it) before any work; other bad settings and unreadable inputs exit 1 with one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="microturn train", description="Train the MoE interaction model on micro-turn "
                                "shards with DeepSpeed. Also: `microturn train plot RUN`.", allow_abbrev=False)
    p.add_argument("--config", required=True, help="named config (tiny-cpu, small-gpu) or a TOML path")
    p.add_argument("--shards", required=True, action="append", help="shard glob, brace pattern or URL; repeatable")
    p.add_argument("--output", required=True, help="run directory: metrics.jsonl, config.json, checkpoints/")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--allow-pipe", action="store_true",
                   help="let pipe:CMD shard URLs run CMD in a shell (off: such a URL is an error)")
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "plot":
        from microturn.trainer.plot import main as plot_main

        return plot_main(argv[1:])
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # unknown flags: exit 2 naming them
    stray = [o for o in args.overrides if "=" not in o or o.startswith("-")]
    if stray:
        parser.error(f"{stray[0]!r} is not a section.key=value override; if it is a shard, the shell expanded a "
                     "--shards glob: quote it ('SHARDS/train/*.tar') or repeat --shards per file")
    from microturn.trainer.data import glob_shards, resolve_shards
    from microturn.trainer.shard_reader import local_path
    from microturn.trainer.train_config import load_named

    try:
        cfg = load_named(args.config, args.overrides)
    except ValueError as exc:
        parser.error(str(exc))  # a misspelt key or a value that does not parse: a usage error
    try:
        from microturn.trainer.loop import train

        shards = [s for pattern in args.shards for s in glob_shards(pattern)]
        resolved = resolve_shards(shards, allow_pipe=args.allow_pipe)  # a pipe: URL without --allow-pipe: now
        missing = [s for s in resolved if (path := local_path(s)) is not None and not os.path.isfile(path)]
        if missing:  # a typo or a comma-joined list: before DeepSpeed starts, not after 100 failed reads
            raise ValueError(f"--shards: {len(missing)} of {len(resolved)} local shard(s) do not exist, e.g. "
                             f"{missing[0]!r}; give tar files, a folder of them, or a quoted glob (repeat "
                             "--shards for several)")
        result = train(cfg, shards=shards, output=args.output, progress=args.progress, allow_pipe=args.allow_pipe)
    except ValueError as exc:
        raise SystemExit(f"microturn train: error: {exc}") from None

    if result.records and int(os.environ.get("RANK", "0")) == 0:
        last = result.records[-1]
        lost = {k.split("/", 1)[1]: v for k, v in last.items()
                if k in ("loader/skipped", "loader/shard_errors", "loader/bad_members", "loader/dropped_chunks") and v}
        print(f"train: {result.step - result.start} step(s) to step {result.step}, loss {last['loss']:.4f} at step "
              f"{last['step']}; "
              f"metrics in {args.output}/metrics.jsonl; {last.get('loader/samples', 0)} sample(s) read"
              + (f", lost: {lost}" if lost else ", none skipped"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: this process ends here
        from microturn.trainer.engine import shutdown_distributed

        shutdown_distributed()
    return 0
