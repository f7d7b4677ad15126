"""Properties of the embedded diarizer's last step, frames to turns, on random activity."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.pipelines.backends.base import SAMPLE_RATE, Turn
from microturn.pipelines.backends.diarize_segments import FrameGrid
from microturn.pipelines.backends.diarize_turns import runs, to_turns

PROPS = settings(max_examples=80, deadline=None)
GRID = FrameGrid(window_samples=80_000, step=270, centre=495.5, per_window=293)  # the PyanNet model's


@PROPS
@given(st.lists(st.booleans(), max_size=60))
def test_runs_are_the_true_stretches(mask: list[bool]) -> None:
    flags = np.array(mask, dtype=bool)
    rebuilt = np.zeros_like(flags)
    previous_end = -1
    for a, b in runs(flags):
        assert previous_end < a < b, "runs are sorted, non-empty and separated by a False"
        rebuilt[a:b] = True
        previous_end = b
    assert np.array_equal(rebuilt, flags)


def inside(times_ms: np.ndarray, own: list[Turn]) -> np.ndarray:
    """Which times lie in one of ``own``, one speaker's sorted, disjoint turns (ends included)."""
    start = np.array([t.start_ms for t in own])
    end = np.array([t.end_ms for t in own])
    last = np.searchsorted(start, times_ms, side="right") - 1
    return (last >= 0) & (times_ms <= end[np.maximum(last, 0)])


@PROPS
@given(
    st.integers(0, 2**32 - 1), st.integers(1, 400), st.integers(1, 4), st.floats(0.05, 0.9),
    st.integers(0, 300), st.integers(0, 300),
)
def test_turns_are_well_formed_and_cover_the_active_frames(
    seed: int, num_frames: int, num_clusters: int, density: float, min_gap_ms: int, min_turn_ms: int
) -> None:
    speaking = np.random.default_rng(seed).random((num_frames, num_clusters)) < density  # [global frame, cluster]
    num_samples = (num_frames + 1) * GRID.step + round(GRID.centre)  # the last frame ends inside the audio
    turns = to_turns(speaking, num_samples, grid=GRID, min_gap_ms=min_gap_ms, min_turn_ms=min_turn_ms)
    duration_ms = num_samples * 1000 // SAMPLE_RATE
    assert turns == sorted(turns, key=lambda t: (t.start_ms, t.speaker, t.end_ms))
    names = list(dict.fromkeys(t.speaker for t in turns))  # in order of first appearance
    assert names == [f"SPEAKER_{i:02d}" for i in range(len(names))] and len(names) <= num_clusters
    for name in names:
        own = [t for t in turns if t.speaker == name]
        for t in own:
            assert 0 <= t.start_ms < t.end_ms <= duration_ms and t.channel == 0
            assert t.end_ms - t.start_ms >= min_turn_ms
        for x, y in zip(own, own[1:], strict=False):
            assert y.start_ms - x.end_ms >= min_gap_ms, "shorter pauses are filled"
    if min_turn_ms == 0:
        # Nothing is dropped: each cluster is one speaker whose turns hold its frames' centres.
        centre_ms = (np.arange(num_frames) * GRID.step + GRID.centre) * 1000 / SAMPLE_RATE
        speaker_of = []
        for k in range(num_clusters):
            centres = centre_ms[speaking[:, k]]
            if len(centres) == 0:
                continue
            holders = [name for name in names if inside(centres, [t for t in turns if t.speaker == name]).all()]
            assert holders, f"cluster {k}'s frames are not inside one speaker's turns"
            speaker_of.append(holders[0])
        assert len(speaker_of) == len(names)
