"""The plots of the audit report, drawn from query rows by matplotlib (Agg canvas, no pyplot
state) and embedded in the page as ``data:image/png;base64`` URLs.

Each function takes the rows its section queried and returns a :class:`Figure`: PNG bytes, or a
note saying why there is nothing to draw. Time axes pick seconds, minutes or hours to suit the
largest value. Arrays of values are named in words: ``all_ms``, ``all_values``, ``split_values``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from microturn.pipelines.catalog.report_format import MIN_VALUES, esc
from microturn.schemas.text import visible

ORIGIN_COLORS = {"real": "tab:blue", "synthetic": "tab:orange", "remix": "tab:green"}
SPLIT_ORDER = ("train", "valid", "test")
# Histograms stop at the 98th percentile of the pooled values (at least 100 ms), so a few
# multi-second pauses do not squeeze the 0-1 s range where turn-taking happens (median
# floor-transfer offsets are ~200 ms; Stivers et al. 2009, PNAS 106:10587).
_HIST_PERCENTILE = 98
_HIST_BINS = 40
MAX_BARS = 25  # rejects plot: the most frequent (stage, error type) pairs
SCORE_BINS = 20  # aligner scores in [0, 1], bins of 0.05


@dataclass(frozen=True, kw_only=True)
class Figure:
    """A plot of the report: its name, title and PNG bytes, or a note saying why there is none."""

    name: str
    title: str
    png: bytes | None
    note: str | None = None

    def html(self) -> str:
        """The title, the picture inline (a data URL) and the note."""
        parts = [f"<h3>{esc(self.title)}</h3>"]
        if self.png is not None:
            data = base64.b64encode(self.png).decode("ascii")
            parts.append(f'<img id="{esc(self.name)}" src="data:image/png;base64,{data}" alt="{esc(self.title)}">')
        if self.note:
            parts.append(f'<p class="note">{esc(self.note)}</p>')
        return "\n".join(parts)


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


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)  # counts: no tick at 2.5 conversations


def _color(origin: str) -> str:
    return ORIGIN_COLORS.get(origin, "tab:gray")


def _cut(text: str, limit: int = 48) -> str:
    # Axis labels longer than this squeeze the bars off a 7-inch figure; the table has them whole.
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _time_unit(max_seconds: float) -> tuple[float, str]:
    """(seconds per unit, unit name) that keep an axis of times up to ``max_seconds`` in numbers
    of about 1 to 180: a 7-minute corpus reads 7 minutes, not 0.12 hours."""
    if max_seconds < 180:
        return 1.0, "seconds"
    if max_seconds < 3 * 3600:
        return 60.0, "minutes"
    return 3600.0, "hours"


def _n_label(n: int) -> str:
    return f"n={n}" + (f", fewer than {MIN_VALUES}" if n < MIN_VALUES else "")


def durations_plot(rows: Sequence[tuple[str, int]]) -> Figure:
    """Histogram of conversation durations (minutes), one step line per origin, from
    ``(origin, duration_ms)`` rows."""
    title = "Conversation durations by origin"
    if not rows:
        return Figure(name="durations", title=title, png=None, note="No conversations in the catalog.")
    by_origin: dict[str, list[float]] = {}
    for origin, ms in rows:
        by_origin.setdefault(origin, []).append(ms / 1000)
    per_unit, unit = _time_unit(max(max(v) for v in by_origin.values()))
    all_values = np.array([x / per_unit for v in by_origin.values() for x in v])
    edges = np.histogram_bin_edges(all_values, bins=int(np.clip(all_values.size, 5, 30)))
    fig = _new_figure(7, 3.4)
    ax = fig.add_subplot()
    for origin, seconds in by_origin.items():
        ax.hist([x / per_unit for x in seconds], bins=edges.tolist(), histtype="step", linewidth=1.8,
                color=_color(origin), label=f"{visible(origin)} ({_n_label(len(seconds))})")
    ax.set_xlabel(f"duration ({unit})")
    ax.set_ylabel("conversations")
    ax.yaxis.set_major_locator(_integer_ticks())
    ax.legend(fontsize=8)
    return Figure(name="durations", title=title, png=_png(fig))


def values_plot(kind: str, rows: Sequence[tuple[str, Sequence[float]]]) -> Figure:
    """Density histogram of gaps or overlaps (``kind``) at a change of speaker, per origin, from
    ``(origin, values)`` rows."""
    title = f"{kind.title()}s at a change of speaker: real against synthetic and remix"
    name = f"{kind}s"
    series = {origin: np.asarray(values, dtype=np.float64) for origin, values in rows if values}
    if not series:
        return Figure(name=name, title=title, png=None, note=f"No {kind} values in the catalog.")
    all_ms = np.concatenate(list(series.values()))
    top = max(float(np.percentile(all_ms, _HIST_PERCENTILE)), 100.0)
    edges = np.linspace(0.0, top, _HIST_BINS + 1)
    fig = _new_figure(7, 3.4)
    ax = fig.add_subplot()
    for origin, values in series.items():
        ax.hist(np.clip(values, 0, top), bins=edges.tolist(), density=True, histtype="stepfilled", alpha=0.45,
                color=_color(origin), edgecolor=_color(origin),
                label=f"{visible(origin)} ({_n_label(values.size)}; median {np.median(values):.0f} ms)")
    ax.set_xlabel(f"{kind} (ms; the last bin holds everything above {top:.0f} ms)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    missing = [o for o in ("real", "synthetic") if o not in series]
    note = f"No {' or '.join(missing)} {kind} values to compare against." if missing else None
    return Figure(name=name, title=title, png=_png(fig), note=note)


def _split_key(split: str) -> tuple:
    return (SPLIT_ORDER.index(split), split) if split in SPLIT_ORDER else (len(SPLIT_ORDER), split)


def splits_plot(rows: Sequence[tuple[str, str, float]]) -> Figure:
    """Stacked bars: hours per split, one stack per origin, from ``(split, origin, hours)`` rows."""
    title = "Split composition (duration by split and origin)"
    if not rows:
        return Figure(name="splits", title=title, png=None, note="No conversations in the catalog.")
    splits = sorted({r[0] for r in rows}, key=_split_key)
    origins = sorted({r[1] for r in rows})
    seconds = {(s, o): h * 3600 for s, o, h in rows}
    per_unit, unit = _time_unit(max(sum(seconds.get((s, o), 0.0) for o in origins) for s in splits))
    fig = _new_figure(7, 3.2)
    ax = fig.add_subplot()
    bottom = np.zeros(len(splits))
    for origin in origins:
        split_values = np.array([seconds.get((s, origin), 0.0) / per_unit for s in splits])
        ax.bar([visible(s) for s in splits], split_values, bottom=bottom, color=_color(origin),
               label=visible(origin))
        bottom += split_values
    ax.set_ylabel(unit)
    ax.set_xlabel("split (from samples when sharded)")
    ax.legend(fontsize=8)
    return Figure(name="splits", title=title, png=_png(fig))


def rejects_plot(rows: Sequence[tuple[str, str, int]]) -> Figure:
    """Horizontal bars: rejects per stage and error type, from ``(stage, error_type, rejects)``
    rows, most frequent first."""
    title = "Rejects by stage and reason"
    if not rows:
        return Figure(name="rejects", title=title, png=None, note="No rejects in the catalog.")
    shown = rows[:MAX_BARS]
    fig = _new_figure(7, 1.2 + 0.3 * len(shown))
    ax = fig.add_subplot()
    labels = [_cut(visible(f"{stage} / {error}")) for stage, error, _ in shown]
    ax.barh(range(len(shown)), [n for _, _, n in shown], color="tab:red")
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_xlabel("rejects")
    note = f"The {MAX_BARS} most frequent of {len(rows)} reasons." if len(rows) > MAX_BARS else None
    return Figure(name="rejects", title=title, png=_png(fig), note=note)


def scores_plot(rows: Sequence[tuple[str, int, int]]) -> Figure:
    """Aligner score distribution per origin, from ``(origin, bin, words)`` rows (bin k holds
    scores in [k/SCORE_BINS, (k+1)/SCORE_BINS), the last one 1.0 too): each origin's share of its
    scored words per bin, so origins of different sizes compare."""
    title = "Aligner scores of the words (scored words only; interpolated words have none)"
    counts: dict[str, np.ndarray] = {}
    for origin, k, n in rows:
        counts.setdefault(origin, np.zeros(SCORE_BINS))[int(k)] += n
    if not counts:
        return Figure(name="scores", title=title, png=None, note="No scored words in the catalog.")
    edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
    fig = _new_figure(7, 3.2)
    ax = fig.add_subplot()
    for origin, per_bin in sorted(counts.items()):
        total = int(per_bin.sum())
        ax.stairs(per_bin / total, edges, linewidth=1.8, color=_color(origin),
                  label=f"{visible(origin)} ({_n_label(total)} words)")
    ax.set_xlabel("aligner score (0: no confidence, 1: certain)")
    ax.set_ylabel("share of the origin's scored words")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    return Figure(name="scores", title=title, png=_png(fig))

