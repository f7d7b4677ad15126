"""``microturn synthesize``: argument parsing, pipeline launch, and the ``stats`` / ``fit`` tools.

::

    microturn synthesize --scripts JSONL... | --generate N [--kinds K1,K2] | --remix OUT_OF_INGEST --output OUT
        [beam flags]
    microturn synthesize stats OUT [--against OUT_OF_INGEST] [--plot PNG]
    microturn synthesize fit OUT_OF_INGEST --output TIMING.json

Flags the pipeline parser does not know must be Beam's ``PipelineOptions``; anything else is a
usage error (:func:`microturn.pipelines.cli_args.split_args`). Beam, the synthesizer and the
statistics are imported only when a run starts, so ``--help`` answers at once. On the
DirectRunner the run shows dialogues done out of dialogues given (:mod:`microturn.pipelines.progress`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from microturn.cli.logs import add_level_flag, setup_from_argv
from microturn.cli.usage import UsageExit, looks_like_subcommand, unknown
from microturn.pipelines.cli_args import (
    add_progress_flag,
    config_values,
    finite_float,
    refuse_folder,
    require_file,
    require_records,
    run_stage,
    split_args,
)

if TYPE_CHECKING:
    from microturn.pipelines.synthesize.config import SynthesizeConfig
    from microturn.synth.timing import TimingModel

log = logging.getLogger(__name__)

PROG = "microturn synthesize"
SUBCOMMANDS = ("stats", "fit")
# Where a dialogue (a script line, a generated one, a remixed conversation) is finished: its
# conversation row or its reject, keyed as both name it (``scripts.jsonl:3``, ``generated:0``).
PROGRESS_SOURCES = (("Synthesize/CheckConversations", None, ("source_uri",)),
                    ("Synthesize/FlattenRejects", None, ("input",)))


def _kinds(text: str) -> tuple[str, ...]:
    # Split only: the config checks the names (the same check for a TOML file's `kinds`), and an
    # unknown one is a one-line error naming the valid kinds before any work.
    return tuple(part.strip() for part in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    # Light imports only: `microturn synthesize --help` must not load Beam, scipy or the synthesizer.
    from microturn.synth.names import DEGRADE, KINDS

    p = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,  # `--out` must not silently mean `--output`
        description="Synthesize two-stream dialogues with exact timing into microturn record tables. "
                    "Also: `microturn synthesize stats OUT` and `microturn synthesize fit OUT`. "
                    "Other flags must be Beam pipeline options (e.g. --runner, --direct_num_workers=2).",
    )
    p.add_argument("--scripts", action="append", metavar="JSONL", help="dialogue scripts (glob or URL); repeatable")
    p.add_argument("--generate", type=int, metavar="N", help="also synthesize N dialogues from the bundled templates")
    p.add_argument("--interruption-share", type=finite_float, metavar="P",
                   help="share of generated conversations with one extra interruption (default 0.3)")
    p.add_argument("--kinds", type=_kinds, metavar="K1,K2",
                   help=f"comma-separated kinds of dialogue --generate makes (default: all of {','.join(KINDS)})")
    p.add_argument("--remix", metavar="OUT_OF_INGEST", help="re-time the real turns of an ingest output")
    p.add_argument("--output", required=True, metavar="OUT", help="output directory")
    p.add_argument("--config", metavar="TOML", help="named config; command-line flags override it")
    p.add_argument("--seed", type=int)
    p.add_argument("--timing", metavar="JSON", help="timing model (from `microturn synthesize fit`)")
    p.add_argument("--fit-from", metavar="OUT_OF_INGEST", help="fit the timing model on an ingest output first")
    p.add_argument("--noise-snr-db", type=finite_float, help="pink noise on the user stream at this SNR")
    p.add_argument("--reverb-rt60-s", type=finite_float, help="synthetic room with this RT60 on the user stream")
    p.add_argument("--degrade", choices=DEGRADE, help="which streams get noise/reverb (default: user)")
    p.add_argument("--license", help="license of scripts that name none (default Apache-2.0)")
    add_progress_flag(p)
    add_level_flag(p)
    return p


def _parse(argv: list[str] | None) -> tuple[SynthesizeConfig, list[str], str]:
    args, beam_args = split_args(build_parser(), argv)  # first: --help answers before Beam is imported
    from microturn.pipelines.synthesize.config import CLI_ONLY, SynthesizeConfig

    progress = vars(args).pop("progress")  # the display's, not the config's
    cfg = SynthesizeConfig(**config_values(SynthesizeConfig, args, cli_only=CLI_ONLY))
    if cfg.timing:
        require_file("--timing", cfg.timing)
    return cfg, beam_args, progress


def parse_args(argv: list[str] | None) -> tuple[SynthesizeConfig, list[str]]:
    """Split ``argv`` into the synthesize config and the remaining Beam pipeline flags.

    Unknown flags and stray values exit with status 2 (see :func:`split_args`); a missing
    ``--config`` or ``--timing`` file and bad values are ``ValueError``s.
    """
    cfg, beam_args, _ = _parse(argv)
    return cfg, beam_args


def _label(kind: str, timing: TimingModel) -> str:
    # The label goes into the conversation ids and rows, so it names the model by its content:
    # the same timing file at another path (another checkout, a per-run folder of a DAG) must
    # give the same conversations, ids and splits.
    digest = hashlib.sha256(json.dumps(timing.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return f"{kind}:sha256={digest}"


def load_timing(cfg: SynthesizeConfig) -> tuple[TimingModel, str]:
    """The timing model of a run and a label of where it came from (for provenance): ``file:`` or
    ``fit:`` and a hash of the model, never a path; ``default`` for the bundled model."""
    from apache_beam.io.filesystems import FileSystems

    from microturn.pipelines.tables import read_table
    from microturn.synth.timing import DEFAULT_TIMING, TimingModel
    from microturn.synth.timing_fit import fit

    if cfg.timing:
        try:
            with FileSystems.open(cfg.timing) as f:
                data = json.loads(f.read().decode("utf-8"))
            timing = TimingModel.from_dict(data)
            return timing, _label("file", timing)
        except OSError as exc:
            raise ValueError(f"--timing {cfg.timing}: cannot read it: {exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"--timing {cfg.timing}: not a timing model as `microturn synthesize fit` "
                             f"writes it: {exc}") from None
    if cfg.fit_from:
        timing = fit(read_table(cfg.fit_from, "segments"), read_table(cfg.fit_from, "words"))
        return timing, _label("fit", timing)
    return DEFAULT_TIMING, "default"


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A run checked before any work: config, Beam flags, timing model, generated scripts, display."""

    cfg: SynthesizeConfig
    beam_args: list[str]
    timing: TimingModel
    timing_source: str
    generated: list[str]
    dialogues: int | None  # script lines, generated dialogues and remixed conversations; None if unknown
    progress: str


def _count_dialogues(cfg: SynthesizeConfig, generated: int) -> int | None:
    """Non-blank script lines, plus generated dialogues, plus conversations of the remix source:
    what the progress counts against. ``None`` when a script cannot be read here (the run then
    rejects it)."""
    from apache_beam.io.filesystems import FileSystems

    from microturn.pipelines.outputs import excluded
    from microturn.pipelines.tables import read_table

    total = generated
    try:
        for pattern in cfg.scripts:
            for meta in FileSystems.match([pattern])[0].metadata_list:
                if excluded(meta.path, cfg.output):
                    continue
                with FileSystems.open(meta.path) as f:
                    total += sum(1 for raw in f if raw.strip())
        if cfg.remix:
            total += read_table(cfg.remix, "conversations").num_rows
    except Exception:  # noqa: BLE001 - the pipeline's own steps report the fault as a reject
        return None
    return total


def prepare(argv: list[str] | None) -> Plan:
    """Parse and check everything a run needs before it starts; ``ValueError`` (a usage error)
    for bad settings, sources that hold nothing and an output the stage must not write."""
    cfg, beam_args, progress = _parse(argv)
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from microturn.pipelines.outputs import check_output, count_matches
    from microturn.pipelines.progress import mode_for

    for flag, source_dir in (("--remix", cfg.remix), ("--fit-from", cfg.fit_from)):
        if source_dir:
            pattern = FileSystems.join(source_dir, "conversations", "*.parquet")
            if not FileSystems.match([pattern])[0].metadata_list:
                raise ValueError(f"{flag} {source_dir}: no conversation records there ({pattern} matches "
                                 "nothing); give the output directory of `microturn ingest`")
    if cfg.scripts and not cfg.generate and not cfg.remix and count_matches(cfg.scripts, cfg.output) == 0:
        raise ValueError(f"--scripts {' '.join(cfg.scripts)}: matches no file; nothing to synthesize")
    check_output(cfg.output, "synthesize", inputs=[i for i in (cfg.remix, cfg.fit_from) if i], globs=cfg.scripts or ())
    timing, source = load_timing(cfg)
    generated = []
    if cfg.generate:
        from microturn.synth.templates import generate

        generated = [d.to_json() for d in generate(cfg.generate, seed=cfg.seed,
                                                   interruption_share=cfg.interruption_share,
                                                   kinds=cfg.kinds or None)]
    mode = mode_for(progress, PipelineOptions(beam_args))
    dialogues = _count_dialogues(cfg, len(generated)) if mode != "off" else None
    return Plan(cfg=cfg, beam_args=beam_args, timing=timing, timing_source=source, generated=generated,
                dialogues=dialogues, progress=mode)


def execute(plan: Plan, *, print_summary: bool = True):
    """Run a prepared synthesize; returns the run's statistics (also printed unless told otherwise)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from microturn.pipelines import worker_stderr
    from microturn.pipelines.cli_args import direct_worker_args
    from microturn.pipelines.outputs import finish, stage_output
    from microturn.pipelines.progress import StageProgress
    from microturn.pipelines.synthesize.pipeline import Synthesize
    from microturn.pipelines.synthesize.stats import collect, render

    cfg = plan.cfg
    options = PipelineOptions(direct_worker_args(plan.beam_args), save_main_session=False)
    started = time.perf_counter()
    # Checked, locked and claimed before any work; published only when a conversation was made.
    with stage_output(cfg.output, "synthesize", inputs=[i for i in (cfg.remix, cfg.fit_from) if i],
                      globs=cfg.scripts or ()):
        with worker_stderr.for_run(options), StageProgress("synthesize", plan.dialogues,
                                                           mode=plan.progress) as progress:
            with beam.Pipeline(options=options) as p:
                _ = p | "Synthesize" >> Synthesize(cfg, plan.timing, plan.timing_source, plan.generated)
                progress.attach(p, PROGRESS_SOURCES)
        finish(cfg.output, "synthesize", made_table="conversations", what="conversations")
    wall_s = time.perf_counter() - started
    stats = collect(cfg.output)
    if print_summary:
        print(render(stats, title=f"synthesize: {cfg.output} ({wall_s:.1f} s wall)"))
    return stats


def run(argv: list[str] | None = None, *, print_summary: bool = True):
    """Run the synthesize pipeline; returns the run's statistics (also printed unless told otherwise)."""
    return execute(prepare(argv), print_summary=print_summary)


def _stats_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} stats", allow_abbrev=False,
                                description="Turn-taking statistics of an output, optionally against real data.")
    p.add_argument("output", metavar="OUT", help="a synthesize (or ingest) output directory")
    p.add_argument("--against", metavar="OUT_OF_INGEST", help="compare with the records of another output")
    p.add_argument("--plot", metavar="PNG", help="histogram file (default OUT/turn_taking.png)")
    add_level_flag(p)
    args = p.parse_args(argv)
    # Checked before reading anything: a missing OUT used to give empty statistics, exit 0, and
    # a new folder holding only the histogram.
    try:
        require_records("OUT", args.output, "conversations")
        if args.against:
            require_records("--against", args.against, "conversations")
        if args.plot:
            refuse_folder("--plot", args.plot)
    except ValueError as exc:
        raise UsageExit(f"{PROG} stats: error: {exc}") from None
    from apache_beam.io.filesystems import FileSystems

    from microturn.pipelines.synthesize.stats import collect, plot, render

    ours = collect(args.output)
    print(render(ours, title=args.output))
    other = None
    if args.against:
        other = collect(args.against)
        print()
        print(render(other, title=args.against))
    png = args.plot or FileSystems.join(args.output, "turn_taking.png")
    plot(ours, other, png, labels=(args.output, args.against))
    print(f"\nwrote {png}")
    return 0


def _fit_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} fit", allow_abbrev=False,
                                description="Fit the turn-taking timing model on the records of an ingest output.")
    p.add_argument("source", metavar="OUT_OF_INGEST")
    p.add_argument("--output", required=True, metavar="JSON", help="where to write the fitted model")
    add_level_flag(p)
    args = p.parse_args(argv)
    # A missing source used to fit nothing and write the default model with exit 0.
    try:
        require_records("OUT_OF_INGEST", args.source, "segments")
        refuse_folder("--output", args.output)
    except ValueError as exc:
        raise UsageExit(f"{PROG} fit: error: {exc}") from None
    from microturn.pipelines.media import write_bytes
    from microturn.pipelines.tables import read_table
    from microturn.synth.timing_fit import fit

    model = fit(read_table(args.source, "segments"), read_table(args.source, "words"))
    write_bytes(args.output, (json.dumps(model.to_dict(), sort_keys=True, indent=2) + "\n").encode())
    print(json.dumps(model.to_dict(), sort_keys=True, indent=2))
    print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``microturn synthesize`` (and its ``stats`` and ``fit``): a usage error (found before any
    work) raises :class:`UsageExit` (status 2 from the entry points); a failed run exits 1."""
    argv = setup_from_argv(PROG, argv)
    if argv and argv[0] in SUBCOMMANDS:
        try:
            return _stats_main(argv[1:]) if argv[0] == "stats" else _fit_main(argv[1:])
        except ValueError as exc:
            raise SystemExit(f"{PROG} {argv[0]}: error: {exc}") from None
    if argv and looks_like_subcommand(argv[0]):  # the pipeline itself takes flags only
        raise UsageExit(unknown(PROG, "subcommand", argv[0], SUBCOMMANDS,
                                hint="; the pipeline itself takes flags only (--scripts, --generate, --remix)"))
    return run_stage(PROG, argv, prepare, execute)
