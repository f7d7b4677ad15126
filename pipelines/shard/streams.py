"""The two audio streams of a role assignment, built from a conversation's media.

A role assignment names one speaker as ``model``; ``user`` is everyone else. Each stream is
the sum of the media channels that hold only its speakers. A channel that holds speakers of
both streams (the single channel of a mixed recording) is gated by the diarization of the
stream's speakers, with short linear fades at the edges, and wherever the other stream's
speakers talk while the gate is open their voice leaks in: those spans are returned so the
LEAK label can mark them.

Shape suffixes follow :mod:`microturn.schemas.legend`: N samples at 16 kHz, C channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from microturn.schemas.sample import SAMPLE_RATE
from microturn.schemas.turns import Turn

_PER_MS = SAMPLE_RATE // 1000


@dataclass(frozen=True, kw_only=True)
class Stream:
    """One stream of a role assignment.

    Attributes:
        speakers: the speakers whose voice this stream carries.
        wave_N: float32 audio, as long as the conversation's media.
        leaks_ms: spans (ms) where another stream's speaker is audible through this stream's gate.
    """

    speakers: frozenset[str]
    wave_N: np.ndarray
    leaks_ms: tuple[tuple[int, int], ...]


def intervals_union(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted disjoint union of half-open spans; empty spans are dropped."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(x for x in spans if x[1] > x[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def intervals_intersect(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Intersection of two sorted disjoint span lists."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if e > s:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def gate(spans_ms: Sequence[tuple[int, int]], n: int, *, fade_ms: int) -> np.ndarray:
    """float32 [N] gain: 1 inside the spans, linear ramps of ``fade_ms`` outside their edges, else 0.

    The ramps sit outside the spans so that every diarized sample keeps full gain; 10 ms fades
    remove the click of a hard cut (a step in a 16 kHz signal is broadband) without letting in
    more than 10 ms of the other speaker per edge.
    """
    gain_N = np.zeros(n, dtype=np.float32)
    ramp = max(0, fade_ms * _PER_MS)
    up = (np.arange(1, ramp + 1, dtype=np.float32) / (ramp + 1)) if ramp else np.zeros(0, np.float32)
    for s_ms, e_ms in intervals_union(spans_ms):
        s, e = min(n, s_ms * _PER_MS), min(n, e_ms * _PER_MS)
        gain_N[s:e] = 1.0
        if ramp:
            lo = max(0, s - ramp)
            np.maximum(gain_N[lo:s], up[ramp - (s - lo):], out=gain_N[lo:s])
            hi = min(n, e + ramp)
            np.maximum(gain_N[e:hi], up[::-1][: hi - e], out=gain_N[e:hi])
    return gain_N


def speaker_channels(segments: Sequence[Turn]) -> dict[str, set[int]]:
    """Which media channels hold each speaker's voice (from the segments' ``channel``)."""
    out: dict[str, set[int]] = {}
    for t in segments:
        out.setdefault(t.speaker, set()).add(int(t.channel or 0))
    return out


def build_stream(speakers: frozenset[str], *, audio: Mapping[int, np.ndarray], segments: Sequence[Turn],
                 fade_ms: int = 10) -> Stream:
    """The stream of ``speakers`` from per-channel ``audio`` (channel index → float32 [N]).

    Channels holding only these speakers are added whole; shared channels are gated by these
    speakers' segments; channels without them are left out.
    """
    n = max((a.shape[0] for a in audio.values()), default=0)
    wave_N = np.zeros(n, dtype=np.float32)
    where = speaker_channels(segments)
    leaks: list[tuple[int, int]] = []
    mine = intervals_union([(t.start_ms, t.end_ms) for t in segments if t.speaker in speakers])
    for ch in sorted(audio):
        on = {s for s, chans in where.items() if ch in chans}
        if not on & speakers:
            continue
        a_N = audio[ch]
        if on <= speakers:
            wave_N[: a_N.shape[0]] += a_N
            continue
        # The gate is open over our spans plus the fades; others talking there leak in.
        wave_N[: a_N.shape[0]] += a_N * gate(mine, a_N.shape[0], fade_ms=fade_ms)
        opened = intervals_union([(max(0, s - fade_ms), e + fade_ms) for s, e in mine])
        others = intervals_union([(t.start_ms, t.end_ms) for t in segments
                                  if t.speaker not in speakers and int(t.channel or 0) == ch])
        leaks += intervals_intersect(opened, others)
    np.clip(wave_N, -1.0, 1.0, out=wave_N)
    return Stream(speakers=speakers, wave_N=wave_N, leaks_ms=tuple(intervals_union(leaks)))
