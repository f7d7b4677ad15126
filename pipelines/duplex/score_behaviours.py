"""Scoring the behaviour tasks: visual cues, repetition counting, background results and
simultaneous speech (microturn's own tasks beside Full-Duplex-Bench's; :mod:`.items_behaviours`
says how the items are made, :mod:`.layout_behaviours` what their annotation files hold).

The model's speech is its stream's silero segments (:func:`.audio.speech_segments`,
Full-Duplex-Bench's settings) merged across gaps up to 0.5 s (v1.5's model merge,
:func:`.timing.merged_model`); an *onset* is a merged segment's start. Two figures need finer
onsets, because the answers they time follow each other faster than that merge:

- counting aloud (one number per repetition, repetitions 0.3-3 s apart) reads the starts of the
  number words when the model's words are known, else *raw onsets*: the starts of unmerged
  silero segments (silero itself splits at 100 ms of silence);
- rendering sentence by sentence (the next sentence may start 80 ms after the last one ends,
  under any VAD's split, while a pause inside a sentence may be longer) and bringing up a result
  right after one's own sentence read *sentence onsets* when words are known: the start of the
  model's first word, of a word after one ending a sentence (``.``, ``?``, ``!``) and of a word
  after a silence of :data:`SENTENCE_GAP_S`; else the merged onsets.

Words come from ``output.json`` or ``timeline.jsonl`` (:mod:`.words`); a figure that needs
words is None (not 0) for an item without them. An onset is matched to at most one cue,
repetition or sentence (each takes, in time order, the first onset not yet taken in its window),
so one answer never counts twice.

Per task, the item's row and the report section (rates pooled over cues, repetitions, sentences;
a median or rate with nothing to average is None):

- ``visual_cue``: a cue is *hit* when an onset falls in ``[t, t + CUE_WINDOW_S]`` (t the first
  frame showing it); it is *answered early* when an onset falls after the request's end plus
  :data:`EARLY_GRACE_S` (or after the previous cue's window) and before ``t``: answering before
  seeing; an onset inside the answer window of one of the request's other cues
  (``other_cues_s``: its repeat cues) answers that cue and is not early. Section: ``hit_rate``,
  ``early_rate`` (over cues), ``latency_s`` (median onset - t over hits).
- ``repetition``: the count the model said, from its words starting from the first annotated
  repetition's end (less one 200 ms chunk, the timeline's word resolution) to
  :data:`CUE_WINDOW_S` after the last one's (what answers the repetitions; a number said before
  them answers something else, such as another cue of the request): when the reference counts
  aloud, the number of number words; else the last number said. ``count_correct`` is 1 when
  that is the annotation's ``count``, 0 when not (or when no number was said), None without
  words. For aloud items each repetition's end ``r`` is hit when a number word starts (words
  known) or a raw onset falls (no words) in ``[r, r + REP_WINDOW_S]``. Section:
  ``count_accuracy`` over the ``count_n`` items with words, ``rep_hit_rate`` over the
  repetitions of the ``n_aloud`` aloud items.
- ``background_result``: the user has *yielded* at the end of the first of the user's merged
  speech segments (silero on ``input.wav``, merged across 0.6 s as v1.5 merges the user) that
  ends at or after the arrival, or at the arrival when none does: the synthesizer's own rule
  (the mention follows the first user turn ending at or after the arrival). The *mention* is
  the first sentence onset in ``[arrival, yield + MENTION_WINDOW_S]`` (a model that holds the
  floor may bring the result up right after its own sentence); an onset before the arrival is
  never one. ``delay_s`` = mention - arrival; ``over_user`` is 1 when the mention's onset lies
  inside the user's speech (an unmerged silero segment of ``input.wav``: the model talks over
  the user), else 0. A *false mention* (needs words) is the model saying a key word of the
  result (a word of it of 4 letters or more, or with a digit, that is no common function word
  and that the user did not say in the item: ``transcription.json``) between the delegation's
  end and the arrival: it gave a result it could not yet know. Section: ``mention_rate``,
  ``delay_s`` (median over mentions), ``over_user_share`` (of mentions), ``false_mention_rate``
  (over the ``false_n`` items with words).
- ``simultaneous``: a source sentence is *rendered* when the model's merged speech overlaps
  ``[source_start, source_end + RENDER_WINDOW_S]``; its *lag* is the first sentence onset not
  taken by an earlier sentence at or after the source's start and within that window, minus the
  source's start (a rendering more than 3 s behind its source can so be counted for the next
  sentence). Section: ``rendered_share`` (of sentences), ``lag_s`` (median),
  ``lag_in_range_share`` (of the ``lag_n`` lags, those in [LAG_MIN_S, LAG_MAX_S]).
"""

from __future__ import annotations

import json
import os
import re
import statistics
from collections import Counter
from collections.abc import Sequence

from microturn.pipelines.duplex import timing
from microturn.pipelines.duplex.audio import Segment
from microturn.pipelines.duplex.items_behaviours import BEHAVIOUR_TASKS, CUE_WINDOW_MS, RENDER_WINDOW_MS
from microturn.pipelines.duplex.layout import Item
from microturn.pipelines.duplex.words import CHUNK_S, Chunk, Words
from microturn.schemas.numbers import cardinal

__all__ = ["BEHAVIOUR_ITEM_METRICS", "BEHAVIOUR_METRICS", "BEHAVIOUR_TASKS", "CUE_WINDOW_S", "EARLY_GRACE_S",
           "LAG_MAX_S", "LAG_MIN_S", "MENTION_WINDOW_S", "RENDER_WINDOW_S", "REP_WINDOW_S", "SENTENCE_GAP_S",
           "key_words", "number_values", "score_behaviour", "sentence_onsets", "summarise_behaviour"]

# The section keys per task, in table order (the report's and the HTML page's columns).
BEHAVIOUR_METRICS = {
    "visual_cue": ("n_cues", "hit_rate", "early_rate", "latency_s"),
    "repetition": ("count_n", "count_accuracy", "n_aloud", "rep_hit_rate"),
    "background_result": ("mention_rate", "delay_s", "over_user_share", "false_n", "false_mention_rate"),
    "simultaneous": ("n_segments", "rendered_share", "lag_s", "lag_n", "lag_in_range_share"),
}
# The per-item row keys per task, in table order (the HTML page's item tables).
BEHAVIOUR_ITEM_METRICS = {
    "visual_cue": ("n_cues", "hit_rate", "early_rate", "latency_s"),
    "repetition": ("count", "said_count", "count_correct", "rep_hit_rate"),
    "background_result": ("mentioned", "delay_s", "over_user", "false_mention"),
    "simultaneous": ("n_segments", "rendered_share", "lag_s", "lag_in_range_share"),
}

# An answer to a cue within 3 s of it: the synthesizer's cue reaction is lognormal with a 700 ms
# median (90% within 430-1140 ms, picture naming takes 600-1000 ms), so 3 s is over twice the
# slowest ordinary answer; later speech is no longer an answer to what was just shown.
CUE_WINDOW_S = CUE_WINDOW_MS / 1000
# Speech within 0.5 s of the request's end answers the request itself ("Okay, I'll watch"):
# turn-transition gaps have a median of ~200 ms, so 0.5 s holds most acknowledgements; speech
# after it and before the cue is an answer given before seeing.
EARLY_GRACE_S = 0.5
# A counting word within 1.5 s of the repetition's end: the cue reaction's 99th percentile is
# 1.4 s (700 ms * exp(2.33 * 0.3)); more would let one word answer the next repetition too
# (periods are 0.3-3 s; the one-onset-per-repetition matching keeps that from counting twice).
REP_WINDOW_S = 1.5
# A result is mentioned within 10 s after the user yields: the next free turn starts ~0.2 s
# after a yield (median turn gap), and 10 s leaves room to first finish a reply of a few
# sentences (~3 words per second); later it is no longer news brought up when it came.
MENTION_WINDOW_S = 10.0
# A rendering is heard within 3 s after its source sentence ends (renderings trail by 1-3 s).
RENDER_WINDOW_S = RENDER_WINDOW_MS / 1000
# The lag of simultaneous rendering: interpreters keep an ear-voice span of about 2-3 s (Gile
# 1995; Christoffels & de Groot 2004) and shadowers follow closer; the synthesizer draws 1-3 s.
# Under 1 s no phrase of the source has ended to be rendered; over 3 s the renderer falls behind.
LAG_MIN_S = 1.0
LAG_MAX_S = 3.0
# A rendered sentence starts after a silence of 0.5 s in the model's words (v1.5's model merge
# gap: a shorter pause lies inside one utterance). Timeline words span their 200 ms chunk, so
# 0.5 s is two chunks without text and more.
SENTENCE_GAP_S = 0.5
_SENTENCE_END = (".", "?", "!")
# A word that tells a result is one of 4 letters or more (or holding a digit) that no talk
# without the result would say: these common words of 4+ letters are not evidence of it.
_FUNCTION_WORDS = frozenset(
    "about after again also been before being could does doing down each from have having here into just "
    "more most much only other over same should some such than that their them then there these they this "
    "those through under very were what when where which while will with would your yours okay sure "
    "thanks thank let's look check".split())
_TOKEN = re.compile(r"[^\w'-]+")
_TENS = {cardinal(n): n for n in range(20, 100, 10)}
_NUMBERS = {cardinal(n): n for n in range(0, 101)}


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _norm(text: str) -> str:
    return _TOKEN.sub("", text.lower()).strip("-'")


def number_values(chunks: Sequence[Chunk]) -> list[tuple[float, int]]:
    """``(start_s, value)`` of each number said in ``chunks``: digits (``"5"``), number words
    (``"five"``, ``"twenty-one"``), and a tens word followed by a unit word as one number
    (``"twenty" "one"`` -> 21). Chunks without a start are skipped."""
    out: list[tuple[float, int]] = []
    last_tens: int | None = None  # index into out of a bare tens word that a unit may complete
    for text, start, _ in chunks:
        if start is None:
            continue
        for token in text.split():
            word = _norm(token)
            value = int(word) if word.isdigit() and len(word) <= 6 else _NUMBERS.get(word)
            if value is None:
                last_tens = None
                continue
            if last_tens is not None and 0 < value < 10 and word.isalpha():
                out[last_tens] = (out[last_tens][0], out[last_tens][1] + value)
                last_tens = None
                continue
            out.append((start, value))
            last_tens = len(out) - 1 if word in _TENS else None
    return out


def _match(targets: Sequence[tuple[float, float]], onsets: Sequence[float]) -> list[float | None]:
    """For each ``(lo, hi)`` window in order, the first onset in it not taken by an earlier one."""
    taken: set[int] = set()
    out: list[float | None] = []
    for lo, hi in targets:
        pick = next((i for i, o in enumerate(onsets) if i not in taken and lo <= o <= hi), None)
        if pick is not None:
            taken.add(pick)
        out.append(None if pick is None else onsets[pick])
    return out


def _inside(t: float, segments: Sequence[Segment]) -> bool:
    return any(s <= t < e for s, e in segments)


def _details(item: Item) -> dict:
    if item.details is None:
        raise ValueError(f"item {item.path} is taken as {item.task} but holds no annotation file of that task; "
                         "its figures come from that file")
    return item.details


def sentence_onsets(chunks: Sequence[Chunk]) -> list[float]:
    """Starts of the sentences in the model's words (module notes)."""
    out: list[float] = []
    last_end: float | None = None
    ended = True
    for text, start, end in chunks:
        if start is None or not text.strip():
            continue
        if ended or (last_end is not None and start - last_end >= SENTENCE_GAP_S):
            out.append(start)
        ended = text.rstrip().rstrip("\"')").endswith(_SENTENCE_END)
        last_end = end if end is not None else start
    return out


def _visual_cue(d: dict, merged: Sequence[Segment]) -> dict:
    onsets = [s for s, _ in merged]
    cues = d["cues"]
    hits = _match([(c["t_s"], c["t_s"] + CUE_WINDOW_S) for c in cues], onsets)
    others = [(o, o + CUE_WINDOW_S) for o in d.get("other_cues_s", ())]
    free = [o for o in onsets if not any(lo <= o <= hi for lo, hi in others)]
    rows = []
    floor = d["request_end_s"] + EARLY_GRACE_S
    for cue, onset in zip(cues, hits, strict=True):
        t = cue["t_s"]
        early = any(floor < o < t for o in free)
        rows.append({"t_s": t, "cue": cue["cue"], "onset_s": onset, "hit": int(onset is not None),
                     "latency_s": None if onset is None else round(onset - t, 3), "early": int(early)})
        floor = max(floor, t + CUE_WINDOW_S)
    latencies = [r["latency_s"] for r in rows if r["latency_s"] is not None]
    return {"cues": rows, "n_cues": len(rows), "hit_rate": _mean([r["hit"] for r in rows]),
            "early_rate": _mean([r["early"] for r in rows]), "latency_s": _median(latencies)}


def _repetition(d: dict, raw: Sequence[Segment], words: Words | None) -> dict:
    said = numbers = None
    if words is not None:
        first, last = d["reps_s"][0] - CHUNK_S, d["reps_s"][-1] + CUE_WINDOW_S
        numbers = [(s, v) for s, v in number_values(words.chunks) if first <= s <= last]
        if d["aloud"]:
            said = len(numbers)
        else:
            said = numbers[-1][1] if numbers else None
    row: dict = {"count": d["count"], "aloud": d["aloud"], "said_count": said,
                 "count_correct": None if words is None else int(said == d["count"]),
                 "reps": None, "rep_hit_rate": None}
    if d["aloud"]:
        onsets = [s for s, _ in numbers] if numbers is not None else [s for s, _ in raw]
        found = _match([(r, r + REP_WINDOW_S) for r in d["reps_s"]], onsets)
        row["reps"] = [{"t_s": r, "onset_s": o, "hit": int(o is not None)} for r, o in zip(d["reps_s"], found,
                                                                                          strict=True)]
        row["rep_hit_rate"] = _mean([r["hit"] for r in row["reps"]])
    return row


def _user_words(item: Item) -> set[str]:
    path = os.path.join(item.path, "transcription.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return {_norm(w) for c in data.get("chunks", []) for w in str(c.get("text", "")).split()}
    except (OSError, ValueError, AttributeError):
        return set()


def key_words(result: str, heard: set[str]) -> set[str]:
    """The words of ``result`` that tell it (see the module notes on false mentions)."""
    out = set()
    for token in result.split():
        word = _norm(token)
        if (len(word) >= 4 or any(ch.isdigit() for ch in word)) and word not in _FUNCTION_WORDS and word not in heard:
            out.add(word)
    return out


def _background(item: Item, d: dict, merged: Sequence[Segment], user_raw: Sequence[Segment],
                words: Words | None) -> dict:
    arrival = d["arrival_s"]
    user_merged = timing.merged_user(user_raw)
    yielded = next((e for _, e in user_merged if e >= arrival), arrival)
    onsets = sentence_onsets(words.chunks) if words is not None else [s for s, _ in merged]
    mention = next((s for s in onsets if arrival <= s <= yielded + MENTION_WINDOW_S), None)
    row: dict = {"arrival_s": arrival, "yield_s": round(yielded, 3), "mention_s": mention,
                 "mentioned": int(mention is not None),
                 "delay_s": None if mention is None else round(mention - arrival, 3),
                 "over_user": None if mention is None else int(_inside(mention, user_raw)),
                 "false_mention": None, "false_words": None}
    if words is not None:
        keys = key_words(d["result"], _user_words(item))
        since = d["delegated_s"] if d["delegated_s"] is not None else 0.0
        told = sorted({_norm(w) for text, start, _ in words.chunks if start is not None and since <= start < arrival
                       for w in text.split()} & keys)
        row.update(false_mention=int(bool(told)), false_words=told)
    return row


def _simultaneous(d: dict, merged: Sequence[Segment], words: Words | None) -> dict:
    segments = d["segments"]
    onsets = sentence_onsets(words.chunks) if words is not None else [s for s, _ in merged]
    windows = [(g["source_start_s"], g["source_end_s"] + RENDER_WINDOW_S) for g in segments]
    found = _match(windows, onsets)
    rows = []
    for (lo, hi), onset in zip(windows, found, strict=True):
        rendered = any(s < hi and e > lo for s, e in merged)
        rows.append({"source_start_s": lo, "rendered": int(rendered),
                     "lag_s": None if onset is None else round(onset - lo, 3)})
    lags = [r["lag_s"] for r in rows if r["lag_s"] is not None]
    return {"segments": rows, "n_segments": len(rows), "rendered_share": _mean([r["rendered"] for r in rows]),
            "lag_s": _median(lags), "lag_n": len(lags),
            "lag_in_range_share": _mean([int(LAG_MIN_S <= x <= LAG_MAX_S) for x in lags])}


def score_behaviour(item: Item, *, user_segments: Sequence[Segment], model_segments: Sequence[Segment],
                    words: Words | None) -> dict:
    """The task figures of one behaviour item's row (module notes), from the raw silero segments
    of the user's and the model's stream and the model's words (None: unknown)."""
    d = _details(item)
    merged = timing.merged_model(model_segments)
    if item.task == "visual_cue":
        return _visual_cue(d, merged)
    if item.task == "repetition":
        return _repetition(d, model_segments, words)
    if item.task == "background_result":
        return _background(item, d, merged, user_segments, words)
    assert item.task == "simultaneous", item.task
    return _simultaneous(d, merged, words)


def summarise_behaviour(task: str, rows: Sequence[dict]) -> dict:
    """The report section of a behaviour task from its items' rows (module notes)."""
    section: dict = {"n": len(rows)}
    if task == "visual_cue":
        cues = [c for r in rows for c in r["cues"]]
        section.update(n_cues=len(cues), hit_rate=_mean([c["hit"] for c in cues]),
                       early_rate=_mean([c["early"] for c in cues]),
                       latency_s=_median([c["latency_s"] for c in cues if c["latency_s"] is not None]))
    elif task == "repetition":
        known = [r["count_correct"] for r in rows if r["count_correct"] is not None]
        reps = [x["hit"] for r in rows if r["reps"] for x in r["reps"]]
        section.update(count_n=len(known), count_accuracy=_mean(known),
                       n_aloud=sum(1 for r in rows if r["aloud"]), rep_hit_rate=_mean(reps))
    elif task == "background_result":
        mentions = [r for r in rows if r["mentioned"]]
        known = [r["false_mention"] for r in rows if r["false_mention"] is not None]
        section.update(mention_rate=_mean([r["mentioned"] for r in rows]),
                       delay_s=_median([r["delay_s"] for r in mentions]),
                       over_user_share=_mean([r["over_user"] for r in mentions]),
                       false_n=len(known), false_mention_rate=_mean(known))
    else:
        assert task == "simultaneous", task
        segments = [s for r in rows for s in r["segments"]]
        lags = [s["lag_s"] for s in segments if s["lag_s"] is not None]
        section.update(n_segments=len(segments), rendered_share=_mean([s["rendered"] for s in segments]),
                       lag_s=_median(lags), lag_n=len(lags),
                       lag_in_range_share=_mean([int(LAG_MIN_S <= x <= LAG_MAX_S) for x in lags]))
    section["words"] = dict(sorted(Counter(r["words"] for r in rows).items()))
    return section
