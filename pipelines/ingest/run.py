"""``microturn ingest``: argument parsing, pipeline launch, progress and the closing summary.

App flags are parsed here; the other flags must be Beam's ``PipelineOptions`` (``--runner``,
``--direct_num_workers``, ``--temp_location``, ...): anything else is a usage error
(:func:`microturn.pipelines.cli_args.split_args`). Beam and the backends are imported only when
a run starts, so ``--help`` answers at once. On the DirectRunner the run shows files done out of
files matched (:mod:`microturn.pipelines.progress`).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from microturn.cli.logs import add_level_flag, setup_from_argv
from microturn.pipelines.cli_args import (
    add_progress_flag,
    config_values,
    finite_float,
    require_file,
    run_stage,
    split_args,
)

if TYPE_CHECKING:
    from microturn.pipelines.ingest.config import IngestConfig
    from microturn.pipelines.ingest.summary import IngestSummary

log = logging.getLogger(__name__)

PROG = "microturn ingest"
# Where an input is finished: its conversation row (keyed by its file) or its reject.
PROGRESS_SOURCES = (("Ingest/CheckConversations", None, ("source_uri",)), ("Ingest/FlattenRejects", None, ("input",)))


def build_parser() -> argparse.ArgumentParser:
    # Light imports only: `microturn ingest --help` must not load Beam or the backends.
    from microturn.pipelines.ingest.names import DIARIZERS, LAYOUTS, TRANSCRIBERS

    p = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,  # `--out` must not silently mean `--output`
        description="Diarize and word-time conversational media into microturn record tables. "
                    "Other flags must be Beam pipeline options (e.g. --runner, "
                    "--direct_running_mode=multi_processing, --direct_num_workers=2).",
    )
    p.add_argument("--input", dest="inputs", action="append", required=True, metavar="GLOB",
                   help="file pattern of media (local or any Beam filesystem URL); repeatable")
    p.add_argument("--output", required=True, metavar="OUT", help="output directory")
    p.add_argument("--config", metavar="TOML", help="named config; command-line flags override it")
    p.add_argument("--diarizer", choices=DIARIZERS)
    p.add_argument("--transcriber", choices=TRANSCRIBERS)
    p.add_argument("--num-speakers", type=int)
    p.add_argument("--min-speakers", type=int)
    p.add_argument("--max-speakers", type=int)
    p.add_argument("--model-dir", help="local weights for the pyannote / whisperx backends")
    p.add_argument("--license-manifest", metavar="CSV", help="CSV of uri,license,origin")
    p.add_argument("--max-duration-s", type=finite_float, help="reject inputs longer than this")
    p.add_argument("--channel-layout", choices=LAYOUTS)
    p.add_argument("--language")
    add_progress_flag(p)
    add_level_flag(p)
    return p


def _parse(argv: list[str] | None) -> tuple[IngestConfig, list[str], str]:
    args, beam_args = split_args(build_parser(), argv)  # first: --help answers before Beam is imported
    from microturn.pipelines.ingest.config import CLI_ONLY, IngestConfig

    progress = vars(args).pop("progress")  # the display's, not the config's
    cfg = IngestConfig(**config_values(IngestConfig, args, cli_only=CLI_ONLY))
    if cfg.license_manifest:
        require_file("--license-manifest", cfg.license_manifest)
    return cfg, beam_args, progress


def parse_args(argv: list[str] | None) -> tuple[IngestConfig, list[str]]:
    """Split ``argv`` into the ingest config and the remaining Beam pipeline flags.

    Unknown flags and stray values exit with status 2 (see :func:`split_args`); a missing
    ``--config`` or ``--license-manifest`` file and bad values are ``ValueError``s.
    """
    cfg, beam_args, _ = _parse(argv)
    return cfg, beam_args


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A run checked before any work: its config, Beam flags, licenses, inputs and display."""

    cfg: IngestConfig
    beam_args: list[str]
    licenses: dict[str, tuple[str, str]]
    inputs: int | None  # media files matched (and unreadable entries); None when unknown
    progress: str


def _count_inputs(cfg: IngestConfig) -> int | None:
    """The inputs as the pipeline's match step sees them (:class:`~.dofns.MatchPattern`): distinct
    media files, sidecars left out, plus the entries it rejects (unreadable ones, a pattern that
    matches no media file): what the progress counts against. ``None`` when a pattern cannot be
    matched here (the pipeline then rejects it)."""
    import os

    from microturn.pipelines.ingest import inputs
    from microturn.pipelines.ingest.dofns import SIDECAR_EXTS
    from microturn.pipelines.outputs import excluded

    keys: set[str] = set()
    for pattern in sorted(set(cfg.inputs)):
        try:
            found = inputs.match(pattern)
        except Exception:  # noqa: BLE001 - the pipeline's match step reports it as a reject
            return None
        def wanted(path: str) -> bool:
            return not os.path.basename(path).startswith(".") and not excluded(path, cfg.output)

        media = [f for f in found if isinstance(f, str) and wanted(f) and not f.lower().endswith(SIDECAR_EXTS)]
        unreadable = [f.path for f in found if isinstance(f, inputs.Skipped) and wanted(f.path)]
        keys.update(media + unreadable or [pattern])
    return len(keys)


def prepare(argv: list[str] | None) -> Plan:
    """Parse and check everything a run needs before it starts: ``ValueError`` (a usage error)
    for bad settings, inputs that match nothing and an output the stage must not write."""
    cfg, beam_args, progress = _parse(argv)
    from apache_beam.options.pipeline_options import PipelineOptions

    from microturn.pipelines.ingest.pipeline import read_license_manifest
    from microturn.pipelines.outputs import check_output, count_matches
    from microturn.pipelines.progress import mode_for

    licenses = read_license_manifest(cfg.license_manifest) if cfg.license_manifest else {}
    matched = count_matches(cfg.inputs, cfg.output)
    if matched == 0:
        raise ValueError(f"--input {' '.join(cfg.inputs)}: matches no file; nothing to ingest")
    check_output(cfg.output, "ingest", inputs=[i for i in (cfg.license_manifest,) if i], globs=cfg.inputs)
    mode = mode_for(progress, PipelineOptions(beam_args))
    return Plan(cfg=cfg, beam_args=beam_args, licenses=licenses, progress=mode,
                inputs=_count_inputs(cfg) if mode != "off" else None)


def execute(plan: Plan, *, print_summary: bool = True) -> IngestSummary:
    """Run a prepared ingest; returns its summary (also printed unless told otherwise)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from microturn.pipelines import worker_stderr
    from microturn.pipelines.cli_args import direct_worker_args
    from microturn.pipelines.ingest.pipeline import Ingest
    from microturn.pipelines.ingest.summary import summarise
    from microturn.pipelines.outputs import finish, stage_output
    from microturn.pipelines.progress import StageProgress

    cfg = plan.cfg
    options = PipelineOptions(direct_worker_args(plan.beam_args), save_main_session=False)
    started = time.perf_counter()
    # Checked, locked and claimed before any work; published only when a conversation was made.
    with stage_output(cfg.output, "ingest", inputs=[i for i in (cfg.license_manifest,) if i], globs=cfg.inputs):
        with worker_stderr.for_run(options), StageProgress("ingest", plan.inputs, mode=plan.progress) as progress:
            with beam.Pipeline(options=options) as p:
                _ = p | "Ingest" >> Ingest(cfg, plan.licenses)
                progress.attach(p, PROGRESS_SOURCES)
        finish(cfg.output, "ingest", made_table="conversations", what="conversations")
    result = p.result if hasattr(p, "result") else None
    summary = summarise(cfg.output, wall_s=time.perf_counter() - started, result=result)
    if print_summary:
        print(summary.render())
    return summary


def run(argv: list[str] | None = None, *, print_summary: bool = True) -> IngestSummary:
    """Run the ingest pipeline and return its summary (also printed unless told otherwise)."""
    return execute(prepare(argv), print_summary=print_summary)


def main(argv: list[str] | None = None) -> int:
    """``microturn ingest``: a usage error (found before any work) raises :class:`UsageExit`
    (status 2 from the entry points); a failed run exits 1 with one line."""
    argv = setup_from_argv(PROG, argv)
    return run_stage(PROG, argv, prepare, execute)
