"""``microturn shard``: argument parsing, pipeline launch and the run summary.

::

    microturn shard --input OUT [--input OUT ...] --output SHARDS [options] [beam flags]

Flags the parser does not know must be Beam's ``PipelineOptions``; anything else is a usage
error (:func:`microturn.pipelines.cli_args.split_args`).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from microturn.pipelines.cli_args import config_values, split_args
from microturn.pipelines.outputs import (
    NothingWritten,
    OutputError,
    OutputInUse,
    finish,
    quiet_output_faults,
    stage_output,
)
from microturn.pipelines.shard.config import CLI_ONLY, ShardConfig, parse_bytes
from microturn.pipelines.shard.pipeline import Shard, has_table
from microturn.pipelines.tables import read_table

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="microturn shard",
        allow_abbrev=False,  # `--out` must not silently mean `--output`
        description="Cut conversation records into 200 ms micro-turn samples in WebDataset tars with Parquet "
                    "manifests. Other flags must be Beam pipeline options (e.g. --direct_num_workers=2).")
    p.add_argument("--input", action="append", metavar="OUT", help="an ingest or synthesize output; repeatable")
    p.add_argument("--output", required=True, metavar="SHARDS", help="shard output directory")
    p.add_argument("--config", metavar="TOML", help="named config; command-line flags override it")
    p.add_argument("--window-chunks", type=int, metavar="K", help="chunks of 200 ms per sample (default 150)")
    p.add_argument("--splits", metavar="SPEC", help="split ratios, e.g. train=0.98,valid=0.01,test=0.01")
    p.add_argument("--shard-bytes", metavar="SIZE", help="target tar size, e.g. 512MiB (default)")
    p.add_argument("--no-video", dest="video", action="store_const", const=False, help="leave video out")
    p.add_argument("--patch-budget", type=int, metavar="P", help="video patches per chunk (default 48)")
    return p


def parse_args(argv: list[str] | None) -> tuple[ShardConfig, list[str]]:
    """Split ``argv`` into the shard config and the remaining Beam pipeline flags.

    Unknown flags and stray values exit with status 2 (see :func:`split_args`); a missing
    ``--config`` file and bad values are ``ValueError``s.
    """
    args, beam_args = split_args(build_parser(), argv)
    values = config_values(ShardConfig, args, cli_only=CLI_ONLY, renamed={"input": "inputs"})
    if args.shard_bytes is not None:  # the flag's text ("512MiB"); a config file's is parsed by its setting
        values["shard_bytes"] = parse_bytes(args.shard_bytes)
    return ShardConfig(**values), beam_args


def summarize(output: str) -> dict:
    """Figures of a shard output, from its tables."""
    samples = read_table(output, "samples").to_pylist()
    shards = read_table(output, "shards").to_pylist()
    rejects = read_table(output, "rejects").to_pylist()
    per_split: dict[str, dict] = {}
    for s in shards:
        d = per_split.setdefault(s["split"], {"shards": 0, "samples": 0, "bytes": 0, "hours": 0.0})
        d["shards"] += 1
        d["samples"] += s["samples"]
        d["bytes"] += s["bytes"]
        d["hours"] += s["duration_ms"] / 3.6e6
    return {"splits": per_split, "conversations": len({s["conversation_id"] for s in samples}),
            "samples": len(samples), "rejects": dict(Counter((r["stage"], r["error_type"]) for r in rejects))}


_LEFT_OUT = ("short_windows_left_out", "unattributed_words_left_out", "duplicate_conversations")


def left_out(result) -> dict[str, int]:
    """What the run counted as left out (Beam counters of the ``shard`` namespace)."""
    from apache_beam.metrics.metric import MetricsFilter

    out: dict[str, int] = dict.fromkeys(_LEFT_OUT, 0)
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace("shard"))["counters"]
    except (AttributeError, NotImplementedError, KeyError):  # a runner without metrics
        return out
    for c in counters:
        if c.key.metric.name in out:
            out[c.key.metric.name] += int(c.committed if c.committed is not None else c.attempted)
    return out


def render(summary: dict, title: str) -> str:
    lines = [title, f"  conversations sharded: {summary['conversations']}, samples: {summary['samples']}"]
    for split, d in sorted(summary["splits"].items()):
        lines.append(f"  {split:<8} {d['shards']:>4} shard(s) {d['samples']:>6} samples "
                     f"{d['hours']:8.3f} h of sample time {d['bytes'] / 2**20:10.1f} MiB")
    gone = {k: v for k, v in summary.get("left_out", {}).items() if v}
    if gone:
        lines.append("  left out: " + ", ".join(f"{k.replace('_left_out', '').replace('_', ' ')}: {v}"
                                                for k, v in sorted(gone.items())))
    if summary["rejects"]:
        lines.append("  rejects: " + ", ".join(f"{stage}/{reason}: {n}" for (stage, reason), n
                                               in sorted(summary["rejects"].items())))
    else:
        lines.append("  rejects: none")
    return "\n".join(lines)


def run(argv: list[str] | None = None, *, print_summary: bool = True) -> dict:
    """Run the shard pipeline; returns its summary (also printed unless told otherwise)."""
    cfg, beam_args = parse_args(argv)
    for root in cfg.inputs:
        if not has_table(root, "conversations"):
            raise ValueError(f"--input {root}: no conversation records there (no conversations/*.parquet); "
                             "give the output directory of `microturn ingest` or `microturn synthesize`")
    options = PipelineOptions(beam_args, save_main_session=False)
    started = time.perf_counter()
    # Checked, locked and claimed before any work; published only when samples were made.
    with stage_output(cfg.output, "shard", inputs=cfg.inputs):
        p = beam.Pipeline(options=options)
        _ = p | "Shard" >> Shard(cfg)
        result = p.run()
        result.wait_until_finish()
        finish(cfg.output, "shard", made_table="samples", what="samples")
    wall_s = time.perf_counter() - started
    summary = summarize(cfg.output)
    summary["wall_s"] = wall_s
    summary["left_out"] = left_out(result)
    if print_summary:
        print(render(summary, f"shard: {cfg.output} ({wall_s:.1f} s wall)"))
    return summary


def main(argv: list[str] | None = None) -> int:
    import sys

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_output_faults()
    try:
        run(list(sys.argv[1:] if argv is None else argv))
    except (ValueError, OutputError, OutputInUse, NothingWritten) as exc:
        raise SystemExit(f"microturn shard: error: {exc}") from None
    return 0
