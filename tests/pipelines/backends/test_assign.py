"""Tests of word-to-speaker assignment."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.pipelines.backends.assign import NEAREST_TURN_MS, assign_speakers
from microturn.pipelines.backends.base import Turn, Utterance, Word


def _speakers(words, turns, utterances=None):
    return [w.speaker for w in assign_speakers(words, turns, utterances)]


def test_most_overlap_wins_and_fields_are_kept():
    turns = [Turn("A", 0, 1000), Turn("B", 900, 2000)]
    words = [Word("x", 800, 1000, 0.5), Word("y", 880, 1200, None, "old")]
    out = assign_speakers(words, turns, None)
    assert [w.speaker for w in out] == ["A", "B"]  # 200 vs 100 ms; 120 vs 300 ms
    assert out[0] == Word("x", 800, 1000, 0.5, "A")
    assert words[1].speaker == "old"  # inputs are not modified


def test_tie_goes_to_the_utterance_speaker_then_to_the_nearest_turn():
    turns = [Turn("A", 0, 1000), Turn("B", 900, 1500)]
    word = Word("w", 850, 1050)  # 100 ms with each turn
    utt_b = [Utterance(800, 1100, "w", "B")]
    assert _speakers([word], turns, utt_b) == ["B"]
    # Without a matching label, the turn whose centre is nearest (B: 1200 vs A: 500) wins.
    assert _speakers([word], turns, [Utterance(800, 1100, "w", "Someone")]) == ["B"]
    assert _speakers([word], turns, [Utterance(800, 1100, "w", None)]) == ["B"]


def test_word_outside_every_turn():
    turns = [Turn("A", 0, 1000), Turn("B", 3000, 4000)]
    near = Word("near", 1000 + NEAREST_TURN_MS, 1700)  # gap to A exactly 500 ms
    far = Word("far", 1800, 2000)  # 800 ms from A, 1000 ms from B
    utts = [Utterance(1400, 2100, "near far", "Carol")]
    assert _speakers([near, far], turns, utts) == ["A", "Carol"]
    assert _speakers([far], turns, [Utterance(1400, 2100, "far", None)]) == [None]
    # Without utterances the word's own speaker (the sidecar label) stands in.
    assert _speakers([Word("far", 1800, 2000, None, "Dan")], turns, None) == ["Dan"]
    assert _speakers([Word("far", 1800, 2000)], turns, None) == [None]


def test_word_in_padding_uses_nearest_utterance_label():
    # The word lies 100 ms before its utterance (aligner padding) and ties between turns.
    turns = [Turn("A", 0, 1000), Turn("B", 800, 2000)]
    word = Word("w", 800, 1000)
    utts = [Utterance(0, 500, "x", "B"), Utterance(1100, 2000, "w", "A")]
    # Overlap 200 ms each; nearest utterance is the second (gap 100 vs 300): label A.
    assert _speakers([word], turns, utts) == ["A"]


def test_bad_turns_are_ignored_with_a_warning_and_empty_inputs():
    with pytest.warns(UserWarning, match="ignored 1 diarization turn"):
        out = _speakers([Word("w", 0, 100)], [Turn("A", 50, 50), Turn("B", 0, 100)])
    assert out == ["B"]
    with pytest.warns(UserWarning):
        out = _speakers([Word("w", 0, 100)], [Turn("A", 50, 40)], [Utterance(0, 100, "w", "U")])
    assert out == ["U"]
    assert assign_speakers([], [Turn("A", 0, 1)], None) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _speakers([Word("w", 0, 100)], [], [Utterance(0, 100, "w", "U")]) == ["U"]
    with pytest.raises(TypeError, match="turns"):
        assign_speakers([Word("w", 0, 1)], [("A", 0, 1)], None)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="words"):
        assign_speakers([("w", 0, 1)], [], None)  # type: ignore[list-item]


def test_many_words_cross_chunk_boundaries():
    turns = [Turn("A" if k % 2 == 0 else "B", k * 1000, (k + 1) * 1000) for k in range(50)]
    words = [Word(str(k), k * 20 + 1, k * 20 + 15) for k in range(2500)]
    out = _speakers(words, turns)
    assert out == ["A" if (k * 20) // 1000 % 2 == 0 else "B" for k in range(2500)]


_interval = st.tuples(st.integers(0, 5000), st.integers(1, 800)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(_interval, min_size=1, max_size=12),
    turns=st.lists(st.tuples(_interval, st.sampled_from("ABC")), min_size=1, max_size=6),
    label=st.sampled_from(["A", "B", "Z", None]),
)
def test_assignment_properties(words, turns, label):
    word_objs = [Word(f"w{k}", s, e) for k, (s, e) in enumerate(words)]
    turn_objs = [Turn(spk, s, e) for (s, e), spk in turns]
    utts = [Utterance(0, 6000, "all", label)]
    out = assign_speakers(word_objs, turn_objs, utts)
    assert [w.text for w in out] == [w.text for w in word_objs]
    for w, got in zip(word_objs, out, strict=True):
        best = 0
        for t in turn_objs:
            inter = min(w.end_ms, t.end_ms) - max(w.start_ms, t.start_ms)
            best = max(best, inter)
        if best > 0:
            winners = {
                t.speaker
                for t in turn_objs
                if min(w.end_ms, t.end_ms) - max(w.start_ms, t.start_ms) == best
            }
            assert got.speaker in winners
            if label in winners:
                assert got.speaker == label
        else:
            gaps = [max(t.start_ms - w.end_ms, w.start_ms - t.end_ms) for t in turn_objs]
            if min(gaps) <= NEAREST_TURN_MS:
                assert got.speaker in {t.speaker for t, g in zip(turn_objs, gaps, strict=True) if g == min(gaps)}
            else:
                assert got.speaker == label
    # Idempotent: assigning again changes nothing.
    assert assign_speakers(out, turn_objs, utts) == out
