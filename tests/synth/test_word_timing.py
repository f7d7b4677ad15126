"""Tests of the pure word-timing code of the espeak-ng backend (microturn.synth.word_timing).

No espeak here: the events and the audio are made up, so every path (events reported early,
several events in one token, tokens without an event, unspoken tokens) runs on any machine.

Shape legend: N = audio samples at 16 kHz.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.synth.tts import SAMPLE_RATE, Speech, SpokenWord
from microturn.synth.word_timing import (
    EDGE_MARGIN_MS,
    FRAME_MS,
    Events,
    assemble,
    assign_events,
    energy_end,
    energy_onset,
    loudness,
    speakable,
    split_span,
    split_tokens,
    to_ms,
)

PER_MS = SAMPLE_RATE // 1000
FRAME = SAMPLE_RATE * FRAME_MS // 1000

# ---------------------------------------------------------------------------- split_span


def test_split_span_examples():
    assert split_span(0, 10, [1, 1]) == [0, 5, 10]
    assert split_span(0, 10, [1, 2]) == [0, 3, 10]  # 3.33 rounded down
    assert split_span(0, 10, [2, 1], rounding="nearest") == [0, 7, 10]  # 6.67 rounded
    assert split_span(0, 5, [1, 1], rounding="nearest") == [0, 2, 5]  # 2.5: ties to even
    assert split_span(0, 2, [1, 1, 1]) == [0, 1, 2, 3]  # no room: each part still 1
    assert split_span(4, 4, [0, 0]) == [4, 5, 6]  # all-zero weights split evenly
    assert split_span(0, 9, [0, 0, 0]) == [0, 3, 6, 9]
    assert split_span(0, 1, [1, 3], min_part=0) == [0, 0, 1]  # an empty part is allowed
    assert split_span(7, 9, []) == [7]


def test_split_span_refuses_bad_arguments():
    with pytest.raises(ValueError, match="rounding"):
        split_span(0, 10, [1], rounding="up")  # pyright: ignore[reportArgumentType]  (refused at run time)
    with pytest.raises(ValueError, match="negative"):
        split_span(0, 10, [1, -1])


@settings(max_examples=150, deadline=None)
@given(
    lo=st.integers(-10_000, 10_000),
    room=st.integers(0, 20_000),
    weights=st.lists(st.integers(1, 50), min_size=1, max_size=20),
    rounding=st.sampled_from(["floor", "nearest"]),
)
def test_split_span_is_proportional_with_room(lo, room, weights, rounding):
    total = sum(weights)
    hi = lo + max(room, total)  # at least one unit of span per unit of weight
    bounds = split_span(lo, hi, weights, rounding=rounding)
    assert len(bounds) == len(weights) + 1
    assert bounds[0] == lo and bounds[-1] == hi
    assert all(a < b for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    acc = 0
    for b, w in zip(bounds[1:], weights, strict=True):
        acc += w
        exact = lo + Fraction((hi - lo) * acc, total)
        if rounding == "floor":
            assert exact - 1 < b <= exact
        else:
            assert abs(b - exact) <= Fraction(1, 2)


@settings(max_examples=150, deadline=None)
@given(
    lo=st.integers(-10_000, 10_000),
    span=st.integers(-50, 2_000),
    weights=st.lists(st.integers(0, 50), max_size=20),
    rounding=st.sampled_from(["floor", "nearest"]),
    min_part=st.sampled_from([0, 1]),
)
def test_split_span_parts_are_ordered_and_at_least_min_part(lo, span, weights, rounding, min_part):
    bounds = split_span(lo, lo + span, weights, rounding=rounding, min_part=min_part)
    assert len(bounds) == len(weights) + 1 and bounds[0] == lo
    assert all(b - a >= min_part for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    if weights and span >= len(weights) and (min_part == 0 or len(set(weights)) == 1):
        # Room for every part (equal weights), or no minimum: the split ends exactly at hi.
        assert bounds[-1] == lo + span


# ---------------------------------------------------------------------------- tokens and events


@given(st.text(alphabet=st.sampled_from("ab1 .-\t\n"), max_size=40))
def test_split_tokens_are_the_whitespace_tokens(text):
    tokens = split_tokens(text)
    assert [t for _, _, t in tokens] == text.split()
    assert all(text[a:b] == t for a, b, t in tokens)


def test_speakable():
    assert speakable("Hello,") and speakable("42") and speakable("é")
    assert not speakable("-") and not speakable("...") and not speakable("—")


@settings(max_examples=80, deadline=None)
@given(
    words=st.lists(st.from_regex(r"[a-z]{1,6}|[0-9]{1,4}|-|\.\.\.", fullmatch=True), min_size=1,
                   max_size=15),
    data=st.data(),
)
def test_assign_events_is_monotone_and_in_range(words, data):
    tokens = split_tokens(" ".join(words))
    n_chars = tokens[-1][1]
    positions = sorted(data.draw(st.lists(st.integers(0, n_chars), max_size=25)))
    owner = assign_events(tokens, positions)
    assert len(owner) == len(positions)
    assert all(0 <= k < len(tokens) for k in owner)
    assert owner == sorted(owner)


@settings(max_examples=50, deadline=None)
@given(words=st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=1, max_size=20))
def test_events_at_their_tokens_stay_there(words):
    tokens = split_tokens(" ".join(words))
    assert assign_events(tokens, [a for a, _, _ in tokens]) == list(range(len(tokens)))


# ---------------------------------------------------------------------------- energy


def _burst(n: int, lo: int, hi: int, amp: float = 0.5) -> np.ndarray:
    """x_N of n samples, silent but for a 200 Hz tone over [lo, hi)."""
    x_N = np.zeros(n, np.float32)
    t_N = np.arange(hi - lo) / SAMPLE_RATE
    x_N[lo:hi] = amp * np.sin(2 * np.pi * 200 * t_N)
    return x_N


def test_energy_edges_are_those_of_the_loud_frames():
    x_N = _burst(8000, 960, 3000)
    ref = loudness(x_N)
    assert ref == pytest.approx(0.5 / np.sqrt(2), rel=0.01)  # RMS of the tone
    # Frames of 160 samples are anchored at lo: the tone starts on the edge of frame 6 and
    # ends inside frame 18, which counts as loud as a whole.
    assert energy_onset(x_N, 0, 8000, ref) == 960
    assert energy_end(x_N, 0, 8000, ref) == 3040
    assert energy_end(x_N, 0, 2000, ref) == 2000  # loud up to the end of the range
    assert energy_onset(x_N, 4000, 8000, ref) == 4000  # nothing loud: the range's start
    assert energy_end(x_N, 4000, 8000, ref) == 4000 + FRAME  # nothing loud: one frame
    assert energy_end(x_N, 500, 501, ref) == 501


# ---------------------------------------------------------------------------- whole utterances


_HAS_EVENT = st.sampled_from([True] * 5 + [False])  # 1 in 6 spoken tokens has no event


@st.composite
def _utterances(draw):
    """Tokens, espeak-like events and 16 kHz audio: a burst per spoken token, silence between.

    Some tokens get no event (merged words, unspoken tokens), some events point up to two
    characters early, some tokens get several events (numbers), phoneme events and counts are
    arbitrary: the result must still give one span per token, in order, inside the wave.
    """
    pieces = draw(st.lists(
        st.one_of(st.from_regex(r"[a-z]{1,8}[,.?]?", fullmatch=True),
                  st.from_regex(r"[0-9]{1,4}", fullmatch=True), st.sampled_from(["-", "..."])),
        min_size=1, max_size=12,
    ))
    text = " ".join(pieces)
    tokens = split_tokens(text)
    rate = draw(st.sampled_from([16_000, 22_050]))
    to_native = rate / SAMPLE_RATE
    cursor = draw(st.integers(0, 800))  # 16 kHz samples
    x_N = np.zeros(0, np.float32)
    words, phonemes = [], []
    for start, end, tok in tokens:
        length = draw(st.integers(30, 300)) * PER_MS
        gap = draw(st.integers(0, 200)) * PER_MS
        if speakable(tok) and draw(_HAS_EVENT):
            early = draw(st.integers(0, 2))
            for k in range(draw(st.integers(1, 3)) if tok.isdigit() else 1):
                at = cursor + k * length // 3
                words.append((max(start - early, 0) + 1, end - start, round(at * to_native)))
            for k in range(draw(st.integers(0, 4))):
                at = cursor + k * length // 4
                phonemes.append((round(at * to_native), draw(st.sampled_from(["a", "t", "_"]))))
        if speakable(tok):
            x_N = np.concatenate([x_N, np.zeros(cursor - len(x_N), np.float32),
                                  _burst(length, 0, length)])
            cursor += length
        cursor += gap
    x_N = np.concatenate([x_N, np.zeros(draw(st.integers(0, 3200)), np.float32)])
    counts = [draw(st.integers(0, 4)) for _ in tokens]
    return text, tokens, Events(rate=rate, words=words, phonemes=phonemes, phoneme_counts=counts), x_N


@settings(max_examples=80, deadline=None)
@given(_utterances())
def test_assembled_spans_are_ordered_and_inside_the_wave(utterance):
    text, tokens, events, x_N = utterance
    if not events.words:
        return  # the backend refuses a text espeak spoke no word of before assembling
    wave_N, times, guessed = assemble(tokens, events, x_N)
    assert wave_N.dtype == np.float32 and wave_N.ndim == 1
    assert len(times) == len(tokens)
    # Speech checks what SpokenWord times must satisfy: start < end, monotone,
    # non-overlapping, inside the wave.
    speech = Speech(wave_N=wave_N, words=tuple(
        SpokenWord(t, s, e) for (_, _, t), (s, e) in zip(tokens, times, strict=True)
    ))
    assert [w.text for w in speech.words] == text.split()
    assert all(0 <= i < len(tokens) and speakable(tokens[i][2]) for i in guessed)
    assert guessed == sorted(set(guessed))
    assert assemble(tokens, events, x_N)[1] == times  # deterministic


def test_a_word_starts_at_its_onset_and_ends_with_its_energy():
    # Two words at 16 kHz: "hello" at 0.10-0.40 s (event at 0: the onset is found in the
    # audio), "there" at 0.50-0.80 s (event at 0.50 s), 0.2 s of silence after.
    text = "hello there"
    x_N = np.concatenate([_burst(8000, 1600, 6400), _burst(8000, 0, 4800), np.zeros(3200, np.float32)])
    events = Events(rate=SAMPLE_RATE, words=[(1, 5, 0), (7, 5, 8000)], phonemes=[],
                    phoneme_counts=[4, 3])
    wave_N, times, guessed = assemble(split_tokens(text), events, x_N)
    assert guessed == []
    # The wave starts EDGE_MARGIN_MS before the first onset (100 ms) and ends as long after
    # the last word's end (800 ms).
    assert times[0] == (EDGE_MARGIN_MS, EDGE_MARGIN_MS + 300)
    assert times[1] == (EDGE_MARGIN_MS + 400, EDGE_MARGIN_MS + 700)
    assert len(wave_N) == (700 + 2 * EDGE_MARGIN_MS) * PER_MS


def test_unspoken_tokens_take_the_pause_after_the_word():
    x_N = np.concatenate([_burst(8000, 0, 4800), _burst(8000, 0, 4800)])
    events = Events(rate=SAMPLE_RATE, words=[(1, 4, 0), (8, 5, 8000)], phonemes=[],
                    phoneme_counts=[3, 0, 4])
    _, times, guessed = assemble(split_tokens("well - maybe"), events, x_N)
    assert guessed == []
    (_, end0), (s1, e1), (s2, _) = times
    # "well" ends with its energy (300 ms), "-" fills the pause up to "maybe" (500 ms).
    assert (end0, s1, e1, s2) == (EDGE_MARGIN_MS + 300,) * 2 + (EDGE_MARGIN_MS + 500,) * 2


def test_a_merged_pair_is_split_at_its_phonemes():
    # espeak speaks "on the" as one word with one event; "the" begins at its phonemes.
    x_N = _burst(16000, 0, 9600)
    phonemes = [(0, "0"), (1600, "n"), (4000, "D"), (5600, "@")]
    events = Events(rate=SAMPLE_RATE, words=[(1, 2, 0)], phonemes=phonemes,
                    phoneme_counts=[2, 2])
    _, times, guessed = assemble(split_tokens("on the"), events, x_N)
    assert guessed == []
    assert times == [(EDGE_MARGIN_MS, EDGE_MARGIN_MS + 250), (EDGE_MARGIN_MS + 250, EDGE_MARGIN_MS + 600)]


def test_a_merged_pair_without_fitting_phonemes_is_interpolated():
    x_N = _burst(16000, 0, 9600)
    events = Events(rate=SAMPLE_RATE, words=[(1, 2, 0)], phonemes=[], phoneme_counts=[2, 2])
    _, times, guessed = assemble(split_tokens("on the"), events, x_N)
    assert guessed == [1]
    # Split by phoneme counts (2 and 2): halves of the 600 ms of energy.
    assert times == [(EDGE_MARGIN_MS, EDGE_MARGIN_MS + 300), (EDGE_MARGIN_MS + 300, EDGE_MARGIN_MS + 600)]


@settings(max_examples=100, deadline=None)
@given(
    spans=st.lists(st.tuples(st.integers(-100, 50_000), st.integers(1, 5_000)), min_size=1,
                   max_size=30),
    extra=st.integers(0, 20_000),
)
def test_to_ms_gives_ordered_spans_inside_the_wave(spans, extra):
    samples = [(s, s + d) for s, d in sorted(spans)]
    n_samples = max(e for _, e in samples) + extra
    if n_samples * 1000 // SAMPLE_RATE < len(samples):
        return  # more words than milliseconds: an internal invariant of assemble
    times = to_ms(samples, n_samples)
    duration = n_samples * 1000 // SAMPLE_RATE
    prev = 0
    for s, e in times:
        assert prev <= s < e <= duration
        prev = e
