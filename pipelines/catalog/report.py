"""``microturn audit report``: a self-contained HTML report of a catalog, with PNG plots.

The report is ``DIR/index.html`` with its PNGs beside it, referenced by relative paths, and no
external CSS or JavaScript, so it opens from disk in any browser. Plots: conversation durations
by origin, gap and overlap histograms per origin (real against synthetic and remix), hours by
split and origin, rejects by stage and reason. Tables: the audit views. Every value from the
catalog is HTML-escaped, its control and format characters shown as visible escapes (``\\x1b``).
A plot with nothing to show becomes a note; every file is written under a temporary name and
renamed when complete.

Arrays of values (one per row) are named in words: ``all_ms``, ``all_minutes``, ``split_hours``.
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from apache_beam.io.filesystems import FileSystems

from microturn.pipelines.catalog.audit import cell_text, open_catalog
from microturn.schemas.text import visible

ORIGIN_COLORS = {"real": "tab:blue", "synthetic": "tab:orange", "remix": "tab:green"}
SPLIT_ORDER = ("train", "valid", "test")
# Histograms stop at the 98th percentile of the pooled values (at least 100 ms), so a few
# multi-second pauses do not squeeze the 0-1 s range where turn-taking happens (median
# floor-transfer offsets are ~200 ms; Stivers et al. 2009, PNAS 106:10587).
_HIST_PERCENTILE = 98
_HIST_BINS = 40
_MAX_BARS = 25  # rejects plot: the most frequent (stage, error type) pairs


@dataclass(frozen=True, kw_only=True)
class Figure:
    """A plot of the report: its file name and PNG bytes, or a note saying why there is none."""

    name: str
    title: str
    png: bytes | None
    note: str | None = None


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _new_figure(width: float, height: float):
    # Figure + its Agg canvas directly: no pyplot state and no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _color(origin: str) -> str:
    return ORIGIN_COLORS.get(origin, "tab:gray")


def durations_plot(con) -> Figure:
    """Histogram of conversation durations (minutes), one step line per origin."""
    rows = con.execute("SELECT origin, duration_ms FROM unique_conversations ORDER BY origin").fetchall()
    title = "Conversation durations by origin"
    if not rows:
        return Figure(name="durations.png", title=title, png=None, note="No conversations in the catalog.")
    by_origin: dict[str, list[float]] = {}
    for origin, ms in rows:
        by_origin.setdefault(origin, []).append(ms / 60_000)
    all_minutes = np.array([m for v in by_origin.values() for m in v])
    edges = np.histogram_bin_edges(all_minutes, bins=int(np.clip(all_minutes.size, 5, 30)))
    fig = _new_figure(7, 3.6)
    ax = fig.add_subplot()
    for origin, values in by_origin.items():
        ax.hist(values, bins=edges.tolist(), histtype="step", linewidth=1.8, color=_color(origin),
                label=f"{origin} (n={len(values)})")
    ax.set_xlabel("duration (minutes)")
    ax.set_ylabel("conversations")
    ax.legend(fontsize=8)
    return Figure(name="durations.png", title=title, png=_png(fig))


def values_plot(con, kind: str) -> Figure:
    """Density histogram of gaps or overlaps (``kind``) at a change of speaker, per origin."""
    rows = con.execute("SELECT origin, list(ms) FROM gap_overlap_values WHERE kind = ? GROUP BY origin "
                       "ORDER BY origin", [kind]).fetchall()
    title = f"{kind.title()}s at a change of speaker: real against synthetic and remix"
    name = f"{kind}s.png"
    series = {origin: np.asarray(values, dtype=np.float64) for origin, values in rows if values}
    if not series:
        return Figure(name=name, title=title, png=None, note=f"No {kind} values in the catalog.")
    all_ms = np.concatenate(list(series.values()))
    top = max(float(np.percentile(all_ms, _HIST_PERCENTILE)), 100.0)
    edges = np.linspace(0.0, top, _HIST_BINS + 1)
    fig = _new_figure(7, 3.6)
    ax = fig.add_subplot()
    for origin, values in series.items():
        ax.hist(np.clip(values, 0, top), bins=edges.tolist(), density=True, histtype="stepfilled", alpha=0.45,
                color=_color(origin), edgecolor=_color(origin),
                label=f"{origin} (n={values.size}, median {np.median(values):.0f} ms)")
    ax.set_xlabel(f"{kind} (ms; the last bin holds everything above {top:.0f} ms)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    missing = [o for o in ("real", "synthetic") if o not in series]
    note = None
    if missing:
        note = f"No {' or '.join(missing)} {kind} values to compare against."
    return Figure(name=name, title=title, png=_png(fig), note=note)


def _split_key(split: str) -> tuple:
    return (SPLIT_ORDER.index(split), split) if split in SPLIT_ORDER else (len(SPLIT_ORDER), split)


def splits_plot(con) -> Figure:
    """Stacked bars: hours per effective split, one stack per origin."""
    rows = con.execute("SELECT split, origin, sum(hours) FROM hours_by_split GROUP BY split, origin").fetchall()
    title = "Split composition (hours by split and origin)"
    if not rows:
        return Figure(name="splits.png", title=title, png=None, note="No conversations in the catalog.")
    splits = sorted({r[0] for r in rows}, key=_split_key)
    origins = sorted({r[1] for r in rows})
    hours = {(s, o): h for s, o, h in rows}
    fig = _new_figure(7, 3.6)
    ax = fig.add_subplot()
    bottom_hours = np.zeros(len(splits))
    for origin in origins:
        split_hours = np.array([hours.get((s, origin), 0.0) for s in splits])
        ax.bar(splits, split_hours, bottom=bottom_hours, color=_color(origin), label=origin)
        bottom_hours += split_hours
    ax.set_ylabel("hours")
    ax.set_xlabel("split (from samples when sharded)")
    ax.legend(fontsize=8)
    return Figure(name="splits.png", title=title, png=_png(fig))


def rejects_plot(con) -> Figure:
    """Horizontal bars: rejects per stage and error type, most frequent first."""
    rows = con.execute("SELECT stage, error_type, rejects FROM rejects_by_stage").fetchall()
    title = "Rejects by stage and reason"
    if not rows:
        return Figure(name="rejects.png", title=title, png=None, note="No rejects in the catalog.")
    from matplotlib.ticker import MaxNLocator

    shown = rows[:_MAX_BARS]
    fig = _new_figure(7, 1.2 + 0.3 * len(shown))
    ax = fig.add_subplot()
    labels = [visible(f"{stage} / {error}") for stage, error, _ in shown]
    ax.barh(range(len(shown)), [n for _, _, n in shown], color="tab:red")
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rejects")
    note = f"The {_MAX_BARS} most frequent of {len(rows)} reasons." if len(rows) > _MAX_BARS else None
    return Figure(name="rejects.png", title=title, png=_png(fig), note=note)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #555; font-style: italic; } img { max-width: 100%; }
"""


def html_table(columns: Sequence[str], rows: Sequence[Sequence], *, total: int | None = None,
               empty: str) -> str:
    """An HTML table of query rows, every value escaped; ``empty`` as a note when there are no
    rows, and a note counting the rest when ``total`` says there are more than ``rows``."""
    if not rows:
        return f'<p class="note">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(visible(c))}</th>" for c in columns)
    body = []
    for row in rows:
        tds = []
        for v in row:
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            cls = ' class="num"' if numeric else ""
            tds.append(f"<td{cls}>{html.escape(cell_text(v))}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    more = ""
    if total is not None and total > len(rows):
        more = (f'<p class="note">{total - len(rows)} more rows not shown; query the view with '
                "<code>microturn audit</code>.</p>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def _view_table(con, view: str, *, max_rows: int, empty: str) -> str:
    # Every result is read whole (LIMIT, then fetchall): DuckDB refuses further work on a
    # connection while a result is unread.
    cur = con.execute(f"SELECT * FROM {view} LIMIT {max_rows + 1}")
    columns = [d[0] for d in cur.description]
    rows = cur.fetchall()
    total = len(rows)
    if total > max_rows:
        total = con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0]
    return html_table(columns, rows[:max_rows], total=total, empty=empty)


def _figure_html(fig: Figure) -> str:
    parts = [f"<h3>{html.escape(fig.title)}</h3>"]
    if fig.png is not None:
        parts.append(f'<img src="{html.escape(fig.name)}" alt="{html.escape(fig.title)}">')
    if fig.note:
        parts.append(f'<p class="note">{html.escape(fig.note)}</p>')
    return "\n".join(parts)


def _meta_html(con, catalog: str) -> str:
    schema_version, inputs, allowed, table_rows, version = con.execute(
        "SELECT schema_version, inputs, allowed_licenses, table_rows, microturn_version FROM catalog_meta"
    ).fetchall()[0]
    counts = html_table(["table", "rows"], sorted(table_rows.items()), empty="No tables.")
    items = "".join(f"<li><code>{html.escape(visible(i))}</code></li>" for i in inputs)
    return (f"<p>Catalog <code>{html.escape(catalog)}</code>, schema version {html.escape(str(schema_version))}, "
            f"built by microturn {html.escape(str(version))} from:</p><ul>{items}</ul>{counts}"
            f"<p>Licenses allowed for training: {html.escape(visible(', '.join(allowed)))}.</p>")


def _publish(directory: str, name: str, data: bytes) -> None:
    """Write ``directory/name`` under a temporary name, then rename it into place."""
    final = FileSystems.join(directory, name)
    tmp = FileSystems.join(directory, f".{name}.tmp-{os.getpid()}")
    if "://" not in directory:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, final)
        return
    with FileSystems.create(tmp) as f:
        f.write(data)
    if FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([tmp], [final])


def write_report(catalog: str, output: str, *, max_table_rows: int = 200) -> str:
    """Write the report of ``catalog`` into the directory ``output``; returns the index path.

    ``output`` is a local directory (created when missing) or a Beam filesystem URL. Tables
    show at most ``max_table_rows`` rows each, with a note counting the rest.
    """
    if max_table_rows < 1:
        raise ValueError(f"max_table_rows must be at least 1, got {max_table_rows}")
    if "://" not in output and os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output} is a file; give a directory for the report")
    with open_catalog(catalog) as con:
        missing = {"catalog_meta", "hours_by_split"} - {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        if missing:
            raise ValueError(f"{catalog} is not a microturn catalog (no {', '.join(sorted(missing))}); "
                             "build one with `microturn catalog build`")
        figures = {
            "splits": splits_plot(con), "durations": durations_plot(con),
            "gaps": values_plot(con, "gap"), "overlaps": values_plot(con, "overlap"),
            "rejects": rejects_plot(con),
        }

        def table(view: str, empty: str) -> str:
            return _view_table(con, view, max_rows=max_table_rows, empty=empty)

        sections = [
            ("Inputs", _meta_html(con, catalog)),
            ("Hours by split", _figure_html(figures["splits"]) + table("hours_by_split", "No conversations.")),
            ("Durations", _figure_html(figures["durations"])),
            ("Turn-taking", "\n".join([
                _figure_html(figures["gaps"]), _figure_html(figures["overlaps"]),
                table("turn_taking_by_origin", "No conversations."),
                "<h3>Speaker balance</h3>", table("speaker_balance_by_origin", "No conversations."),
            ])),
            ("Leakage", table("leakage", "No leakage: every conversation's samples sit in one split and "
                                         "every remix shares its source's split.")),
            ("License check", table("license_check", "Every conversation has an allowed license.")),
            ("Rejects", _figure_html(figures["rejects"]) + table("rejects_by_stage", "No rejects.")),
            ("Duplicate conversation ids", table("duplicate_conversations", "No duplicate conversation ids.")),
        ]
    body = "\n".join(f"<h2>{html.escape(title)}</h2>\n{content}" for title, content in sections)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>microturn audit: {html.escape(catalog)}</title><style>{_STYLE}</style></head>\n"
            f"<body><h1>microturn audit report</h1>\n{body}\n</body></html>\n")
    if "://" not in output:
        os.makedirs(output, exist_ok=True)
    for fig in figures.values():
        if fig.png is not None:
            _publish(output, fig.name, fig.png)
        elif FileSystems.exists(FileSystems.join(output, fig.name)):
            # A plot of an earlier report that now has nothing to show: drop it, so the folder
            # holds only what index.html shows.
            FileSystems.delete([FileSystems.join(output, fig.name)])
    _publish(output, "index.html", page.encode("utf-8"))
    return FileSystems.join(output, "index.html")
