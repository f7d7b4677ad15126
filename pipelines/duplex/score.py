"""Scoring a folder of Full-Duplex-Bench items: one report of v1 and v1.5 metrics per task, plus a
row per item saying how each figure came about.

Report (one dict, keyed by Full-Duplex-Bench's task names; a task with no item is absent)::

    {"smooth_turn_taking": {"n", "tor", "latency_s", "response_latency_s", "words"},
     "pause_handling":     {"n", "tor", "words"},
     "user_interruption":  {"n", "tor", "latency_s", "stop_latency_s", "response_latency_s",
                            "yield_n", "yield_rate", "yield_s", "words"},
     "backchannel":        {"n", "tor", "frequency", "jsd", "jsd_n", "words"},
     "visual_cue":         {"n", "n_cues", "hit_rate", "early_rate", "latency_s", "words"},
     "repetition":         {"n", "count_n", "count_accuracy", "n_aloud", "rep_hit_rate", "words"},
     "background_result":  {"n", "mention_rate", "delay_s", "over_user_share", "false_n",
                            "false_mention_rate", "words"},
     "simultaneous":       {"n", "n_segments", "rendered_share", "lag_s", "lag_n",
                            "lag_in_range_share", "words"},
     "vap": {...}}

The four behaviour tasks (visual cues, repetition counting, background results, simultaneous
speech) are microturn's own, scored by :mod:`.score_behaviours` (definitions and thresholds there).

Means are over items as Full-Duplex-Bench takes them: TOR and backchannel frequency over every
item; latency over the TOR-1 items (negative latency counted as 0); JSD over the items with a
reference distribution (``jsd_n`` of them); v1.5's stop and response latency over every interval
of the task's items (:mod:`.timing`). A mean with nothing to average is None, never 0. ``words``
counts the items by where their words came from (``output.json``, ``timeline.jsonl`` or ``vad``:
:mod:`.words`, :mod:`.rules`).

Beyond Full-Duplex-Bench (microturn's own, named so): an interruption item's ``yield_s`` is how
long after the interrupt's start the model's speech that was on then, or that began within
:data:`YIELD_WITHIN_S` (0.6 s) of it, ends; None when there was none (the user did not talk over
the model: the item is no barge-in on it). The item ``yielded`` when ``yield_s`` is at most 0.6 s.
The section's ``yield_n`` counts the items that were barge-ins on the model, ``yield_rate`` is
the share of them it yielded, and ``yield_s`` their median. Speech the model starts later is a
new turn, taken over the user or not (TOR and latency judge it), not a failure to stop. The
model's speech is its merged VAD segments (v1.5's, :mod:`.timing`), so a pause under 0.5 s does
not count as stopping. v1.5's ``stop_latency_s`` answers another question (how long every overlap
of the whole item lasts) and is kept as the reference defines it.

Full-Duplex-Bench's interruption script averages latency only over the items its LLM judge rated;
the judge (and every other LLM-judged score) is not part of this scorer, so latency here is over
all TOR-1 items.

Extra sections: ``extra`` maps a report key to a function of the item list returning a dict. By
default the Voice Activity Projection scoring, ``microturn.pipelines.duplex.vap.score_vap``, is
the ``"vap"`` section whenever that module is present.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from microturn.pipelines.duplex import rules, score_behaviours, timing
from microturn.pipelines.duplex.audio import SAMPLE_RATE, speech_segments
from microturn.pipelines.duplex.layout import TASKS, Item, find_items, item_streams, read_reference_distributions
from microturn.pipelines.duplex.words import read_words

__all__ = ["VAP_SECTION", "default_sections", "score_item", "score_items", "summarise"]

VAP_SECTION = "vap"
# A barge-in is yielded to when the model is silent within this long of its start (module notes):
# people stop within a few hundred ms of being talked over (the synthesizer's reaction median is
# 400 ms), and a system that needs longer is heard talking over its user.
YIELD_WITHIN_S = 0.6
Section = Callable[[list[Item]], dict]


def default_sections() -> dict[str, Section]:
    """The extra report sections present in this tree: ``{"vap": score_vap}`` once
    :mod:`microturn.pipelines.duplex.vap` exists, else none."""
    try:
        # Another module of this package, added separately: absent until then (ignore for pyright).
        from microturn.pipelines.duplex.vap import score_vap  # pyright: ignore[reportMissingImports]
    except ModuleNotFoundError as exc:
        if exc.name != "microturn.pipelines.duplex.vap":
            raise
        return {}
    return {VAP_SECTION: score_vap}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _lengths(intervals: Sequence[tuple[float, float]]) -> list[float]:
    return [e - s for s, e in intervals]


def _yield_s(model: Sequence[tuple[float, float]], start_s: float) -> float | None:
    """Seconds from ``start_s`` until the model's speech on at ``start_s`` or begun within
    :data:`YIELD_WITHIN_S` of it ends (module notes); None when there is none."""
    ends = [e for s, e in model if s < start_s + YIELD_WITHIN_S and e > start_s]
    return round(max(ends) - start_s, 3) if ends else None


def score_item(item: Item, reference: Mapping[str, tuple[float, ...]] | None = None) -> dict:
    """One item's row: its task's per-item figures, where its words came from, and v1.5's intervals.
    ``reference``: backchannel distributions by item folder name for items without their own."""
    user_N, model_N = item_streams(item)
    model_segments = speech_segments(model_N)
    user_segments = speech_segments(user_N)
    user_merged = timing.merged_user(user_segments)
    model_merged = timing.merged_model(model_segments)
    words = read_words(item)
    row: dict = {"item": item.rel, "task": item.task, "words": words.source if words else "vad",
                 "n_words": len(words.chunks) if words else None}
    if item.task in score_behaviours.BEHAVIOUR_TASKS:
        row.update(score_behaviours.score_behaviour(item, user_segments=user_segments, model_segments=model_segments,
                                                    words=words))
    elif item.task == "backchannel":
        duration_s = model_N.size / SAMPLE_RATE
        segments = rules.rounded_segments(model_segments, duration_s)
        tor, found = rules.backchannel_walk(segments, words.chunks if words else None)
        distribution = item.distribution
        if distribution is None and reference is not None:
            if item.name not in reference:
                raise ValueError(f"the backchannel reference has no distribution for item {item.name!r} ({item.path})")
            distribution = reference[item.name]
        row.update(tor=tor, backchannels=[list(s) for s in found], frequency=len(found) / duration_s,
                   jsd=None if distribution is None else rules.backchannel_jsd(found, duration_s, distribution))
    else:
        if words is not None:
            try:
                tor, latency = rules.take_turn(words.chunks, item.event_s)
            except ValueError as exc:
                raise ValueError(f"item {item.path}, {words.source}: {exc}") from None
        else:
            segments = model_segments
            if item.task == "user_interruption":
                assert item.event_s is not None, "an interruption item always has its interrupt's end"
                segments = rules.crop_segments(segments, item.event_s)
            tor, latency = rules.take_turn_vad(segments, item.event_s)
        row.update(tor=tor)
        if item.task != "pause_handling":
            row.update(latency_s=latency)
    if item.task == "user_interruption":
        assert item.event_start_s is not None, "an interruption item always has its interrupt's start"
        row["yield_s"] = _yield_s(model_merged, item.event_start_s)
        row["yielded"] = None if row["yield_s"] is None else int(row["yield_s"] <= YIELD_WITHIN_S)
    stops = timing.overlaps(user_merged, model_merged)
    gaps = timing.response_gaps(user_merged, model_merged)
    row.update(stop_intervals=[list(s) for s in stops], response_intervals=[list(g) for g in gaps],
               stop_latency_s=_mean(_lengths(stops)), response_latency_s=_mean(_lengths(gaps)))
    return row


def summarise(rows: Sequence[dict]) -> dict:
    """The report's task sections from per-item rows (module notes for the means)."""
    report: dict = {}
    for task in TASKS:
        mine = [r for r in rows if r["task"] == task]
        if not mine:
            continue
        if task in score_behaviours.BEHAVIOUR_TASKS:
            report[task] = score_behaviours.summarise_behaviour(task, mine)
            continue
        section: dict = {"n": len(mine), "tor": _mean([r["tor"] for r in mine])}
        if task in ("smooth_turn_taking", "user_interruption"):
            section["latency_s"] = _mean([r["latency_s"] for r in mine if r["tor"] == 1 and r["latency_s"] is not None])
        if task == "user_interruption":
            section["stop_latency_s"] = _mean([e - s for r in mine for s, e in r["stop_intervals"]])
            barged = [r for r in mine if r["yield_s"] is not None]
            section["yield_n"] = len(barged)
            section["yield_rate"] = _mean([r["yielded"] for r in barged])
            section["yield_s"] = float(statistics.median(r["yield_s"] for r in barged)) if barged else None
        if task in ("smooth_turn_taking", "user_interruption"):
            section["response_latency_s"] = _mean([e - s for r in mine for s, e in r["response_intervals"]])
        if task == "backchannel":
            jsds = [r["jsd"] for r in mine if r["jsd"] is not None]
            section.update(frequency=_mean([r["frequency"] for r in mine]), jsd=_mean(jsds), jsd_n=len(jsds))
        section["words"] = dict(sorted(Counter(r["words"] for r in mine).items()))
        report[task] = section
    return report


def score_items(root: str, *, task: str | None = None, backchannel_reference: str | None = None,
                extra: Mapping[str, Section] | None = None) -> tuple[dict, list[dict]]:
    """``(report, rows)`` for every item under ``root`` (:func:`~.layout.find_items`; ``task``
    picks one task and names the task of items without an annotation). ``backchannel_reference``:
    a ``{item folder name: distribution}`` JSON file for backchannel items without their own.
    ``extra``: report sections beyond the tasks (default: :func:`default_sections`)."""
    items = find_items(root, task=task)
    reference = read_reference_distributions(backchannel_reference) if backchannel_reference else None
    rows = [score_item(item, reference) for item in items]
    report = summarise(rows)
    for key, section in (default_sections() if extra is None else extra).items():
        report[key] = section(items)
    return report, rows
