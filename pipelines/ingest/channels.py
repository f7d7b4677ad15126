"""Deciding whether a multi-channel recording carries one speaker per channel.

Shape suffixes follow :mod:`microturn.schemas.legend`: C channels, N samples at 16 kHz, T 50 ms frames.

A phone call recorded in stereo has each party on their own channel; a stereo podcast or a film
mix has everyone on every channel. The first keeps its channels apart (each becomes a stream of
its own, no diarization needed); the second is downmixed and diarized. The test looks at when
channels are active: on per-speaker recordings they take turns, on mixes they are active together.
"""

from __future__ import annotations

import numpy as np

from microturn.pipelines.ingest.names import MIXED, PER_SPEAKER

FRAME = 800  # 50 ms at 16 kHz


def _active_CT(wave_CN: np.ndarray) -> np.ndarray:
    c, n = wave_CN.shape
    f = n // FRAME
    if f == 0:
        return np.zeros((c, 0), dtype=bool)
    energy_CT = np.sqrt((wave_CN[:, : f * FRAME].reshape(c, f, FRAME) ** 2).mean(axis=2) + 1e-12)
    db_CT = 20 * np.log10(energy_CT)
    # A frame is active when it is within 30 dB of the loudest frame of the whole file and above
    # -55 dBFS; crosstalk on a per-speaker line is typically 20-40 dB down from the talker.
    loudest = db_CT.max()
    return (db_CT > max(loudest - 30.0, -55.0)) & (db_CT > np.median(db_CT, axis=1, keepdims=True) + 6.0)


def detect_layout(wave_CN: np.ndarray, *, max_co_activity: float = 0.35) -> str:
    """``per_speaker`` when channels differ and are rarely active together, else ``mixed``.

    ``max_co_activity`` is the largest share of active frames in which two or more channels
    may be active at once for the recording to count as one speaker per channel (people overlap
    about 5-20% of speech time in conversation; a mix has every channel active together ~100%).
    """
    c = wave_CN.shape[0]
    if c == 1:
        return MIXED
    # Near-identical channels (dual-mono, upmixed mono) are a mixture whatever their activity.
    ref = wave_CN[0]
    if all(np.allclose(wave_CN[i], ref, atol=1e-3) for i in range(1, c)):
        return MIXED
    active_CT = _active_CT(wave_CN)
    any_active = active_CT.any(axis=0)
    if not any_active.any():
        return MIXED
    co = (active_CT.sum(axis=0) >= 2)[any_active].mean()
    talkers = int((active_CT.sum(axis=1) > 0.02 * active_CT.shape[1]).sum())
    return PER_SPEAKER if co <= max_co_activity and talkers >= 2 else MIXED
