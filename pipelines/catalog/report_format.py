"""Units, table cells and HTML pieces of the audit report (no database, no plotting).

Readable units: durations as ``h:mm:ss`` (``0:07:15``), shares as percentages, sizes in KiB /
MiB with the exact byte count beside, counts with thousands separators. A statistic computed
from fewer than :data:`MIN_VALUES` values carries a visible marker with its n (``⚠ n=4``).
Every value is escaped for HTML after its control and format characters are made visible
(``\\x1b``, ``\\u202e``; :func:`microturn.schemas.text.visible`): file names, licenses and
transcript text are data, never markup.

Tables sit in a scroll container and their cells wrap anywhere, so a long file name wraps and a
table with many columns scrolls inside the page instead of widening it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from microturn.pipelines.catalog.audit import cell_text
from microturn.schemas.text import visible

# Below 30 values a percentile or a rate moves a lot with one value more or less: the 95%
# interval of a median from 10 values spans roughly the 2nd to 9th of them (binomial order
# statistics), so such figures get a marker instead of passing for settled numbers.
MIN_VALUES = 30
NONE = "–"  # what a statistic with no value shows
NEWLINE = "\n"


def esc(value: object, *, keep: str = "") -> str:
    """Text for HTML: control and format characters (but those in ``keep``) as visible escapes,
    then HTML-escaped."""
    return html.escape(visible(value if isinstance(value, str) else str(value), keep=keep))


def hms(ms: float | None) -> str:
    """A duration in milliseconds as ``h:mm:ss``, rounded to the second (hours not capped)."""
    if ms is None or (isinstance(ms, float) and not math.isfinite(ms)):
        return NONE
    seconds = int(math.floor(abs(ms) / 1000 + 0.5))
    hours, rest = divmod(seconds, 3600)
    text = f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"-{text}" if ms < 0 and seconds else text


def hours_hms(hours: float | None) -> str:
    """Hours (as the views give them) as ``h:mm:ss``."""
    return NONE if hours is None else hms(hours * 3_600_000)


def percent(share: float | None) -> str:
    """A share in [0, 1] as a percentage with one decimal; a share that rounds to 0% or 100%
    without being it shows as ``<0.1%`` or ``>99.9%``."""
    if share is None or not math.isfinite(share):
        return NONE
    if 0 < share < 0.0005:
        return "<0.1%"
    if 0.9995 <= share < 1:
        return ">99.9%"
    return f"{share * 100:.1f}%"


def count(n: int | None) -> str:
    """An integer with thousands separators."""
    return NONE if n is None else f"{n:,}"


def millis(ms: float | None) -> str:
    """Milliseconds, rounded: ``169 ms``."""
    return NONE if ms is None else f"{ms:,.0f} ms"


def decimal(v: float | None, digits: int = 2) -> str:
    """A plain number with ``digits`` decimals."""
    return NONE if v is None else f"{v:,.{digits}f}"


def size(n: int | None) -> str:
    """A byte count in binary units: ``3.0 KiB``, ``12.4 MiB`` (bytes below 1 KiB)."""
    if n is None:
        return NONE
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{n:,} B" if unit == "B" else f"{value:.1f} {unit}"


def few_marker(n: int | None) -> str:
    """The small-sample marker for a statistic over ``n`` values; empty when n >= MIN_VALUES."""
    if n is None or n >= MIN_VALUES:
        return ""
    return (f' <span class="few" title="computed from {n} value{"s" if n != 1 else ""}; fewer than '
            f'{MIN_VALUES} make a rough estimate">⚠ n={n}</span>')


@dataclass(frozen=True, kw_only=True)
class Col:
    """A column of a report table: its header, how a cell is read from a row (a dict by column
    name of the query) and written, and optionally the n a statistic in it rests on."""

    header: str
    value: Callable[[Mapping[str, Any]], Any]
    fmt: Callable[[Any], str] = cell_text
    numeric: bool = False
    n: Callable[[Mapping[str, Any]], int | None] | None = None
    cls: str = ""  # CSS class: "label" (short names, kept on one line), "hash" (checksums, ids), "lines"


def col(name: str, header: str | None = None, fmt: Callable[[Any], str] = cell_text, *, numeric: bool = False,
        n: str | None = None, cls: str = "") -> Col:
    """A :class:`Col` showing the query column ``name`` (``n``: the column holding its n)."""
    return Col(header=header or name, value=lambda r: r[name], fmt=fmt, numeric=numeric,
               n=(lambda r: r[n]) if n else None, cls=cls)


def default_cols(columns: Sequence[str], rows: Sequence[Sequence]) -> list[Col]:
    """One column per query column, numbers right-aligned (judged from the first row)."""
    first = rows[0] if rows else [None] * len(columns)
    return [col(c, numeric=isinstance(v, (int, float)) and not isinstance(v, bool)) for c, v in zip(columns, first,
                                                                                                        strict=True)]


def label(name: str, header: str | None = None) -> Col:
    """A column of short names (origin, split, stage, ...), kept on one line."""
    return col(name, header, cls="label")


def _cell(c: Col, row: Mapping[str, Any]) -> str:
    value = c.value(row)
    # A "lines" cell shows one item per line: its formatter joins them with newlines.
    text = esc(c.fmt(value), keep=NEWLINE if c.cls == "lines" else "")
    classes = " ".join(x for x in ("num" if c.numeric else "", c.cls) if x)
    attr = f' class="{classes}"' if classes else ""
    marker = few_marker(c.n(row)) if c.n is not None and value is not None else ""
    return f'<td{attr}><span class="v">{text}</span>{marker}</td>' if marker else f"<td{attr}>{text}</td>"


def table(columns: Sequence[str], rows: Sequence[Sequence], *, cols: Sequence[Col] | None = None,
          empty: str, more: str = "") -> str:
    """An HTML table of query rows (``columns`` names them) inside a scroll container; ``cols``
    choose and format what is shown (default: every column as it is). ``empty`` is the note
    shown instead when there are no rows; ``more`` an HTML note placed under the table."""
    if not rows:
        return f'<p class="note">{esc(empty)}</p>'
    cols = list(cols) if cols is not None else default_cols(columns, rows)
    head = "".join(f'<th class="num">{esc(c.header)}</th>' if c.numeric else f"<th>{esc(c.header)}</th>"
                   for c in cols)
    body = []
    for values in rows:
        row = dict(zip(columns, values, strict=True))
        body.append("<tr>" + "".join(_cell(c, row) for c in cols) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f"</div>{more}")


def html_table(columns: Sequence[str], rows: Sequence[Sequence], *, total: int | None = None, empty: str) -> str:
    """Every column of ``rows`` as it is, with a note counting the rows not shown when ``total``
    says there are more."""
    more = ""
    if total is not None and total > len(rows):
        more = f'<p class="note">{total - len(rows):,} more rows not shown.</p>'
    return table(columns, rows, empty=empty, more=more)


def sql_details(queries: Sequence[tuple[str, str]]) -> str:
    """The queries a section ran, each under its label, in a folded ``<details>`` block."""
    if not queries:
        return ""
    parts = [f'<p>{esc(label)}:</p><pre><code>{esc(sql.strip(), keep=NEWLINE)}</code></pre>' for label, sql in queries]
    n = len(queries)
    return (f'<details class="sql"><summary>SQL of this section ({n} quer{"y" if n == 1 else "ies"}; '
            f'rerun with <code>microturn audit --catalog FILE "SQL"</code> or in duckdb)</summary>'
            f'{"".join(parts)}</details>')
