"""``microturn train``: the command line of the trainer.

::

    microturn train --config tiny-cpu --shards 'SHARDS/train/*.tar' --output RUN [section.key=value ...]
    microturn train plot RUN [--output curves.png]
    deepspeed --num_gpus 8 -m microturn.trainer --config small-gpu --shards ... --output RUN
    torchrun --nproc_per_node 2 -m microturn.trainer --config tiny-cpu --shards ... --output RUN train.ep_size=2

Overrides take the form ``train.lr=3e-4`` or ``model.layers=4``.
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="microturn train", description="Train the MoE interaction model on micro-turn "
                                "shards with DeepSpeed. Also: `microturn train plot RUN`.")
    p.add_argument("--config", required=True, help="named config (tiny-cpu, small-gpu) or a TOML path")
    p.add_argument("--shards", required=True, action="append", help="shard glob, brace pattern or URL; repeatable")
    p.add_argument("--output", required=True, help="run directory: metrics.jsonl, config.json, checkpoints/")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "plot":
            from microturn.trainer.plot import main as plot_main

            return plot_main(argv[1:])
        args = build_parser().parse_intermixed_args(argv)
        stray = [o for o in args.overrides if "=" not in o]
        if stray:
            raise ValueError(f"{stray[0]!r} is not a section.key=value override; if it is a shard, the shell expanded "
                             "a --shards glob: quote it ('SHARDS/train/*.tar') or repeat --shards per file")
        from microturn.trainer.data import glob_shards
        from microturn.trainer.loop import train
        from microturn.trainer.train_config import load_named

        cfg = load_named(args.config, args.overrides)
        shards = [s for pattern in args.shards for s in glob_shards(pattern)]
        if not shards:
            raise ValueError(f"--shards {args.shards}: no shard matches")
        records = train(cfg, shards=shards, output=args.output, progress=args.progress)
    except ValueError as exc:
        raise SystemExit(f"microturn train: error: {exc}") from None
    import os

    if records and int(os.environ.get("RANK", "0")) == 0:
        last = records[-1]
        print(f"train: {len(records)} step(s) to step {last['step']}, loss {last['loss']:.4f}; "
              f"metrics in {args.output}/metrics.jsonl")
    return 0
