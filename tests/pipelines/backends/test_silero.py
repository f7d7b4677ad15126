"""silero-vad backend on pyannote's real 30 s phone call and on degenerate input."""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from microturn.pipelines.backends.base import SAMPLE_RATE, Region, Turn, VoiceActivity
from microturn.pipelines.backends.silero import SileroVad, SileroVadConfig, torch_threads


@pytest.fixture(scope="module")
def wave_N(sample_wave: np.ndarray) -> np.ndarray:
    return sample_wave  # the pyannote sample call, from conftest.py


@pytest.fixture(scope="module")
def reference_speech_ms(sample_turns: list[Turn]) -> np.ndarray:
    """Reference speech (any speaker) of the sample as a boolean per millisecond."""
    speech = np.zeros(30_000, dtype=bool)
    for t in sample_turns:  # the RTTM's turns, from conftest.py
        speech[t.start_ms : t.end_ms] = True
    return speech


def test_protocol_and_name(vad: SileroVad) -> None:
    assert isinstance(vad, VoiceActivity)
    assert vad.name == "silero-vad"


def test_regions_cover_reference_speech(
    vad: SileroVad, wave_N: np.ndarray, reference_speech_ms: np.ndarray
) -> None:
    regions = vad(wave_N)
    assert regions and all(isinstance(r, Region) for r in regions)
    assert all(isinstance(r.start_ms, int) and isinstance(r.end_ms, int) for r in regions)
    assert all(0 <= r.start_ms < r.end_ms <= 30_000 for r in regions)
    assert all(a.end_ms <= b.start_ms for a, b in itertools.pairwise(regions))  # sorted, disjoint
    hyp_ms = np.zeros(30_000, dtype=bool)
    for r in regions:
        hyp_ms[r.start_ms : r.end_ms] = True
    recall = (hyp_ms & reference_speech_ms).sum() / reference_speech_ms.sum()
    precision = (hyp_ms & reference_speech_ms).sum() / hyp_ms.sum()
    assert recall >= 0.90, recall
    assert precision >= 0.90, precision  # the call opens with ~6.7 s of silence to reject


def test_same_input_same_regions(vad: SileroVad, wave_N: np.ndarray) -> None:
    assert vad(wave_N) == vad(wave_N)


def test_jit_engine_agrees_with_sequence_engine(vad: SileroVad, wave_N: np.ndarray) -> None:
    jit = SileroVad(SileroVadConfig(engine="jit"))
    clip = wave_N[6 * SAMPLE_RATE : 16 * SAMPLE_RATE]
    np.testing.assert_allclose(
        jit.speech_probabilities(clip), vad.speech_probabilities(clip), atol=1e-4
    )
    assert jit(clip) == vad(clip)


def test_silence_and_tiny_input_give_no_regions(vad: SileroVad) -> None:
    assert vad(np.zeros(2 * SAMPLE_RATE, dtype=np.float32)) == []
    with pytest.warns(UserWarning, match="shorter than one"):
        assert vad(np.zeros(100, dtype=np.float32)) == []


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros(16_000, dtype=np.float64), "float32"),
        (np.zeros((2, 16_000), dtype=np.float32), r"shape \[N\]"),
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.full(16_000, np.nan, dtype=np.float32), "NaN"),
        ([0.0] * 16_000, "numpy array"),
    ],
    ids=["float64", "2-D", "empty", "nan", "list"],
)
def test_bad_input_raises_actionable_error(vad: SileroVad, bad, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vad(bad)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="threshold"):
        SileroVadConfig(threshold=1.5)
    with pytest.raises(ValueError, match="neg_threshold"):
        SileroVadConfig(threshold=0.5, neg_threshold=0.7)
    with pytest.raises(ValueError, match="min_speech_ms"):
        SileroVadConfig(min_speech_ms=-1)
    with pytest.raises(ValueError, match="engine"):
        SileroVadConfig(engine="cuda")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SileroVadConfig(0.5)  # type: ignore[misc]  # keyword-only


def test_thread_count_untouched() -> None:
    """silero_vad's import sets torch to 1 thread; importing and using the backend must not."""
    code = (
        "import torch; torch.set_num_threads(2); "
        "from microturn.pipelines.backends.silero import SileroVad; import numpy as np; "
        "v = SileroVad(); v(np.zeros(16000, dtype=np.float32)); "
        "assert torch.get_num_threads() == 2, torch.get_num_threads()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_torch_threads_context_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError), torch_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
