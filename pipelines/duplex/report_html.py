"""``DIR/report.html`` of ``microturn eval interaction``: summary tables and one timeline per item.

One self-contained page, in the audit report's manner (plots drawn by matplotlib on its Agg
canvas, no pyplot state), but with every picture inlined as a ``data:image/png;base64`` URL, so
the page is one file that opens from disk and loads nothing from a network.

- At the top: per task, a table with a row per system and the task's metrics (:data:`TASK_METRICS`),
  and the VAP figures when the reports hold them (a row per system and category: shift/hold,
  shift prediction, backchannel prediction).
- Then per item: its path and task, each system's figures on it (the scorer's per-item rows:
  its task's metrics and where its words came from), and a timeline picture. Lanes over the item's time: the user
  (VAD of ``input.wav``) and then each system (VAD of its ``output.wav``), speech drawn as bars,
  with the same silero settings as the metrics
  (:func:`~microturn.pipelines.duplex.audio.speech_segments`); the annotated events across all
  lanes (turn end: a dashed line; pause, interrupt: shaded spans; the reference listener's
  backchannels: hatched spans; the behaviour tasks' request end, cues, repetition ends and
  background arrival: coloured dashed lines, rendered source sentences: shaded spans); and the
  model's text at its 200 ms chunks, printed under the model's lane in two alternating rows so
  that neighbouring chunks do not overwrite each other.

Every name and text read from the items is HTML-escaped with control characters shown as escapes.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence

from microturn.pipelines.duplex.audio import SAMPLE_RATE, Segment, read_mono_N, speech_segments
from microturn.pipelines.duplex.score_behaviours import BEHAVIOUR_ITEM_METRICS, BEHAVIOUR_METRICS
from microturn.schemas.text import visible

__all__ = ["ITEM_METRICS", "TASK_METRICS", "VAP_COLUMNS", "item_events", "model_texts", "timeline_png", "vap_rows",
           "write_report"]

# Metrics per task, in table order (the design's report keys); a metric a report lacks is "-".
TASK_METRICS = {
    "smooth_turn_taking": ("tor", "latency_s", "response_latency_s"),
    "pause_handling": ("tor",),
    "user_interruption": ("tor", "latency_s", "stop_latency_s", "response_latency_s", "yield_n", "yield_rate",
                          "yield_s"),
    "backchannel": ("tor", "frequency", "jsd"),
    **BEHAVIOUR_METRICS,
}
# Per-item table columns where they differ from the section's (the behaviour tasks' rows).
ITEM_METRICS = {**TASK_METRICS, **BEHAVIOUR_ITEM_METRICS}
VAP_CATEGORIES = ("shift_hold", "shift_prediction", "backchannel_prediction")
VAP_COLUMNS = ("system", "category", "positives", "negatives", "balanced_accuracy", "auc")
LANE_COLORS = {"user": "tab:blue", "model": "tab:orange", "cascade": "tab:green", "reference": "tab:purple"}
_TEXT_CHARS = 14  # a chunk's text is cut to this many characters: 200 ms holds a word or two
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; margin: 1.5em 0 0.3em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #555; font-style: italic; } img { max-width: 100%; }
"""

Event = tuple[str, float, float]  # (kind, start_s, end_s); a point event has start == end


def _esc(text: object) -> str:
    return html.escape(visible(str(text)))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):  # the report's word sources: {"output.json": 2, "vad": 1}
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3f}"
    return str(value)


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _behaviour_events(folder: str) -> list[Event]:
    """The behaviour tasks' events: ``request end``, ``cue``, ``rep``, ``arrival`` (points) and
    the ``source`` sentences of a rendering (spans)."""
    events: list[Event] = []
    for name in ("visual_cue.json", "repetition.json"):
        data = _read_json(os.path.join(folder, name))
        if isinstance(data, dict):
            events.append(("request end", float(data["request_end_s"]), float(data["request_end_s"])))
            events += [("cue", float(c["t_s"]), float(c["t_s"])) for c in data.get("cues", [])]
            events += [("rep", float(t), float(t)) for t in data.get("reps_s", [])]
    background = _read_json(os.path.join(folder, "background.json"))
    if isinstance(background, dict):
        events.append(("arrival", float(background["arrival_s"]), float(background["arrival_s"])))
    rendering = _read_json(os.path.join(folder, "simultaneous.json"))
    if isinstance(rendering, dict):
        events += [("source", float(g["source_start_s"]), float(g["source_end_s"]))
                   for g in rendering.get("segments", [])]
    return events


def item_events(folder: str) -> list[Event]:
    """The annotated events of an item folder, in seconds: ``turn end`` (point), ``pause``,
    ``interrupt`` and ``backchannel`` (spans); of the behaviour tasks ``request end``, ``cue``,
    ``rep``, ``arrival`` (points) and ``source`` (spans). Unreadable annotations give none here
    (the scorer names them)."""
    events: list[Event] = []
    turn = _read_json(os.path.join(folder, "turn_taking.json"))
    pause = _read_json(os.path.join(folder, "pause.json"))
    interrupt = _read_json(os.path.join(folder, "interrupt.json"))
    backchannel = _read_json(os.path.join(folder, "backchannel.json"))
    try:
        events += _behaviour_events(folder)
        for entry in turn or []:
            events.append(("turn end", float(entry["timestamp"][0]), float(entry["timestamp"][0])))
        for kind, data in (("pause", pause), ("interrupt", interrupt)):
            for entry in data or []:
                events.append((kind, float(entry["timestamp"][0]), float(entry["timestamp"][1])))
        for start, end in (backchannel or {}).get("backchannels", []):
            events.append(("backchannel", float(start), float(end)))
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return events
    return events


def model_texts(folder: str) -> list[tuple[float, str]]:
    """``(chunk start_s, text)`` of each chunk of the session's ``timeline.jsonl`` that has text."""
    path = os.path.join(folder, "timeline.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
                text = str(row.get("text") or "").strip()
                if text:
                    out.append((float(row["start_ms"]) / 1000, text))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return out


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def timeline_png(duration_s: float, lanes: Sequence[tuple[str, list[Segment]]], events: Sequence[Event],
                 texts: Sequence[tuple[float, str]], *, title: str = "") -> bytes:
    """The timeline picture (module notes) as PNG bytes: ``lanes`` top to bottom as ``(name,
    speech segments)``; ``texts`` are drawn under the lane named ``model``."""
    rows = len(lanes)
    text_rows = 0.5 if texts else 0.0
    fig = _new_figure(11, 0.9 + 0.45 * rows + text_rows)
    ax = fig.add_subplot()
    y_of = {}
    for i, (name, segments) in enumerate(lanes):
        y = rows - 1 - i
        y_of[name] = y
        color = LANE_COLORS.get(name, "tab:gray")
        ax.broken_barh([(s, e - s) for s, e in segments], (y - 0.25, 0.5), facecolors=color, edgecolor=color)
    # Spans: (colour, hatch); a point event is a dashed line.
    styles = {"pause": ("tab:olive", None), "interrupt": ("tab:red", None), "backchannel": ("tab:purple", "///"),
              "source": ("tab:brown", None), "turn end": ("black", None), "request end": ("tab:gray", None),
              "cue": ("tab:red", None), "rep": ("tab:pink", None), "arrival": ("tab:cyan", None)}
    labelled = set()
    for kind, start, end in events:
        color, hatch = styles.get(kind, ("tab:gray", None))
        label = None if kind in labelled else kind
        labelled.add(kind)
        if end > start:
            ax.axvspan(start, end, facecolor=color, alpha=0.18, hatch=hatch, edgecolor=color, linewidth=0,
                       label=label)
        else:
            ax.axvline(start, color=color, linestyle="--", linewidth=1.2, label=label)
    if texts:
        y = y_of.get("model", 0) - 0.3
        for i, (start, text) in enumerate(texts):
            shown = text if len(text) <= _TEXT_CHARS else text[:_TEXT_CHARS - 1] + "\u2026"
            ax.text(start, y - 0.2 * (i % 2), visible(shown), fontsize=6.5, va="top", ha="left", color="#7a3d00",
                    clip_on=True)
            ax.plot([start, start], [y + 0.05, y - 0.2 * (i % 2)], color="#7a3d00", linewidth=0.6)
    ax.set_xlim(0, max(duration_s, 0.2))
    ax.set_ylim(-0.6 - (0.5 if texts and y_of.get("model", 0) == 0 else 0), rows - 0.4)
    ax.set_yticks(list(y_of.values()), list(y_of))
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    if labelled:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, ncol=len(labelled))
    if title:
        ax.set_title(visible(title), fontsize=9, loc="left")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for v in row:
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}>{_esc(_fmt(v))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def vap_rows(reports: dict[str, dict]) -> list[list]:
    """Rows of :data:`VAP_COLUMNS` from the reports' ``"vap"`` sections: per system and category,
    the counts of positive and negative events (the category's first two ``n_`` keys, e.g.
    ``n_shift`` and ``n_hold``), balanced accuracy and AUC."""
    rows = []
    for system, report in reports.items():
        vap = report.get("vap")
        for category in VAP_CATEGORIES:
            section = vap.get(category) if isinstance(vap, dict) else None
            if not isinstance(section, dict):
                continue
            counts = [k for k in section if k.startswith("n_") and k != "n_after_reference"][:2]
            names = [f"{k[2:]} {section[k]}" for k in counts] + ["-"] * (2 - len(counts))
            rows.append([system, category, *names, section.get("balanced_accuracy"), section.get("auc")])
    return rows


def summary_html(reports: dict[str, dict]) -> str:
    """The tables at the top: per task a row per system; the VAP rows when present."""
    parts = []
    for task, metrics in TASK_METRICS.items():
        rows = [[system, report[task].get("n"), *(report[task].get(m) for m in metrics), report[task].get("words")]
                for system, report in reports.items() if isinstance(report.get(task), dict)]
        if rows:
            parts.append(f"<h3>{_esc(task)}</h3>" + _table(["system", "n", *metrics, "words"], rows))
    rows = vap_rows(reports)
    if rows:
        parts.append("<h3>VAP</h3>" + _table(VAP_COLUMNS, rows))
    return "\n".join(parts) or '<p class="note">No system has a score.</p>'


def _item_table(task: str | None, rows: dict[str, dict]) -> str:
    if not rows:
        return ""
    metrics = ITEM_METRICS.get(task or "", ("tor",))
    return _table(["system", *metrics, "words"],
                  [[system, *(row.get(m) for m in metrics), row.get("words")] for system, row in rows.items()])


def _item_html(output: str, systems: Sequence[str], rel: str, rows: dict[str, dict]) -> str:
    first = os.path.join(output, systems[0], rel)
    input_N = read_mono_N(os.path.join(first, "input.wav"))
    user = speech_segments(input_N)
    lanes: list[tuple[str, list[Segment]]] = [("user", user)]
    for system in systems:
        path = os.path.join(output, system, rel, "output.wav")
        lanes.append((system, speech_segments(read_mono_N(path)) if os.path.exists(path) else []))
    item = _read_json(os.path.join(first, "item.json"))
    task = next((r["task"] for r in rows.values() if isinstance(r.get("task"), str)),
                item.get("task") if isinstance(item, dict) else None)
    texts = model_texts(os.path.join(output, "model", rel)) if "model" in systems else []
    png = timeline_png(input_N.size / SAMPLE_RATE, lanes, item_events(first), texts,
                       title=f"{rel} ({task})" if task else rel)
    picture = base64.b64encode(png).decode("ascii")
    said = " ".join(t for _, t in texts)
    caption = (f"<p class=\"note\">The model said: {_esc(said)}</p>" if said else
               ('<p class="note">The model said no text.</p>' if "model" in systems else ""))
    return (f'<section class="item"><h3>{_esc(rel)}{" (" + _esc(task) + ")" if task else ""}</h3>'
            f"{_item_table(task, rows)}"
            f'<img class="timeline" src="data:image/png;base64,{picture}" alt="timeline of {_esc(rel)}">'
            f"{caption}</section>")


def write_report(output: str, systems: Sequence[str], items: Sequence[str], reports: dict[str, dict],
                 rows: dict[str, list[dict]] | None = None) -> str:
    """Write ``output/report.html`` for the system trees under ``output`` (``output/<system>/<item>``)
    of the item paths ``items``, the scorer's ``reports`` and its per-item ``rows`` (``{system:
    [row with "item": the item's path]}``); returns its path."""
    if not systems:
        raise ValueError("no system to report on")
    sections = [f"<h2>Summary</h2>\n{summary_html(reports)}",
                "<p class=\"note\">Lanes: speech found by silero at Full-Duplex-Bench's settings in the user's "
                "input.wav and each system's output.wav. Turn end: dashed line; pause and interrupt: shaded; "
                "the reference listener's backchannels: hatched; request end, visual cue, repetition end and "
                "background arrival: coloured dashed lines; rendered source sentences: shaded. Under the "
                "model's lane: its text per 200 ms chunk.</p>",
                "<h2>Items</h2>"]
    by_item: dict[str, dict[str, dict]] = {}
    for system, system_rows in (rows or {}).items():
        for row in system_rows:
            by_item.setdefault(str(row.get("item")), {})[system] = row
    sections += [_item_html(output, systems, rel, by_item.get(rel, {})) for rel in items]
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>microturn eval interaction: {_esc(output)}</title><style>{_STYLE}</style></head>\n"
            f"<body><h1>Duplex interaction: {_esc(', '.join(systems))} on {len(items)} item(s)</h1>\n"
            + "\n".join(sections) + "\n</body></html>\n")
    path = os.path.join(output, "report.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path
