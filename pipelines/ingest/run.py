"""``microturn ingest``: argument parsing, pipeline launch and the closing summary.

App flags are parsed here; the other flags must be Beam's ``PipelineOptions`` (``--runner``,
``--direct_num_workers``, ``--temp_location``, ...): anything else is a usage error
(:func:`microturn.pipelines.cli_args.split_args`).
"""

from __future__ import annotations

import argparse
import logging
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from microturn.pipelines.cli_args import config_values, finite_float, require_file, split_args
from microturn.pipelines.ingest.channels import LAYOUTS
from microturn.pipelines.ingest.config import CLI_ONLY, DIARIZERS, TRANSCRIBERS, IngestConfig
from microturn.pipelines.ingest.pipeline import Ingest, read_license_manifest
from microturn.pipelines.ingest.summary import IngestSummary, summarise
from microturn.pipelines.outputs import (
    NothingWritten,
    OutputError,
    OutputInUse,
    count_matches,
    finish,
    quiet_output_faults,
    stage_output,
)

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="microturn ingest",
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
    return p


def parse_args(argv: list[str] | None) -> tuple[IngestConfig, list[str]]:
    """Split ``argv`` into the ingest config and the remaining Beam pipeline flags.

    Unknown flags and stray values exit with status 2 (see :func:`split_args`); a missing
    ``--config`` or ``--license-manifest`` file and bad values are ``ValueError``s.
    """
    args, beam_args = split_args(build_parser(), argv)
    cfg = IngestConfig(**config_values(IngestConfig, args, cli_only=CLI_ONLY))
    if cfg.license_manifest:
        require_file("--license-manifest", cfg.license_manifest)
    return cfg, beam_args


def run(argv: list[str] | None = None, *, print_summary: bool = True) -> IngestSummary:
    """Run the ingest pipeline and return its summary (also printed unless told otherwise)."""
    cfg, beam_args = parse_args(argv)
    licenses = read_license_manifest(cfg.license_manifest) if cfg.license_manifest else {}
    options = PipelineOptions(beam_args, save_main_session=False)
    started = time.perf_counter()
    if count_matches(cfg.inputs, cfg.output) == 0:
        raise ValueError(f"--input {' '.join(cfg.inputs)}: matches no file; nothing to ingest")
    # Checked, locked and claimed before any work; published only when a conversation was made.
    with stage_output(cfg.output, "ingest", inputs=[i for i in (cfg.license_manifest,) if i], globs=cfg.inputs):
        with beam.Pipeline(options=options) as p:
            _ = p | "Ingest" >> Ingest(cfg, licenses)
        finish(cfg.output, "ingest", made_table="conversations", what="conversations")
    result = p.result if hasattr(p, "result") else None
    summary = summarise(cfg.output, wall_s=time.perf_counter() - started, result=result)
    if print_summary:
        print(summary.render())
    return summary


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_output_faults()
    try:
        run(argv)
    except (ValueError, OutputError, OutputInUse, NothingWritten) as exc:
        raise SystemExit(f"microturn ingest: error: {exc}") from None
    return 0
