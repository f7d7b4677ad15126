"""Tests of the dMel featurizer (``microturn.schemas.dmel``) against the independent float64
reference in ``dmel_reference.py``, plus its invariants as hypothesis properties.

Shape suffixes follow microturn.schemas.legend: N audio samples, T frames, M = 80 mel channels.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microturn.schemas import dmel
from microturn.schemas.sample import DMEL_BINS, N_MELS, SAMPLE_RATE
from microturn.testing.sample_call import sample_wave

sys.path.insert(0, os.path.dirname(__file__))
import dmel_reference as ref  # noqa: E402

SR = SAMPLE_RATE
# float32 log-mel against float64 on the sample recording: measured 1.4e-4 (module notes).
LOG_MEL_TOL_SPEECH = 2e-4
PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def noise(n: int, seed: int, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """float32 [N]: voiced harmonic stretches with a gliding pitch, fricative noise bursts and exact
    digital silence, syllables at levels spread over 90 dB, over a -150 dBFS noise floor."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t_N = np.arange(n) / SR
    f0_N = 110 + 40 * np.sin(2 * np.pi * 0.8 * t_N + rng.uniform(0, 2 * np.pi))
    phase_N = 2 * np.pi * np.cumsum(f0_N) / SR
    voiced_N = sum((np.sin(k * phase_N) / k for k in range(1, 50)), np.zeros(n))  # harmonics stay below 7.5 kHz
    fricative_N = np.diff(rng.standard_normal(n + 1))  # differenced noise: energy up high
    out_N = 3e-8 * rng.standard_normal(n)
    start = 0
    while start < n:
        length = int(rng.integers(800, 6000))
        kind = rng.integers(0, 4)
        gain = 10 ** rng.uniform(-4.5, 0)
        env_N = np.hanning(min(length, n - start))
        if kind == 0:
            out_N[start:start + length] = 0.0  # exact silence, noise floor included
        elif kind == 1:
            out_N[start:start + length] += 0.3 * gain * env_N * voiced_N[start:start + length]
        else:
            out_N[start:start + length] += 0.3 * gain * env_N * fricative_N[start:start + length]
        start += length
    return out_N.astype(np.float32)


def sample_recording() -> np.ndarray:
    return np.array(sample_wave())  # pyannote.audio's 30 s call, a writeable copy


def frame_norms(wave_N: np.ndarray) -> np.ndarray:
    """float64 [T]: Euclidean norm of each (unwindowed) frame, as the recipe frames the wave."""
    frames = -(-wave_N.size // 800)
    padded = np.zeros(800 * (frames + 1))
    padded[800:800 + wave_N.size] = wave_N
    hop = np.sqrt((padded.reshape(-1, 800) ** 2).sum(axis=1))
    return np.hypot(hop[:-1], hop[1:])


# -- exactness against the float64 reference ------------------------------------------------------

@pytest.mark.parametrize("n", [1, 799, 800, 801, 1600, 12_345, SR * 3 + 17])
@pytest.mark.parametrize("scale", [1e-4, 0.1, 1.0])
def test_bins_equal_reference_on_noise(n, scale):
    wave_N = noise(n, seed=n, scale=scale)
    got_TM = dmel.encode(wave_N)
    assert got_TM.dtype == np.uint8 and got_TM.shape == (math.ceil(n / 800), N_MELS)
    np.testing.assert_array_equal(got_TM, ref.reference_bins(wave_N))


@pytest.mark.parametrize("seed", range(4))
def test_bins_equal_reference_on_speech_like(seed):
    wave_N = speech_like(6.0 + seed * 0.37, seed)
    np.testing.assert_array_equal(dmel.encode(wave_N), ref.reference_bins(wave_N))


def test_bins_equal_reference_on_tones_where_float32_alone_fails():
    # Tones 20 dB apart leave bands far below their frames' level: float32 alone puts ~3% of
    # these values in the wrong bin, so this checks the float64 re-check, not luck.
    t_N = np.arange(SR * 2) / SR
    wave_N = sum((10.0 ** -k * np.sin(2 * np.pi * (150 + 731 * k) * t_N + k) for k in range(7)),
                 np.zeros_like(t_N)).astype(np.float32)
    expected_TM = ref.reference_bins(wave_N)
    assert (dmel.quantize(dmel.log_mel(wave_N)) != expected_TM).sum() > 10
    np.testing.assert_array_equal(dmel.encode(wave_N), expected_TM)


def test_real_audio_bins_and_log_mel():
    wave_N = sample_recording()
    logmel_TM, bins_TM = dmel.features(wave_N)
    np.testing.assert_array_equal(bins_TM, ref.reference_bins(wave_N))
    np.testing.assert_array_equal(bins_TM, dmel.encode(wave_N))
    expected_TM = ref.reference_log_mel(wave_N)
    assert logmel_TM.dtype == np.float32 and logmel_TM.shape == expected_TM.shape
    assert np.abs(logmel_TM - expected_TM).max() <= LOG_MEL_TOL_SPEECH
    np.testing.assert_array_equal(logmel_TM, dmel.log_mel(wave_N))
    # The same audio at another gain and frame alignment.
    shifted_N = (wave_N[317:] * np.float32(2.5)).astype(np.float32)
    np.testing.assert_array_equal(dmel.encode(shifted_N), ref.reference_bins(shifted_N))


@pytest.mark.parametrize("n", [800, SR * 3 + 17])
def test_log_mel_within_tolerance_on_noise(n):
    wave_N = noise(n, seed=7)
    assert np.abs(dmel.log_mel(wave_N) - ref.reference_log_mel(wave_N)).max() <= 1e-5


def test_log_mel_error_within_the_documented_bound():
    """|exact - m| <= _TOL_REL m + _TOL_FFT n w1 (the bound encode relies on), checked through the
    float32 log-mel on audio where it is loose: tones, and speech with an empty top band."""
    t_N = np.arange(SR * 2) / SR
    tones_N = sum((10.0 ** -k * np.sin(2 * np.pi * (150 + 731 * k) * t_N) for k in range(7)),
                  np.zeros_like(t_N)).astype(np.float32)
    high_tone_N = (0.5 * np.sin(2 * np.pi * 7777 * t_N)).astype(np.float32)  # the worst measured
    band_limited_N = np.convolve(speech_like(3.0, 11), np.hanning(9) / 4.5, mode="same").astype(np.float32)
    w1_M = ref.filters_MX().sum(axis=1)
    for wave_N in (tones_N, high_tone_N, band_limited_N, sample_recording()):
        exact_TM = ref.reference_log_mel(wave_N)
        got_TM = dmel.log_mel(wave_N).astype(np.float64)
        inside = (exact_TM > -6.99) & (exact_TM < 1.99) & (got_TM > -6.99) & (got_TM < 1.99)
        exact_mel = 10.0 ** exact_TM[inside]
        bound = dmel._TOL_REL * exact_mel + dmel._TOL_FFT * np.outer(frame_norms(wave_N), w1_M)[inside]
        # 2e-6 relative: the float32 rounding of the stored log10 (ulp/2 = 4.8e-7 at |x| < 8).
        assert np.all(np.abs(10.0 ** got_TM[inside] - exact_mel) <= bound + 2e-6 * exact_mel)


# -- filters --------------------------------------------------------------------------------------

def test_filters_match_librosa_and_reference():
    librosa = pytest.importorskip("librosa")
    fb_MX = dmel.mel_filters()
    assert fb_MX.dtype == np.float32 and fb_MX.shape == (N_MELS, 801) and not fb_MX.flags.writeable
    assert dmel.mel_filters() is fb_MX
    expected = librosa.filters.mel(sr=SR, n_fft=1600, n_mels=N_MELS)
    np.testing.assert_allclose(fb_MX, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(dmel._filters64_MX(), ref.filters_MX(), rtol=1e-12, atol=1e-15)


# -- properties -----------------------------------------------------------------------------------

@PROPS
@given(n=st.integers(0, 20_000), seed=st.integers(0, 2**32 - 1))
def test_frame_count_and_bin_range(n, seed):
    wave_N = noise(n, seed, scale=0.3)
    bins_TM = dmel.encode(wave_N)
    logmel_TM = dmel.log_mel(wave_N)
    assert bins_TM.shape == logmel_TM.shape == (-(-n // 800), N_MELS)
    assert bins_TM.dtype == np.uint8 and logmel_TM.dtype == np.float32
    if n:
        assert int(bins_TM.max()) < DMEL_BINS
        assert logmel_TM.min() >= -7.0 and logmel_TM.max() <= 2.0


@PROPS
@given(n=st.integers(0, 20_000))
def test_silence_is_bin_zero(n):
    zeros_N = np.zeros(n, dtype=np.float32)
    assert not dmel.encode(zeros_N).any()
    assert np.all(dmel.log_mel(zeros_N) == -7.0)


@PROPS
@given(bins=st.lists(st.integers(0, DMEL_BINS - 1), min_size=0, max_size=200))
def test_quantize_dequantize_round_trip(bins):
    bins = np.array(bins, dtype=np.uint8)
    centres = dmel.dequantize(bins)
    assert centres.dtype == np.float32
    np.testing.assert_array_equal(dmel.quantize(centres), bins)
    np.testing.assert_array_equal(dmel.quantize(torch.from_numpy(centres)).numpy(), bins)


@PROPS
@given(values=st.lists(st.floats(-12.0, 5.0, allow_nan=False), min_size=1, max_size=100))
def test_quantize_is_nearest_centre(values):
    x = np.array(values, dtype=np.float64)
    expected = np.argmin(np.abs(np.clip(x, -7, 2)[:, None] - ref.CENTRES_S), axis=1)
    np.testing.assert_array_equal(dmel.quantize(x), expected)


@PROPS
@given(n=st.integers(1, 16_000), frame=st.integers(0, 19), seed=st.integers(0, 2**32 - 1))
def test_causal(n, frame, seed):
    frames = -(-n // 800)
    frame = min(frame, frames - 1)
    wave_N = noise(n, seed, scale=0.5)
    changed_N = wave_N.copy()
    changed_N[800 * (frame + 1):] = noise(n, seed + 1, scale=0.5)[800 * (frame + 1):]
    np.testing.assert_array_equal(dmel.encode(changed_N)[:frame + 1], dmel.encode(wave_N)[:frame + 1])
    np.testing.assert_array_equal(dmel.log_mel(changed_N)[:frame + 1], dmel.log_mel(wave_N)[:frame + 1])


@PROPS
@given(n=st.integers(800, 20_000), seed=st.integers(0, 2**32 - 1))
def test_prefix_gives_the_same_frames(n, seed):
    # What streaming needs: the frames of a prefix cut at a hop are the first frames of the whole.
    wave_N = noise(n, seed, scale=0.5)
    k = n // 800
    np.testing.assert_array_equal(dmel.encode(wave_N[:800 * k]), dmel.encode(wave_N)[:k])


def test_quantize_ties_go_to_the_lower_bin_and_clamps():
    boundaries = (ref.CENTRES_S[:-1] + ref.CENTRES_S[1:]) / 2
    np.testing.assert_array_equal(dmel.quantize(boundaries), np.arange(DMEL_BINS - 1))
    np.testing.assert_array_equal(dmel.quantize(np.nextafter(boundaries, np.inf)), np.arange(1, DMEL_BINS))
    np.testing.assert_array_equal(dmel.quantize(np.array([-1e9, -7.0, 2.0, 1e9])), [0, 0, 15, 15])
    np.testing.assert_array_equal(dmel.dequantize(np.arange(DMEL_BINS)), ref.CENTRES_S.astype(np.float32))
    np.testing.assert_array_equal(dmel.BIN_CENTRES, np.linspace(-7, 2, 16))


# -- torch input and errors -----------------------------------------------------------------------

def test_torch_input_matches_numpy():
    wave_N = speech_like(2.3, 5)
    wave = torch.from_numpy(wave_N.copy()).requires_grad_(True)
    bins, logmel = dmel.encode(wave), dmel.log_mel(wave)
    assert isinstance(bins, torch.Tensor) and bins.dtype == torch.uint8 and bins.device == wave.device
    assert isinstance(logmel, torch.Tensor) and logmel.dtype == torch.float32 and not logmel.requires_grad
    np.testing.assert_array_equal(bins.numpy(), dmel.encode(wave_N))
    np.testing.assert_array_equal(logmel.numpy(), dmel.log_mel(wave_N))
    # A strided view is fine too.
    np.testing.assert_array_equal(dmel.encode(torch.from_numpy(np.repeat(wave_N, 2))[::2]).numpy(),
                                  dmel.encode(wave_N))
    np.testing.assert_array_equal(dmel.dequantize(bins).numpy(), dmel.dequantize(bins.numpy()))
    assert dmel.encode(torch.zeros(0)).shape == (0, N_MELS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_reference():
    wave_N = np.concatenate([speech_like(4.0, 3), sample_recording()[:SR * 10]])
    torch.backends.cuda.matmul.allow_tf32 = True  # encode must not be affected by the caller's TF32
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bins = dmel.encode(torch.from_numpy(wave_N).cuda())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    assert bins.device.type == "cuda"
    np.testing.assert_array_equal(bins.cpu().numpy(), ref.reference_bins(wave_N))


@pytest.mark.parametrize(("wave", "error", "hint"), [
    (np.zeros((10, 2), dtype=np.float32), ValueError, "1-D"),
    (np.zeros(10, dtype=np.int16), TypeError, "astype(np.float32)"),
    (np.zeros(10, dtype=np.float64), TypeError, "astype(np.float32)"),
    (np.array([0.0, np.nan, 0.0], dtype=np.float32), ValueError, "non-finite"),
    (np.array([np.inf] * 900, dtype=np.float32), ValueError, "non-finite"),
    (np.full(900, 1e30, dtype=np.float32), ValueError, "scaled to [-1, 1]"),
    ([0.0, 0.1], TypeError, "numpy.ndarray or torch.Tensor"),
    (torch.zeros(10, dtype=torch.float64), TypeError, "wave.float()"),
    (torch.zeros(2, 10), ValueError, "1-D"),
])
def test_bad_input_errors(wave, error, hint):
    for fn in (dmel.encode, dmel.log_mel, dmel.features):
        with pytest.raises(error) as info:
            fn(wave)
        assert hint in str(info.value)


def test_bad_bins_and_log_mel_errors():
    with pytest.raises(ValueError, match="0..15"):
        dmel.dequantize(np.array([16]))
    with pytest.raises(TypeError, match="integer"):
        dmel.dequantize(np.array([1.0]))
    with pytest.raises(TypeError, match="floating"):
        dmel.quantize(np.array([1, 2]))
    with pytest.raises(ValueError, match="non-finite"):
        dmel.quantize(np.array([np.nan]))
