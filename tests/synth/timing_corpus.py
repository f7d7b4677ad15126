"""A synthetic corpus of ingest-like ``segments`` and ``words`` rows for timing-model tests.

Its timing deliberately comes from none of the model's families: gaps are a mixture (70% gamma,
30% a slower log-normal), overlaps a shifted exponential, and every time sits on the 10 ms grid
that diarization output uses. Two speakers alternate; each turn is phrases of words separated
by within-turn pauses. As a diarizer would, a pause shorter than :data:`BRIDGE_MS` stays inside
one segment and a longer one starts a new segment. The listener's backchannels ("mm-hmm") are
sprinkled inside the speaker's segments, some starting in a bridged pause and some over speech.

Turns are laid out so that :func:`turn_stats` measures exactly what was generated: a turn's
first phrase outlasts the overlap at its start and its last phrase the overlap at its end, so
every overlapped turn still ends after the turn it overlaps, and backchannels stay clear of the
listener's own turns. ``Corpus.truth`` records, per conversation, what was laid out.

Array legend: ``_N`` = one entry per draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

GRID_MS = 10  # diarization segments come on a 10 ms frame grid
BRIDGE_MS = 500  # diarizers bridge pauses shorter than this into one segment
OVERLAP_PROB = 0.38
SPEAKERS = ("SPEAKER_00", "SPEAKER_01")


def _grid(x) -> np.ndarray:
    """Round up to the 10 ms grid, at least one step."""
    return np.maximum(GRID_MS, GRID_MS * np.ceil(np.asarray(x, dtype=np.float64) / GRID_MS)).astype(np.int64)


def gap_draws(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaps: 70% quick replies (gamma, shape 2, scale 110 ms) and 30% slower ones (log-normal,
    median 650 ms, sigma 0.45), on the 10 ms grid."""
    quick_N = rng.random(n) < 0.7
    return _grid(np.where(quick_N, rng.gamma(2.0, 110.0, n), rng.lognormal(np.log(650.0), 0.45, n)))


def overlap_draws(rng: np.random.Generator, n: int) -> np.ndarray:
    """Overlaps: 40 ms plus an exponential with a 250 ms mean, on the 10 ms grid."""
    return _grid(40.0 + rng.exponential(250.0, n))


def pause_draws(rng: np.random.Generator, n: int) -> np.ndarray:
    """Within-turn pauses: 160 ms plus a gamma (shape 1.5, scale 250 ms), on the 10 ms grid."""
    return _grid(160.0 + rng.gamma(1.5, 250.0, n))


@dataclass(frozen=True, kw_only=True)
class Truth:
    """What one conversation was built to contain, in turn_stats terms."""

    gaps_ms: list[int]
    overlaps_ms: list[int]
    backchannels: int
    turns: int
    main_turn_ms: int  # summed spans of the turns, first word to last word


@dataclass(frozen=True, kw_only=True)
class Corpus:
    segments: list[dict]
    words: list[dict]
    truth: dict[str, Truth]
    pauses_ms: list[int]  # every within-turn pause laid out
    backchannel_delays_ms: list[int]  # for the backchannels that start in a pause


def _phrase(rng, start: int, min_len: int) -> list[tuple[int, int]]:
    """Words (start, end) from ``start``: 2-7 words of 120-440 ms with 0-90 ms articulation
    gaps (below the 150 ms pause threshold), extended until the phrase lasts ``min_len``."""
    words, t, n = [], start, int(rng.integers(2, 8))
    while len(words) < n or t - start < min_len:
        if words:
            t += GRID_MS * int(rng.integers(0, 10))
        dur = GRID_MS * int(rng.integers(12, 45))
        words.append((t, t + dur))
        t += dur
    return words


def _conversation(rng, cid: str, segments: list, words: list, pauses: list, delays: list) -> Truth:
    n_turns = int(rng.integers(6, 10))
    is_overlap_N = rng.random(n_turns - 1) < OVERLAP_PROB
    offsets_N = np.where(is_overlap_N, -overlap_draws(rng, n_turns - 1), gap_draws(rng, n_turns - 1))
    margin = 300  # ms that a phrase outlasts the overlap touching it
    t = GRID_MS * int(rng.integers(0, 50))
    prev_end = None
    prev_turn_end_of = {}  # speaker -> end of their latest turn
    backchannels = 0
    main_turn_ms = 0
    for i in range(n_turns):
        spk, listener = SPEAKERS[i % 2], SPEAKERS[(i + 1) % 2]
        o_in = max(0, -int(offsets_N[i - 1])) if i else 0
        o_out = max(0, -int(offsets_N[i])) if i < n_turns - 1 else 0
        start = t if prev_end is None else prev_end + int(offsets_N[i - 1])
        n_phrases = int(rng.integers(1, 4))
        phrase_pauses = pause_draws(rng, n_phrases - 1)
        phrases, cursor = [], start
        for k in range(n_phrases):
            need = 0
            if k == 0:
                need += o_in + margin
            if k == n_phrases - 1:
                need += o_out + margin
            phrases.append(_phrase(rng, cursor, need))
            if k < n_phrases - 1:
                cursor = phrases[-1][-1][1] + int(phrase_pauses[k])
        pauses += [int(p) for p in phrase_pauses]
        # Segments: a diarizer bridges short pauses, so phrases join until a long pause.
        segs = [[phrases[0][0][0], phrases[0][-1][1], [phrases[0]]]]
        for k in range(1, n_phrases):
            if phrase_pauses[k - 1] < BRIDGE_MS:
                segs[-1][1] = phrases[k][-1][1]
                segs[-1][2].append(phrases[k])
            else:
                segs.append([phrases[k][0][0], phrases[k][-1][1], [phrases[k]]])
        end = segs[-1][1]
        for s, e, _ in segs:
            segments.append({"conversation_id": cid, "speaker": spk, "start_ms": s, "end_ms": e,
                             "channel": 0})
        for phrase in phrases:
            for ws, we in phrase:
                words.append({"conversation_id": cid, "speaker": spk, "text": "word",
                              "start_ms": ws, "end_ms": we, "score": 0.9})
        # Backchannels of the listener, clear of the listener's own turns by 100 ms.
        lo = prev_turn_end_of.get(listener, -1) + 100
        hi = end - o_out - 100
        for _, e, seg_phrases in segs:
            if rng.random() < 0.5:
                continue
            bridged = [(a[-1][1], b[0][0]) for a, b in pairwise(seg_phrases)]
            if bridged and rng.random() < 0.7:
                p_start, p_end = bridged[int(rng.integers(len(bridged)))]
                bc_start = p_start + GRID_MS * int(rng.integers(1, (p_end - p_start) // GRID_MS))
            else:  # over speech: starts inside a word
                ws, we = seg_phrases[0][int(rng.integers(len(seg_phrases[0])))]
                bc_start = ws + GRID_MS * int(rng.integers(1, (we - ws) // GRID_MS))
            bc_end = bc_start + GRID_MS * int(rng.integers(20, 70))
            if bc_start < lo or bc_end > min(hi, e - GRID_MS):
                continue
            if bridged and any(a < bc_start < b for a, b in bridged):
                delays.append(bc_start - max(a for a, b in bridged if a < bc_start < b))
            segments.append({"conversation_id": cid, "speaker": listener, "start_ms": bc_start,
                             "end_ms": bc_end, "channel": 0})
            words.append({"conversation_id": cid, "speaker": listener, "text": "mm-hmm",
                          "start_ms": bc_start, "end_ms": bc_end, "score": 0.8})
            backchannels += 1
        prev_turn_end_of[spk] = end
        prev_end = end
        main_turn_ms += end - start
    offsets = [int(o) for o in offsets_N]
    return Truth(gaps_ms=[o for o in offsets if o > 0], overlaps_ms=[-o for o in offsets if o < 0],
                 backchannels=backchannels, turns=n_turns, main_turn_ms=main_turn_ms)


def make_corpus(seed: int = 0, conversations: int = 250) -> Corpus:
    """``conversations`` two-speaker conversations (6-9 turns each, ~1600 speaker changes for
    250), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    segments, words, pauses, delays = [], [], [], []
    truth = {}
    for c in range(conversations):
        cid = f"conv{c:04d}"
        truth[cid] = _conversation(rng, cid, segments, words, pauses, delays)
    return Corpus(segments=segments, words=words, truth=truth, pauses_ms=pauses,
                  backchannel_delays_ms=delays)
