"""``microturn train``: the command line of the trainer.

::

    microturn train --config tiny-cpu --shards 'SHARDS/train/*.tar' --output RUN [section.key=value ...]
    microturn train plot RUN [--output curves.png]
    deepspeed --num_gpus 8 -m microturn.trainer --config small-gpu --shards ... --output RUN
    torchrun --nproc_per_node 2 -m microturn.trainer --config tiny-cpu --shards ... --output RUN train.ep_size=2

Overrides take the form ``train.lr=3e-4`` or ``model.layers=4``. An unknown or abbreviated flag,
a value that is not an override, an override that does not parse, or shards that do not exist
is a usage error (exit 2, naming it) before any work; a failure of the run (a checkpoint of
another model shape, shards that all fail to read) exits 1 with one line.
"""

from __future__ import annotations

import argparse
import os

from microturn.cli.logs import add_level_flag, setup_from_argv
from microturn.cli.usage import UsageExit, looks_like_subcommand, unknown

PROG = "microturn train"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Train the MoE interaction model on micro-turn "
                                "shards with DeepSpeed. Also: `microturn train plot RUN`.", allow_abbrev=False)
    p.add_argument("--config", required=True, help="named config (tiny-cpu, small-gpu) or a TOML path")
    p.add_argument("--shards", required=True, action="append", help="shard glob, brace pattern or URL; repeatable")
    p.add_argument("--output", required=True, help="run directory: metrics.jsonl, config.json, checkpoints/")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--allow-pipe", action="store_true",
                   help="let pipe:CMD shard URLs run CMD in a shell (off: such a URL is an error)")
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    add_level_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """``microturn train`` and ``microturn train plot``: a usage error (found before any work)
    raises :class:`UsageExit` (status 2 from the entry points); a failed run exits 1."""
    argv = setup_from_argv(PROG, argv)
    if argv and argv[0] == "plot":
        from microturn.trainer.plot import main as plot_main

        return plot_main(argv[1:])
    if argv and looks_like_subcommand(argv[0]):  # overrides hold a dot and `=`, flags a dash
        raise UsageExit(unknown(PROG, "subcommand", argv[0], ("plot",),
                                hint="; training takes flags and section.key=value overrides"))
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
        shards = [s for pattern in args.shards for s in glob_shards(pattern)]
        resolved = resolve_shards(shards, allow_pipe=args.allow_pipe)  # a pipe: URL without --allow-pipe: now
        missing = [s for s in resolved if (path := local_path(s)) is not None and not os.path.isfile(path)]
        if missing:  # a typo or a comma-joined list: before DeepSpeed starts, not after 100 failed reads
            raise ValueError(f"--shards: {len(missing)} of {len(resolved)} local shard(s) do not exist, e.g. "
                             f"{missing[0]!r}; give tar files, a folder of them, or a quoted glob (repeat "
                             "--shards for several)")
    except ValueError as exc:
        raise UsageExit(f"{PROG}: error: {exc}") from None
    try:
        from microturn.trainer.loop import train

        result = train(cfg, shards=shards, output=args.output, progress=args.progress, allow_pipe=args.allow_pipe)
    except ValueError as exc:
        raise SystemExit(f"{PROG}: error: {exc}") from None

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
