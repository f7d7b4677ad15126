"""The text-to-speech interface of dialogue synthesis: voices, timed speech, backends.

A TTS backend turns a text into :class:`Speech`: 16 kHz mono float32 audio plus the time of
every whitespace-separated token of the text (:class:`SpokenWord`), which the mixer and the
event labels need. :func:`get_tts` builds a backend by name; the embedded default is
``"espeak-ng"`` (:class:`microturn.synth.espeak.EspeakTTS`).

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

# A Voice takes the ranges of the dialogue contract: espeak's own scales (speak_lib.h), base
# pitch 0..99 (50 normal), rate espeakRATE_MINIMUM 80 .. espeakRATE_MAXIMUM 450 words per
# minute (175 normal).
from microturn.schemas.dialogue import PITCH_RANGE, RATE_RANGE
from microturn.schemas.sample import SAMPLE_RATE

__all__ = ["SAMPLE_RATE", "Voice", "SpokenWord", "Speech", "TTS", "get_tts", "known_tts"]


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Voice.{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"Voice.{name} must lie in [{lo}, {hi}], got {value}")


@dataclass(frozen=True, kw_only=True)
class Voice:
    """A voice of a TTS backend.

    name: backend voice name; for espeak-ng a voice such as ``"en-us"``, ``"en-gb"`` or
        ``"en-gb-scotland"``, optionally with a variant: ``"en-us+f3"``.
    pitch: base pitch on espeak's scale 0..99 (50 is the voice's normal pitch).
    rate: speaking rate in words per minute, 80..450 (175 is espeak's normal rate).
    """

    name: str = "en-us"
    pitch: int = 50
    rate: int = 175

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"Voice.name must be a string such as 'en-us', got {self.name!r}")
        if not self.name or self.name != self.name.strip() or any(c.isspace() for c in self.name):
            raise ValueError(
                f"Voice.name must be a non-empty voice name without whitespace such as 'en-us' "
                f"or 'en-us+f3', got {self.name!r}"
            )
        _check_int("pitch", self.pitch, *PITCH_RANGE)
        _check_int("rate", self.rate, *RATE_RANGE)


@dataclass(frozen=True, slots=True)
class SpokenWord:
    """One token of the spoken text and its time in the speech, [start_ms, end_ms).

    ``text`` is the surface token of the input (whitespace-split, punctuation kept, e.g.
    ``"Hello,"``); times are integer milliseconds from the start of ``Speech.wave_N``.
    """

    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, kw_only=True, eq=False)
class Speech:
    """Synthesised speech of one text.

    wave_N: float32 samples at 16 kHz, mono, in [-1, 1].
    words: one :class:`SpokenWord` per whitespace token of the text, in order; monotone and
        non-overlapping (``end_ms`` of a word <= ``start_ms`` of the next), each with
        start_ms < end_ms, all inside the wave (0 <= start_ms, end_ms <= duration_ms).

    Compared by identity (``eq=False``): the wave is an array.
    """

    wave_N: np.ndarray
    words: tuple[SpokenWord, ...]

    def __post_init__(self) -> None:
        w = self.wave_N
        if not isinstance(w, np.ndarray) or w.ndim != 1 or w.dtype != np.float32:
            raise TypeError(
                "Speech.wave_N must be a 1-D float32 numpy array of 16 kHz samples, got "
                f"{type(w).__name__} {getattr(w, 'dtype', '')} {getattr(w, 'shape', '')}"
            )
        if not isinstance(self.words, tuple) or not all(
            isinstance(x, SpokenWord) for x in self.words
        ):
            raise TypeError("Speech.words must be a tuple of SpokenWord")
        prev_end = 0
        duration = self.duration_ms
        for x in self.words:
            if not prev_end <= x.start_ms < x.end_ms <= duration:
                raise ValueError(
                    f"Speech.words must be monotone, non-overlapping and inside the "
                    f"{duration} ms wave with start_ms < end_ms; {x!r} breaks this "
                    f"(previous word ends at {prev_end} ms)"
                )
            prev_end = x.end_ms

    @property
    def duration_ms(self) -> int:
        """Length of the wave in whole milliseconds (rounded down)."""
        return len(self.wave_N) * 1000 // SAMPLE_RATE


@runtime_checkable
class TTS(Protocol):
    """A text-to-speech backend."""

    name: str

    def version(self) -> str:
        """Backend name and version, e.g. ``"espeak-ng 1.51"``."""
        ...

    def check_voice(self, voice: Voice, *, language: str | None = None) -> None:
        """Raise ``ValueError`` when the backend cannot speak with ``voice``.

        The message names the voice and lists some available ones. With ``language``
        (``"en"``, ``"en-us"``, ``"de"``), also raise when the backend has no voice for that
        language or ``voice`` does not speak it.
        """
        ...

    def languages(self) -> tuple[str, ...]:
        """Language tags the backend has voices for (e.g. ``"en"``, ``"en-us"``, ``"de"``)."""
        ...

    def speak(self, text: str, voice: Voice) -> Speech:
        """Speak ``text`` with ``voice``: the audio and the time of every token of ``text``."""
        ...


# name -> "module:attribute" of the backend class, imported on first use so that importing
# this interface never loads a backend's native library.
_BACKENDS = {"espeak-ng": "microturn.synth.espeak:EspeakTTS"}


def known_tts() -> tuple[str, ...]:
    """Names :func:`get_tts` accepts."""
    return tuple(sorted(_BACKENDS))


def get_tts(name: str = "espeak-ng", **options) -> TTS:
    """Build the TTS backend called ``name`` with backend-specific keyword ``options``.

    Raises ``ValueError`` for an unknown name (listing the known ones) and ``TypeError`` for
    options the backend does not take.
    """
    if not isinstance(name, str) or name not in _BACKENDS:
        raise ValueError(f"unknown TTS backend {name!r}; known backends: {', '.join(known_tts())}")
    module_name, attr = _BACKENDS[name].split(":")
    cls = getattr(importlib.import_module(module_name), attr)
    return cls(**options)
