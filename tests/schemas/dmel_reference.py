"""Independent float64 NumPy implementation of the dMel recipe, the oracle for ``test_dmel.py``.

Written from DESIGN.md ("The micro-turn sample") alone, sharing no code with
``microturn.schemas.dmel``: NumPy only, ``np.fft.rfft``, every step in float64, filters built one
triangle at a time with ``np.interp``, quantisation by the smallest distance to a centre.

Shape suffixes follow microturn.schemas.legend: N samples (16 kHz; a window: 1600), T = ceil(N / 800)
frames, X = 801 FFT bins, M = 80 mel channels, S = 16 bins.
"""

from __future__ import annotations

import math

import numpy as np

SR = 16_000
HOP = 800
WIN = 1600
N_MELS = 80
CENTRES_S = np.linspace(-7.0, 2.0, 16)


def hz_to_slaney_mel(hz: float) -> float:
    """Slaney's Auditory Toolbox scale: 3 mel per 200 Hz up to 1 kHz (15 mel), then log-spaced
    with 27 steps per factor 6.4 in frequency."""
    if hz < 1000.0:
        return hz * 3.0 / 200.0
    return 15.0 + 27.0 * math.log(hz / 1000.0) / math.log(6.4)


def slaney_mel_to_hz(mel: float) -> float:
    """Inverse of :func:`hz_to_slaney_mel`."""
    if mel < 15.0:
        return mel * 200.0 / 3.0
    return 1000.0 * 6.4 ** ((mel - 15.0) / 27.0)


def filters_MX() -> np.ndarray:
    """float64 [M, F]: triangles between consecutive mel-spaced edges, each of area-normalising
    height 2 / (upper edge - lower edge) in Hz."""
    top = hz_to_slaney_mel(SR / 2)
    edges = [slaney_mel_to_hz(top * i / (N_MELS + 1)) for i in range(N_MELS + 2)]
    freqs_X = np.arange(WIN // 2 + 1, dtype=np.float64) * SR / WIN
    out = np.zeros((N_MELS, freqs_X.size), dtype=np.float64)
    for m in range(N_MELS):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        out[m] = np.interp(freqs_X, [lo, mid, hi], [0.0, 1.0, 0.0], left=0.0, right=0.0) * (2.0 / (hi - lo))
    return out


def reference_log_mel(wave_N: np.ndarray) -> np.ndarray:
    """float64 [T, M] clamped log10 mel magnitudes of 16 kHz mono ``wave_N``."""
    x_N = np.asarray(wave_N, dtype=np.float64)
    n = x_N.size
    frames = -(-n // HOP)
    # Causal: HOP zeros in front, zeros behind up to a whole number of hops.
    padded = np.zeros(HOP * (frames + 1), dtype=np.float64)
    padded[HOP:HOP + n] = x_N
    hann_N = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)
    out_TM = np.empty((frames, N_MELS), dtype=np.float64)
    fb_MX = filters_MX()
    for t in range(frames):
        spectrum_X = np.abs(np.fft.rfft(padded[t * HOP:t * HOP + WIN] * hann_N))
        out_TM[t] = fb_MX @ spectrum_X
    return np.clip(np.log10(np.maximum(out_TM, 1e-10)), -7.0, 2.0)


def reference_bins(wave_N: np.ndarray) -> np.ndarray:
    """uint8 [T, M]: index of the nearest centre of :data:`CENTRES_S` (the first on a tie)."""
    logmel_TM = reference_log_mel(wave_N)
    dist_TMS = np.abs(logmel_TM[..., None] - CENTRES_S)
    return np.argmin(dist_TMS, axis=-1).astype(np.uint8)
