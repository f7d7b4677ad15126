"""Turn-taking statistics of one conversation (part of the record contract: the ``stats``
column of ``conversations``), from its (possibly overlapping) speaker turns.

Definitions (all times in ms):
- speech_ratio: time where anyone speaks / conversation duration.
- overlap_ratio: time where two or more speak / time where anyone speaks.
- backchannel: a turn shorter than ``backchannel_max_ms`` that lies entirely inside another
  speaker's turn (a listener's "mm-hmm"); it is counted and left out of turn transitions.
- turns: the remaining turns after merging consecutive turns of the same speaker.
- at each change of speaker between consecutive turns (by start time), the next start minus the
  previous end is a gap when positive and an overlap (its magnitude) when negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np


@dataclass(frozen=True, slots=True)
class Turn:
    """A span where one speaker talks. ``channel`` is the media audio file holding the voice."""

    speaker: str
    start_ms: int
    end_ms: int
    channel: int = 0


# 1 s: listener tokens ("yeah", "mm-hmm", "right") last 200-700 ms; 1 s leaves headroom without
# catching real short answers, which usually do not sit entirely inside the other's turn.
BACKCHANNEL_MAX_MS = 1000


@dataclass(frozen=True, kw_only=True)
class TurnStats:
    speech_ratio: float
    overlap_ratio: float
    turns: int
    backchannels: int
    gaps_ms: list[int]
    overlaps_ms: list[int]

    def as_row(self) -> dict:
        return {
            "speech_ratio": self.speech_ratio,
            "overlap_ratio": self.overlap_ratio,
            "turns": self.turns,
            "backchannels": self.backchannels,
            "gaps_ms": self.gaps_ms,
            "overlaps_ms": self.overlaps_ms,
            "median_gap_ms": float(np.median(self.gaps_ms)) if self.gaps_ms else None,
            "median_overlap_ms": float(np.median(self.overlaps_ms)) if self.overlaps_ms else None,
        }


def _union_ms(intervals: list[tuple[int, int]]) -> int:
    total, cur_s = 0, 0
    cur_e: int | None = None  # the end of the union run being measured; cur_s is its start
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def _overlap_ms(turns: Sequence[Turn]) -> int:
    """Time covered by at least two different speakers (sweep over boundaries)."""
    events = []
    for t in turns:
        events.append((t.start_ms, 1, t.speaker))
        events.append((t.end_ms, -1, t.speaker))
    events.sort(key=lambda x: (x[0], x[1]))
    active: dict[str, int] = {}
    total, last = 0, None
    for time, delta, spk in events:
        if last is not None and sum(1 for v in active.values() if v > 0) >= 2:
            total += time - last
        active[spk] = active.get(spk, 0) + delta
        last = time
    return total


def _analyse(turns: Sequence[Turn], backchannel_max_ms: int) -> tuple[list[Turn], list[bool], list[Turn]]:
    """Sorted non-empty turns, a backchannel flag for each, and the main turns (backchannels
    left out, consecutive turns of one speaker merged)."""
    turns = sorted((t for t in turns if t.end_ms > t.start_ms),
                   key=lambda t: (t.start_ms, t.end_ms, t.speaker))
    # Turns sorted by start: a turn can only lie inside an earlier-or-equal-starting turn, so a
    # running "longest end per speaker so far" check is O(n * speakers) instead of O(n^2).
    furthest: dict[str, int] = {}
    flags = []
    for t in turns:
        inside = any(spk != t.speaker and end >= t.end_ms for spk, end in furthest.items())
        flags.append(t.end_ms - t.start_ms < backchannel_max_ms and inside)
        furthest[t.speaker] = max(furthest.get(t.speaker, 0), t.end_ms)
    merged: list[Turn] = []
    for t, bc in zip(turns, flags, strict=True):
        if bc:
            continue
        if merged and merged[-1].speaker == t.speaker:
            last = merged[-1]
            merged[-1] = Turn(last.speaker, last.start_ms, max(last.end_ms, t.end_ms), last.channel)
        else:
            merged.append(t)
    return turns, flags, merged


def split_backchannels(turns: Sequence[Turn], *, backchannel_max_ms: int = BACKCHANNEL_MAX_MS
                       ) -> tuple[list[Turn], list[Turn]]:
    """(main turns with consecutive turns of one speaker merged, backchannel turns), both sorted
    by start: the two kinds of turn that the statistics above distinguish."""
    turns, flags, merged = _analyse(turns, backchannel_max_ms)
    return merged, [t for t, bc in zip(turns, flags, strict=True) if bc]


def turn_stats(turns: Sequence[Turn], duration_ms: int, *,
               backchannel_max_ms: int = BACKCHANNEL_MAX_MS) -> TurnStats:
    """Compute :class:`TurnStats`; ``ValueError`` on a non-positive duration."""
    if duration_ms <= 0:
        raise ValueError(f"duration_ms must be positive, got {duration_ms}")
    turns, backchannel, merged = _analyse(turns, backchannel_max_ms)
    speech = _union_ms([(t.start_ms, t.end_ms) for t in turns])
    overlap = _overlap_ms(turns)
    gaps, overlaps = [], []
    for prev, nxt in pairwise(merged):
        delta = nxt.start_ms - prev.end_ms
        (gaps if delta >= 0 else overlaps).append(int(abs(delta)))
    return TurnStats(
        speech_ratio=min(1.0, speech / duration_ms),
        overlap_ratio=(overlap / speech) if speech else 0.0,
        turns=len(merged),
        backchannels=int(sum(backchannel)),
        gaps_ms=gaps,
        overlaps_ms=overlaps,
    )


# An interruption: the next speaker starts while the current one is still talking, the overlap
# lasts at least 200 ms (shorter is ordinary turn-start overlap), and the interrupted speaker
# yields within 2 s.
INTERRUPT_MIN_OVERLAP_MS = 200
INTERRUPT_MAX_YIELD_MS = 2000


@dataclass(frozen=True, kw_only=True)
class TurnEvent:
    type: str  # turn_end | backchannel | interruption
    speaker: str
    t_ms: int
    payload: dict


def turn_events(turns: Sequence[Turn], *, backchannel_max_ms: int = BACKCHANNEL_MAX_MS) -> list[TurnEvent]:
    """Events of the conversation: each turn end with the gap (or overlap) to the next turn,
    backchannels, and interruptions, in time order."""
    turns, backchannel, main = _analyse(turns, backchannel_max_ms)
    events = [TurnEvent(type="backchannel", speaker=t.speaker, t_ms=t.start_ms,
                        payload={"duration_ms": t.end_ms - t.start_ms})
              for t, bc in zip(turns, backchannel, strict=True) if bc]
    for prev, nxt in pairwise(main):
        delta = nxt.start_ms - prev.end_ms
        events.append(TurnEvent(type="turn_end", speaker=prev.speaker, t_ms=prev.end_ms,
                                payload={"gap_ms": delta, "next_speaker": nxt.speaker}))
        if -delta >= INTERRUPT_MIN_OVERLAP_MS and prev.end_ms - nxt.start_ms <= INTERRUPT_MAX_YIELD_MS \
                and prev.end_ms < nxt.end_ms:
            events.append(TurnEvent(type="interruption", speaker=nxt.speaker, t_ms=nxt.start_ms,
                                    payload={"interrupted": prev.speaker, "overlap_ms": -delta}))
    if main:
        events.append(TurnEvent(type="turn_end", speaker=main[-1].speaker, t_ms=main[-1].end_ms,
                                payload={"gap_ms": None, "next_speaker": None}))
    return sorted(events, key=lambda e: (e.t_ms, e.type, e.speaker))
