"""Mixing placed turns into one audio stream per speaker, with loudness and room degradation.

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz (an impulse
response too: its taps are samples).

Each speaker's stream holds that speaker's voice and nothing else (no leakage: the other
speaker's turns are never added, not even attenuated). Streams are normalised to one active
speech level; a stream chosen by ``MixConfig.degrade`` may get a synthetic room (exponentially
decaying noise impulse response of a given RT60) and stationary noise at a given SNR, which is
what a user's microphone adds and the model's own voice does not have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from microturn.schemas.config import setting, validate
from microturn.schemas.sample import SAMPLE_RATE
from microturn.synth.names import DEGRADE

SAMPLES_PER_MS = SAMPLE_RATE // 1000

# Samples quieter than this (-70 dBFS) do not count as active speech when measuring the level.
_ACTIVE_FLOOR = 10 ** (-70 / 20)


@dataclass(frozen=True, kw_only=True)
class MixConfig:
    """How stems are levelled and degraded.

    ``target_dbfs``: RMS level of each stream over its active samples; -26 dBFS is the active
    speech level ITU-T P.56 practice uses for telephony test material, leaving ~20 dB headroom.
    ``noise_snr_db`` / ``reverb_rt60_s``: degradation of the streams selected by ``degrade``:
    ``user`` = speakers whose script role is ``user`` (the first speaker when no roles are
    given), ``all``, or ``none``. Both off by default.
    ``tail_ms``: silence kept after the last word.
    """

    target_dbfs: float = setting(-26.0, ge=-60.0, le=-3.0)
    noise_snr_db: float | None = setting(None, ge=-10.0, le=80.0)  # dB; None: no noise
    reverb_rt60_s: float | None = setting(None, ge=0.05, le=3.0)  # seconds; None: no reverb
    degrade: str = setting("user", choices=DEGRADE)
    tail_ms: int = setting(300, ge=0, le=10_000)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def render(pieces: Iterable[tuple[int, np.ndarray]], duration_ms: int) -> np.ndarray:
    """One stream of ``duration_ms`` with each (start_ms, wave_N) piece added at its place."""
    out_N = np.zeros(duration_ms * SAMPLES_PER_MS, dtype=np.float32)
    for start_ms, wave_N in pieces:
        s = start_ms * SAMPLES_PER_MS
        e = min(out_N.size, s + wave_N.size)
        if e > s:
            out_N[s:e] += wave_N[: e - s]
    return out_N


def active_rms(wave_N: np.ndarray, floor: float = _ACTIVE_FLOOR) -> float:
    """RMS over the samples above ``floor`` (-70 dBFS by default); 0 for a silent stream."""
    sq_N = np.square(wave_N, dtype=np.float32)
    active = sq_N[sq_N > floor * floor]
    return float(np.sqrt(np.mean(active, dtype=np.float64))) if active.size else 0.0


def normalise(wave_N: np.ndarray, target_dbfs: float) -> np.ndarray:
    """Scale to ``target_dbfs`` active RMS, then down (never up) so that peaks stay below -0.1 dBFS."""
    rms = active_rms(wave_N)
    if rms == 0.0:
        return wave_N.astype(np.float32, copy=True)
    gain = 10 ** (target_dbfs / 20) / rms
    # Raising the level lifts a few quiet samples over the activity floor; a second estimate with
    # the floor moved by the gain takes them in (the level then lands within 0.01 dB of the target).
    rescaled = active_rms(wave_N, _ACTIVE_FLOOR / gain) * gain
    gain *= 10 ** (target_dbfs / 20) / rescaled
    peak = float(np.max(np.abs(wave_N))) * gain
    ceiling = 10 ** (-0.1 / 20)
    if peak > ceiling:
        gain *= ceiling / peak
    return (wave_N * gain).astype(np.float32)


def room_response(rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response ``ir_N``: a direct path, then Gaussian noise decaying by
    60 dB over ``rt60_s`` (the exponential model of a diffuse reverberant field)."""
    n = int(rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir_N = rng.standard_normal(n) * np.exp(-6.907755 * t / rt60_s)  # ln(1000) = 60 dB in amplitude
    # A 2.5 ms initial delay gap before the diffuse tail, as between a direct path and first reflections.
    ir_N[: int(0.0025 * SAMPLE_RATE)] = 0.0
    ir_N *= 0.3 / np.sqrt(np.sum(ir_N ** 2))  # direct-to-reverberant ratio ~ +10 dB
    ir_N[0] = 1.0
    return ir_N


def reverberate(wave_N: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with :func:`room_response`, keeping the length (the tail past the end is cut)."""
    return fftconvolve(wave_N, room_response(rt60_s, rng))[: wave_N.size].astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum (the spectral tilt of room and fan noise)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spec / np.sqrt(f), n)
    return (noise / np.sqrt(np.mean(noise ** 2))).astype(np.float32)


def add_noise(wave_N: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add pink noise ``snr_db`` below the stream's active speech level."""
    level = active_rms(wave_N)
    if level == 0.0:
        return wave_N
    return (wave_N + pink_noise(wave_N.size, rng) * (level * 10 ** (-snr_db / 20))).astype(np.float32)


def degraded_speakers(roles: Mapping[str, str | None], degrade: str) -> set[str]:
    """The speakers whose streams get noise and reverberation under ``degrade``."""
    if degrade == "none":
        return set()
    if degrade == "all":
        return set(roles)
    users = {s for s, r in roles.items() if r == "user"}
    return users or ({next(iter(roles))} if roles else set())


def mix_stems(pieces: Mapping[str, list[tuple[int, np.ndarray]]], roles: Mapping[str, str | None],
              duration_ms: int, cfg: MixConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One levelled (and maybe degraded) stream per speaker, all ``duration_ms`` long."""
    degrade = degraded_speakers(roles, cfg.degrade)
    stems = {}
    for speaker in roles:
        stem_N = render(pieces.get(speaker, ()), duration_ms)
        if speaker in degrade and cfg.reverb_rt60_s is not None:
            stem_N = reverberate(stem_N, cfg.reverb_rt60_s, rng)
        if speaker in degrade and cfg.noise_snr_db is not None:
            stem_N = add_noise(stem_N, cfg.noise_snr_db, rng)
        stems[speaker] = normalise(stem_N, cfg.target_dbfs)
    return stems
