"""Interfaces and plain data types shared by the ingest backends.

Audio handed to a backend is always 16 kHz mono float32 in [-1, 1], shape ``[N]`` (suffix
``_N``). All times are integer milliseconds from the start of the conversation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from microturn.schemas.sample import SAMPLE_RATE  # noqa: F401  (re-exported: the rate backends take)
from microturn.schemas.turns import Turn  # noqa: F401  (re-exported: backends speak in turns)


class AudioInputError(TypeError, ValueError):
    """Audio that a backend cannot take (wrong type, dtype, shape, empty, NaN).

    Both a ``TypeError`` and a ``ValueError``, so callers may catch either.
    """


def validate_wave(wave_N: np.ndarray, *, who: str, allow_empty: bool = False) -> np.ndarray:
    """Check that ``wave_N`` is 16 kHz mono float32 audio, shape ``[N]`` with N > 0.

    Returns the array made C-contiguous (an empty one only with ``allow_empty``). Raises
    ``ValueError`` with a message saying how to fix the input otherwise (float64 is refused
    rather than silently converted so that callers notice they skipped the pipeline's decoding
    step, which yields float32).
    """
    if not isinstance(wave_N, np.ndarray):
        raise AudioInputError(
            f"{who}: expected a numpy array of 16 kHz mono float32 samples, got "
            f"{type(wave_N).__name__}; convert with np.asarray(x, dtype=np.float32)"
        )
    if wave_N.ndim != 1:
        raise AudioInputError(
            f"{who}: expected mono audio of shape [N], got shape {wave_N.shape}; mix down or pick "
            "one channel first (e.g. wave.mean(axis=-1) for [N, channels])"
        )
    if wave_N.dtype != np.float32:
        raise AudioInputError(
            f"{who}: expected float32 samples in [-1, 1], got dtype {wave_N.dtype}; convert with "
            "wave.astype(np.float32) (scale integer PCM by 1/32768 first)"
        )
    if wave_N.size == 0 and not allow_empty:
        raise AudioInputError(f"{who}: the audio is empty (0 samples); nothing to analyse")
    if not np.isfinite(wave_N).all():
        raise AudioInputError(f"{who}: the audio holds NaN or infinite samples; fix the decoder output")
    return np.ascontiguousarray(wave_N)


@dataclass(frozen=True, slots=True)
class Region:
    """A span of time, [start_ms, end_ms)."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Utterance:
    """A transcript line from a sidecar or a recogniser: text over a span, maybe a speaker."""

    start_ms: int
    end_ms: int
    text: str
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class Word:
    """A timed word. ``score`` is the aligner's confidence in [0, 1], None when interpolated."""

    text: str
    start_ms: int
    end_ms: int
    score: float | None = None
    speaker: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SpeakerCount:
    """Constraints on the number of speakers; all None means estimate freely."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError(
                f"--min-speakers {self.min_speakers} is larger than --max-speakers {self.max_speakers}"
            )


@runtime_checkable
class VoiceActivity(Protocol):
    """Speech activity detection."""

    name: str

    def __call__(self, wave_N: np.ndarray) -> list[Region]: ...


@runtime_checkable
class Diarizer(Protocol):
    """Who spoke when, on a single mixed channel. Turns may overlap (overlap-aware)."""

    name: str

    def __call__(
        self, wave_N: np.ndarray, *, speech: list[Region], count: SpeakerCount
    ) -> list[Turn]: ...


@runtime_checkable
class Transcriber(Protocol):
    """Timed words for a conversation.

    ``utterances`` are the sidecar lines (None when there is no sidecar); ``turns`` the
    diarization, which a backend may use to cut the audio or to assign speakers.
    """

    name: str

    def __call__(
        self, wave_N: np.ndarray, *, utterances: list[Utterance] | None, turns: list[Turn]
    ) -> list[Word]: ...
