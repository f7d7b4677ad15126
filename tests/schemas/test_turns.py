from hypothesis import given
from hypothesis import strategies as st

from microturn.schemas.turns import Turn, turn_events, turn_stats


def test_hand_made_conversation():
    # A talks 0-3 s with B's "mm-hmm" inside, B answers after a 200 ms gap, A cuts in 500 ms early.
    turns = [Turn("A", 0, 3000), Turn("B", 1000, 1400), Turn("B", 3200, 5000), Turn("A", 4500, 6000)]
    s = turn_stats(turns, 8000)
    assert s.backchannels == 1
    assert s.turns == 3
    assert s.gaps_ms == [200]
    assert s.overlaps_ms == [500]
    assert s.speech_ratio == 5800 / 8000  # 0-3 s and 3.2-6 s
    assert abs(s.overlap_ratio - (400 + 500) / 5800) < 1e-12
    types = [e.type for e in turn_events(turns)]
    assert types.count("backchannel") == 1
    assert types.count("interruption") == 1
    assert types.count("turn_end") == 3


def test_silence_and_single_speaker():
    assert turn_stats([], 1000).speech_ratio == 0.0
    s = turn_stats([Turn("A", 0, 100), Turn("A", 200, 300)], 1000)
    assert (s.turns, s.gaps_ms, s.overlap_ratio) == (1, [], 0.0)


turn_st = st.builds(
    lambda spk, start, dur: Turn(spk, start, start + dur),
    st.sampled_from(["A", "B", "C"]), st.integers(0, 50_000), st.integers(1, 8_000))


@given(st.lists(turn_st, max_size=40))
def test_invariants(turns):
    duration = max([t.end_ms for t in turns], default=0) + 1
    s = turn_stats(turns, duration)
    assert 0.0 <= s.speech_ratio <= 1.0
    assert 0.0 <= s.overlap_ratio <= 1.0
    assert all(g >= 0 for g in s.gaps_ms) and all(o > 0 for o in s.overlaps_ms)
    # every transition between main turns is either a gap or an overlap
    assert len(s.gaps_ms) + len(s.overlaps_ms) == max(0, s.turns - 1)
    assert s.backchannels + s.turns <= len(turns)
    assert turn_stats(list(reversed(turns)), duration) == s
    events = turn_events(turns)
    assert [e.t_ms for e in events] == sorted(e.t_ms for e in events)
