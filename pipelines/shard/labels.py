"""Per-chunk label bits of one stream over a whole conversation (:class:`Label`).

VOICED comes from speech, not from turns: the stream's speech spans
(:func:`microturn.pipelines.shard.activity.speech_spans`: its words and the frame-level
activity of its own audio, inside its diarized segments, pauses under 200 ms closed) and a
chunk is VOICED when that speech covers at least 100 ms of its 200 ms. So a silence of 200 ms
or more inside a turn that covers most of a chunk leaves the chunk unvoiced (a pause is not
speech), and a silence under 200 ms never does. OVERLAP marks the chunks where both streams
are VOICED. TURN_START, TURN_END and BACKCHANNEL keep following the turns. CUE_RESPONSE,
BACKGROUND and SIMULTANEOUS mark the spans of the stream's answers to visual cues, mentions of
background results and renderings, as the events of those types give them (``behaviour_spans``).

Spans of turns are half-open ms intervals; a span marks every 200 ms chunk it intersects, so a
turn ending exactly on a chunk boundary does not mark the next chunk. Point events (word
starts, turn starts and ends, interruptions) mark the chunk holding their time; a turn's end is
the chunk of its last millisecond (end_ms - 1).

Shape suffixes follow :mod:`microturn.schemas.legend`: K chunks of the conversation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from microturn.pipelines.shard.activity import voiced_chunks
from microturn.schemas.sample import CHUNK_MS, LABEL_DTYPE, Label
from microturn.schemas.turns import Turn

# Event type -> (label bit, payload keys of the span start and end the stream speaks in).
_BEHAVIOURS = {
    "visual_cue": (Label.CUE_RESPONSE, "response_start_ms", "response_end_ms"),
    "background_result": (Label.BACKGROUND, "mention_ms", "mention_end_ms"),
    "simultaneous": (Label.SIMULTANEOUS, None, "end_ms"),  # starts at the event's own time
}


def behaviour_spans(events: Iterable[dict]) -> dict[Label, list[tuple[str, int, int]]]:
    """``{bit: [(speaker, start_ms, end_ms), ...]}`` of the events that mark a behaviour's speech
    (conversation times; payloads already decoded). A background result gives its span once,
    from its "mention" event."""
    out: dict[Label, list[tuple[str, int, int]]] = {flag: [] for flag, _, _ in _BEHAVIOURS.values()}
    for e in events:
        spec = _BEHAVIOURS.get(e["type"])
        if spec is None or (e["type"] == "background_result" and e["payload"].get("phase") != "mention"):
            continue
        flag, start_key, end_key = spec
        start = e["t_ms"] if start_key is None else e["payload"][start_key]
        out[flag].append((e["speaker"], int(start), int(e["payload"][end_key])))
    return out


def mark_spans(bits_K: np.ndarray, spans_ms: Iterable[tuple[int, int]], flag: Label) -> None:
    """Set ``flag`` on every chunk that a span intersects (in place)."""
    c = bits_K.shape[0]
    for s, e in spans_ms:
        if e <= s:
            continue
        lo, hi = s // CHUNK_MS, min(c - 1, (e - 1) // CHUNK_MS)
        if lo <= hi:
            bits_K[lo: hi + 1] |= bits_K.dtype.type(flag)


def mark_points(bits_K: np.ndarray, times_ms: Iterable[int], flag: Label) -> None:
    """Set ``flag`` on the chunk holding each time (in place); times past the end are ignored."""
    idx = np.fromiter((t // CHUNK_MS for t in times_ms), dtype=np.int64)
    idx = idx[(idx >= 0) & (idx < bits_K.shape[0])]
    bits_K[idx] |= bits_K.dtype.type(flag)


def stream_labels(chunks: int, *, speakers: frozenset[str], speech_ms: Sequence[tuple[int, int]],
                  other_speech_ms: Sequence[tuple[int, int]], main_turns: Sequence[Turn],
                  backchannels: Sequence[Turn], word_starts_ms: Iterable[int], interruptions_ms: Iterable[int],
                  leaks_ms: Sequence[tuple[int, int]],
                  behaviours: dict[Label, list[tuple[str, int, int]]] | None = None) -> np.ndarray:
    """uint16 [K] label bits of the stream carrying ``speakers``.

    ``speech_ms`` is the stream's speech and ``other_speech_ms`` the other stream's, as
    :func:`microturn.pipelines.shard.activity.stream_speech` gives them (VOICED follows the
    first, OVERLAP both); ``main_turns`` and ``backchannels`` are the whole conversation's as
    :func:`microturn.schemas.turns.split_backchannels` gives them (consecutive turns of one
    speaker merged). ``behaviours`` is :func:`behaviour_spans` of the conversation's events.
    """
    bits_K = np.zeros(chunks, dtype=LABEL_DTYPE)
    mine = [t for t in main_turns if t.speaker in speakers]
    my_bc = [t for t in backchannels if t.speaker in speakers]
    voiced_K = voiced_chunks(chunks, speech_ms)
    bits_K[voiced_K] |= bits_K.dtype.type(Label.VOICED)
    mark_points(bits_K, word_starts_ms, Label.WORD_START)
    mark_points(bits_K, (t.start_ms for t in mine if t.end_ms > t.start_ms), Label.TURN_START)
    mark_points(bits_K, (t.end_ms - 1 for t in mine if t.end_ms > t.start_ms), Label.TURN_END)
    mark_spans(bits_K, ((t.start_ms, t.end_ms) for t in my_bc), Label.BACKCHANNEL)
    mark_points(bits_K, interruptions_ms, Label.INTERRUPT)
    bits_K[voiced_K & voiced_chunks(chunks, other_speech_ms)] |= bits_K.dtype.type(Label.OVERLAP)
    mark_spans(bits_K, leaks_ms, Label.LEAK)
    for flag, spans in (behaviours or {}).items():
        mark_spans(bits_K, ((s, e) for who, s, e in spans if who in speakers), flag)
    return bits_K
