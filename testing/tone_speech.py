"""Hand-made speech with known word times, for tests of the layout: tone bursts stand for words,
so every word's start and end is exact and each speaker's samples carry a tag value."""

from __future__ import annotations

import numpy as np

from microturn.synth.timing import Duration
from microturn.synth.tts import Speech, SpokenWord

SAMPLES_PER_MS = 16


def tone_speech(n_words: int, *, word_ms: int = 250, breaks: dict[int, int] | None = None,
                tag: float = 0.1) -> Speech:
    """``n_words`` bursts of ``word_ms`` (texts ``w0``, ``w1``, ...) with 30 ms between words and
    longer breaks after the word indices in ``breaks``; the samples carry ``tag`` so tests can
    tell speakers apart."""
    breaks = breaks or {}
    words, t = [], 10
    for i in range(n_words):
        words.append(SpokenWord(text=f"w{i}", start_ms=t, end_ms=t + word_ms))
        t += word_ms + breaks.get(i, 30)
    wave = np.zeros((words[-1].end_ms + 10) * SAMPLES_PER_MS, np.float32)
    for w in words:
        wave[w.start_ms * SAMPLES_PER_MS: w.end_ms * SAMPLES_PER_MS] = tag
    return Speech(wave_N=wave, words=tuple(words))


def fixed(ms: float) -> Duration:
    """A duration that always draws ``ms`` (a log-normal of negligible spread)."""
    return Duration(family="lognormal", params=(ms, 1e-6))
