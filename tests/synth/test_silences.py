"""Mutual silences at decision points (shift or hold) and the AUC of a score."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microturn.synth.silences import Silence, auc, merge, mutual_silences


def test_merge_bridges_short_silences_only():
    assert merge([(0, 100), (150, 300), (90, 120)]) == [(0, 120), (150, 300)]
    assert merge([(0, 100), (150, 300)], bridge_ms=60) == [(0, 300)]
    assert merge([(0, 100), (100, 200), (5, 5)]) == [(0, 200)]  # touching joins, empty drops


def test_holds_and_shifts_at_mutual_silences():
    activity = {
        "A": [(0, 1000), (1300, 2000), (2100, 2500)],  # a 300 ms pause, then a 100 ms one
        "B": [(2800, 3500), (3600, 4000)],  # takes over after 300 ms
    }
    found = mutual_silences(activity)
    assert found == [Silence(start_ms=1000, end_ms=1300, before="A", after="A"),
                     Silence(start_ms=2500, end_ms=2800, before="A", after="B")]
    assert [s.is_shift for s in found] == [False, True]
    assert [s.duration_ms for s in found] == [300, 300]
    assert len(mutual_silences(activity, min_ms=50)) == 4


def test_a_listener_breaks_a_pause_and_a_tie_is_left_out():
    # B's backchannel inside A's pause: no 200 ms of mutual silence is left on either side.
    assert mutual_silences({"A": [(0, 1000), (1500, 2000)], "B": [(1150, 1350)]}) == []
    # Two speakers stop at the same millisecond: nobody holds or yields the floor alone.
    assert mutual_silences({"A": [(0, 1000), (1500, 2000)], "B": [(500, 1000)]}) == []
    with pytest.raises(ValueError, match="min_ms"):
        mutual_silences({}, min_ms=0)


def test_auc_extremes_and_ties():
    assert auc([3, 4], [1, 2]) == 1.0
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 1], [1, 1]) == 0.5
    with pytest.raises(ValueError, match="positives and negatives"):
        auc([], [1])


@given(st.lists(st.integers(0, 20), min_size=1, max_size=12), st.lists(st.integers(0, 20), min_size=1, max_size=12))
def test_auc_is_the_share_of_pairs_ranked_right(pos, neg):
    pairs = list(itertools.product(pos, neg))
    want = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auc(pos, neg) == pytest.approx(want, abs=1e-12)
