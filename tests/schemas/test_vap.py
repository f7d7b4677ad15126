"""VAP's shift/hold and backchannel events (``microturn.schemas.vap``): known answers on hand-built
voice activity, and the definitions' invariants as hypothesis properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.schemas.vap import (
    KINDS,
    VapConfig,
    VapEvent,
    auc,
    backchannel_events,
    balanced_accuracy,
    check_va,
    fill_pauses_T2,
    find_events,
    shift_hold_events,
)


def _va(total: int, *spans: tuple[int, int, int]) -> np.ndarray:
    """``[total, 2]`` voice activity with speaker s active over frames [a, b) for each (s, a, b)."""
    va_T2 = np.zeros((total, 2), bool)
    for speaker, a, b in spans:
        va_T2[a:b, speaker] = True
    return va_T2


def _kinds(events, *kinds):
    return [(e.kind, e.start, e.end, e.speaker_before, e.speaker_after) for e in events if e.kind in kinds]


# On the default 50 ms grid: 3 s of context = 60 frames, 1 s conditions = 20, minimum silence
# 0.25 s = 5, prediction region 0.5 s = 10.
def test_a_shift_then_a_hold_with_their_prediction_regions():
    va_T2 = _va(200, (0, 0, 80), (1, 90, 140), (1, 150, 200))
    assert _kinds(shift_hold_events(va_T2), "shift", "hold") == [("shift", 80, 90, 0, 1), ("hold", 140, 150, 1, 1)]
    assert _kinds(shift_hold_events(va_T2), "pred_shift", "pred_hold") == [("pred_shift", 70, 80, 0, 1),
                                                                           ("pred_hold", 130, 140, 1, 1)]


def test_minimum_context_and_maximum_time():
    # A silence that starts at 2.5 s has too little context; one at 3 s has enough.
    assert _kinds(shift_hold_events(_va(120, (0, 0, 50), (1, 60, 120))), "shift") == []
    assert _kinds(shift_hold_events(_va(120, (0, 0, 60), (1, 70, 120))), "shift") == [("shift", 60, 70, 0, 1)]
    va_T2 = _va(200, (0, 0, 80), (1, 90, 200))
    assert _kinds(shift_hold_events(va_T2, VapConfig(max_time=4.0)), "shift") == []
    assert _kinds(shift_hold_events(va_T2, VapConfig(max_time=4.05)), "shift") == [("shift", 80, 90, 0, 1)]


def test_minimum_silence_is_the_metric_window_and_pad():
    # 4 frames (0.2 s) is under 0.25 s; 5 frames is enough.
    assert _kinds(shift_hold_events(_va(200, (0, 0, 80), (1, 84, 200))), "shift") == []
    assert _kinds(shift_hold_events(_va(200, (0, 0, 80), (1, 85, 200))), "shift") == [("shift", 80, 85, 0, 1)]


def test_pre_and_post_conditions():
    # The other speaker spoke 0.25 s before the silence: not a single speaker for 1 s before.
    assert _kinds(shift_hold_events(_va(200, (0, 0, 80), (1, 70, 72), (1, 90, 200))), "shift") == []
    # Just outside the 1 s window the overlap does not matter.
    assert _kinds(shift_hold_events(_va(200, (0, 0, 80), (1, 58, 60), (1, 90, 200))),
                  "shift") == [("shift", 80, 90, 0, 1)]
    # The next speaker talks 0.75 s, then stops: not active for 1 s after the silence.
    assert _kinds(shift_hold_events(_va(200, (0, 0, 80), (1, 90, 105))), "shift") == []
    # Both start after the silence: no single next speaker.
    assert _kinds(shift_hold_events(_va(200, (0, 0, 80), (1, 90, 200), (0, 95, 100))), "shift", "hold") == []
    # The post condition may not run past the array's end.
    assert _kinds(shift_hold_events(_va(105, (0, 0, 80), (1, 90, 105))), "shift") == []


def test_pauses_inside_a_turn_are_filled_for_the_conditions():
    # Speaker 0 pauses 0.3 s at 3.5 s, goes on, and yields at 4.5 s: filled, the pause does not break
    # the shift's 1 s pre-condition; it is no hold, as speaker 0 talks only 0.7 s after it.
    va_T2 = _va(200, (0, 0, 70), (0, 76, 90), (1, 100, 200))
    assert _kinds(shift_hold_events(va_T2), "shift", "hold") == [("shift", 90, 100, 0, 1)]
    # Talking 1 s after the pause makes it a hold.
    assert _kinds(shift_hold_events(_va(200, (0, 0, 70), (0, 76, 96), (1, 106, 200))),
                  "shift", "hold") == [("hold", 70, 76, 0, 0), ("shift", 96, 106, 0, 1)]
    filled_T2 = fill_pauses_T2(va_T2)
    assert filled_T2[70:76, 0].all() and not filled_T2[70:76, 1].any()
    assert not filled_T2[90:100].any()  # the gap between speakers is not filled


def test_shift_prediction_needs_enough_speech_before_the_silence():
    # Speaker 0 talks 0.4 s (< 0.5 s prediction region) after a pause before yielding.
    va_T2 = _va(200, (0, 0, 73), (0, 78, 86), (1, 96, 200))
    events = shift_hold_events(va_T2)
    assert _kinds(events, "shift") == [("shift", 86, 96, 0, 1)]
    assert _kinds(events, "pred_shift") == []
    assert _kinds(shift_hold_events(va_T2, VapConfig(sh_prediction_region_on_active=False)),
                  "pred_shift") == [("pred_shift", 76, 86, 0, 1)]


def test_backchannel_and_its_regions():
    # Speaker 0 talks 10 s; speaker 1 says something short (0.5 s) at 5 s.
    va_T2 = _va(200, (0, 0, 200), (1, 100, 110))
    events = backchannel_events(va_T2)
    assert _kinds(events, "backchannel", "pred_backchannel") == [("pred_backchannel", 90, 100, 0, 1),
                                                                 ("backchannel", 100, 110, 0, 1)]
    # Negatives: speaker 0 alone over [0, 100) and [110, 200), less 1 s left / 2 s right, from 3 s
    # on: [60, 60) of the first is empty, [130, 160) of the second holds three regions.
    negatives = _kinds(events, "pred_backchannel_neg")
    assert negatives == [("pred_backchannel_neg", 130, 140, 0, 1), ("pred_backchannel_neg", 140, 150, 0, 1),
                         ("pred_backchannel_neg", 150, 160, 0, 1)]
    # Over 1 s is not a backchannel; neither is one with under 1 s of the listener's silence after it.
    assert _kinds(backchannel_events(_va(200, (0, 0, 200), (1, 100, 121))), "backchannel") == []
    assert _kinds(backchannel_events(_va(200, (0, 0, 200), (1, 100, 110), (1, 125, 130))), "backchannel") == []


def test_the_200_ms_chunk_grid():
    config = VapConfig(frame_hz=5)
    # 4 s of speaker 0, a 0.4 s gap, speaker 1: on chunks, 20, 2, then 10.
    va_K2 = _va(40, (0, 0, 20), (1, 22, 40))
    assert _kinds(shift_hold_events(va_K2, config), "shift", "pred_shift") == [("pred_shift", 18, 20, 0, 1),
                                                                             ("shift", 20, 22, 0, 1)]
    assert config.frames(config.min_silence_time) == 1
    assert config.frames(config.min_context_time) == 15


def test_frames_round_down_without_float_noise():
    assert VapConfig(frame_hz=100).frames(0.29) == 29
    assert VapConfig().frames(0.26) == 5
    assert VapConfig().frames(0.24) == 4


def test_config_rejects_bad_values_and_unknown_keys():
    with pytest.raises(TypeError):
        VapConfig(pre_cond_time=1.0)  # pyright: ignore[reportCallIssue]  # the unknown key is the point
    with pytest.raises(ValueError, match="frame_hz"):
        VapConfig(frame_hz=0)
    with pytest.raises(ValueError, match="min_context_time"):
        VapConfig(min_context_time=-1)
    with pytest.raises(ValueError, match="prediction_region_time"):
        VapConfig(frame_hz=5, prediction_region_time=0.1)
    with pytest.raises(TypeError, match="sh_prediction_region_on_active"):
        VapConfig(sh_prediction_region_on_active=1)  # pyright: ignore[reportArgumentType]


def test_voice_activity_is_checked():
    with pytest.raises(ValueError, match="shape"):
        check_va(np.zeros((10, 3), bool))
    with pytest.raises(ValueError, match="boolean"):
        check_va(np.full((10, 2), 0.5))
    assert check_va(np.ones((3, 2), np.int64)).dtype == np.bool_
    assert find_events(np.zeros((0, 2), bool)) == []


def test_balanced_accuracy_and_auc_known_values():
    assert balanced_accuracy([1, 1, 0, 0], [1, 0, 0, 0]) == 0.75
    assert balanced_accuracy([1, 1, 1, 0], [1, 1, 1, 1]) == 0.5
    assert balanced_accuracy([1, 1], [1, 1]) is None
    assert auc([1, 1, 0, 0], [0.5, 0.0, 0.0, 0.0]) == 0.75
    assert auc([1, 0], [0.0, 0.0]) == 0.5
    assert auc([1, 0], [0.0, 1.0]) == 0.0
    assert auc([0, 0], [0.0, 1.0]) is None
    with pytest.raises(ValueError):
        auc([1, 0], [0.0])


# Voice activity as runs of dialog states (0 silence, 1 only speaker 0, 2 only speaker 1, 3 both),
# which makes turns, pauses and overlaps common rather than frame noise.
_RUNS = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 30)), max_size=24)
_CONFIGS = st.builds(VapConfig, min_context_time=st.sampled_from([0.0, 1.0, 3.0]),
                     sh_pre_cond_time=st.sampled_from([0.0, 0.5, 1.0]), sh_post_cond_time=st.sampled_from([0.5, 1.0]),
                     bc_pre_cond_time=st.sampled_from([0.25, 1.0]), bc_post_cond_time=st.sampled_from([0.25, 1.0]),
                     max_time=st.sampled_from([None, 5.0]))


def _from_runs(runs) -> np.ndarray:
    states = [state for state, length in runs for _ in range(length)]
    codes = np.asarray(states, dtype=np.int64).reshape(-1)
    return np.stack([codes & 1, codes >> 1], axis=1).astype(bool) if codes.size else np.zeros((0, 2), bool)


def _alone(filled_T2, speaker, a, b):
    inside = 0 <= a and b <= filled_T2.shape[0]
    return inside and filled_T2[a:b, speaker].all() and not filled_T2[a:b, 1 - speaker].any()


@settings(max_examples=200, deadline=None)
@given(_RUNS, _CONFIGS)
def test_events_satisfy_their_definitions(runs, config):
    va_T2 = _from_runs(runs)
    total = va_T2.shape[0]
    filled_T2 = fill_pauses_T2(va_T2)
    events = find_events(va_T2, config)
    min_context = config.frames(config.min_context_time)
    region = config.frames(config.prediction_region_time)
    assert (filled_T2 >= va_T2).all()
    by_kind = {kind: [e for e in events if e.kind == kind] for kind in KINDS}
    assert sum(map(len, by_kind.values())) == len(events)
    for e in events:
        assert 0 <= e.start < e.end <= total, e
        assert {e.speaker_before, e.speaker_after} <= {0, 1}
        if config.max_time is not None and e.kind in ("shift", "hold", "backchannel"):
            assert e.start < config.frames(config.max_time)
    for e in by_kind["shift"] + by_kind["hold"]:
        assert (e.speaker_before == e.speaker_after) == (e.kind == "hold")
        assert e.start >= min_context and e.end - e.start >= config.frames(config.min_silence_time)
        assert not va_T2[e.start:e.end].any()  # a mutual silence
        assert va_T2[e.start - 1, e.speaker_before] and not va_T2[e.start - 1, 1 - e.speaker_before]
        assert va_T2[e.end, e.speaker_after] and not va_T2[e.end, 1 - e.speaker_after]
        pre, post = config.frames(config.sh_pre_cond_time), config.frames(config.sh_post_cond_time)
        assert _alone(filled_T2, e.speaker_before, e.start - pre, e.start)
        assert _alone(filled_T2, e.speaker_after, e.end, e.end + post)
        assert not va_T2[max(e.start - pre, 0):e.start, 1 - e.speaker_before].any()  # on the unfilled input too
    turns = {(e.kind, e.start, e.speaker_before, e.speaker_after) for e in by_kind["shift"] + by_kind["hold"]}
    for e in by_kind["pred_shift"] + by_kind["pred_hold"]:
        assert (e.kind[5:], e.end, e.speaker_before, e.speaker_after) in turns
        assert e.end - e.start == region and e.start >= min_context
        assert va_T2[e.start:e.end, e.speaker_before].all()  # the speaker's own speech, not a pause
    for e in by_kind["backchannel"]:
        s = e.speaker_after
        assert e.speaker_before == 1 - s and e.start >= min_context
        assert filled_T2[e.start:e.end, s].all() and e.end - e.start <= config.frames(config.bc_max_duration)
        assert not filled_T2[e.start - config.frames(config.bc_pre_cond_time):e.start, s].any()
        assert e.start - config.frames(config.bc_pre_cond_time) >= 0
        assert e.end + config.frames(config.bc_post_cond_time) <= total
        assert not filled_T2[e.end:e.end + config.frames(config.bc_post_cond_time), s].any()
    starts = {(e.start, e.speaker_after) for e in by_kind["backchannel"]}
    for e in by_kind["pred_backchannel"]:
        assert (e.end, e.speaker_after) in starts and e.end - e.start == region
    left, right = config.frames(config.bc_negative_pad_left_time), config.frames(config.bc_negative_pad_right_time)
    for e in by_kind["pred_backchannel_neg"]:
        assert e.end - e.start == region and e.start >= min_context
        assert _alone(filled_T2, e.speaker_before, e.start - left, e.end + right)
    for a, b in itertools.pairwise(by_kind["pred_backchannel_neg"]):
        assert a.end <= b.start  # consecutive regions do not overlap


@settings(max_examples=200, deadline=None)
@given(_RUNS, _CONFIGS)
def test_swapping_the_channels_swaps_the_speakers(runs, config):
    va_T2 = _from_runs(runs)
    events = find_events(va_T2, config)
    swapped = find_events(va_T2[:, ::-1], config)

    def key(e: VapEvent):
        return e.kind, e.start, e.end, e.speaker_before, e.speaker_after

    assert sorted(map(key, swapped)) == sorted(key(e.swapped()) for e in events)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), min_size=1, max_size=30))
def test_auc_is_the_share_of_correctly_ordered_pairs(rows):
    labels = [y for y, _ in rows]
    scores = [float(s) for _, s in rows]
    pos = [s for y, s in rows if y]
    neg = [s for y, s in rows if not y]
    got = auc(labels, scores)
    if not pos or not neg:
        assert got is None
        return
    assert got is not None
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg]
    assert got == pytest.approx(sum(pairs) / len(pairs))
    flipped = auc(labels, [-s for s in scores])
    assert flipped is not None and flipped == pytest.approx(1 - got)
