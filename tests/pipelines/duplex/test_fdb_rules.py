"""Full-Duplex-Bench v1's per-item rules and v1.5's intervals on hand-built inputs.

Every expected value is worked out by hand in the test (the arithmetic is in the comments), never
by calling the rule under test a second time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.pipelines.duplex import rules, timing

# ------------------------------------------------------------------ take-turn rule (words)


def test_no_words_is_no_turn():
    assert rules.take_turn([], 3.0) == (0, None)


def test_exactly_one_second_is_a_turn_even_with_two_words():
    # 3.0 - 2.0 = 1.0 s: not under 1 s, so a turn; latency 2.0 - 1.5 = 0.5 s.
    assert rules.take_turn([("yes", 2.0, 2.4), ("sure", 2.6, 3.0)], 1.5) == (1, pytest.approx(0.5))


def test_under_one_second_three_words_is_no_turn_four_words_is():
    three = [("a", 2.0, 2.2), ("b", 2.3, 2.5), ("c", 2.6, 2.9)]  # 0.9 s, 3 words
    assert rules.take_turn(three, 1.0) == (0, None)
    four = [*three[:2], ("c", 2.6, 2.7), ("d", 2.75, 2.9)]  # 0.9 s, 4 words
    assert rules.take_turn(four, 1.0) == (1, pytest.approx(1.0))


def test_negative_latency_counts_as_zero():
    # The model starts at 0.5 s, before the user's turn ends at 2.0 s.
    assert rules.take_turn([("well", 0.5, 2.5)], 2.0) == (1, 0.0)


def test_null_last_end_uses_the_last_start():
    # Span 1.0 -> 1.5 (the last word's start): 0.5 s, 2 words: no turn.
    assert rules.take_turn([("a", 1.0, 1.2), ("b", 1.5, None)], 0.0) == (0, None)
    # Span 1.0 -> 2.2 = 1.2 s: a turn, latency 1.0 - 0.4 = 0.6.
    assert rules.take_turn([("a", 1.0, 1.2), ("b", 2.2, None)], 0.4) == (1, pytest.approx(0.6))


def test_no_event_time_gives_no_latency():
    assert rules.take_turn([("a", 1.0, 2.5)], None) == (1, None)


def test_null_first_start_is_refused():
    with pytest.raises(ValueError, match="first word chunk has a null start"):
        rules.take_turn([("a", None, 1.0), ("b", 1.0, 3.0)], 0.0)


# ------------------------------------------------------------------ take-turn rule (VAD only)


def test_vad_only_merges_model_gaps_up_to_half_a_second():
    # 1.0-1.6 and 1.9-2.3: gap 0.3 <= 0.5, merged 1.0-2.3 = 1.3 s >= 1 s: a turn, latency 1.0 - 0.5.
    assert rules.take_turn_vad([(1.0, 1.6), (1.9, 2.3)], 0.5) == (1, pytest.approx(0.5))
    # 1.0-1.4 and 2.0-2.5: gap 0.6 > 0.5, two short segments: no turn.
    assert rules.take_turn_vad([(1.0, 1.4), (2.0, 2.5)], 0.5) == (0, None)
    # Exactly 1 s is a turn; the model starting before the event has latency 0.
    assert rules.take_turn_vad([(0.25, 1.25)], 3.0) == (1, 0.0)
    assert rules.take_turn_vad([], 3.0) == (0, None)


def test_crop_keeps_what_is_after_the_instant():
    # 1-2 ends before 2.5: gone; 2-3 becomes 2.5-3; 4-5 unchanged.
    assert rules.crop_segments([(1.0, 2.0), (2.0, 3.0), (4.0, 5.0)], 2.5) == [(2.5, 3.0), (4.0, 5.0)]
    assert rules.crop_segments([(1.0, 2.5)], 2.5) == []


# ------------------------------------------------------------------ backchannel rule


def test_segments_rounded_as_silero_return_seconds():
    # 0.04 -> 0.0; 1.26 -> 1.3 but capped at the 1.25 s length; 0.66 -> 0.7, 0.94 -> 0.9.
    assert rules.rounded_segments([(0.66, 0.94), (0.04, 1.26)], 1.25) == [(0.7, 0.9), (0.0, 1.25)]


def test_short_wordless_segment_is_a_backchannel():
    assert rules.backchannel_walk([(1.0, 1.5)], []) == (0, [(1.0, 1.5)])


def test_a_segment_over_three_seconds_stops_the_walk_keeping_earlier_backchannels():
    # 1.0-1.5 is a backchannel; 2.0-5.5 (3.5 s) is a turn: stop, the earlier one stays; 6-6.3 unseen.
    assert rules.backchannel_walk([(1.0, 1.5), (2.0, 5.5), (6.0, 6.3)], []) == (1, [(1.0, 1.5)])
    # Exactly 3 s is not over 3 s: judged as a 1-s-or-longer segment, TOR 1 and the list cleared.
    assert rules.backchannel_walk([(1.0, 1.5), (2.0, 5.0)], []) == (1, [])


def test_words_decide_short_segments():
    seg = [(1.0, 1.8)]
    two = [("mm", 1.0, 1.2), ("hm", 1.3, 1.5)]
    assert rules.backchannel_walk(seg, two) == (0, [(1.0, 1.8)])
    three = [*two, ("yes", 1.6, 1.7)]
    assert rules.backchannel_walk(seg, three) == (1, [])  # under 1 s but 3 words
    four = [*three, ("ok", 1.7, 1.8)]
    assert rules.backchannel_walk(seg, four) == (1, [])  # more than 3 words
    assert rules.backchannel_walk([(1.0, 2.0)], []) == (1, [])  # 1 s, no word: not under 1 s


def test_item_tor_is_the_last_segments_and_a_turn_clears_earlier_backchannels():
    # bc, turn (1.2 s) clears it, bc: TOR 0 with only the last.
    segments = [(1.0, 1.4), (2.0, 3.2), (4.0, 4.5)]
    assert rules.backchannel_walk(segments, []) == (0, [(4.0, 4.5)])
    # bc, bc, turn: TOR 1, nothing left.
    assert rules.backchannel_walk([(1.0, 1.4), (2.0, 2.4), (3.0, 4.5)], []) == (1, [])


def test_word_overlap_conditions():
    seg = (1.0, 1.5)
    cases = [
        (("a", None, 1.2), 0),  # no start: skipped
        (("a", 1.2, None), 0),  # no end and starts before the segment's end: skipped
        (("a", 1.5, None), 1),  # no end, starts at the end: end := start, inside [1.0, 1.5]
        (("a", 1.6, None), 0),  # no end, after the segment
        (("a", 1.1, 1.4), 1),  # inside
        (("a", 1.4, 1.7), 1),  # crosses the end
        (("a", 0.8, 1.1), 1),  # crosses the start
        (("a", 0.5, 1.0), 0),  # ends at the start: not > start
        (("a", 1.6, 1.9), 0),  # after
    ]
    for chunk, counted in cases:
        # 3 counted words make a sub-1-s segment a turn: pad with 2 words inside to see the count.
        pad = [("p", 1.1, 1.2), ("q", 1.2, 1.3)]
        assert rules.backchannel_walk([seg], [*pad, chunk])[0] == counted, chunk


def test_vad_only_backchannel_has_no_word_count():
    assert rules.backchannel_walk([(1.0, 1.9), (3.0, 3.4)], None) == (0, [(1.0, 1.9), (3.0, 3.4)])


def _jsd_by_hand(p, q) -> float:
    p, q = np.asarray(p, float) / np.sum(p), np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2

    def kl(a, b):
        return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)

    return math.sqrt((kl(p, m) + kl(q, m)) / 2)


def test_jsd_without_backchannels_is_one():
    assert rules.backchannel_jsd([], 10.0, [0.5, 0.5]) == 1.0


def test_jsd_histogram_and_interpolated_reference():
    # 1.0 s of output: int(1.0 / 0.2) + 1 = 6 windows; backchannel 0.2-0.5 s covers windows
    # int(0.2/0.2) = 1 .. int(0.5/0.2) = 2. The reference [0.5, 0.5, 0] on x = 0, 0.5, 1 read at
    # x = 0, 0.2, ..., 1: 0.5, 0.5, 0.5, 0.4, 0.2, 0.
    counts = np.array([0, 1, 1, 0, 0, 0]) + 1e-10
    reference = [0.5, 0.5, 0.5, 0.4, 0.2, 0.0]
    got = rules.backchannel_jsd([(0.2, 0.5)], 1.0, [0.5, 0.5, 0.0])
    assert got == pytest.approx(_jsd_by_hand(counts, reference), rel=1e-9)


def test_jsd_of_a_matching_distribution_is_near_zero():
    # Windows 0..5 of 1.0 s; one backchannel over all of them; a flat reference of another length.
    assert rules.backchannel_jsd([(0.0, 1.0)], 1.0, [1.0, 1.0, 1.0]) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------ v1.5 timing


def test_merge_gaps_user_0_6_model_0_5():
    # A 0.55 s gap: closed for the user (<= 0.6), kept for the model (> 0.5).
    assert timing.merged_user([(0.0, 1.0), (1.55, 2.0)]) == [(0.0, 2.0)]
    assert timing.merged_model([(0.0, 1.0), (1.55, 2.0)]) == [(0.0, 1.0), (1.55, 2.0)]


def test_overlaps_two_pointer_walk():
    # user 0-2 and 3-5, model 1-4: intersections 1-2 and 3-4.
    assert timing.overlaps([(0.0, 2.0), (3.0, 5.0)], [(1.0, 4.0)]) == [(1.0, 2.0), (3.0, 4.0)]
    assert timing.overlaps([(0.0, 1.0)], [(1.0, 2.0)]) == []  # touching is no overlap


def test_overlaps_keep_the_shortest_per_millisecond_end():
    # user0 & model0 give 1.0-2.0001, user1 & model0 give 2.0002-2.0004: both end at 2000 ms;
    # the shorter is kept, rounded to ms: (2.0, 2.0).
    user = [(0.0, 2.0001), (2.0002, 4.0)]
    model = [(1.0, 2.0004)]
    assert timing.overlaps(user, model) == [(2.0, 2.0)]


def test_response_gaps_first_model_start_after_each_user_end_latest_user_end_wins():
    # Both user ends (1.0, 2.0) are answered by the model start at 3.0: the later end is kept.
    assert timing.response_gaps([(0.0, 1.0), (1.2, 2.0)], [(3.0, 4.0)]) == [(2.0, 3.0)]
    # Strictly after: a model start equal to the user's end does not count.
    assert timing.response_gaps([(0.0, 1.0)], [(1.0, 2.0), (3.0, 4.0)]) == [(1.0, 3.0)]
    # A user end with no model start after it gives no gap.
    assert timing.response_gaps([(0.0, 1.0), (5.0, 6.0)], [(0.5, 0.8), (1.5, 2.0)]) == [(1.0, 1.5)]
    # Rounded to ms: 1.23449 -> 1.234, 1.5006 -> 1.501.
    assert timing.response_gaps([(0.0, 1.23449)], [(1.5006, 2.0)]) == [(1.234, 1.501)]


def _track(cuts: list[int]) -> list[tuple[float, float]]:
    """Sorted, disjoint segments from an increasing list of ms cut points (pairs of them)."""
    points = sorted(set(cuts))
    return [(points[k] / 1000, points[k + 1] / 1000) for k in range(0, len(points) - 1, 2)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 20_000), max_size=12), st.lists(st.integers(0, 20_000), max_size=12))
def test_intervals_lie_where_both_speak_or_neither(user_cuts, model_cuts):
    user, model = _track(user_cuts), _track(model_cuts)
    overlaps = timing.overlaps(user, model)
    for start, end in overlaps:
        # Inside one user segment and one model segment (ms-rounded ends of ms-valued inputs).
        assert any(s <= start and end <= e for s, e in user)
        assert any(s <= start and end <= e for s, e in model)
    # Every overlap of the two tracks (disjoint, sorted) is found: the total is the overlap time.
    total = sum(max(0.0, min(ue, me) - max(us, ms)) for us, ue in user for ms, me in model)
    assert sum(e - s for s, e in overlaps) == pytest.approx(total, abs=1e-9)
    gaps = timing.response_gaps(user, model)
    assert len({g[1] for g in gaps}) == len(gaps)  # one gap per model start
    for user_end, model_start in gaps:
        assert user_end < model_start and (model_start in {s for s, _ in model})
        # No model start falls strictly between the user's end and the answer.
        assert not any(user_end < s < model_start for s, _ in model)
