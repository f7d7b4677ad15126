"""Reading an evaluation item's audio, and the speech detector every duplex metric shares.

Full-Duplex-Bench reads each wav with ``torchaudio.load``, resamples it to 16 kHz with
``torchaudio.functional.resample`` and finds speech with silero-vad's ``get_speech_timestamps`` at
its default settings (threshold 0.5, 250 ms minimum speech, 100 ms minimum silence, 30 ms pad).
This module does the same, so that a segment boundary here is the reference's to the sample:
silero's probabilities come from the project's :class:`~microturn.pipelines.backends.silero.SileroVad`
(its batched engine gives the TorchScript model's probabilities bit for bit) and silero's own
``get_speech_timestamps_from_probs`` turns them into sample indices. Times are seconds as floats,
``sample / 16000``, as the reference has them (not the ingest's integer milliseconds).

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz, C channels.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import soundfile
import torch
import torchaudio

from microturn.pipelines.backends.silero import SileroVad

SAMPLE_RATE = 16_000

Segment = tuple[float, float]


def read_wav_NC(path: str) -> np.ndarray:
    """A wav file as float32 ``[N, C]`` at 16 kHz (resampled as the reference does)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist or is not a file")
    try:
        data_NC, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise ValueError(f"{path} is not a readable audio file: {exc}") from None
    if data_NC.shape[0] == 0:
        raise ValueError(f"{path} holds no audio samples")
    if rate != SAMPLE_RATE:
        wave_CN = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(data_NC.T)), rate, SAMPLE_RATE)
        data_NC = wave_CN.numpy().T
    return np.ascontiguousarray(data_NC, dtype=np.float32)


def read_mono_N(path: str) -> np.ndarray:
    """A one-channel wav file as float32 ``[N]`` at 16 kHz; ``ValueError`` for any other channel count."""
    data_NC = read_wav_NC(path)
    if data_NC.shape[1] != 1:
        raise ValueError(f"{path} has {data_NC.shape[1]} channels; a user or model stream is one channel")
    return data_NC[:, 0]


@lru_cache(maxsize=1)
def _vad() -> SileroVad:
    return SileroVad()


def speech_segments(wave_N: np.ndarray) -> list[Segment]:
    """Speech of a 16 kHz mono wave in seconds, with silero's default settings (the reference's)."""
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    wave_N = np.ascontiguousarray(wave_N, dtype=np.float32)
    if wave_N.size < 512:  # shorter than one silero frame: no decision, as the reference gives
        return []
    probs = _vad().speech_probabilities(wave_N)
    stamps = get_speech_timestamps_from_probs(probs.tolist(), audio_length_samples=wave_N.size,
                                              sampling_rate=SAMPLE_RATE)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def merge_segments(segments: list[Segment], gap_s: float) -> list[Segment]:
    """Sorted segments with every gap of at most ``gap_s`` closed (v1.5's merge of VAD splits)."""
    merged: list[Segment] = []
    for start, end in sorted(segments):
        if merged and start - merged[-1][1] <= gap_s:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
