"""Speech activity detection with the ``silero-vad`` package (offline: weights ship in the wheel).

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz. The VAD's own
frames (512 samples, 32 ms, one speech probability each) have no letter there: ``frame_probs``.

Which silero model: the package offers a TorchScript model driven frame by frame from Python
(~0.4-0.6 s for 30 s of audio on this 2-core machine: 938 calls of 32 ms each) and a "sequence"
ONNX export that runs up to 512 frames per call and gives the same probabilities bit for bit
(checked on pyannote's sample: identical timestamps) in ~0.055 s for 30 s, i.e. ~550x realtime.
The ingest budget is 30x realtime for every stage together, so the sequence model is the
default; ``engine="jit"`` keeps the TorchScript path for environments without onnxruntime.

Threads: importing ``silero_vad`` calls ``torch.set_num_threads(1)`` as a side effect, which
would silently change how every other torch model in the worker runs. This module restores the
caller's setting right after that import. The sequence engine pins onnxruntime to one thread
inside its own session (the 32 ms frames are too small for intra-op parallelism to pay off),
which touches no global state.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypedDict

import numpy as np
import torch

from .base import SAMPLE_RATE, Region, validate_wave
from .configs import SileroVadConfig

# ``silero_vad.model`` sets torch's global intra-op thread count to 1 when first imported;
# undo that so that importing this backend does not change how fast other models run.
_threads_before_import = torch.get_num_threads()
from silero_vad import get_speech_timestamps, load_silero_vad  # noqa: E402
from silero_vad.sequence_vad import SileroVADSequence  # noqa: E402
from silero_vad.utils_vad import get_speech_timestamps_from_probs  # noqa: E402

torch.set_num_threads(_threads_before_import)

__all__ = ["SileroVad", "SileroVadConfig", "torch_threads"]

# Silero's frame at 16 kHz: 512 samples = 32 ms. Audio shorter than one frame carries no
# decision; it is reported as no speech.
_FRAME_SAMPLES = 512


class _StampOptions(TypedDict, total=False):
    """Keyword arguments shared by silero's two timestamp functions (``get_speech_timestamps``
    and ``get_speech_timestamps_from_probs``); a key left out takes silero's default."""

    sampling_rate: int
    threshold: float
    neg_threshold: float
    min_speech_duration_ms: int
    min_silence_duration_ms: int
    speech_pad_ms: int
    max_speech_duration_s: float


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to ``num_threads``, then restore it.

    ``None`` leaves the setting alone. The setting is process-wide, so a block running in one
    Python thread also affects torch work started meanwhile by other threads of the process;
    Beam workers run one bundle per process here, where this is harmless.
    """
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SileroVad:
    """:class:`~.base.VoiceActivity` with silero-vad; loads its model once, in the constructor.

    Call it with 16 kHz mono float32 audio ``[N]``; it returns the speech regions in integer
    milliseconds, sorted and non-overlapping. Instances are not thread-safe (the TorchScript
    engine keeps recurrent state); use one per worker.
    """

    name = "silero-vad"

    def __init__(self, config: SileroVadConfig | None = None) -> None:
        self.config = config or SileroVadConfig()
        threads = torch.get_num_threads()
        try:
            if self.config.engine == "sequence":
                self._model = load_silero_vad(sequence=True, sampling_rate=SAMPLE_RATE)
            else:
                self._model = load_silero_vad()
        finally:
            torch.set_num_threads(threads)  # loading never changes the caller's thread count

    def speech_probabilities(self, wave_N: np.ndarray) -> np.ndarray:
        """Per-frame speech probabilities, one per 512-sample (32 ms) frame."""
        wave_N = validate_wave(wave_N, who=self.name)
        model = self._model
        if self.config.engine == "sequence":
            assert isinstance(model, SileroVADSequence)  # the constructor loads it for this engine
            return np.asarray(model.audio_forward(wave_N, sampling_rate=SAMPLE_RATE))
        assert isinstance(model, torch.jit.ScriptModule)  # the constructor loads it for "jit"
        # One thread: each of the ~31 calls per second of audio is far too small to split, and
        # with 2 threads on a busy 2-core machine OpenMP spin-waiting made it 50x slower.
        with torch.inference_mode(), torch_threads(1):
            prob_1P = model.audio_forward(torch.from_numpy(wave_N)[None], SAMPLE_RATE)
        return prob_1P[0].numpy()

    def __call__(self, wave_N: np.ndarray) -> list[Region]:
        """Speech regions of ``wave_N`` (16 kHz mono float32 ``[N]``) in integer ms.

        Raises ``ValueError`` for non-1-D, non-float32, empty or non-finite input. Audio
        shorter than one 32 ms frame yields ``[]`` with a warning.
        """
        wave_N = validate_wave(wave_N, who=self.name)
        if wave_N.size < _FRAME_SAMPLES:
            warnings.warn(
                f"{self.name}: {wave_N.size} samples is shorter than one {_FRAME_SAMPLES}-sample "
                "VAD frame; reported as no speech",
                stacklevel=2,
            )
            return []
        cfg = self.config
        options: _StampOptions = {
            "sampling_rate": SAMPLE_RATE,
            "threshold": cfg.threshold,
            "min_speech_duration_ms": cfg.min_speech_ms,
            "min_silence_duration_ms": cfg.min_silence_ms,
            "speech_pad_ms": cfg.speech_pad_ms,
            "max_speech_duration_s": cfg.max_speech_s,
        }
        if cfg.neg_threshold is not None:  # None: silero's own default (passing None does the same)
            options["neg_threshold"] = cfg.neg_threshold
        if cfg.engine == "sequence":
            frame_probs = self.speech_probabilities(wave_N)
            stamps = get_speech_timestamps_from_probs(
                frame_probs.tolist(), audio_length_samples=wave_N.size, **options
            )
        else:
            with torch.inference_mode(), torch_threads(1):
                stamps = get_speech_timestamps(torch.from_numpy(wave_N), self._model, **options)
        # Samples -> integer ms; rounding, then dropping what the rounding emptied.
        regions = [
            Region(round(s["start"] * 1000 / SAMPLE_RATE), round(s["end"] * 1000 / SAMPLE_RATE))
            for s in stamps
        ]
        return [r for r in regions if r.end_ms > r.start_ms]
