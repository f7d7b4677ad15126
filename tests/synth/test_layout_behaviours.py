"""The layout of visual-cue answers, background-result mentions and simultaneous renderings, on
hand-made speech with known word times and a timing model with fixed durations."""

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microturn.schemas.dialogue import parse_dialogue
from microturn.synth.layout import FRAME_MS, MAX_MENTION_GAP_MS, frame_ceil, lay_out, sentence_spans
from microturn.synth.timing import Duration, TimingModel
from microturn.testing.tone_speech import fixed, tone_speech

SPMS = 16


speech = tone_speech


def model(**kw) -> TimingModel:
    base: dict[str, Any] = dict(gap=fixed(200), overlap_prob=0.0, overlap=fixed(300), pause=fixed(500),
                                reaction=fixed(400), backchannel_delay=fixed(150), backchannel_rate=0.0,
                                pause_rate=0.0, cue_reaction=fixed(700))
    base.update(kw)
    return TimingModel(**base)


def dialogue(turns, speakers=None):
    speakers = speakers or {"U": {"role": "user"}, "M": {"role": "model"}}
    return parse_dialogue({"id": "t", "speakers": speakers, "turns": turns})


def words_of(text: str) -> int:
    return len(text.split())


def test_frame_ceil_is_the_next_frame_start():
    assert [frame_ceil(t) for t in (0, 1, 99, 100, 101, 12236)] == [0, 100, 100, 100, 200, 12300]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**7))
def test_frame_ceil_properties(t):
    f = frame_ceil(t)
    assert f % FRAME_MS == 0 and t <= f < t + FRAME_MS


def test_sentence_spans_split_at_sentence_ends_only():
    text = "Good morning, everyone. Thank you Dr. Smith! Is that right? yes"
    spans = sentence_spans(text, [(0, 1)] * words_of(text))
    assert spans == [(0, 2), (3, 6), (7, 9), (10, 10)]
    assert sentence_spans("a b", [(0, 1)]) == []  # token count disagrees (a truncated turn)


def test_visual_answers_follow_each_cue_by_the_cue_reaction():
    request = "tell me when the red circle shows up and count the bounces"
    d = dialogue([
        {"speaker": "U", "text": request, "act": "visual_request", "cues": [
            {"kind": "appear", "after_ms": 2950, "shape": "circle", "colour": "red", "responses": ["there"]},
            {"kind": "repeat", "after_ms": 6000, "shape": "square", "colour": "blue", "count": 3,
             "period_ms": 1500, "responses": ["one", "two", "three"]},
            {"kind": "text", "after_ms": 12000, "text": "HELLO", "responses": ["it says hello"]}]},
        {"speaker": "U", "text": "thanks"}])
    answers = [speech(1), speech(1), speech(1), speech(1), speech(3)]
    lay = lay_out(d, [speech(words_of(request)), speech(1)], {0: answers}, model(), np.random.default_rng(0))
    request_end = lay.turns[0].end_ms
    cues = [e for e in lay.events if e.type == "visual_cue"]
    start = frame_ceil(request_end + 6000)
    # A repetition is seen done on the last frame of its bounce (microturn.synth.scene.cue_times).
    expected_t = [frame_ceil(request_end + 2950), start + 1400, start + 2900, start + 4400,
                  frame_ceil(request_end + 12000)]
    assert [e.t_ms for e in cues] == expected_t
    assert all(e.t_ms % FRAME_MS == 0 for e in cues)
    assert all(e.speaker == "M" and e.payload["requester"] == "U" for e in cues)
    assert [e.payload["rep"] for e in cues] == [None, 1, 2, 3, None]
    assert [e.payload["answer"] for e in cues] == ["there", "one", "two", "three", "it says hello"]
    answered = [t for t in lay.turns if t.act == "visual_response"]
    for e, turn in zip(cues, answered, strict=True):
        assert turn.start_ms == e.t_ms + 700 == e.payload["response_start_ms"]
        assert turn.end_ms == e.payload["response_end_ms"] and e.payload["delay_ms"] == 700
    # The scene shows what the requests asked for, at the frame-aligned times.
    assert [(c["kind"], c["t_ms"]) for c in lay.scene_cues] == [
        ("appear", expected_t[0]), ("repeat", start), ("text", expected_t[-1])]
    assert lay.scene_cues[1]["count"] == 3 and lay.scene_cues[1]["period_ms"] == 1500
    # The turn written after the request follows its last answer.
    assert lay.turns[-1].speaker == "U" and lay.turns[-1].start_ms > answered[-1].end_ms


def test_one_answer_to_a_repeat_comes_after_the_last_repetition():
    d = dialogue([{"speaker": "U", "text": "how many bounces", "act": "visual_request", "cues": [
        {"kind": "repeat", "after_ms": 1000, "count": 4, "period_ms": 800, "responses": ["four bounces"]}]}])
    lay = lay_out(d, [speech(3)], {0: [speech(2)]}, model(), np.random.default_rng(0))
    (cue,) = [e for e in lay.events if e.type == "visual_cue"]
    assert cue.t_ms == frame_ceil(lay.turns[0].end_ms + 1000) + 4 * 800 - FRAME_MS
    assert cue.payload["rep"] == 4 and cue.payload["count"] == 4


def test_an_answer_still_being_said_delays_the_next_with_a_warning():
    d = dialogue([{"speaker": "U", "text": "count", "act": "visual_request", "cues": [
        {"kind": "repeat", "after_ms": 500, "count": 2, "period_ms": 300, "responses": ["one", "two"]}]}])
    with pytest.warns(UserWarning, match="previous answer was still being spoken"):
        lay = lay_out(d, [speech(1)], {0: [speech(4), speech(1)]}, model(), np.random.default_rng(0))
    first, second = [t for t in lay.turns if t.act == "visual_response"]
    assert second.start_ms >= first.end_ms


def _background_dialogue(after_ms: int, user_words: int = 8):
    return dialogue([
        {"speaker": "U", "text": "when does it open"},
        {"speaker": "M", "text": "let me look", "act": "delegation", "result": "Opens 10:00.",
         "mention": "it opens at ten", "after_ms": after_ms},
        {"speaker": "U", "text": " ".join(["word"] * user_words)},
        {"speaker": "M", "text": "sounds good"},
        {"speaker": "U", "text": "bye now"},
    ]), [speech(4), speech(3), speech(user_words), speech(2), speech(2)], {1: [speech(4)]}


def test_a_result_arriving_while_the_user_speaks_is_mentioned_after_they_yield():
    d, spoken, responses = _background_dialogue(after_ms=500)
    lay = lay_out(d, spoken, responses, model(), np.random.default_rng(0))
    user_turn = [t for t in lay.turns if t.speaker == "U"][1]
    mention = next(t for t in lay.turns if t.act == "background_mention")
    arrival, said = [e for e in lay.events if e.type == "background_result"]
    assert arrival.payload["phase"] == "arrival" and said.payload["phase"] == "mention"
    assert user_turn.start_ms < arrival.t_ms < user_turn.end_ms  # it came while the user spoke
    assert mention.start_ms == user_turn.end_ms + 200  # one gap after the yield, never over the user
    assert said.t_ms == mention.start_ms == said.payload["mention_ms"]
    assert said.payload["yield_ms"] == user_turn.end_ms
    assert said.payload["delay_ms"] == mention.start_ms - arrival.t_ms
    assert said.payload["result"] == "Opens 10:00." and said.payload["mention"] == "it opens at ten"
    # The script goes on after the mention: the model's own next turn follows it.
    after = [t for t in lay.turns if t.speaker == "M" and t.act == "statement"][0]
    assert after.start_ms > mention.end_ms


def test_a_result_arriving_after_the_last_yield_is_mentioned_at_the_end():
    d, spoken, responses = _background_dialogue(after_ms=60_000)
    lay = lay_out(d, spoken, responses, model(), np.random.default_rng(0))
    mention = next(t for t in lay.turns if t.act == "background_mention")
    arrival = next(e for e in lay.events if e.type == "background_result")
    assert mention.start_ms == arrival.t_ms + 200
    assert all(t.end_ms <= mention.start_ms for t in lay.turns if t is not mention)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(after=st.integers(1, 20_000), user_words=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_a_mention_never_starts_over_the_users_speech(after, user_words, seed):
    d, spoken, responses = _background_dialogue(after_ms=after, user_words=user_words)
    timing = model(gap=Duration(family="lognormal", params=(600.0, 1.2)), overlap_prob=0.35)  # long gaps too
    lay = lay_out(d, spoken, responses, timing, np.random.default_rng(seed))
    mention = next(t for t in lay.turns if t.act == "background_mention")
    arrival, said = [e for e in lay.events if e.type == "background_result"]
    assert mention.start_ms >= arrival.t_ms
    # A bounded delay once the user yields (or once it arrives, when that is later).
    yielded = said.payload["yield_ms"] if said.payload["yield_ms"] is not None else max(
        t.end_ms for t in lay.turns if t is not mention and t.start_ms < mention.start_ms)
    assert mention.start_ms - max(yielded, arrival.t_ms) <= MAX_MENTION_GAP_MS
    for t in lay.turns:
        if t.speaker == "U" and t.start_ms <= mention.start_ms:
            assert t.end_ms <= mention.start_ms, "the mention starts while the user speaks"


def test_a_rendering_trails_each_source_sentence_by_the_lag():
    source = "one two. three four five. six"
    rendering = "un deux. trois quatre cinq. six"
    d = dialogue([{"speaker": "U", "text": source}, {"speaker": "M", "text": rendering, "act": "simultaneous",
                                                       "lag_ms": 1500},
                  {"speaker": "U", "text": "next"}],
                 speakers={"U": {}, "M": {"voice": "fr-fr", "language": "fr"}})
    lay = lay_out(d, [speech(6), speech(6, word_ms=200), speech(1)], {}, model(), np.random.default_rng(0))
    src = lay.turns[0]
    render = next(t for t in lay.turns if t.act == "simultaneous")
    events = [e for e in lay.events if e.type == "simultaneous"]
    assert [e.payload["source_text"] for e in events] == ["one two.", "three four five.", "six"]
    assert [e.payload["text"] for e in events] == ["un deux.", "trois quatre cinq.", "six"]
    assert all(e.payload["language"] == "fr" and e.speaker == "M" for e in events)
    # Source sentences start at words 0, 2 and 5; each rendering starts 1.5 s later or after the
    # rendering's previous sentence ends (80 ms on).
    src_starts = [src.words[k][1] for k in (0, 2, 5)]
    assert events[0].t_ms == src_starts[0] + 1500 and events[0].payload["lag_ms"] == 1500
    for e, s0 in zip(events, src_starts, strict=True):
        assert e.payload["source_start_ms"] == s0 and e.t_ms >= s0 + 1500
    for (s0, w0), (s1, _) in zip(render.pieces, render.pieces[1:], strict=False):
        assert s1 >= s0 + w0.size // SPMS + 80  # the renderer never overlaps itself
    # The rendering does not take the floor: the source speaker's next turn follows their own.
    nxt = lay.turns[-1] if lay.turns[-1].speaker == "U" else lay.turns[-2]
    assert nxt.start_ms == src.end_ms + 500


def test_a_rendering_with_other_sentence_counts_trails_the_whole_turn():
    d = dialogue([{"speaker": "U", "text": "one. two."}, {"speaker": "M", "text": "un deux", "act": "simultaneous"}])
    lay = lay_out(d, [speech(2), speech(2)], {}, model(), np.random.default_rng(3))
    (e,) = [e for e in lay.events if e.type == "simultaneous"]
    assert 1000 <= e.payload["lag_ms"] <= 3000  # drawn from LAG_MS
    assert e.payload["source_end_ms"] == lay.turns[0].end_ms
