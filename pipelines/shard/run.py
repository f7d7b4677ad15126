"""``microturn shard``: argument parsing, pipeline launch and the run summary.

::

    microturn shard --input OUT [--input OUT ...] --output SHARDS [options] [beam flags]

Flags the parser does not know must be Beam's ``PipelineOptions``; anything else is a usage
error (:func:`microturn.pipelines.cli_args.split_args`). Beam and the shard stage are imported
only when a run starts, so ``--help`` answers at once. On the DirectRunner the run shows
conversations done out of conversations read (:mod:`microturn.pipelines.progress`).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from microturn.cli.logs import add_level_flag, setup_from_argv
from microturn.pipelines.cli_args import add_progress_flag, config_values, run_stage, split_args

if TYPE_CHECKING:
    from microturn.pipelines.shard.config import ShardConfig

log = logging.getLogger(__name__)

PROG = "microturn shard"
# Where a conversation is finished: its samples, made together and then output (the first one
# marks it), or its reject (a duplicate, missing media, a bad record).
PROGRESS_SOURCES = (("Shard/MakeSamples", None, ("row", "conversation_id")), ("Shard/FlattenRejects", None, ("input",)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
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
    add_progress_flag(p)
    add_level_flag(p)
    return p


def _parse(argv: list[str] | None) -> tuple[ShardConfig, list[str], str]:
    args, beam_args = split_args(build_parser(), argv)  # first: --help answers before Beam is imported
    from microturn.pipelines.shard.config import CLI_ONLY, ShardConfig, parse_bytes

    progress = vars(args).pop("progress")  # the display's, not the config's
    values = config_values(ShardConfig, args, cli_only=CLI_ONLY, renamed={"input": "inputs"})
    if args.shard_bytes is not None:  # the flag's text ("512MiB"); a config file's is parsed by its setting
        values["shard_bytes"] = parse_bytes(args.shard_bytes)
    return ShardConfig(**values), beam_args, progress


def parse_args(argv: list[str] | None) -> tuple[ShardConfig, list[str]]:
    """Split ``argv`` into the shard config and the remaining Beam pipeline flags.

    Unknown flags and stray values exit with status 2 (see :func:`split_args`); a missing
    ``--config`` file and bad values are ``ValueError``s.
    """
    cfg, beam_args, _ = _parse(argv)
    return cfg, beam_args


def summarize(output: str) -> dict:
    """Figures of a shard output, from its tables."""
    from microturn.pipelines.tables import read_table

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


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A run checked before any work: its config, Beam flags, conversations and display."""

    cfg: ShardConfig
    beam_args: list[str]
    conversations: int | None  # rows of the inputs' conversations tables; None when unknown
    progress: str


def _count_conversations(inputs: tuple[str, ...]) -> int | None:
    from microturn.pipelines.tables import read_table

    try:
        return sum(read_table(root, "conversations").num_rows for root in inputs)
    except Exception:  # noqa: BLE001 - the pipeline's own read reports the fault
        return None


def prepare(argv: list[str] | None) -> Plan:
    """Parse and check everything a run needs before it starts; ``ValueError`` (a usage error)
    for bad settings, inputs without records and an output the stage must not write."""
    cfg, beam_args, progress = _parse(argv)
    from apache_beam.options.pipeline_options import PipelineOptions

    from microturn.pipelines.outputs import check_output
    from microturn.pipelines.progress import mode_for
    from microturn.pipelines.shard.pipeline import has_table

    for root in cfg.inputs:
        if not has_table(root, "conversations"):
            raise ValueError(f"--input {root}: no conversation records there (no conversations/*.parquet); "
                             "give the output directory of `microturn ingest` or `microturn synthesize`")
    check_output(cfg.output, "shard", inputs=cfg.inputs)
    mode = mode_for(progress, PipelineOptions(beam_args))
    conversations = _count_conversations(cfg.inputs) if mode != "off" else None
    return Plan(cfg=cfg, beam_args=beam_args, conversations=conversations, progress=mode)


def execute(plan: Plan, *, print_summary: bool = True) -> dict:
    """Run a prepared shard; returns its summary (also printed unless told otherwise)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from microturn.pipelines import worker_stderr
    from microturn.pipelines.cli_args import direct_worker_args
    from microturn.pipelines.outputs import finish, stage_output
    from microturn.pipelines.progress import StageProgress
    from microturn.pipelines.shard.pipeline import Shard

    cfg = plan.cfg
    options = PipelineOptions(direct_worker_args(plan.beam_args), save_main_session=False)
    started = time.perf_counter()
    # Checked, locked and claimed before any work; published only when samples were made.
    with stage_output(cfg.output, "shard", inputs=cfg.inputs):
        with worker_stderr.for_run(options), StageProgress("shard", plan.conversations,
                                                           mode=plan.progress) as progress:
            p = beam.Pipeline(options=options)
            _ = p | "Shard" >> Shard(cfg)
            progress.attach(p, PROGRESS_SOURCES)
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


def run(argv: list[str] | None = None, *, print_summary: bool = True) -> dict:
    """Run the shard pipeline; returns its summary (also printed unless told otherwise)."""
    return execute(prepare(argv), print_summary=print_summary)


def main(argv: list[str] | None = None) -> int:
    """``microturn shard``: a usage error (found before any work) raises :class:`UsageExit`
    (status 2 from the entry points); a failed run exits 1 with one line."""
    argv = setup_from_argv(PROG, argv)
    return run_stage(PROG, argv, prepare, execute)
