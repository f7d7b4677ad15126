"""The event rules of the evaluation items on hand-built turns: each threshold at its edge."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microturn.pipelines.duplex.items_select import (
    MAX_RESPONSE_GAP_MS,
    PAUSE_MAX_MS,
    PAUSE_MIN_MS,
    backchannel,
    backchannel_distribution,
    pause_handling,
    role_view,
    smooth_turn_taking,
    user_interruption,
)
from microturn.schemas.turns import Turn

U, M = "U", "M"


def view(turns, *, words=(), events=(), duration_ms=40_000, model=M):
    return role_view(model=model, speakers=[U, M], duration_ms=duration_ms,
                     segments=[Turn(s, a, b, 0) for s, a, b in turns], words=list(words), events=list(events))


def test_distribution_uses_full_duplex_benchs_bins():
    # 1.0 s -> int(1.0 / 0.2) + 1 = 6 bins; [0.25, 0.45] s covers bins 1 and 2.
    dist = backchannel_distribution([(0.25, 0.45)], 1.0)
    assert len(dist) == 6
    assert dist[1] == dist[2] == pytest.approx(0.5) and max(dist[0], *dist[3:]) < 1e-9
    # No backchannel: the 1e-10 floor makes it uniform.
    assert backchannel_distribution([], 0.5) == pytest.approx([1 / 3] * 3)


@given(st.floats(0.01, 60), st.lists(st.tuples(st.floats(0, 60), st.floats(0, 5)), max_size=6))
def test_distribution_is_a_distribution_over_the_items_bins(duration, spans):
    dist = backchannel_distribution([(s, s + d) for s, d in spans], duration)
    assert len(dist) == int(duration / 0.2) + 1
    assert sum(dist) == pytest.approx(1.0) and min(dist) > 0


def test_smooth_turn_taking_edges():
    base = [(U, 1000, 5000)]
    (plan,) = smooth_turn_taking(view([*base, (M, 5000 + MAX_RESPONSE_GAP_MS, 9000)]), context_ms=2000)
    assert (plan.start_ms, plan.end_ms, plan.silence_from_ms) == (3000, 9000, 5000)
    assert plan.annotation[0]["timestamp"] == [2.0, 2.0 + MAX_RESPONSE_GAP_MS / 1000]
    assert not smooth_turn_taking(view([*base, (M, 5001 + MAX_RESPONSE_GAP_MS, 9000)]), context_ms=2000)
    # A window never starts before the user's turn; a reply overlapping the end by less than the
    # record contract's 200 ms interruption overlap is a change of speaker and keeps its own start.
    (plan,) = smooth_turn_taking(view([*base, (M, 4850, 7000)]), context_ms=8000)
    assert plan.start_ms == 1000 and plan.annotation[0]["timestamp"] == [4.0, 3.85]
    # The model barging in on the user is an interruption, not a smooth change of speaker.
    barge = {"type": "interruption", "speaker": M, "t_ms": 4000, "payload": "{}"}
    assert not smooth_turn_taking(view([*base, (M, 4000, 7000)], events=[barge]), context_ms=2000)
    # The conversation must hold a second after the turn end.
    assert not smooth_turn_taking(view([*base, (M, 5200, 5900)], duration_ms=5900), context_ms=2000)


def test_pause_thresholds_and_the_silent_model():
    words = [(U, "a", 1000, 2000), (U, "b", 2000 + PAUSE_MIN_MS, 3000), (U, "c", 3499, 4000),
             (U, "d", 4000 + PAUSE_MAX_MS, 8000)]
    (plan,) = pause_handling(view([(U, 1000, 8000), (M, 9000, 10000)], words=words), context_ms=500)
    # 500 ms counts, 499 ms does not, 3000 ms is a yield and a return, not a pause.
    assert plan.events["pauses_ms"] == [[2000, 2000 + PAUSE_MIN_MS]]
    assert (plan.start_ms, plan.end_ms, plan.silence_from_ms) == (1500, 8000, None)
    assert plan.annotation == [{"timestamp": [0.5, 1.0]}]
    # The model talking through the pause (here a backchannel) rules it out.
    assert not pause_handling(view([(U, 1000, 8000), (M, 2100, 2400)], words=words), context_ms=500)
    # A word the aligner starts a few ms before the diarization's segment still bounds a pause.
    (plan,) = pause_handling(view([(U, 1000, 1400), (U, 2000, 2400)], words=[(U, "hello", 994, 1400),
                                                                            (U, "hello", 2000, 2400)]),
                             context_ms=500)
    assert plan.events["pauses_ms"] == [[1400, 2000]]
    # Without words, the gaps between the user's segments.
    (plan,) = pause_handling(view([(U, 1000, 2000), (U, 2600, 4000), (M, 5000, 6000)]), context_ms=500)
    assert plan.events["pauses_ms"] == [[2000, 2600]]


def test_interruptions_need_the_model_talking_and_fall_back_to_the_segments():
    turns = [(M, 1000, 6000), (U, 4000, 8000)]
    # No events rows: the record contract's rule on the segments (2 s overlap, the model yields).
    (plan,) = user_interruption(view(turns, words=[(U, "no", 4000, 4300), (U, "wait", 4300, 4600)]),
                                context_ms=3000)
    assert plan.events == {"interrupt_start_ms": 4000, "interrupt_end_ms": 8000}
    assert (plan.start_ms, plan.end_ms, plan.silence_from_ms) == (1000, 12000, 8000)
    assert plan.annotation == [{"context": "", "interrupt": "no wait", "timestamp": [3.0, 7.0]}]
    # An interruption event at a time the model is silent is not a barge-in on the model.
    late = {"type": "interruption", "speaker": U, "t_ms": 7000, "payload": "{}"}
    assert not user_interruption(view([(M, 1000, 6000), (U, 6500, 9000)], events=[late]), context_ms=3000)


def test_backchannel_items_need_a_long_user_turn():
    bc = {"type": "backchannel", "speaker": M, "t_ms": 2000, "payload": '{"duration_ms": 400}'}
    (plan,) = backchannel(view([(U, 1000, 4000), (M, 2000, 2400)], events=[bc]), context_ms=0)
    assert plan.events["backchannels_ms"] == [[2000, 2400]] and (plan.start_ms, plan.end_ms) == (1000, 4000)
    assert plan.annotation["backchannels"] == [[1.0, 1.4]]
    assert not backchannel(view([(U, 1000, 3999), (M, 2000, 2400)], events=[bc]), context_ms=0)
