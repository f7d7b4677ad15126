"""Full-Duplex-Bench v1's per-item rules: did the model take the turn, how late, and its backchannels.

Take-turn rule (smooth turn-taking, pause handling, user interruption), on the model's word chunks:
no chunk: TOR 0; else the span from the first chunk's start to the last chunk's end (its start
when the end is null) is under 1 s with at most 3 chunks: TOR 0 (a backchannel or a cough, not a
turn); else TOR 1. Latency of a TOR-1 item: the first chunk's start minus the event's time
(clipped at 0: a model already talking has no delay to show). Full-Duplex-Bench's smooth and
interruption scripts fail on a null last end; the pause script's rule (use the start) is applied
to all three.

Backchannel rule, per item: the model's speech segments (silero, times rounded to 0.1 s as its
``return_seconds`` gives them) in order; a segment over 3 s is a turn (TOR 1, stop). Else the
chunks overlapping it are counted: more than 3, or a segment of 1 s or more, or 3 words: TOR 1
and the backchannels found so far are dropped; else (under 1 s, at most 2 words) it is a
backchannel. The item's TOR is the last segment's. Frequency: backchannels per second of output;
JSD: their histogram over 0.2 s windows against the reference distribution (scipy's
Jensen-Shannon *distance*, natural log, as the reference script reports it; 1 with no backchannel;
0 where rounding makes scipy's value nan for equal distributions).

VAD-only rule (no words at all, documented stand-in): the model's segments merged across gaps up
to 0.5 s (v1.5's model merge gap); it takes the turn when a merged segment lasts 1 s or more,
with latency from the first merged segment's start. For interruptions only the speech after the
interrupt's end counts, as for words. In the backchannel rule the word count is unknown and taken
as 0, so duration alone decides (over 3 s: turn; under 1 s: backchannel; else a turn).

Shape suffixes follow :mod:`microturn.schemas.legend`; W counts the 0.2 s windows here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import interp1d
from scipy.spatial.distance import jensenshannon

from microturn.pipelines.duplex.audio import Segment, merge_segments
from microturn.pipelines.duplex.words import Chunk

__all__ = ["BACKCHANNEL_MAX_WORDS", "MAX_BACKCHANNEL_S", "MODEL_MERGE_GAP_S", "TURN_MAX_WORDS", "TURN_MIN_S",
           "WINDOW_S", "backchannel_jsd", "backchannel_walk", "crop_segments", "rounded_segments",
           "take_turn", "take_turn_vad"]

TURN_MIN_S = 1.0  # a response shorter than this ...
TURN_MAX_WORDS = 3  # ... with at most this many words is not a turn
MAX_BACKCHANNEL_S = 3.0  # a segment longer than this is a turn outright
BACKCHANNEL_MAX_WORDS = 2  # a backchannel is under 1 s with at most 2 words
MODEL_MERGE_GAP_S = 0.5  # v1.5's merge gap for the model's VAD segments
WINDOW_S = 0.2
_EPSILON = 1e-10  # added to every window so empty windows keep the divergence finite


def take_turn(chunks: Sequence[Chunk], event_s: float | None) -> tuple[int, float | None]:
    """``(TOR, latency_s)`` of the take-turn rule (module notes); latency None when TOR is 0 or
    ``event_s`` is None. ``ValueError`` when the first chunk has no start (nothing to measure from)."""
    if not chunks:
        return 0, None
    first = chunks[0][1]
    if first is None:
        raise ValueError("the first word chunk has a null start time; the take-turn rule measures from it")
    _, last_start, last_end = chunks[-1]
    last = last_end if last_end is not None else last_start
    if last is None:
        raise ValueError("the last word chunk has neither start nor end time")
    if last - first < TURN_MIN_S and len(chunks) <= TURN_MAX_WORDS:
        return 0, None
    return 1, None if event_s is None else max(0.0, first - event_s)


def crop_segments(segments: Sequence[Segment], at_s: float) -> list[Segment]:
    """The parts of ``segments`` after ``at_s``."""
    return [(max(s, at_s), e) for s, e in segments if e > at_s]


def take_turn_vad(segments: Sequence[Segment], event_s: float | None) -> tuple[int, float | None]:
    """``(TOR, latency_s)`` of the VAD-only rule (module notes) on the model's raw VAD segments
    (already cropped where the task asks)."""
    merged = merge_segments(list(segments), MODEL_MERGE_GAP_S)
    if not any(e - s >= TURN_MIN_S for s, e in merged):
        return 0, None
    return 1, None if event_s is None else max(0.0, merged[0][0] - event_s)


def rounded_segments(segments: Sequence[Segment], duration_s: float) -> list[Segment]:
    """Segments as silero's ``get_speech_timestamps(return_seconds=True)`` gives them: rounded to
    0.1 s, the start at least 0 and the end at most the audio's length."""
    return [(max(round(s, 1), 0.0), min(round(e, 1), duration_s)) for s, e in segments]


def _words_in(chunks: Sequence[Chunk], start: float, end: float) -> int:
    """How many chunks the reference script counts as overlapping ``[start, end]``."""
    n = 0
    for _, ts, te in chunks:
        if ts is None or (te is None and ts < end):
            continue
        if te is None:
            te = ts
        if (ts >= start and te <= end) or (ts <= end and te > end) or (ts <= start and te > start):
            n += 1
    return n


def backchannel_walk(segments: Sequence[Segment], chunks: Sequence[Chunk] | None) -> tuple[int, list[Segment]]:
    """``(TOR, backchannels)`` of the backchannel rule (module notes) over rounded segments;
    ``chunks`` None: the word count is unknown (VAD-only)."""
    tor = 0
    found: list[Segment] = []
    for start, end in segments:
        duration = end - start
        if duration > MAX_BACKCHANNEL_S:
            return 1, found
        n = 0 if chunks is None else _words_in(chunks, start, end)
        tor = 1 if n > TURN_MAX_WORDS or duration >= TURN_MIN_S or n > BACKCHANNEL_MAX_WORDS else 0
        if tor:
            found = []
        else:
            found.append((start, end))
    return tor, found


def backchannel_jsd(backchannels: Sequence[Segment], duration_s: float, reference: Sequence[float]) -> float:
    """Jensen-Shannon distance between the backchannels' histogram over 0.2 s windows and
    ``reference`` linearly resampled onto as many windows; 1.0 with no backchannel."""
    if not backchannels:
        return 1.0
    counts_W = np.zeros(int(duration_s / WINDOW_S) + 1)
    for start, end in backchannels:
        counts_W[int(start / WINDOW_S):int(end / WINDOW_S) + 1] += 1
    counts_W = counts_W + _EPSILON
    predicted_W = counts_W / counts_W.sum()
    # The reference's windows and ours both spread over [0, 1]; "extrapolate" as the reference
    # script has it (only rounding at the ends ever reaches past the points). scipy's stubs type
    # fill_value as a float though it documents the string "extrapolate".
    resample = interp1d(np.linspace(0, 1, len(reference)), np.asarray(reference, dtype=float),
                        kind="linear", fill_value="extrapolate")  # pyright: ignore[reportArgumentType]
    reference_W = resample(np.linspace(0, 1, predicted_W.size))
    with np.errstate(invalid="ignore"):
        distance = float(jensenshannon(predicted_W, reference_W))
    # Equal distributions can leave scipy a divergence of about -1e-17, whose square root is nan
    # (the reference script would print nan); the distance there is 0.
    return 0.0 if math.isnan(distance) else distance
