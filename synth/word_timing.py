"""Word times from espeak-ng's events and the energy of its audio: pure code, no espeak needed.

:class:`microturn.synth.espeak.EspeakTTS` hands this module what espeak reported while speaking
a text (:class:`Events`) and the audio resampled to 16 kHz; :func:`assemble` returns the
trimmed wave and every whitespace token's span in it. The steps, and the measurements behind
the constants, are told in :mod:`microturn.synth.espeak`. :func:`split_span` is also the one
"split a span by weights" of the project (sidecar and whisperx fallbacks use it).

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz. Axes that
have no letter there are named in words: 10 ms analysis frames (``rms_per_frame``), phoneme
events (``phoneme_starts``), and the WORD events (rows) by whitespace tokens (columns) of the
cost matrices of :func:`assign_events` (``dist``, ``same``, ``back``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from microturn.schemas.sample import SAMPLE_RATE

__all__ = [
    "EDGE_MARGIN_MS",
    "ENERGY_FLOOR_DB",
    "FRAME_MS",
    "Events",
    "assemble",
    "assign_events",
    "energy_end",
    "energy_onset",
    "loudness",
    "speakable",
    "split_span",
    "split_tokens",
    "to_ms",
    "word_spans",
]

# ---------------------------------------------------------------------------- tuning

FRAME_MS = 10
# Frames quieter than this relative to the utterance's loudest 10 ms frame count as silence.
# espeak's pauses are digital zeros (below -100 dB). Against pocketsphinx on 144 words (two
# voices), the median error of word ends is 12 ms for every floor from -30 to -50 dB; -40 dB
# sits in the middle of that plateau.
ENERGY_FLOOR_DB = -40.0
# Audio kept before the first word's energy onset and after the last word's end: one 10 ms
# analysis frame, for the attack and decay below the floor. What the cut removed from 24
# test utterances (3 voices) peaked at -42 dB re the utterance's peak sample.
EDGE_MARGIN_MS = 10

# Costs, in characters of misplacement, for mapping WORD events to tokens (assign_events).
# espeak-ng 1.51 sometimes reports a word at a position before its token: in "where it is"
# the event of "is" points at the "t" of "it"; in "people - maybe more - came" the events of
# "maybe" and "came" point at the dashes; in "Mr. and" the event of "and" points at the
# space (1 to 2 characters early in all cases seen, never late). So an event may move
# forward, to a later token, never back; and not at all out of a token with digits, whose
# several events ("nineteen" "ninety" "s") are its own. Leaving a token with letters or
# digits without an event costs 4 and giving an event to a token with neither (a lone "-")
# costs 2: an event moves to an otherwise empty token up to 3 characters ahead, which
# repairs all the cases above.
_EMPTY_COST = 4.0
_UNSPOKEN_COST = 2.0
# Finite, so that events espeak reports out of order still get some assignment.
_FORBIDDEN_COST = 1e6
# Above this many (events x tokens) cells the alignment falls back to the reported
# positions (a text of about 2000 words; dialogue turns are far shorter).
_MAX_CELLS = 4_000_000


@dataclass(frozen=True, slots=True)
class Events:
    """What espeak-ng reported while speaking one text; samples count at ``rate``.

    words: WORD events as (text position, counted from 1; length in characters; sample).
    phonemes: PHONEME events as (sample, mnemonic); pauses are named "_", "_:", "_!".
    phoneme_counts: how many phonemes each whitespace token has when spoken on its own.
    """

    rate: int
    words: list[tuple[int, int, int]]
    phonemes: list[tuple[int, str]]
    phoneme_counts: list[int]


# ---------------------------------------------------------------------------- splitting a span


def split_span(
    lo: int,
    hi: int,
    weights: Sequence[int],
    *,
    rounding: Literal["floor", "nearest"] = "floor",
    min_part: int = 1,
) -> list[int]:
    """Boundaries splitting [lo, hi) into parts in proportion to ``weights``.

    Returns ``len(weights) + 1`` integers from ``lo``: boundary k is ``lo + (hi - lo) *
    sum(weights[:k]) / sum(weights)``, rounded down (``"floor"``, exact integer arithmetic)
    or to the nearest integer (``"nearest"``: Python's ``round`` of the float quotient, ties
    to even), then raised to at least ``min_part`` past the boundary before it, so the last
    one may pass ``hi`` when the span has too little room. All-zero weights split evenly.
    espeak's word timing rounds down; the sidecar and whisperx fallbacks round to nearest.
    """
    if rounding not in ("floor", "nearest"):
        raise ValueError(f"rounding must be 'floor' or 'nearest', got {rounding!r}")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must not be negative, got {list(weights)}")
    total = sum(weights)
    if not total:
        weights, total = [1] * len(weights), len(weights)
    out = [lo]
    acc = 0
    for w in weights:
        acc += w
        if rounding == "floor":
            step = (hi - lo) * acc // total
        else:
            step = round((hi - lo) * acc / total)
        out.append(max(lo + step, out[-1] + min_part))
    return out


# ---------------------------------------------------------------------------- events to tokens


def split_tokens(text: str) -> list[tuple[int, int, str]]:
    """Whitespace tokens as (first character, end character, token)."""
    return [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]


def speakable(token: str) -> bool:
    """Whether a token has something to say (a letter or digit); "-" or "..." has not."""
    return any(c.isalnum() for c in token)


def assign_events(tokens: list[tuple[int, int, str]], positions: list[int]) -> list[int]:
    """Token index of each WORD event (0-based character ``positions``, in output order).

    The monotone assignment of least cost: the distance in characters from each event's
    position forward to its token (0 inside it; moving back is not allowed), plus
    ``_EMPTY_COST`` per speakable token left without an event and ``_UNSPOKEN_COST`` per
    event given to a token without letters or digits.
    """
    n_tok, n_ev = len(tokens), len(positions)
    if n_ev == 0:
        return []
    tok_first = np.array([t[0] for t in tokens])
    tok_end = np.array([t[1] for t in tokens])
    ev_pos = np.asarray(positions)
    # The token each position falls in, or the next one when it falls between tokens.
    ev_at = np.clip(np.searchsorted(tok_end, ev_pos, side="right"), 0, n_tok - 1)
    tok_idx = np.arange(n_tok)
    # Matrices: one row per event, one column per token.
    ahead = np.maximum(tok_first[None, :] - ev_pos[:, None], 0).astype(np.float64)
    ev_pinned = np.array([any(ch.isdigit() for ch in tokens[k][2]) for k in ev_at])
    dist = np.where(
        tok_idx[None, :] == ev_at[:, None],
        ahead,
        np.where(
            (tok_idx[None, :] > ev_at[:, None]) & ~ev_pinned[:, None], ahead, _FORBIDDEN_COST
        ),
    )
    if n_ev * n_tok > _MAX_CELLS:
        return [int(k) for k in ev_at]
    tok_speaks = np.array([speakable(t[2]) for t in tokens])
    tok_extra = np.where(tok_speaks, 0.0, _UNSPOKEN_COST)
    # empty_before[j]: cost of leaving tokens 0..j-1 without events.
    empty_before = np.concatenate([[0.0], np.cumsum(np.where(tok_speaks, _EMPTY_COST, 0.0))])
    cost = dist[0] + tok_extra + empty_before[:n_tok]
    same = np.zeros((n_ev, n_tok), dtype=bool)
    back = np.zeros((n_ev, n_tok), dtype=np.int64)
    for i in range(1, n_ev):
        # Coming from an earlier token j' < j leaves tokens j'+1..j-1 empty.
        shifted_cost = cost - empty_before[1:]
        run_min = np.minimum.accumulate(shifted_cost)
        run_arg = np.maximum.accumulate(np.where(shifted_cost == run_min, tok_idx, -1))
        from_before = np.full(n_tok, np.inf)
        from_before[1:] = run_min[:-1] + empty_before[1:n_tok]
        back[i, 1:] = run_arg[:-1]
        same[i] = cost <= from_before
        cost = dist[i] + tok_extra + np.where(same[i], cost, from_before)
    j = int(np.argmin(cost + empty_before[n_tok] - empty_before[1:]))
    owner = [0] * n_ev
    for i in range(n_ev - 1, -1, -1):
        owner[i] = j
        if i and not same[i, j]:
            j = int(back[i, j])
    return owner



# ---------------------------------------------------------------------------- energy


def _frame_db(x_N: np.ndarray, lo: int, hi: int, ref: float) -> np.ndarray:
    """dB re ``ref`` of the 10 ms frames of x_N[lo:hi], on a grid anchored at ``lo``."""
    step = SAMPLE_RATE * FRAME_MS // 1000
    seg_N = x_N[max(lo, 0) : max(hi, lo, 0)].astype(np.float64)
    n = -(-len(seg_N) // step)
    pad_N = np.zeros(n * step)
    pad_N[: len(seg_N)] = seg_N
    rms_per_frame = np.sqrt((pad_N.reshape(n, step) ** 2).mean(axis=1))
    return 20.0 * np.log10(np.maximum(rms_per_frame, 1e-10) / ref)


def loudness(x_N: np.ndarray) -> float:
    """RMS of the loudest 10 ms frame."""
    db_per_frame = _frame_db(x_N, 0, len(x_N), 1.0)
    return float(10.0 ** (db_per_frame.max() / 20.0)) if len(db_per_frame) else 1.0


def energy_end(x_N: np.ndarray, lo: int, hi: int, ref: float) -> int:
    """End of the last loud 10 ms frame of x_N[lo:hi] (frames from ``lo``), in (lo, hi]."""
    step = SAMPLE_RATE * FRAME_MS // 1000
    if hi <= lo + 1:
        return lo + 1
    loud_frames = np.nonzero(_frame_db(x_N, lo, hi, ref) > ENERGY_FLOOR_DB)[0]
    if len(loud_frames) == 0:
        return min(lo + step, hi)
    return min(lo + (int(loud_frames[-1]) + 1) * step, hi)


def energy_onset(x_N: np.ndarray, lo: int, hi: int, ref: float) -> int:
    """Start of the first loud 10 ms frame of x_N[lo:hi] (frames from ``lo``), else ``lo``."""
    step = SAMPLE_RATE * FRAME_MS // 1000
    loud_frames = np.nonzero(_frame_db(x_N, lo, hi, ref) > ENERGY_FLOOR_DB)[0]
    return lo + int(loud_frames[0]) * step if len(loud_frames) else lo



# ---------------------------------------------------------------------------- word spans


def _split_unit(
    members: list[int],
    lo: int,
    end: int,
    phoneme_starts: np.ndarray,
    counts: list[int],
    tokens: list[tuple[int, int, str]],
) -> tuple[list[int], bool]:
    """Boundaries of ``members`` (a timed token + event-less tokens espeak merged into it)
    inside [lo, end); True when they come from espeak's phoneme events.

    espeak speaks some word pairs as one word with one WORD event ("on the", "in the",
    "for the": 4 of 183 tokens of a conversational test text). The unit's PHONEME events
    (``phoneme_starts``, pauses removed) are split by the phoneme count of each member spoken on its
    own, counted from the unit's end (the unit may begin with the last phoneme of the word
    before). When the counts do not fit, the span is split by phoneme count or, failing
    that, by character length.
    """
    if len(members) == 1:
        return [lo, end], True
    need = [counts[i] for i in members]
    extra = len(phoneme_starts) - sum(need)
    if all(c > 0 for c in need) and 0 <= extra <= 1:
        bounds = [lo]
        for k in range(1, len(members)):
            bounds.append(int(phoneme_starts[extra + sum(need[:k])]))
        bounds.append(end)
        if all(a < b for a, b in zip(bounds[:-1], bounds[1:], strict=True)):
            return bounds, True
    weights = need if all(c > 0 for c in need) else [
        sum(ch.isalnum() for ch in tokens[i][2]) for i in members
    ]
    return split_span(lo, max(end, lo + len(members)), weights), False


def word_spans(
    tokens: list[tuple[int, int, str]], events: Events, x_N: np.ndarray, ref: float
) -> tuple[list[tuple[int, int] | None], list[int]]:
    """(start, end) in 16 kHz samples per token, except the tokens before the first timed
    one (None: placed by the caller); and the indices of tokens placed by interpolation.
    ``ref`` is the RMS of the loudest frame of ``x_N``."""
    n, n_tok = len(x_N), len(tokens)
    to_n = SAMPLE_RATE / events.rate
    owner = assign_events(tokens, [pos - 1 for pos, _, _ in events.words])  # espeak counts from 1
    starts: list[int | None] = [None] * n_tok
    for k, (_, _, sample) in zip(owner, events.words, strict=True):
        s = min(max(round(sample * to_n), 0), n - 1)
        earlier = starts[k]
        if earlier is None or s < earlier:
            starts[k] = s
    # Starts must increase: a token whose events start no later than an earlier token's
    # (espeak reading words in another order) counts as event-less.
    last = -1
    for k, s in enumerate(starts):
        if s is not None and s <= last:
            starts[k] = None
        elif s is not None:
            last = s
    timed = [(k, s) for k, s in enumerate(starts) if s is not None]
    # PHONEME events, pauses ("_", "_:", "_!") left out.
    phoneme_starts = np.array(
        [round(s * to_n) for s, name in events.phonemes if not name.startswith("_")], dtype=np.int64
    )
    spans: list[tuple[int, int] | None] = [None] * n_tok
    guessed: list[int] = []
    for j, (k, lo) in enumerate(timed):
        nxt, hi = timed[j + 1] if j + 1 < len(timed) else (n_tok, n)
        end = energy_end(x_N, lo, hi, ref)
        run = list(range(k + 1, nxt))  # event-less tokens up to the next timed one
        spoken = [i for i in run if speakable(tokens[i][2])]
        merged = [k] + (run[: run.index(spoken[-1]) + 1] if spoken else [])
        unit_phonemes = phoneme_starts[(phoneme_starts >= lo) & (phoneme_starts < hi)]
        bounds, exact = _split_unit(merged, lo, end, unit_phonemes, events.phoneme_counts, tokens)
        for i, a, b in zip(merged, bounds[:-1], bounds[1:], strict=True):
            spans[i] = (a, b)
        if not exact:
            guessed += [i for i in merged[1:] if speakable(tokens[i][2])]
        trailing = run[len(merged) - 1 :]
        if trailing:
            # Unspoken tokens ("-", "...") after the word: in the pause before the next one.
            gap_lo = bounds[-1]
            if hi - gap_lo < len(trailing):  # no pause: take room from the word's end
                gap_lo = max(bounds[-2] + 1, hi - len(trailing))
                spans[merged[-1]] = (bounds[-2], gap_lo)
            cuts = split_span(gap_lo, hi, [1] * len(trailing))
            for i, a, b in zip(trailing, cuts[:-1], cuts[1:], strict=True):
                spans[i] = (a, b)
    return spans, guessed


def to_ms(spans: list[tuple[int, int]], n_samples: int) -> list[tuple[int, int]]:
    """Sample spans to integer ms, monotone, non-overlapping, >= 1 ms, inside the wave."""
    per_ms = SAMPLE_RATE // 1000
    duration = n_samples * 1000 // SAMPLE_RATE
    out = []
    prev = 0
    for s, e in spans:
        s_ms = max(round(s / per_ms), prev)
        e_ms = max(round(e / per_ms), s_ms + 1)
        out.append((s_ms, e_ms))
        prev = e_ms
    limit = duration
    for k in range(len(out) - 1, -1, -1):
        s_ms, e_ms = out[k]
        e_ms = min(e_ms, limit)
        s_ms = min(s_ms, e_ms - 1)
        out[k] = (s_ms, e_ms)
        limit = s_ms
    assert not out or out[0][0] >= 0, "more words than milliseconds of audio"
    return out


def assemble(
    tokens: list[tuple[int, int, str]], events: Events, x_N: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int]], list[int]]:
    """The trimmed 16 kHz wave, every token's (start_ms, end_ms) in it, interpolated tokens."""
    ref = loudness(x_N)
    spans, guessed = word_spans(tokens, events, x_N, ref)
    first, (start, end) = next((k, s) for k, s in enumerate(spans) if s is not None)
    onset = energy_onset(x_N, start, end, ref)
    spans[first] = (onset, max(end, onset + 1))
    last = spans[-1]
    assert last is not None, "every token after the first timed one has a span"
    margin = SAMPLE_RATE * EDGE_MARGIN_MS // 1000
    # The wave runs from the first word's energy onset to the last word's end with a margin
    # on both sides, padded with zeros where espeak's audio is shorter than that.
    lo, hi = onset - margin, last[1] + margin
    wave_N = np.zeros(hi - lo, np.float32)
    wave_N[max(-lo, 0) : min(len(x_N), hi) - lo] = x_N[max(lo, 0) : min(len(x_N), hi)]
    shifted = [None if s is None else (s[0] - lo, s[1] - lo) for s in spans]
    if first:
        # Tokens before the first timed one share the leading margin.
        cuts = split_span(0, margin, [1] * first)
        for i, a, b in zip(range(first), cuts[:-1], cuts[1:], strict=True):
            shifted[i] = (a, b)
        guessed = [i for i in range(first) if speakable(tokens[i][2])] + guessed
    placed = [s for s in shifted if s is not None]
    assert len(placed) == len(shifted), "every token has a span"
    return wave_N, to_ms(placed, len(wave_N)), guessed


