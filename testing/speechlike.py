"""Deterministic speech-like sound that silero-vad detects, for tests of the duplex evaluation.

A plain tone or a steady buzz is not speech to silero: a 2 s harmonic buzz at 140 Hz was found
as 0.96-2.30 s and a second one not at all. What it does find is a voiced source shaped like
syllables: a harmonic series (29 harmonics, 1/h^1.2 roll-off) on a gliding pitch of 130 +- 30 Hz,
cut into 180 ms syllables whose two formants step through five vowels (F1/F2 of /a i u e ae/)
under a square-root Hann envelope. Placed at 1-3 s and 4.5-6 s of 8 s of silence, silero
(Full-Duplex-Bench's settings) finds segments starting within 40 ms before each onset and ending
within 200 ms after each offset for seeds 0-3 (its 30 ms pad and 100 ms minimum silence, plus
the syllable's decay).

Array suffix: N audio samples (16 kHz).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from microturn.schemas.sample import SAMPLE_RATE

__all__ = ["place", "speech_like_N"]

_VOWELS = ((730, 1090), (270, 2290), (300, 870), (530, 1840), (660, 1720))
_SYLLABLE_S = 0.18


def _formant(x_N: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    theta = 2 * np.pi * freq / SAMPLE_RATE
    return np.asarray(lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x_N))


def speech_like_N(seconds: float, *, seed: int = 0, peak: float = 0.3) -> np.ndarray:
    """float32 ``[round(seconds * 16000)]`` of syllable-like voiced sound peaking at ``peak``."""
    n = round(seconds * SAMPLE_RATE)
    if n <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    t_N = np.arange(n) / SAMPLE_RATE
    f0_N = 130 + 30 * np.sin(2 * np.pi * 1.3 * t_N + seed)
    phase_N = 2 * np.pi * np.cumsum(f0_N) / SAMPLE_RATE
    source_N = np.sum([np.sin(h * phase_N) / h ** 1.2 for h in range(1, 30)], axis=0)
    out_N = np.zeros(n)
    syllable = int(_SYLLABLE_S * SAMPLE_RATE)
    for i in range(0, n, syllable):
        f1, f2 = _VOWELS[(i // syllable + seed) % len(_VOWELS)]
        part_N = source_N[i:i + syllable]
        voiced_N = _formant(part_N, f1, 90) + 0.6 * _formant(part_N, f2, 110)
        out_N[i:i + syllable] = voiced_N * np.sqrt(np.hanning(len(part_N)))
    return (peak * out_N / np.abs(out_N).max()).astype(np.float32)


def place(total_s: float, spans: list[tuple[float, float]], *, seed: int = 0) -> np.ndarray:
    """float32 ``[N]`` of ``total_s`` seconds: silence with speech-like sound over each ``(start_s, end_s)``."""
    wave_N = np.zeros(round(total_s * SAMPLE_RATE), np.float32)
    for i, (start, end) in enumerate(spans):
        a, b = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
        if not 0 <= a < b <= wave_N.size:
            raise ValueError(f"span {(start, end)} is not inside [0, {total_s}] s")
        wave_N[a:b] = speech_like_N((b - a) / SAMPLE_RATE, seed=seed + i)
    return wave_N
