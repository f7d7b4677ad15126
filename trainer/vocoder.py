"""Vocoders: the project's log-mel frames back to 16 kHz audio, offline and in a live session.

The frames are those of :func:`microturn.schemas.dmel.log_mel` (what the flow head emits): frame
t is the clamped log10 of 80 Slaney mel magnitudes of a 1600-sample periodic-Hann window centred
at sample 800 t, covering samples [800 (t - 1), 800 (t + 1)). A :class:`Vocoder` turns T frames
into 800 T samples, either all at once (:meth:`Vocoder.synthesize`) or a few frames at a time
(:meth:`Vocoder.stream`, what the session calls every 200 ms with 4 frames).

The embedded default, :class:`GriffinLimVocoder`, needs no weights:

1. Mel to linear magnitude: the non-negative least-squares inverse of the recipe's own filters
   (:func:`~microturn.schemas.dmel.mel_filters`): their pseudo-inverse, clamped positive, then
   multiplicative NNLS updates. Re-projected on the filters, the magnitudes give back the log-mel
   within 5.6e-4 log10 units on speech (the clamped pseudo-inverse alone: 2.2e-3).
2. Magnitude to audio: fast Griffin-Lim (Perraudin et al. 2013), torchaudio's
   ``functional.griffinlim`` offline. Streaming runs the same iteration (checked equal to
   torchaudio's in the tests) over a sliding window of ``context_frames`` frames, because it
   needs two things torchaudio's function does not take: the previous call's phases as the
   starting point, and the samples already emitted held fixed. Without them each 200 ms piece
   gets a phase of its own and the joins click (re-featurised error 1.7x larger, measured below).

Quality, on 5 s of the pyannote sample call, as the mean absolute log10 difference between the
log-mel of the output and the input log-mel over frames with energy: ``synthesize`` 0.0065 with
the default 16 iterations; ``stream`` in 4-frame calls 0.021 (torchaudio's function run afresh
on each 8-frame window, without warm start or fixed samples: 0.036), with ``lookahead_frames=1``
(50 ms more delay) 0.009. The streamed audio re-featurised differs from the offline audio's by
0.021 as well. In 1-frame calls every frame straddles a join, and the stream error is 0.08.

Cost: one ``stream`` call of 4 frames takes about 8 ms on these 2 CPU cores (1 or 2 torch
threads) with the defaults, 16 iterations and 8 context frames (12 context frames: 9 ms; 8
iterations: 4.6 ms), 4% of the 200 ms chunk; the mel inversion is 1 ms of it. ``synthesize`` of
5 s takes about 55 ms.

Shape suffixes follow :mod:`microturn.schemas.legend`: T frames, M mel channels, X = 801 FFT
bins, N samples.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from microturn.schemas.config import from_mapping, setting, validate
from microturn.schemas.dmel import HOP, LOG_MAX, LOG_MIN, N_BINS_FFT, N_FFT, mel_filters
from microturn.schemas.sample import N_MELS, SAMPLE_RATE

__all__ = ["VOCODERS", "GriffinLimConfig", "GriffinLimVocoder", "Vocoder", "check_logmel", "griffin_lim",
           "magnitudes", "make_vocoder"]

# Multiplicative NNLS updates after the clamped pseudo-inverse. Re-projected log-mel error on the
# sample call: 2.2e-3 with none, 8.5e-4 after 10, 5.6e-4 after 20, 2.6e-4 after 50; 20 cost about
# 1 ms for 4 frames (0.05 ms each, op latency), and Griffin-Lim's own error (6e-3) dwarfs the rest.
_NNLS_UPDATES = 20


@runtime_checkable
class Vocoder(Protocol):
    """What a vocoder implements to plug into the live session (a neural one included).

    Attributes:
        sample_rate: rate of the audio it returns (16000).
        delay_samples: fixed algorithmic latency of :meth:`stream`.
    """

    sample_rate: int
    delay_samples: int

    def reset(self) -> None:
        """Forget the streaming state: the next :meth:`stream` call starts a new session."""
        ...

    def stream(self, logmel_TM: torch.Tensor) -> torch.Tensor:
        """T >= 1 new log-mel frames [T, 80] -> float32 [800 T] samples: the audio of the frames
        so far delayed by ``delay_samples`` (the first call starts with that much silence).
        Concatenated over a session, the outputs are :meth:`synthesize` of all frames shifted by
        ``delay_samples`` (up to the vocoder's stated tolerance)."""
        ...

    def synthesize(self, logmel_TM: torch.Tensor) -> torch.Tensor:
        """Log-mel frames [T, 80] -> float32 [800 T] samples, offline (no streaming state)."""
        ...


@dataclass(frozen=True, kw_only=True)
class GriffinLimConfig:
    """Settings of :class:`GriffinLimVocoder` (figures measured on 5 s of the sample call).

    Attributes:
        iterations: Griffin-Lim iterations per call (and offline). 16: offline error 0.0065
            (8: 0.009, 32: 0.005), stream error 0.021 (8: 0.028, 32: 0.019) at about 8 ms per
            4-frame call; cost is linear in it.
        momentum: fast Griffin-Lim momentum in [0, 1); 0.99 is torchaudio's default and the
            paper's. 0.9 does about as well (stream 0.022), 0 (plain Griffin-Lim) worse (0.031).
        context_frames: frames in the sliding window of each :meth:`GriffinLimVocoder.stream`
            call, counting the new ones and the already emitted ones that anchor their phase (a
            call with more new frames widens its window to fit them). 8 and 12 give the same
            error (0.021), 5 a worse one (0.027); 8 is the cheaper (12: 1.2x the time). At least
            3 (the STFT's reflect pad needs more than one hop of wave) and ``lookahead_frames + 2``.
        lookahead_frames: frames of delay beyond the one overlap-add needs. 0: 50 ms delay; 1:
            100 ms, and the stream error halves (0.021 -> 0.009), because the last emitted hop no
            longer depends on a frame that has no successor yet.
        random_phase: start new frames from uniformly random phases (drawn from ``seed``) instead
            of zero phase (torchaudio's ``rand_init=False``). Off: zero phase is deterministic
            without a generator and converges as well here.
        seed: seed of the random initial phases; a reset() session repeats its draws.
    """

    iterations: int = setting(16, ge=1)
    momentum: float = setting(0.99, ge=0.0, lt=1.0)
    context_frames: int = setting(8, ge=3)
    lookahead_frames: int = setting(0, ge=0)
    random_phase: bool = False
    seed: int = setting(0, ge=0)

    def __post_init__(self) -> None:
        validate(self)
        if self.context_frames < self.lookahead_frames + 2:
            raise ValueError(f"GriffinLimConfig.context_frames ({self.context_frames}) must be at least "
                             f"lookahead_frames + 2 = {self.lookahead_frames + 2}: the window holds the "
                             "lookahead, one new frame and one emitted frame")


@functools.cache
def _constants(device: torch.device) -> dict[str, torch.Tensor]:
    """Window, filters and their pseudo-inverse on ``device`` (float32, cached)."""
    filters_MX = torch.from_numpy(np.array(mel_filters(), dtype=np.float64))
    return {
        "window_N": torch.hann_window(N_FFT, periodic=True, dtype=torch.float32).to(device),
        "filters_MX": filters_MX.float().to(device),
        "pinv_MX": torch.linalg.pinv(filters_MX).T.float().contiguous().to(device),
    }


def check_logmel(logmel_TM: Any, what: str = "log-mel") -> torch.Tensor:
    """``logmel_TM`` as a float32 [T, 80] tensor clamped to the recipe's range [-7, 2].

    TypeError for a non-tensor or a non-floating tensor (dMel bins: dequantize them first),
    ValueError for a wrong shape, no frames, or non-finite values.
    """
    if not isinstance(logmel_TM, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor [T, {N_MELS}] of log10 mel values, got "
                        f"{type(logmel_TM).__name__}")
    if not logmel_TM.is_floating_point():
        raise TypeError(f"{what} must be a floating tensor, got {logmel_TM.dtype}: dMel bins are turned "
                        "into log-mel values with microturn.schemas.dmel.dequantize")
    if logmel_TM.dim() != 2 or logmel_TM.shape[1] != N_MELS or logmel_TM.shape[0] < 1:
        raise ValueError(f"{what} must have shape [T, {N_MELS}] with T >= 1 frames of 50 ms, got "
                         f"{tuple(logmel_TM.shape)}")
    if not bool(torch.isfinite(logmel_TM).all()):
        raise ValueError(f"{what} has non-finite values (NaN or inf); the recipe's log-mel lies in "
                         f"[{LOG_MIN:g}, {LOG_MAX:g}]")
    # A model's output may stray slightly outside the range; the recipe never does.
    return logmel_TM.detach().float().clamp(LOG_MIN, LOG_MAX)


def magnitudes(logmel_TM: torch.Tensor) -> torch.Tensor:
    """float32 [T, 801] non-negative linear STFT magnitudes whose mel projection is ``logmel_TM``
    (in 10^x) in the least-squares sense (see the module notes)."""
    c = _constants(logmel_TM.device)
    mel_TM = torch.pow(10.0, logmel_TM)
    mag_TX = (mel_TM @ c["pinv_MX"]).clamp_min_(1e-12)
    target_TX = mel_TM @ c["filters_MX"]
    for _ in range(_NNLS_UPDATES):
        # Lee-Seung update for min |F x - m| with x >= 0: keeps x positive, never raises the error.
        mag_TX.mul_(target_TX / ((mag_TX @ c["filters_MX"].T) @ c["filters_MX"]).clamp_min_(1e-30))
    return mag_TX


def _stft(wave_N: torch.Tensor, window_N: torch.Tensor) -> torch.Tensor:
    """complex [X, T] STFT with frame t centred at sample 800 t (torchaudio's Griffin-Lim framing)."""
    return torch.stft(wave_N, N_FFT, HOP, N_FFT, window_N, center=True, pad_mode="reflect",
                      normalized=False, onesided=True, return_complex=True)


def _istft(spec_XT: torch.Tensor, window_N: torch.Tensor) -> torch.Tensor:
    """[800 (T - 1)] samples from frame centre 0 to frame centre T - 1."""
    return torch.istft(spec_XT, N_FFT, HOP, N_FFT, window_N)


def griffin_lim(mag_XT: torch.Tensor, phase_XT: torch.Tensor, *, iterations: int, momentum: float,
                fixed_N: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast Griffin-Lim from starting phases ``phase_XT`` (unit complex): ``(wave, phases)``.

    The iteration of torchaudio's ``functional.griffinlim`` (same momentum convention; equal to it
    for ``phase_XT`` all ones and no ``fixed_N``), plus the two things streaming needs: a chosen
    start and the first ``len(fixed_N)`` samples of the wave held at ``fixed_N`` (audio already
    sent). The wave has 800 (T - 1) samples, from the centre of the first frame to the last's.
    """
    window_N = _constants(mag_XT.device)["window_N"]
    beta = momentum / (1 + momentum)
    previous_XT: torch.Tensor | None = None
    for _ in range(iterations):
        wave_N = _istft(mag_XT * phase_XT, window_N)
        if fixed_N is not None:
            wave_N[:fixed_N.shape[0]] = fixed_N
        rebuilt_XT = _stft(wave_N, window_N)
        phase_XT = rebuilt_XT if previous_XT is None or not beta else rebuilt_XT - beta * previous_XT
        phase_XT = phase_XT / (phase_XT.abs() + 1e-16)
        previous_XT = rebuilt_XT
    wave_N = _istft(mag_XT * phase_XT, window_N)
    if fixed_N is not None:
        wave_N[:fixed_N.shape[0]] = fixed_N
    return wave_N, phase_XT


class GriffinLimVocoder:
    """:class:`Vocoder` by mel inversion and Griffin-Lim (see the module notes); no weights.

    ``delay_samples`` is 800 (1 + ``lookahead_frames``). Why 800: audio samples [800 t, 800 (t + 1))
    are the overlap of frames t and t + 1, so after frame t the audio is complete up to 800 t and
    the last hop waits for the next frame. Tolerance: concatenated :meth:`stream` output in
    4-frame calls, re-featurised, is within 0.03 log10 units (mean over frames with energy; 0.021
    measured) of the input log-mel and of the re-featurised :meth:`synthesize` output on speech;
    :meth:`synthesize` is within 0.012 of the input (0.0065 measured). The same spectra, not the
    same waveform: Griffin-Lim's phases are its own.
    """

    sample_rate: int = SAMPLE_RATE

    def __init__(self, config: GriffinLimConfig | None = None) -> None:
        self.config = config or GriffinLimConfig()
        self.delay_samples = HOP * (1 + self.config.lookahead_frames)
        self.reset()

    def reset(self) -> None:
        """Start a new session: the next :meth:`stream` begins with ``delay_samples`` of silence."""
        self._mag_TX: torch.Tensor | None = None  # the window's frames, newest last
        self._phase_TX: torch.Tensor | None = None  # their phases from the last call
        self._known_N: torch.Tensor | None = None  # audio already fixed, ending at sample _known_end
        self._known_end = 0  # in session samples (sample 0: the start of frame 0's hop)
        self._frames = 0  # frames received this session
        self._generator: torch.Generator | None = None

    def _start_phases(self, frames: int, like_TX: torch.Tensor) -> torch.Tensor:
        """Unit complex [frames, X] starting phases of new frames: zero, or seeded random."""
        if not self.config.random_phase:
            return torch.ones((frames, N_BINS_FFT), dtype=torch.complex64, device=like_TX.device)
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.config.seed)
        angle_TX = torch.rand((frames, N_BINS_FFT), generator=self._generator) * (2 * math.pi)
        return torch.polar(torch.ones_like(angle_TX), angle_TX).to(like_TX.device)

    def stream(self, logmel_TM: torch.Tensor) -> torch.Tensor:
        """T new frames -> float32 [800 T] samples delayed by ``delay_samples`` (see the class)."""
        new_TX = magnitudes(check_logmel(logmel_TM))
        T = new_TX.shape[0]
        cfg = self.config
        if self._mag_TX is None or self._phase_TX is None or self._known_N is None:
            # Before the session the audio is silence (the recipe's causal pad): the window starts
            # full of silent frames, and the samples up to 0 are known zeros, held fixed like sent
            # audio. So the first call's delay is silence and every call's window has one shape.
            silent = cfg.context_frames - 1
            self._mag_TX = new_TX.new_zeros((silent, N_BINS_FFT))
            self._phase_TX = self._start_phases(silent, new_TX)
            self._known_N = new_TX.new_zeros(HOP * silent)
        elif self._mag_TX.device != new_TX.device:
            raise ValueError(f"log-mel frames moved from {self._mag_TX.device} to {new_TX.device} within a "
                             "session; call reset() to start a new one")
        window = max(cfg.context_frames, T + 1 + cfg.lookahead_frames)
        mag_TX = torch.cat([self._mag_TX, new_TX])[-window:]
        phase_TX = torch.cat([self._phase_TX, self._start_phases(T, new_TX)])[-window:]
        self._frames += T
        # The window's wave runs from the centre of its first frame to that of its last (frame
        # _frames - 1); the hop before the last centre waits for the next frame, and lookahead
        # hops more. Whatever of it is known audio is held fixed.
        wave_start = HOP * (self._frames - mag_TX.shape[0])
        stop = HOP * (self._frames - 1 - cfg.lookahead_frames)
        fixed_len = min(self._known_end - wave_start, HOP * (mag_TX.shape[0] - 1))
        fixed_N = self._known_N[self._known_N.shape[0] - fixed_len:] if fixed_len > 0 else None
        with torch.no_grad():
            wave_N, phase_XT = griffin_lim(mag_TX.T, phase_TX.T, iterations=cfg.iterations,
                                           momentum=cfg.momentum, fixed_N=fixed_N)
        out_N = wave_N[stop - HOP * T - wave_start:stop - wave_start].clone()
        self._mag_TX, self._phase_TX = mag_TX, phase_XT.T
        if stop > self._known_end:  # not yet on the first calls of a long lookahead
            self._known_N = wave_N[:stop - wave_start][-HOP * window:]
            self._known_end = stop
        return out_N

    def synthesize(self, logmel_TM: torch.Tensor) -> torch.Tensor:
        """float32 [800 T] samples of all frames at once, with torchaudio's ``griffinlim``."""
        import torchaudio.functional

        mag_TX = magnitudes(check_logmel(logmel_TM))
        # A silent frame on each side: the audio before sample 0 is silence (the recipe's causal
        # pad), and the last hop [800 (T - 1), 800 T) needs a frame T to be overlap-added.
        silent_1X = mag_TX.new_zeros((1, N_BINS_FFT))
        padded_XT = torch.cat([silent_1X, mag_TX, silent_1X]).T
        window_N = _constants(mag_TX.device)["window_N"]
        cfg = self.config
        # rand_init draws from the global generator of the device: seed it, then restore it.
        devices = [mag_TX.device] if mag_TX.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.seed)
            wave_N = torchaudio.functional.griffinlim(
                padded_XT, window_N, N_FFT, HOP, N_FFT, 1.0, cfg.iterations, cfg.momentum, None,
                cfg.random_phase)
        return wave_N[HOP:].contiguous()  # from the centre of frame 0 (sample 0) to 800 T


VOCODERS: dict[str, Any] = {"griffin-lim": (GriffinLimConfig, GriffinLimVocoder)}
"""Vocoder name -> (config class, vocoder class) for :func:`make_vocoder`."""


def make_vocoder(name: str = "griffin-lim", **settings: Any) -> Vocoder:
    """The vocoder registered as ``name``, built from config ``settings`` (its config's keys).

    ValueError for an unknown name (listing the known ones) or unknown or bad settings.
    """
    if name not in VOCODERS:
        raise ValueError(f"unknown vocoder {name!r}; known vocoders: {sorted(VOCODERS)}")
    config_cls, vocoder_cls = VOCODERS[name]
    return vocoder_cls(from_mapping(config_cls, settings, where=f"vocoder {name!r}"))
