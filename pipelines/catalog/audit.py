"""Read-only queries against the catalog, and printing their results as a table, CSV or JSON.

Two locks keep a query from changing anything. Before the catalog is opened, the SQL is parsed
and refused unless it is a single read statement (SELECT and its forms DESCRIBE / SHOW /
SUMMARIZE / FROM / VALUES / WITH, EXPLAIN of one of those, or a PRAGMA from
:data:`READ_PRAGMAS`). Then the catalog is opened read-only with external access disabled and
the configuration locked, so that not even a table function can read or write other files
or reach the network.

Tables can come from anywhere, so no value is printed as it is: in every format, control
characters, bidi controls and other invisible format characters are written as visible escapes
(``\\x1b``, ``\\u202e``; :mod:`microturn.schemas.text`) in the table and CSV formats, and as
JSON escapes (``\\u001b``, which parse back to the same value) in JSON and in nested values. A
value cannot recolour, move the cursor, clear or retitle the terminal, or reorder what is shown.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from microturn.schemas.text import visible, visible_json

# PRAGMAs that only report on the database (the others change settings, and some write files,
# such as `PRAGMA profiling_output`).
READ_PRAGMAS = frozenset({
    "collations", "database_list", "database_size", "functions", "metadata_info", "platform",
    "show", "show_databases", "show_tables", "show_tables_expanded", "storage_info", "table_info",
    "version",
})
_PRAGMA_RE = re.compile(r"^\s*PRAGMA\s+([A-Za-z_][A-Za-z0-9_]*)\s*(\(.*\))?\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_EXPLAIN_RE = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)
_CONFIG = {"enable_external_access": False, "lock_configuration": True}


@dataclass(frozen=True, kw_only=True)
class QueryResult:
    """Column names and rows of a query; ``truncated`` when more rows were left unread."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple]
    truncated: bool


def _parser() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(":memory:", config=dict(_CONFIG))


def check_read_only(sql: str) -> str:
    """Return ``sql`` when it is exactly one read statement; ``ValueError`` saying why not."""
    with _parser() as con:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise ValueError(f"cannot parse the SQL: {exc}") from None
    if not statements:
        raise ValueError("no SQL statement given")
    if len(statements) > 1:
        raise ValueError(f"give one statement at a time ({len(statements)} given)")
    _check_statement(statements[0].type, statements[0].query)
    return sql


def _check_statement(kind, text: str) -> None:
    types = duckdb.StatementType
    if kind == types.SELECT:
        return
    if kind == types.EXPLAIN:
        inner = _EXPLAIN_RE.sub("", text, count=1)
        with _parser() as con:
            try:
                parsed = con.extract_statements(inner)
            except duckdb.Error:
                parsed = []
        if inner != text and len(parsed) == 1 and parsed[0].type == types.SELECT:
            return
        raise ValueError("EXPLAIN is accepted for read statements (SELECT) only")
    if kind == types.PRAGMA:
        m = _PRAGMA_RE.match(text)
        if m and m.group(1).lower() in READ_PRAGMAS:
            return
        raise ValueError(f"only these PRAGMAs are accepted (they read): {', '.join(sorted(READ_PRAGMAS))}")
    name = getattr(kind, "name", str(kind))
    hint = {
        "COPY": "; to export a result, run the query with --format csv or --format json and redirect it",
        "CALL": "; call a table function with SELECT * FROM name(...) instead",
        "MULTI": "; PIVOT without an IN list runs several statements: list the values with ON col IN (...)",
    }.get(name, "")
    raise ValueError(f"refused: {name} statements are not allowed; the catalog is audited read-only "
                     f"and only SELECT-style statements run{hint}")


def open_catalog(path: str) -> duckdb.DuckDBPyConnection:
    """Open an existing catalog read-only, with external access disabled and locked."""
    if "://" in path:
        raise ValueError(f"--catalog {path}: DuckDB opens local files only; copy the catalog here first")
    if not os.path.isfile(path):
        raise ValueError(f"catalog {path} does not exist; build it with "
                         f"`microturn catalog build OUT... --catalog {path}`")
    try:
        return duckdb.connect(path, read_only=True, config=dict(_CONFIG))
    except duckdb.Error as exc:
        raise ValueError(f"cannot open catalog {path}: {exc}") from None


def run_query(catalog: str, sql: str, *, max_rows: int | None = None) -> QueryResult:
    """Run one read statement against ``catalog``; at most ``max_rows`` rows (None: all).

    ``ValueError`` for a refused statement or a missing catalog, ``duckdb.Error`` for SQL that
    DuckDB rejects (unknown table, type error, ...).
    """
    if max_rows is not None and max_rows < 0:
        raise ValueError(f"max_rows must be >= 0 or None, got {max_rows}")
    check_read_only(sql)
    with open_catalog(catalog) as con:
        cur = con.execute(sql)
        if cur.description is None:
            return QueryResult(columns=(), types=(), rows=[], truncated=False)
        columns = tuple(d[0] for d in cur.description)
        types = tuple(str(d[1]) for d in cur.description)
        if max_rows is None:
            rows, truncated = cur.fetchall(), False
        else:
            rows = cur.fetchmany(max_rows + 1)
            truncated = len(rows) > max_rows
            rows = rows[:max_rows]
    return QueryResult(columns=columns, types=types, rows=rows, truncated=truncated)


def plain(value):
    """A JSON-ready copy of a DuckDB result value: nested values recursively, NaN/inf as None,
    decimals as floats, times in ISO 8601, bytes in hex, other objects as their text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return plain(float(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (dt.timedelta, uuid.UUID)):
        return str(value)
    return str(value)


def format_float(v: float) -> str:
    """Fixed notation with up to 6 decimals (trailing zeros dropped); tiny or huge values in
    6-digit scientific notation."""
    if not math.isfinite(v):
        return str(v)
    if v == 0 or 1e-4 <= abs(v) < 1e15:
        text = f"{v:.6f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return f"{v:.6g}"


def cell_text(value, *, null: str = "NULL") -> str:
    """One value as text for a table, safe to print: nested values as compact JSON (with JSON
    escapes for control characters), floats readable, control and format characters of strings
    as visible escapes (``\\x1b``)."""
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        return visible_json(json.dumps(plain(value), ensure_ascii=False))
    p = plain(value)
    return visible(p if isinstance(p, str) else str(p))


_NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|U\w*INT|FLOAT|DOUBLE|DECIMAL.*)$")


def render_table(result: QueryResult, *, max_width: int = 80) -> str:
    """An aligned text table: header, rule, rows (numbers right-aligned), and a row-count line.
    Cells wider than ``max_width`` are cut with '…' (use CSV or JSON for whole values)."""
    def cut(text: str) -> str:
        text = visible(text)  # cells are already; column names too
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cut(cell_text(v)) for v in row] for row in result.rows]
    header = [cut(c) for c in result.columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    right = [bool(_NUMERIC.match(t)) for t in result.types]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    if result.columns == ("explain_key", "explain_value"):
        # EXPLAIN: the plans are drawings over several lines; print them as they are.
        return "\n".join(visible(f"{key}:\n{value}", keep="\n") for key, value in result.rows)
    out = []
    if header:
        out += [line(header), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in cells]
    n = len(result.rows)
    count = f"({n} row{'s' if n != 1 else ''})"
    if result.truncated:
        count = f"({n} rows shown; more rows not shown: raise --max-rows, 0 shows all)"
    out.append(count)
    return "\n".join(out)


def render_csv(result: QueryResult) -> str:
    """CSV (RFC 4180) with a header row; NULL as an empty field, nested values as JSON, floats in
    full. Control and format characters in strings are written as visible escapes (a value
    holding a newline shows ``\\n``), so the output is safe to print."""
    buf = io.StringIO()
    # RFC 4180 line ends: with "\r\n" as the terminator the writer also quotes fields holding a
    # bare "\r", which a "\n" terminator would leave unquoted.
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([visible(c) for c in result.columns])
    for row in result.rows:
        writer.writerow([
            "" if v is None else repr(v) if isinstance(v, float) else cell_text(v, null="")
            for v in row
        ])
    return buf.getvalue()


def _unique_names(columns: Sequence[str]) -> list[str]:
    used: set[str] = set()
    names = []
    for c in columns:
        name, k = c, 0
        while name in used:
            k += 1
            name = f"{c}_{k}"
        used.add(name)
        names.append(name)
    return names


def render_json(result: QueryResult) -> str:
    """One JSON array of objects (a repeated column name gets a suffix: a, a_1); nested values
    stay JSON, NaN and infinities become null; control and format characters are JSON escapes."""
    names = _unique_names(result.columns)
    records = [dict(zip(names, (plain(v) for v in row), strict=True)) for row in result.rows]
    return visible_json(json.dumps(records, ensure_ascii=False, indent=2)) + "\n"


FORMATS = {"table": lambda r: render_table(r) + "\n", "csv": render_csv, "json": render_json}
