"""Where one stream's speaker(s) actually talk: the speech spans behind the VOICED label.

A diarized turn (a ``segments`` row) says who holds the floor, not when they make sound: it
runs across the pauses inside the turn. The speech of a stream is built from two pieces of
evidence, both kept inside the stream's own diarized segments:

- its words' spans (``words`` rows of its speakers);
- frame-level activity of the stream's own audio: a 10 ms frame is active when its RMS level
  is at most :data:`RELATIVE_FLOOR_DB` below the stream's speech level (the 95th percentile of
  the frame levels inside its segments) and above :data:`ABSOLUTE_FLOOR_DBFS`. Frames where
  the stream's audio also carries another stream's speech (``shared_ms``: a shared channel
  gated open while others talk, see :mod:`.streams`) are no evidence, as the energy there
  cannot be told apart; there a stream counts as talking where its own words say so, or, for a
  stream without any words, where its diarization says so.

Pauses shorter than :data:`MIN_PAUSE_MS` between two pieces of speech are closed (they are the
gaps between words and syllables, not pauses). :func:`voiced_chunks` then marks a chunk voiced
when speech covers at least :data:`MIN_VOICED_MS` of it, so a silence of 200 ms or more that
covers most of a chunk leaves it unvoiced.

Shape suffixes follow :mod:`microturn.schemas.legend`: N samples at 16 kHz, K chunks. The 10 ms
analysis frames have no letter there: ``level_per_frame``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from microturn.pipelines.shard.streams import Stream, intervals_intersect, intervals_union
from microturn.schemas.sample import CHUNK_MS, SAMPLE_RATE
from microturn.schemas.turns import Turn

FRAME_MS = 10
# A pause inside a turn counts from 200 ms: shorter silences are the closures and gaps inside
# and between words (aligned words of pyannote's sample call sit 30-130 ms apart inside an
# utterance), longer ones are the pauses that listeners hear as such and that a model must
# learn to hold through.
MIN_PAUSE_MS = 200
# A chunk is voiced when speech covers at least half of it: then any silence of MIN_PAUSE_MS
# or more that covers the chunk's majority (more than 100 ms) leaves it unvoiced.
MIN_VOICED_MS = CHUNK_MS // 2
# Frames more than 35 dB under the stream's speech level are silence. On pyannote's sample call
# (a phone call) speech frames sit near -27 dBFS (95th percentile) and the line's noise between
# turns at -73..-67 dBFS (10th..90th percentile), so the floor (-62 dBFS) splits them with
# margin; espeak's pauses are digital zeros (below -100 dB) at any floor.
RELATIVE_FLOOR_DB = 35.0
# Whatever the speech level, frames under -70 dBFS are silence (a 16-bit recording's noise
# floor lies lower, at -96 dBFS; a near-silent stream must not turn its hiss into speech).
ABSOLUTE_FLOOR_DBFS = -70.0
SPEECH_LEVEL_PERCENTILE = 95.0
_FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000

Spans = list[tuple[int, int]]


def frame_levels(wave_N: np.ndarray) -> np.ndarray:
    """RMS level in dBFS of each whole 10 ms frame of ``wave_N`` (a trailing part frame is dropped)."""
    n = wave_N.shape[0] // _FRAME_SAMPLES
    frames = np.asarray(wave_N[: n * _FRAME_SAMPLES], dtype=np.float64).reshape(n, _FRAME_SAMPLES)
    rms_per_frame = np.sqrt((frames**2).mean(axis=1))
    return 20.0 * np.log10(np.maximum(rms_per_frame, 1e-10))


def _frames_in(spans_ms: Sequence[tuple[int, int]], n: int) -> np.ndarray:
    inside = np.zeros(n, dtype=bool)
    for s, e in spans_ms:
        inside[max(0, s // FRAME_MS): max(0, min(n, -(-e // FRAME_MS)))] = True
    return inside


def active_spans(wave_N: np.ndarray, segments_ms: Sequence[tuple[int, int]]) -> Spans:
    """Spans (ms) of active 10 ms frames of ``wave_N`` inside ``segments_ms``.

    The speech level is taken over the frames inside the segments; a stream without segments
    or without sound there has no active frame.
    """
    level_per_frame = frame_levels(wave_N)
    inside = _frames_in(intervals_union(list(segments_ms)), level_per_frame.shape[0])
    if not inside.any():
        return []
    speech_db = float(np.percentile(level_per_frame[inside], SPEECH_LEVEL_PERCENTILE))
    floor_db = max(ABSOLUTE_FLOOR_DBFS, speech_db - RELATIVE_FLOOR_DB)
    on = inside & (level_per_frame > floor_db)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], on.astype(np.int8), [0]))))
    return [(int(s) * FRAME_MS, int(e) * FRAME_MS) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def close_gaps(spans_ms: Sequence[tuple[int, int]], min_gap_ms: int = MIN_PAUSE_MS) -> Spans:
    """Union of ``spans_ms`` with every gap shorter than ``min_gap_ms`` between two spans filled."""
    out: Spans = []
    for s, e in intervals_union(list(spans_ms)):
        if out and s - out[-1][1] < min_gap_ms:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _minus(a: Spans, b: Spans) -> Spans:
    """``a`` without ``b`` (both sorted and disjoint)."""
    out: Spans = []
    j = 0
    for s, e in a:
        while j < len(b) and b[j][1] <= s:
            j += 1
        k, cur = j, s
        while k < len(b) and b[k][0] < e:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def speech_spans(*, segments_ms: Sequence[tuple[int, int]], words_ms: Sequence[tuple[int, int]],
                 active_ms: Sequence[tuple[int, int]], shared_ms: Sequence[tuple[int, int]] = ()) -> Spans:
    """The stream's speech (ms spans): its words and its active frames outside ``shared_ms``,
    inside its segments, with pauses under :data:`MIN_PAUSE_MS` closed (see the module doc)."""
    segs = intervals_union(list(segments_ms))
    shared = intervals_union(list(shared_ms))
    words = intervals_union(list(words_ms))
    evidence = words + _minus(intervals_union(list(active_ms)), shared)
    if not words:  # nothing tells the stream's voice from the other's where both are audible
        evidence += intervals_intersect(segs, shared)
    return close_gaps(intervals_intersect(segs, intervals_union(evidence)))


def voiced_chunks(chunks: int, speech_ms: Sequence[tuple[int, int]]) -> np.ndarray:
    """bool [K]: chunks that speech covers for at least :data:`MIN_VOICED_MS` ms."""
    covered_K = np.zeros(chunks, dtype=np.int64)
    for s, e in intervals_union(list(speech_ms)):
        for k in range(max(0, s // CHUNK_MS), min(chunks, -(-e // CHUNK_MS))):
            covered_K[k] += min(e, (k + 1) * CHUNK_MS) - max(s, k * CHUNK_MS)
    return covered_K >= MIN_VOICED_MS


def stream_speech(stream: Stream, *, segments: Sequence[Turn],
                  words: Sequence[tuple[str | None, str, int, int]]) -> Spans:
    """:func:`speech_spans` of ``stream`` (built by :func:`.streams.build_stream`) from the
    conversation's ``segments`` and ``words`` (speaker, text, start_ms, end_ms): its own
    segments and words, the activity of its audio, its leaks as the shared spans."""
    segs = intervals_union([(t.start_ms, t.end_ms) for t in segments if t.speaker in stream.speakers])
    return speech_spans(segments_ms=segs, words_ms=[(s, e) for spk, _, s, e in words if spk in stream.speakers],
                        active_ms=active_spans(stream.wave_N, segs), shared_ms=stream.leaks_ms)
