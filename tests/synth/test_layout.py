"""The layout of spoken turns on one timeline, on hand-made speech with known word times."""

from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microturn.schemas.dialogue import parse_dialogue
from microturn.schemas.turns import Turn, turn_stats
from microturn.synth.layout import LATCH_MS, MIN_FRAGMENT_MS, PHRASE_BREAK_MS, lay_out, phrases, speakable
from microturn.synth.timing import DEFAULT_TIMING, TimingModel
from microturn.synth.tts import Speech, SpokenWord
from microturn.testing.tone_speech import fixed, tone_speech

SPMS = 16


speech = tone_speech


def model(**kw) -> TimingModel:
    base: dict[str, Any] = dict(gap=fixed(200), overlap_prob=0.0, overlap=fixed(300), pause=fixed(500),
                                reaction=fixed(400), backchannel_delay=fixed(150), backchannel_rate=6.0)
    base.update(kw)
    return TimingModel(**base)


def dialogue(turns, speakers=("A", "B")):
    return parse_dialogue({"id": "t", "speakers": {s: {} for s in speakers}, "turns": turns})


def test_phrases_split_at_long_breaks_only():
    sp = speech(6, breaks={1: PHRASE_BREAK_MS + 80, 3: PHRASE_BREAK_MS - 20})
    parts = phrases(sp)
    assert [len(p.words) for p in parts] == [2, 4]
    assert parts[0].duration_ms == parts[0].words[-1][2]  # a phrase ends at its last word's end
    assert parts[1].words[0][1] == 0


def test_gaps_and_pauses_follow_the_model():
    d = dialogue([{"speaker": "A", "text": "x"}, {"speaker": "B", "text": "y"}, {"speaker": "B", "text": "z"}])
    spoken = [speech(3, breaks={0: 300}), speech(2), speech(2)]
    lay = lay_out(d, spoken, {}, model(), np.random.default_rng(0))
    a, b1, b2 = lay.turns
    assert a.start_ms == 200  # lead-in = one gap
    assert a.pieces[1][0] - (a.pieces[0][0] + a.pieces[0][1].size // SPMS) == 500  # the pause replaced espeak's
    assert b1.start_ms - a.end_ms == 200
    assert b2.start_ms - b1.end_ms == 500  # same speaker goes on after a pause, not a gap
    assert lay.transitions_ms == (200,)


def test_overlapping_transition_and_its_floor():
    d = dialogue([{"speaker": "A", "text": "x"}, {"speaker": "B", "text": "y"}])
    lay = lay_out(d, [speech(8), speech(2)], {}, model(overlap_prob=1.0), np.random.default_rng(0))
    a, b = lay.turns
    assert b.start_ms - a.end_ms == -300
    # A 2-word turn cannot be overlapped by more than half of it.
    lay = lay_out(d, [speech(2, word_ms=100), speech(2)], {}, model(overlap_prob=1.0), np.random.default_rng(0))
    a, b = lay.turns
    assert b.start_ms >= a.start_ms + (a.end_ms - a.start_ms) // 2


def test_backchannel_sits_in_a_pause_and_counts_as_one():
    d = dialogue([{"speaker": "A", "text": "x"}, {"speaker": "B", "text": "mm-hmm", "act": "backchannel"},
                  {"speaker": "B", "text": "y"}])
    lay = lay_out(d, [speech(6), speech(1, word_ms=300), speech(3)], {}, model(), np.random.default_rng(0))
    a, bc, b = lay.turns
    (p0, p1), = a.pauses()  # a pause was opened for the backchannel in a turn that had none
    assert bc.start_ms == p0 + 150 and a.start_ms < bc.start_ms and bc.end_ms < a.end_ms
    segs = [Turn(t.speaker, t.start_ms, t.end_ms) for t in lay.turns]
    stats = turn_stats(segs, lay.end_ms)
    assert stats.backchannels == 1 and stats.turns == 2 and stats.gaps_ms == [200]


def _assert_stopped_at_the_reaction(a, b, starts: list[int], *, word_ms: int) -> None:
    """A (words of ``word_ms`` at ``starts``) stopped at B's onset + 400 ms (the fixed reaction),
    cutting the word said then; or, where that word was begun less than MIN_FRAGMENT_MS before,
    at the end of the word before it; or, in the silence between words, at the last word's end."""
    stop = b.start_ms + 400
    said = [s for s in starts if s < stop]
    on = said[-1]  # the last word begun before the stop
    if stop < on + word_ms and stop - on >= MIN_FRAGMENT_MS:
        assert a.end_ms == stop and a.words[-1][2] == stop  # cut off mid-word
    elif stop < on + word_ms:
        assert a.end_ms == said[-2] + word_ms and len(a.words) == len(said) - 1  # the fragment not begun
    else:
        assert a.end_ms == on + word_ms and len(a.words) == len(said)  # stopped in the silence after a word


def test_interruption_cuts_the_speaker_off_when_the_reaction_time_is_up():
    d = dialogue([{"speaker": "A", "text": "x"}, {"speaker": "B", "text": "y", "act": "interruption"}])
    a_speech = speech(12, word_ms=200)
    lay = lay_out(d, [a_speech, speech(3)], {}, model(), np.random.default_rng(3))
    a, b = lay.turns
    assert len(a.words) < 12  # the rest was never said
    starts = [w.start_ms + a.start_ms - a_speech.words[0].start_ms for w in a_speech.words]
    assert b.start_ms in starts[4:]  # onset at a word start after the first third
    _assert_stopped_at_the_reaction(a, b, starts, word_ms=200)
    (ev,) = lay.events
    assert ev.type == "interruption" and ev.payload["interrupted"] == "A"
    assert ev.payload["overlap_ms"] == a.end_ms - b.start_ms > 0
    # The audio of A stops where its words stop.
    assert a.pieces[-1][0] + a.pieces[-1][1].size // SPMS == a.end_ms == a.words[-1][2]


@pytest.mark.parametrize("seed", range(12))
def test_interruption_reaction_is_the_sampled_one_and_words_stay_inside_the_audio(seed):
    """Whatever the onset, the interrupted speaker's audio stops at onset + reaction (or, to not
    begin a fragment of under MIN_FRAGMENT_MS, at the start of that word), and every kept word
    lies inside the audio that was kept."""
    d = dialogue([{"speaker": "A", "text": "x"}, {"speaker": "B", "text": "y", "act": "interruption"}])
    a_speech = speech(14, word_ms=170)
    lay = lay_out(d, [a_speech, speech(3)], {}, model(), np.random.default_rng(seed))
    a, b = lay.turns
    starts = [w.start_ms + a.start_ms - a_speech.words[0].start_ms for w in a_speech.words]
    _assert_stopped_at_the_reaction(a, b, starts, word_ms=170)
    assert all(ws < we <= a.end_ms for _, ws, we in a.words)
    (ev,) = lay.events
    assert ev.payload["overlap_ms"] == a.end_ms - b.start_ms


def test_timed_responses_start_exactly_on_target():
    d = parse_dialogue({"id": "t", "speakers": {"U": {"role": "user"}, "M": {"role": "model"}}, "turns": [
        {"speaker": "U", "text": "count every two seconds", "act": "timed_request", "targets_ms": [2000, 4000, 6000],
         "responses": ["two", "four", "six"]},
        {"speaker": "U", "text": "thanks"}]})
    resp = [speech(1), speech(1), speech(1)]
    lay = lay_out(d, [speech(4), speech(1)], {0: resp}, model(), np.random.default_rng(0))
    req = lay.turns[0]
    answers = [t for t in lay.turns if t.act == "timed_response"]
    assert [t.start_ms - req.end_ms for t in answers] == [2000, 4000, 6000]
    events = [e for e in lay.events if e.type == "timed_instruction"]
    assert [e.payload["target_ms"] for e in events] == [req.end_ms + x for x in (2000, 4000, 6000)]
    assert lay.turns[-1].speaker == "U" and lay.turns[-1].start_ms > answers[-1].end_ms


ACTS = st.sampled_from(["statement", "question", "backchannel", "interruption"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from("AB"), ACTS, st.integers(1, 9)), min_size=1, max_size=12),
       st.integers(0, 2**31))
def test_no_speaker_ever_overlaps_their_own_voice(script, seed):
    turns, prev = [], None
    for spk, act, _ in script:
        if act in ("backchannel", "interruption") and (prev is None or prev == spk):
            act = "statement"
        turns.append({"speaker": spk, "text": "x", "act": act})
        prev = spk
    d = dialogue(turns)
    spoken = [speech(n, breaks={1: 250}) for _, _, n in script]
    lay = lay_out(d, spoken, {}, DEFAULT_TIMING, np.random.default_rng(seed))
    again = lay_out(d, spoken, {}, DEFAULT_TIMING, np.random.default_rng(seed))
    assert [(t.start_ms, t.end_ms) for t in lay.turns] == [(t.start_ms, t.end_ms) for t in again.turns]
    for spk in "AB":
        spans = sorted((s, s + w.size // SPMS) for t in lay.turns if t.speaker == spk for s, w in t.pieces)
        assert all(e0 <= s1 for (_, e0), (s1, _) in pairwise(spans)), spans
    for t in lay.turns:
        assert t.start_ms >= 0 and t.words == sorted(t.words, key=lambda w: w[1])
        assert all(s < e for _, s, e in t.words)
        assert t.words[0][1] == t.start_ms and t.words[-1][2] == t.end_ms


def test_lay_out_checks_its_inputs():
    d = dialogue([{"speaker": "A", "text": "x"}])
    with pytest.raises(ValueError, match="spoken turns"):
        lay_out(d, [], {}, DEFAULT_TIMING, np.random.default_rng(0))


def test_layout_realises_a_fitted_model(tmp_path):
    """Fit the model on ingest-like records, lay out dialogues with it, and measure them again
    with the records' own statistics: gaps and overlaps match the fitted data (KS <= 0.1)."""
    import warnings

    from timing_corpus import make_corpus

    from microturn.synth.timing import ks_statistic
    from microturn.synth.timing_fit import fit

    corpus = make_corpus(seed=0, conversations=250)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(corpus.segments, corpus.words)
    by_conv: dict[str, list[Turn]] = {}
    for r in corpus.segments:
        by_conv.setdefault(r["conversation_id"], []).append(Turn(r["speaker"], r["start_ms"], r["end_ms"]))
    real_gaps, real_overlaps = [], []
    for turns in by_conv.values():
        s = turn_stats(turns, max(t.end_ms for t in turns))
        real_gaps += s.gaps_ms
        real_overlaps += s.overlaps_ms
    rng = np.random.default_rng(5)
    gaps, overlaps = [], []
    for _ in range(160):
        turns, spoken, spk = [], [], "A"
        for _ in range(14):
            turns.append({"speaker": spk, "text": "x"})
            spoken.append(speech(int(rng.integers(4, 24)), word_ms=int(rng.integers(180, 320)), breaks={2: 300}))
            if rng.random() < 0.3:  # a listener token during the turn
                turns.append({"speaker": "B" if spk == "A" else "A", "text": "mm", "act": "backchannel"})
                spoken.append(speech(1, word_ms=300))
            spk = "B" if spk == "A" else "A"
        lay = lay_out(dialogue(turns), spoken, {}, model, rng)
        s = turn_stats([Turn(t.speaker, t.start_ms, t.end_ms) for t in lay.turns], lay.end_ms)
        gaps += s.gaps_ms
        overlaps += s.overlaps_ms
    ks_gap, ks_overlap = ks_statistic(gaps, real_gaps), ks_statistic(overlaps, real_overlaps)
    print(f"\nKS gap {ks_gap:.3f} (n={len(gaps)}), overlap {ks_overlap:.3f} (n={len(overlaps)})")
    assert ks_gap <= 0.1 and ks_overlap <= 0.1


# --- pauses inside turns: where a speaker holds, where a turn ends ------------------------------


def worded(texts: list[str], *, word_ms: int = 250, breaks: dict[int, int] | None = None) -> Speech:
    """Like :func:`speech`, with the given word texts."""
    sp = speech(len(texts), word_ms=word_ms, breaks=breaks)
    return Speech(wave_N=sp.wave_N, words=tuple(SpokenWord(text=t, start_ms=w.start_ms, end_ms=w.end_ms)
                                                  for t, w in zip(texts, sp.words, strict=True)))


def test_speakable_turns_inner_sentence_ends_into_commas():
    assert speakable("I know. The next one is dear! Shall we go? Fine.") == \
        "I know, The next one is dear, Shall we go? Fine."
    assert speakable("Meet Dr. Lee at 6 a.m. then... ok.") == "Meet Dr. Lee at 6 a.m. then... ok."
    text = "Right. So. Yes!"
    assert len(speakable(text).split()) == len(text.split())
    # The same speaker goes on in a next turn: this one does not end with a fall either.
    assert speakable("I know. Fine.", ends_turn=False) == "I know, Fine,"
    assert speakable("Is it?", ends_turn=False) == "Is it?"


def test_a_question_inside_a_turn_is_latched_not_paused():
    d = dialogue([{"speaker": "A", "text": "x"}])
    sp = worded(["Six", "am?", "That", "hurts,", "really."], breaks={1: 300, 3: 200})
    lay = lay_out(d, [sp], {}, model(pause_rate=0.0), np.random.default_rng(0))
    (a,) = lay.turns
    assert [e - s for s, e in a.pauses()] == [LATCH_MS, 500]  # after "?" latched, after "," the model's pause


@pytest.mark.parametrize("seed", range(5))
def test_holds_open_after_commas_and_continuation_words_only(seed):
    texts = ["we", "went", "there", "and", "then,", "because", "it", "rained", "we", "left", "again", "now."]
    d = dialogue([{"speaker": "A", "text": "x"}])
    # 60 pauses a minute over a 3.3 s turn: about 3.3 expected; 3 places to put them: after "and",
    # "then," and "because".
    lay = lay_out(d, [worded(texts)], {}, model(pause_rate=60.0), np.random.default_rng(seed))
    (a,) = lay.turns
    assert [w[0] for w in a.words] == texts
    ends = {e: w for w, _, e in a.words}
    pauses = a.pauses()
    assert 1 <= len(pauses) <= 3
    for s, e in pauses:
        assert e - s == 500
        assert ends[s] in ("and", "then,", "because")


def test_no_pause_rate_no_extra_pauses_and_the_stream_is_unchanged():
    texts = ["well", "and", "so", "on."]
    d = dialogue([{"speaker": "A", "text": "x"}, {"speaker": "B", "text": "y"}])
    lay = lay_out(d, [worded(texts), speech(2)], {}, model(pause_rate=0.0), np.random.default_rng(0))
    assert lay.turns[0].pauses() == []
    many = lay_out(d, [worded(texts), speech(2)], {}, model(pause_rate=600.0), np.random.default_rng(0))
    assert len(many.turns[0].pauses()) == 2  # after "and" and after "so", never after the last word


def test_silence_length_alone_does_not_tell_a_hold_from_a_shift():
    """On laid-out dialogues with the default timing, the AUC of a mutual silence's length for
    shift against hold stays near chance (0.35-0.65), and the holds sit after commas and
    continuation words while shifts follow a turn's final "." or "?"."""
    from collections import defaultdict

    from microturn.synth.silences import auc, mutual_silences

    rng = np.random.default_rng(7)
    shifts, holds, hold_words, shift_words = [], [], [], []
    for _ in range(150):
        texts_by_turn = []
        for k in range(6):
            n_words = int(rng.integers(4, 16))
            texts = [f"w{i}," if rng.random() < 0.15 else ("and" if rng.random() < 0.1 else f"w{i}")
                     for i in range(n_words - 1)] + ["end?" if k % 2 else "end."]
            texts_by_turn.append(texts)
        d = dialogue([{"speaker": "AB"[k % 2], "text": " ".join(t)} for k, t in enumerate(texts_by_turn)])
        # Comma breaks as the TTS makes them (150 ms), 30 ms between other words.
        spoken = [worded(t, word_ms=int(rng.integers(180, 320)),
                         breaks={i: 150 for i, w in enumerate(t) if w.endswith(",")}) for t in texts_by_turn]
        lay = lay_out(d, spoken, {}, DEFAULT_TIMING, rng)
        activity, ends = defaultdict(list), {}
        for t in lay.turns:
            for w, s, e in t.words:
                activity[t.speaker].append((s, e))
                ends[e] = w
        for s in mutual_silences(activity):
            (shifts if s.is_shift else holds).append(s.duration_ms)
            (shift_words if s.is_shift else hold_words).append(ends[s.start_ms])
    assert len(holds) >= 200 and len(shifts) >= 200
    assert 0.35 <= auc(shifts, holds) <= 0.65
    assert all(w.endswith(",") or w == "and" for w in hold_words)
    assert all(w in ("end.", "end?") for w in shift_words)
