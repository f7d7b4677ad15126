"""``microturn catalog`` and ``microturn audit``: argument parsing and the two entry points.

::

    microturn catalog build OUT... --catalog FILE.duckdb [--allow-license LIC ...]
    microturn audit --catalog FILE.duckdb "SQL" [--format table|csv|json] [--max-rows N]
    microturn audit report --catalog FILE.duckdb --output DIR

Both return an exit status: 0 on success, 2 on an error, which is printed as
``microturn <command>: error: ...`` without a traceback. DuckDB and the builder are imported
only when a command runs, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from microturn.cli.logs import add_level_flag, setup_from_argv
from microturn.cli.usage import looks_like_subcommand, unknown

DEFAULT_MAX_ROWS = 1000
# One-word statements DuckDB runs (`microturn audit ... checkpoint` is refused as a write, with
# its own message): any other single word first on the line is taken for a misspelt subcommand.
_SQL_WORDS = frozenset({"select", "from", "with", "show", "describe", "summarize", "pragma", "checkpoint", "table",
                        "values", "explain", "call", "vacuum", "analyze", "begin", "commit", "rollback",
                        "abort", "reset", "set", "load", "install", "export", "import", "attach", "detach",
                        "use", "drop", "create", "insert", "update", "delete", "copy", "alter"})


def _status(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


def _fail(prog: str, message: str) -> int:
    from microturn.schemas.text import visible

    # Messages can quote values of the catalog (a DuckDB conversion error does): escape them.
    print(f"{prog}: error: {visible(message)}", file=sys.stderr)
    return 2


def _show_warnings(prog: str):
    from microturn.schemas.text import visible

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {visible(str(message))}", file=sys.stderr)

    return show


def build_catalog_parser() -> argparse.ArgumentParser:
    """Parser of ``microturn catalog build``."""
    from microturn.pipelines.catalog.licenses import DEFAULT_ALLOWED_LICENSES

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
    add_level_flag(p)
    return p


def catalog_main(argv: list[str] | None = None) -> int:
    """``microturn catalog build OUT... --catalog FILE [--allow-license LIC ...]``."""
    prog = "microturn catalog"
    argv = setup_from_argv(prog, argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} build OUT... --catalog FILE.duckdb [--allow-license LIC ...] [--log-level LEVEL]\n\n"
              "Run `microturn catalog build --help` for the options.")
        return 0 if argv else 2
    if argv[0] != "build":
        print(unknown(prog, "subcommand", argv[0], ("build",),
                      hint="; use `microturn catalog build OUT... --catalog FILE`"), file=sys.stderr)
        return 2
    try:
        args = build_catalog_parser().parse_args(argv[1:])
    except SystemExit as exc:
        return _status(exc)
    import duckdb

    from microturn.pipelines.catalog.build import build_catalog
    from microturn.schemas.text import visible

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
    add_level_flag(p)
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
    add_level_flag(p)
    return p


def _report_main(argv: list[str]) -> int:
    prog = "microturn audit report"
    try:
        args = build_report_parser().parse_args(argv)
    except SystemExit as exc:
        return _status(exc)
    import duckdb

    from microturn.pipelines.catalog.report import write_report
    from microturn.schemas.text import visible

    try:
        index = write_report(args.catalog, args.output)
    except (ValueError, OSError, duckdb.Error) as exc:
        return _fail(prog, str(exc))
    print(f"wrote {visible(index)}")
    return 0


def audit_main(argv: list[str] | None = None) -> int:
    """``microturn audit --catalog FILE "SQL" [--format F] [--max-rows N]`` or
    ``microturn audit report --catalog FILE --output DIR``."""
    prog = "microturn audit"
    argv = setup_from_argv(prog, argv)
    if argv and argv[0] == "report":
        return _report_main(argv[1:])
    # A misspelt `report` would run as SQL and fail as a syntax error; a statement is never one word.
    if argv and looks_like_subcommand(argv[0]) and argv[0].lower() not in _SQL_WORDS:
        print(unknown(prog, "subcommand", argv[0], ("report",),
                      hint='; a query is one quoted statement: microturn audit --catalog FILE "SELECT ..."'),
              file=sys.stderr)
        return 2
    try:
        args = build_audit_parser().parse_args(argv)
    except SystemExit as exc:
        return _status(exc)
    if args.max_rows < 0:
        return _fail(prog, f"--max-rows must be 0 (all rows) or more, got {args.max_rows}")
    import duckdb

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
