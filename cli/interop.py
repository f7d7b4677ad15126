"""``microturn export FORMAT ...`` and ``microturn import FORMAT ...``: records to and from the
manifests of the field's data tools (one format so far: Lhotse).

::

    microturn export lhotse OUT --output DIR [--prefix microturn] [--split NAME] [--language LANG]
    microturn import lhotse CUTS --output OUT [--license LIC] [--table-shards N] [beam options]

The parsers live here and import nothing heavy, so ``--help`` answers at once; Lhotse, Beam and
the pipelines load only when a command runs (:mod:`microturn.pipelines.interop`).
"""

from __future__ import annotations

import argparse
import sys

from microturn.cli.logs import add_level_flag

FORMATS = ("lhotse",)


def _usage(command: str) -> str:
    lines = {"export": "export lhotse OUT --output DIR      records as Lhotse recordings, supervisions and cuts",
             "import": "import lhotse CUTS --output OUT     Lhotse cuts with supervisions as conversation records"}
    return (f"usage: microturn {command} FORMAT ...\n\n  microturn {lines[command]}\n\n"
            f"formats: {', '.join(FORMATS)}. Run `microturn {command} lhotse --help` for the options.\n"
            "--log-level LEVEL (debug, info, warning, error) sets how much the project logs.")


def _format(command: str, argv: list[str]) -> tuple[str | None, list[str], int]:
    """``(format, rest, status)``: the format and its arguments, or None with the exit status
    after printing the usage (help: 0) or the error (no or unknown format: 2)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(command), file=sys.stdout if argv else sys.stderr)
        return None, [], 0 if argv else 2
    if argv[0] not in FORMATS:
        print(f"microturn {command}: error: unknown format {argv[0]!r}; known formats: {', '.join(FORMATS)}\n\n"
              f"{_usage(command)}", file=sys.stderr)
        return None, [], 2
    return argv[0], argv[1:], 0


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="microturn export lhotse", allow_abbrev=False,
        description="Write the conversation records of OUT (an ingest or synthesize output) as Lhotse manifests: "
                    "recordings (audio sources are the records' FLAC files, one channel per stream), supervisions "
                    "(speaker turns with channel, text and word alignments) and cuts (one per recording), checked "
                    "with Lhotse's validators.")
    p.add_argument("records", metavar="OUT", help="record output of `microturn ingest` or `microturn synthesize`")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for the manifests: new, empty, or an earlier export's")
    p.add_argument("--prefix", default="microturn", help="manifest name prefix: PREFIX_cuts.jsonl.gz (microturn)")
    p.add_argument("--split", metavar="NAME", help="export only the conversations of this split (e.g. train)")
    p.add_argument("--language", metavar="LANG", help="language of every supervision (records store none)")
    add_level_flag(p)
    return p


def import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="microturn import lhotse", allow_abbrev=False,
        description="Turn the cuts of a Lhotse cuts manifest (.jsonl or .jsonl.gz) that have supervisions into "
                    "conversation records (the tables and 16 kHz media of an ingest output) that `microturn shard` "
                    "takes. Cuts that cannot become records are rows of `rejects`. Other flags must be Beam "
                    "pipeline options (e.g. --direct_num_workers=2).")
    p.add_argument("cuts", metavar="CUTS", help="Lhotse cuts manifest (*_cuts.jsonl.gz)")
    p.add_argument("--output", required=True, metavar="OUT", help="record output folder")
    p.add_argument("--license", metavar="LIC", help="license of cuts whose custom fields name none (unknown)")
    p.add_argument("--table-shards", type=int, metavar="N", help="Parquet files per table (1)")
    add_level_flag(p)
    return p


def _wants_help(argv: list[str]) -> bool:
    head = argv[: argv.index("--")] if "--" in argv else argv
    return any(a in ("-h", "--help") for a in head)


def export_main(argv: list[str] | None = None) -> int:
    """``microturn export FORMAT ...``; returns the exit status (errors exit through SystemExit)."""
    from microturn.cli.logs import setup_from_argv

    fmt, rest, status = _format("export", setup_from_argv("microturn export", argv))
    if fmt is None:
        return status
    args = export_parser().parse_args(rest)
    from microturn.cli.usage import UsageExit
    from microturn.pipelines.interop.lhotse_export import ExportConfig, ExportInputError, export_lhotse

    try:
        cfg = ExportConfig(records=args.records, output=args.output, prefix=args.prefix, split=args.split,
                           language=args.language)
    except ValueError as exc:  # the flags themselves
        raise UsageExit(f"microturn export lhotse: error: {exc}") from None
    try:
        summary = export_lhotse(cfg)
    except ExportInputError as exc:  # OUT, DIR or --split, found before any work
        raise UsageExit(f"microturn export lhotse: error: {exc}") from None
    except (ValueError, OSError) as exc:
        raise SystemExit(f"microturn export lhotse: error: {exc}") from None
    print(summary.render())
    return 0


def import_main(argv: list[str] | None = None) -> int:
    """``microturn import FORMAT ...``; returns the exit status (errors exit through SystemExit)."""
    from microturn.cli.logs import setup_from_argv

    fmt, rest, status = _format("import", setup_from_argv("microturn import", argv))
    if fmt is None:
        return status
    parser = import_parser()
    if _wants_help(rest):  # before the Beam option parser (which imports Beam) is built
        parser.print_help()
        return 0
    from microturn.pipelines.cli_args import split_args

    args, beam_args = split_args(parser, rest)
    from microturn.cli.usage import UsageExit
    from microturn.pipelines.interop.lhotse_import import ImportConfig, check_cuts, run_import
    from microturn.pipelines.outputs import (
        NothingWritten,
        OutputError,
        OutputInUse,
        check_output,
        quiet_output_faults,
    )

    quiet_output_faults()
    values = {k: v for k, v in (("license", args.license), ("table_shards", args.table_shards)) if v is not None}
    try:  # the flags, CUTS and OUT, before any work: usage errors
        cfg = ImportConfig(cuts=args.cuts, output=args.output, **values)
        check_cuts(cfg.cuts)
        check_output(cfg.output, "ingest", inputs=[cfg.cuts])
    except ValueError as exc:
        raise UsageExit(f"microturn import lhotse: error: {exc}") from None
    try:
        summary = run_import(cfg, beam_args)
    except (ValueError, OutputError, OutputInUse, NothingWritten) as exc:
        raise SystemExit(f"microturn import lhotse: error: {exc}") from None
    print(summary.render())
    return 0
