"""Embedded diarizer (pyannote segmentation from the whisperx wheel + resemblyzer) on
pyannote's real 30 s two-person phone call, on audio built from it, and on degenerate input."""

from __future__ import annotations

import importlib.resources
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from microturn.pipelines.backends.base import SAMPLE_RATE, Diarizer, Region, SpeakerCount, Turn
from microturn.pipelines.backends.embedded_diarizer import (
    EmbeddedDiarizer,
    EmbeddedDiarizerConfig,
    default_segmentation_path,
)
from microturn.pipelines.backends.silero import SileroVad
from microturn.pipelines.eval_diarization import evaluate_diarization, read_rttm

SAMPLE_DIR = Path(str(importlib.resources.files("pyannote.audio") / "sample"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def diarizer() -> EmbeddedDiarizer:
    return EmbeddedDiarizer()  # num_threads=1 by default: steady on the shared 2-core machine


@pytest.fixture(scope="module")
def vad_diarizer() -> EmbeddedDiarizer:
    return EmbeddedDiarizer(EmbeddedDiarizerConfig(speech="vad"))


@pytest.fixture(scope="module")
def wave_N(sample_wave: np.ndarray) -> np.ndarray:
    return sample_wave  # the pyannote sample call, from conftest.py


@pytest.fixture(scope="module")
def speech(vad: SileroVad, wave_N: np.ndarray) -> list[Region]:
    return vad(wave_N)


@pytest.fixture(scope="module")
def turns_two(diarizer, wave_N, speech) -> list[Turn]:
    return diarizer(wave_N, speech=speech, count=SpeakerCount(num_speakers=2))


@pytest.fixture(scope="module")
def turns_estimated(diarizer, wave_N, speech) -> list[Turn]:
    return diarizer(wave_N, speech=speech, count=SpeakerCount())


def der(turns: list[Turn]) -> float:
    """DER on the sample: no collar, overlap scored."""
    hyp = {"sample": [(t.speaker, t.start_ms, t.end_ms) for t in turns]}
    return evaluate_diarization(SAMPLE_DIR / "sample.rttm", hyp, collar_s=0.0).total.der


def speakers(turns: list[Turn]) -> set[str]:
    return {t.speaker for t in turns}


def test_protocol_and_model_location(diarizer: EmbeddedDiarizer) -> None:
    assert isinstance(diarizer, Diarizer)
    assert diarizer.name == "embedded"
    path = default_segmentation_path()
    assert path.name == "pytorch_model.bin" and path.parent.name == "assets"


def test_der_with_known_count(turns_two: list[Turn]) -> None:
    assert speakers(turns_two) == {"SPEAKER_00", "SPEAKER_01"}
    assert der(turns_two) <= 0.15  # measured 0.067


def test_der_and_count_estimated(turns_estimated: list[Turn]) -> None:
    assert len(speakers(turns_estimated)) == 2
    assert der(turns_estimated) <= 0.20  # measured 0.067


def test_turns_are_well_formed(turns_estimated: list[Turn], wave_N: np.ndarray) -> None:
    duration_ms = wave_N.size * 1000 // SAMPLE_RATE
    for t in turns_estimated:
        assert isinstance(t.start_ms, int) and isinstance(t.end_ms, int)
        assert 0 <= t.start_ms < t.end_ms <= duration_ms
        assert t.channel == 0
    assert turns_estimated == sorted(turns_estimated, key=lambda t: (t.start_ms, t.speaker, t.end_ms))
    # Labels are numbered in order of first appearance.
    first = {}
    for t in turns_estimated:
        first.setdefault(t.speaker, t.start_ms)
    assert list(first) == sorted(first)
    # The call has overlapping speech (e.g. 10.57-11.03 s); an overlap-aware result shows some.
    a = [t for t in turns_estimated if t.speaker == "SPEAKER_00"]
    b = [t for t in turns_estimated if t.speaker == "SPEAKER_01"]
    assert any(min(x.end_ms, y.end_ms) > max(x.start_ms, y.start_ms) for x in a for y in b)


def test_deterministic(diarizer, wave_N, speech, turns_estimated) -> None:
    assert diarizer(wave_N, speech=speech, count=SpeakerCount()) == turns_estimated
    fresh = EmbeddedDiarizer()
    assert fresh(wave_N, speech=speech, count=SpeakerCount()) == turns_estimated


@pytest.mark.parametrize(
    "count",
    [SpeakerCount(num_speakers=1), SpeakerCount(max_speakers=1)],
    ids=["num_speakers=1", "max_speakers=1"],
)
def test_one_speaker_when_asked(diarizer, wave_N, speech, count) -> None:
    turns = diarizer(wave_N, speech=speech, count=count)
    assert speakers(turns) == {"SPEAKER_00"}
    # All the speech is still there, given to the one speaker.
    assert sum(t.end_ms - t.start_ms for t in turns) > 20_000


def test_min_and_exact_counts_above_the_truth(diarizer, wave_N, speech) -> None:
    assert len(speakers(diarizer(wave_N, speech=speech, count=SpeakerCount(min_speakers=3)))) == 3
    assert len(speakers(diarizer(wave_N, speech=speech, count=SpeakerCount(num_speakers=3)))) == 3
    capped = diarizer(wave_N, speech=speech, count=SpeakerCount(min_speakers=1, max_speakers=4))
    assert len(speakers(capped)) == 2


def test_single_voice_is_one_speaker(diarizer, vad, wave_N) -> None:
    """One speaker's solo turns of the call, joined by 0.3 s pauses: the estimate is 1."""
    ref = read_rttm(SAMPLE_DIR / "sample.rttm")["sample"]
    labels = sorted(ref.labels(), key=str)  # the RTTM's speaker names
    label = labels[0]
    other = ref.label_timeline(labels[1]).support()
    own = ref.label_timeline(label).support().extrude(other)  # drop overlapped speech
    pause = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    parts = []
    for seg in own:
        parts += [wave_N[round(seg.start * SAMPLE_RATE) : round(seg.end * SAMPLE_RATE)], pause]
    solo_N = np.concatenate(parts)
    assert solo_N.size > 8 * SAMPLE_RATE
    turns = diarizer(solo_N, speech=vad(solo_N), count=SpeakerCount())
    assert speakers(turns) == {"SPEAKER_00"}


def test_audio_shorter_than_a_window_is_diarized(diarizer, vad, wave_N) -> None:
    clip_N = wave_N[8 * SAMPLE_RATE : 12 * SAMPLE_RATE]  # 4 s, both callers speak in it
    turns = diarizer(clip_N, speech=vad(clip_N), count=SpeakerCount())
    assert turns, "a 4 s clip with speech must get turns"
    assert all(0 <= t.start_ms < t.end_ms <= 4000 for t in turns)


def test_no_speech_gives_no_turns(diarizer, vad_diarizer, wave_N) -> None:
    with pytest.warns(UserWarning, match="no speech"):
        assert vad_diarizer(wave_N, speech=[], count=SpeakerCount()) == []
    silent_N = np.zeros(10 * SAMPLE_RATE, dtype=np.float32)
    with pytest.warns(UserWarning, match="found no speaker"):
        assert diarizer(silent_N, speech=[Region(0, 10_000)], count=SpeakerCount()) == []
    # Speech regions only where there is no window to segment: nothing to do either.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert vad_diarizer(wave_N, speech=[Region(40_000, 41_000)], count=SpeakerCount()) == []


def test_segmentation_finds_speech_the_vad_regions_leave_out(diarizer, wave_N, turns_estimated) -> None:
    """speech = "segmentation" (default): the VAD regions do not gate the result."""
    assert diarizer(wave_N, speech=[], count=SpeakerCount()) == turns_estimated


def test_vad_speech_keeps_turns_inside_speech(vad_diarizer, wave_N) -> None:
    region = Region(10_000, 20_000)
    turns = vad_diarizer(wave_N, speech=[region], count=SpeakerCount(num_speakers=2))
    assert turns
    assert all(region.start_ms - 20 <= t.start_ms and t.end_ms <= region.end_ms + 20 for t in turns)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros(10 * SAMPLE_RATE, dtype=np.float64), "float32"),
        (np.zeros((10 * SAMPLE_RATE, 2), dtype=np.float32), r"shape \[N\]"),
        (np.zeros(0, dtype=np.float32), "empty"),
    ],
    ids=["float64", "stereo", "empty"],
)
def test_bad_input_raises_actionable_error(diarizer, bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        diarizer(bad, speech=[Region(0, 1000)], count=SpeakerCount())


def test_fast_segmentation_matches_the_model(diarizer, wave_N) -> None:
    """The shared-filterbank path gives the model's own outputs, window by window."""
    starts = np.array([0, 148, 296, 900, 1481])  # on the 270-sample frame grid
    with torch.inference_mode():
        fast = diarizer._segmenter(wave_N, starts)  # [window, frame, local speaker]
        windows = np.stack([wave_N[s * 270 : s * 270 + 80_000] for s in starts])
        reference = diarizer._segmenter.model(torch.from_numpy(windows)[:, None]).numpy()
    np.testing.assert_allclose(fast, reference, atol=2e-3)


def test_thread_setting_is_restored(wave_N, speech) -> None:
    before = torch.get_num_threads()
    two = EmbeddedDiarizer(EmbeddedDiarizerConfig(num_threads=2))
    turns = two(wave_N, speech=speech, count=SpeakerCount(num_speakers=2))
    assert torch.get_num_threads() == before
    assert der(turns) <= 0.15


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="step_s"):
        EmbeddedDiarizerConfig(step_s=6.0)
    with pytest.raises(ValueError, match="onset"):
        EmbeddedDiarizerConfig(onset=1.0)
    with pytest.raises(ValueError, match="cluster_threshold"):
        EmbeddedDiarizerConfig(cluster_threshold=0.0)
    with pytest.raises(ValueError, match="min_turn_ms"):
        EmbeddedDiarizerConfig(min_turn_ms=-5)
    with pytest.raises(TypeError):
        EmbeddedDiarizerConfig(2.5)  # type: ignore[misc]  # keyword-only
