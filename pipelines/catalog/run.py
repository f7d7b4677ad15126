"""``microturn catalog`` and ``microturn audit``: argument parsing and the two entry points.

::

    microturn catalog build OUT... --catalog FILE.duckdb [--allow-license LIC ...]
    microturn audit --catalog FILE.duckdb "SQL" [--format table|csv|json] [--max-rows N]
    microturn audit report --catalog FILE.duckdb --output DIR

Both return an exit status: 0 on success, 2 on an error, which is printed as
``microturn <command>: error: ...`` without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import duckdb

from microturn.schemas.text import visible

DEFAULT_MAX_ROWS = 1000


def _status(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


def _fail(prog: str, message: str) -> int:
    # Messages can quote values of the catalog (a DuckDB conversion error does): escape them.
    print(f"{prog}: error: {visible(message)}", file=sys.stderr)
    return 2


def _show_warnings(prog: str):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {visible(str(message))}", file=sys.stderr)

    return show


def build_catalog_parser() -> argparse.ArgumentParser:
    """Parser of ``microturn catalog build``."""
    from microturn.pipelines.catalog.build import DEFAULT_ALLOWED_LICENSES

    p = argparse.ArgumentParser(
        prog="microturn catalog build",
        allow_abbrev=False,  # `--cat` must not silently mean `--catalog`
        description="Build the auditors' DuckDB catalog from the record tables of ingest, synthesize "
                    "and shard outputs (one table per record table, plus audit views). A rebuild "
                    "replaces the catalog whole.",
    )
    p.add_argument("outputs", nargs="+", metavar="OUT", help="output directories (local paths or Beam URLs)")
    p.add_argument("--catalog", required=True, metavar="FILE.duckdb", help="the catalog file to (re)build")
    p.add_argument("--allow-license", action="append", default=[], metavar="LIC",
                   help="also allow this license for training (repeatable; case-insensitive). Allowed by "
                        f"default: {', '.join(DEFAULT_ALLOWED_LICENSES)}")
    return p


def catalog_main(argv: list[str] | None = None) -> int:
    """``microturn catalog build OUT... --catalog FILE [--allow-license LIC ...]``."""
    prog = "microturn catalog"
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} build OUT... --catalog FILE.duckdb [--allow-license LIC ...]\n\n"
              "Run `microturn catalog build --help` for the options.")
        return 0 if argv else 2
    if argv[0] != "build":
        return _fail(prog, f"unknown subcommand {argv[0]!r}; use `microturn catalog build OUT... --catalog FILE`")
    try:
        args = build_catalog_parser().parse_args(argv[1:])
    except SystemExit as exc:
        return _status(exc)
    from microturn.pipelines.catalog.build import build_catalog

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _show_warnings(prog)
        try:
            summary = build_catalog(args.outputs, args.catalog, allow_licenses=args.allow_license)
        except (ValueError, OSError, duckdb.Error) as exc:  # OSError: e.g. no permission beside the catalog
            return _fail(prog, str(exc))
    print(visible(summary.render(), keep="\n"))
    return 0


def build_audit_parser() -> argparse.ArgumentParser:
    """Parser of ``microturn audit`` (the query form)."""
    p = argparse.ArgumentParser(
        prog="microturn audit",
        allow_abbrev=False,
        description="Run one read-only SQL query against a catalog and print the result. Statements "
                    "that write (INSERT, CREATE, COPY, ATTACH, SET, ...) are refused. Views: "
                    "SELECT * FROM catalog_views. Also: `microturn audit report --catalog FILE --output DIR`.",
    )
    p.add_argument("sql", metavar="SQL", help="one SELECT-style statement")
    p.add_argument("--catalog", required=True, metavar="FILE.duckdb", help="built by `microturn catalog build`")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="aligned text table (cells cut at 80 characters), CSV, or one JSON array of objects")
    p.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, metavar="N",
                   help=f"print at most N rows (default {DEFAULT_MAX_ROWS}; 0 prints all)")
    return p


def build_report_parser() -> argparse.ArgumentParser:
    """Parser of ``microturn audit report``."""
    p = argparse.ArgumentParser(
        prog="microturn audit report",
        allow_abbrev=False,
        description="Write DIR/index.html with PNG plots beside it: durations, gaps and overlaps by "
                    "origin, split composition, rejects, and the audit views as tables.",
    )
    p.add_argument("--catalog", required=True, metavar="FILE.duckdb")
    p.add_argument("--output", required=True, metavar="DIR", help="report directory (created when missing)")
    return p


def _report_main(argv: list[str]) -> int:
    prog = "microturn audit report"
    try:
        args = build_report_parser().parse_args(argv)
    except SystemExit as exc:
        return _status(exc)
    from microturn.pipelines.catalog.report import write_report

    try:
        index = write_report(args.catalog, args.output)
    except (ValueError, OSError, duckdb.Error) as exc:
        return _fail(prog, str(exc))
    print(f"wrote {visible(index)}")
    return 0


def audit_main(argv: list[str] | None = None) -> int:
    """``microturn audit --catalog FILE "SQL" [--format F] [--max-rows N]`` or
    ``microturn audit report --catalog FILE --output DIR``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "report":
        return _report_main(argv[1:])
    prog = "microturn audit"
    try:
        args = build_audit_parser().parse_args(argv)
    except SystemExit as exc:
        return _status(exc)
    if args.max_rows < 0:
        return _fail(prog, f"--max-rows must be 0 (all rows) or more, got {args.max_rows}")
    from microturn.pipelines.catalog.audit import FORMATS, run_query

    try:
        result = run_query(args.catalog, args.sql, max_rows=args.max_rows or None)
    except (ValueError, duckdb.Error) as exc:
        return _fail(prog, str(exc))
    sys.stdout.write(FORMATS[args.format](result))
    if result.truncated and args.format != "table":
        print(f"{prog}: note: printed the first {len(result.rows)} rows; raise --max-rows (0 prints all)",
              file=sys.stderr)
    return 0
