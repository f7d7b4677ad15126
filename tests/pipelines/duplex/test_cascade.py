"""The cascade baseline: silence-timeout turn-taking with one fixed espeak answer.

* The plan (pure): an answer 0.7 s after every end of the user's speech unless the user resumes
  within 0.7 s; cut 0.25 s after a barge-in starts; dropped past the item's end; clipped at it.
* On speech-like sound that silero detects: the answer's samples start at the user's VAD end +
  0.7 s, are the fixed answer's samples, stop 0.25 s after a barge-in, and the stream is as
  long as the user's; words are those started before the stop, their ends cut there.
* Bad settings are errors naming the field.

Shape suffixes follow microturn.schemas.legend: N audio samples.
"""

from __future__ import annotations

import numpy as np
import pytest

from microturn.pipelines.duplex.audio import SAMPLE_RATE, speech_segments
from microturn.pipelines.duplex.cascade import CascadeConfig, cascade_output, plan_answers, spoken_response
from microturn.testing.speechlike import place

# ------------------------------------------------------------------ the plan, by hand


def _flat(pairs) -> list[float]:
    return [x for pair in pairs for x in pair]


def _approx(pairs):
    return pytest.approx(_flat(pairs))


def test_answer_starts_700_ms_after_the_user_stops():
    assert _flat(plan_answers([(1.0, 3.0)], 10.0, 2.0)) == _approx([(3.7, 5.7)])


def test_a_pause_shorter_than_the_timeout_is_waited_out():
    # 0.5 s pause (< 0.7 s): one turn 1.0-4.0; exactly 0.7 s also counts as a pause.
    assert _flat(plan_answers([(1.0, 2.0), (2.5, 4.0)], 10.0, 2.0)) == _approx([(4.7, 6.7)])
    assert _flat(plan_answers([(1.0, 2.0), (2.7, 4.0)], 10.0, 2.0)) == _approx([(4.7, 6.7)])


def test_a_longer_pause_gets_an_answer_that_the_resuming_user_cuts():
    # The user stops at 2.0, the answer starts at 2.7, the user resumes at 3.0: stop at 3.25;
    # after the user's second stretch (ends 4.0) the answer comes again at 4.7.
    assert _flat(plan_answers([(1.0, 2.0), (3.0, 4.0)], 10.0, 2.0)) == _approx([(2.7, 3.25), (4.7, 6.7)])


def test_barge_in_stop_is_never_past_the_answers_own_end():
    # The user comes back 0.1 s before the answer ends: the answer ends by itself first.
    assert _flat(plan_answers([(0.0, 1.0), (3.6, 4.0)], 10.0, 2.0)) == _approx([(1.7, 3.7), (4.7, 6.7)])


def test_answers_past_the_end_are_dropped_and_clipped_at_it():
    assert plan_answers([(1.0, 3.0)], 3.7, 2.0) == []
    assert _flat(plan_answers([(1.0, 3.0)], 4.5, 2.0)) == _approx([(3.7, 4.5)])
    assert plan_answers([], 5.0, 2.0) == []


def test_the_numbers_are_settings():
    cfg = CascadeConfig(endpoint_s=0.3, barge_in_s=0.0)
    assert _flat(plan_answers([(1.0, 2.0), (2.5, 4.0)], 10.0, 2.0, cfg)) == _approx([(2.3, 2.5), (4.3, 6.3)])


@pytest.mark.parametrize("bad", [dict(endpoint_s=-0.1), dict(barge_in_s=float("nan")), dict(endpoint_s=True),
                                 dict(response_text="  ")])
def test_bad_settings_are_errors_naming_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        CascadeConfig(**bad)


# ------------------------------------------------------------------ on audio


def _onsets(wave_N: np.ndarray) -> list[tuple[float, float]]:
    """Spans of non-zero samples, in seconds."""
    nz_N = np.flatnonzero(np.abs(wave_N) > 0)
    if nz_N.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(nz_N) > 1)
    starts = np.r_[nz_N[0], nz_N[breaks + 1]]
    ends = np.r_[nz_N[breaks], nz_N[-1]] + 1
    return [(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in zip(starts, ends, strict=True)]


@pytest.fixture(scope="module")
def response():
    return spoken_response()


def test_the_fixed_answer_is_espeak_speech_with_words(response):
    assert 3.0 < response.duration_s < 5.0
    assert [w[0] for w in response.words] == CascadeConfig().response_text.split()
    assert all(0 <= s <= e <= response.duration_s for _, s, e in response.words)
    assert spoken_response() is response  # spoken once per process
    # silero hears it as speech, so the scorer sees the cascade's answers.
    found = speech_segments(response.wave_N)
    assert found and found[0][0] < 0.2 and found[-1][1] > response.duration_s - 0.3


def test_answer_follows_the_users_vad_end_and_stops_at_barge_in(response):
    # The user talks 0.5-2.0 s, then barges in at 3.5 s (the answer, from ~2.8 s, is 3.9 s long).
    input_N = place(8.0, [(0.5, 2.0), (3.5, 5.0)])
    user = speech_segments(input_N)
    assert len(user) == 2 and abs(user[0][1] - 2.0) < 0.2 and abs(user[1][0] - 3.5) < 0.1
    out = cascade_output(input_N, response=response)
    assert out.wave_N.shape == input_N.shape and out.wave_N.dtype == np.float32
    assert out.user_segments == tuple(user)
    first_start = user[0][1] + 0.7
    first_stop = user[1][0] + 0.25
    second_start = user[1][1] + 0.7
    assert _flat(out.answers) == _approx([(first_start, first_stop), (second_start, 8.0)])
    # The samples: the answer from its first sample at the start, silence before and between.
    a, b = round(first_start * SAMPLE_RATE), round(first_stop * SAMPLE_RATE)
    np.testing.assert_array_equal(out.wave_N[:a], 0)
    np.testing.assert_array_equal(out.wave_N[a:b - 160], response.wave_N[:b - 160 - a])
    assert np.abs(out.wave_N[b - 1]) <= np.abs(response.wave_N[b - 1 - a]) * 0.01 + 1e-7  # faded out
    c = round(second_start * SAMPLE_RATE)
    np.testing.assert_array_equal(out.wave_N[b:c], 0)
    np.testing.assert_array_equal(out.wave_N[c:-160], response.wave_N[:input_N.size - c - 160])  # cut at the end: faded
    spans = _onsets(out.wave_N)
    assert spans[0][0] >= first_start and spans[-1][1] <= 8.0
    # Words: those started before each stop, absolute times, ends cut at the stop.
    for start, stop in out.answers:
        mine = [w for w in out.words if start <= w[1] < stop]
        expected = [(t, start + s, min(start + e, stop)) for t, s, e in response.words if start + s < stop]
        assert [w[0] for w in mine] == [w[0] for w in expected]
        assert [x for w in mine for x in w[1:]] == pytest.approx([x for w in expected for x in w[1:]])
    assert len(out.words) < 2 * len(response.words)


def test_silence_gets_no_answer_and_a_pause_gets_none(response):
    assert cascade_output(np.zeros(3 * SAMPLE_RATE, np.float32), response=response).answers == ()
    # A 0.4 s pause inside the user's turn: one answer, after the turn.
    input_N = place(9.0, [(0.5, 2.0), (2.4, 3.5)])
    user = speech_segments(input_N)
    out = cascade_output(input_N, response=response)
    assert len(out.answers) == 1 and out.answers[0][0] == pytest.approx(user[-1][1] + 0.7)
