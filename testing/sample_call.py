"""The real two-person phone call shipped with pyannote.audio, with its reference turns and words.

``pyannote/audio/sample/sample.{wav,rttm,stm}``: 30 s of 16 kHz mono speech, its reference
diarization (RTTM) and transcript (STM). The files are located without importing
``pyannote.audio`` (that import loads torch, about 10 s); the references are read with the
package's own readers (:func:`microturn.pipelines.eval_diarization.read_rttm`,
:func:`microturn.pipelines.eval_words.read_stm`).

Array suffix: N audio samples (16 kHz).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microturn.schemas.sample import SAMPLE_RATE
from microturn.schemas.turns import Turn

__all__ = ["SAMPLE_DIR", "SampleCall", "sample_call", "sample_path", "sample_wave"]


def _sample_dir() -> Path:
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("pyannote.audio is not installed: its sample call is the reference recording "
                         "of the tests and benchmarks")
    return Path(spec.submodule_search_locations[0]) / "sample"


SAMPLE_DIR = _sample_dir()


def sample_path(suffix: str) -> Path:
    """``pyannote/audio/sample/sample.<suffix>``: ``wav``, ``rttm`` or ``stm``."""
    return SAMPLE_DIR / f"sample.{suffix}"


@functools.cache
def sample_wave() -> np.ndarray:
    """The call as float32 16 kHz mono [N] (read-only, cached)."""
    import soundfile as sf

    wave_N, rate = sf.read(str(sample_path("wav")), dtype="float32")
    if rate != SAMPLE_RATE or wave_N.ndim != 1:
        raise ValueError(f"{sample_path('wav')}: expected {SAMPLE_RATE} Hz mono, got {rate} Hz, shape {wave_N.shape}")
    wave_N.setflags(write=False)
    return wave_N


@dataclass(frozen=True)
class SampleCall:
    """The call and its references, in integer ms.

    ``turns``: the RTTM's turns in time order, channel 0, speakers renamed ``SPEAKER_00``,
    ``SPEAKER_01`` in order of their first turn. ``words``: ``(speaker, text, start_ms, end_ms)``,
    each STM utterance's whitespace tokens spread evenly over it, the STM's speaker names mapped
    to the RTTM's in order of first appearance (the two references agree on who talks first).
    """

    wave_N: np.ndarray
    turns: tuple[Turn, ...]
    words: tuple[tuple[str, str, int, int], ...]

    @property
    def duration_ms(self) -> int:
        return len(self.wave_N) * 1000 // SAMPLE_RATE


@functools.cache
def sample_call() -> SampleCall:
    """The sample call with its reference turns and words (cached)."""
    from microturn.pipelines.eval_diarization import read_rttm
    from microturn.pipelines.eval_words import read_stm

    names: dict[str, str] = {}
    turns = []
    reference = read_rttm(sample_path("rttm"))["sample"]
    for entry in reference.itertracks(yield_label=True):  # (segment, track, label)
        segment, label = entry[0], entry[-1]
        speaker = names.setdefault(str(label), f"SPEAKER_{len(names):02d}")
        turns.append(Turn(speaker, round(segment.start * 1000), round(segment.end * 1000), 0))
    utterances = read_stm(sample_path("stm"))["sample"]
    stm_names: dict[str, str] = {}
    for u in utterances:
        stm_names.setdefault(u.speaker, f"SPEAKER_{len(stm_names):02d}")
    words = []
    for u in utterances:
        tokens = u.text.split()
        span = u.end_ms - u.start_ms
        words += [(stm_names[u.speaker], token, u.start_ms + span * i // len(tokens),
                   u.start_ms + span * (i + 1) // len(tokens)) for i, token in enumerate(tokens)]
    return SampleCall(wave_N=sample_wave(), turns=tuple(turns), words=tuple(words))
