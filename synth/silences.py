"""Silences of a conversation at the moment of a turn-taking decision: shifts and holds.

A *mutual silence* is a stretch where nobody speaks. One that lasts at least ``min_ms`` (200 ms,
one chunk of the micro-turn grid) and follows speech is a decision point: the speaker who fell
silent either goes on (a *hold*; within that speaker it is a pause) or another speaker starts (a
*shift*; a gap). This is how Voice Activity Projection evaluations pick shift/hold events, and
what :mod:`bench/turn_taking_data.py` counts on generated and real conversations.

Speech activity comes from word times where there are words (the silences between words of one
speaker shorter than ``bridge_ms`` are articulation, not pauses) and from segments otherwise.

Array-free module: no shape suffixes needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["DECISION_MIN_MS", "Silence", "auc", "merge", "mutual_silences"]

# One chunk of the 200 ms grid: a shorter silence never leaves a whole chunk unvoiced, so a
# model stepping on the grid has no decision to make there.
DECISION_MIN_MS = 200


@dataclass(frozen=True, slots=True)
class Silence:
    """A mutual silence [start_ms, end_ms) between ``before``'s speech and ``after``'s."""

    start_ms: int
    end_ms: int
    before: str
    after: str

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    @property
    def is_shift(self) -> bool:
        return self.before != self.after


def merge(intervals: Iterable[tuple[int, int]], bridge_ms: int = 0) -> list[tuple[int, int]]:
    """Sorted union of ``[start, end)`` intervals; silences shorter than ``bridge_ms`` are
    bridged (with 0 only touching or overlapping intervals join). Empty intervals are dropped."""
    out: list[tuple[int, int]] = []
    for s, e in sorted((int(s), int(e)) for s, e in intervals if e > s):
        if out and s - out[-1][1] < max(bridge_ms, 1):
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def mutual_silences(activity: Mapping[str, Sequence[tuple[int, int]]], *,
                    min_ms: int = DECISION_MIN_MS) -> list[Silence]:
    """Every silence of at least ``min_ms`` where no speaker of ``activity`` (speaker ->
    intervals of speech) is active, with speech before and after it.

    ``before`` is the speaker whose speech ends where the silence starts, ``after`` the one whose
    speech starts where it ends. A silence where two speakers stop (or start) at the same
    millisecond has no single speaker on that side and is left out.
    """
    if isinstance(min_ms, bool) or not isinstance(min_ms, int) or min_ms < 1:
        raise ValueError(f"min_ms must be a positive integer, got {min_ms!r}")
    merged = {spk: merge(iv) for spk, iv in activity.items()}
    union = merge(iv for ivs in merged.values() for iv in ivs)
    out = []
    for (_, end), (start, _) in pairwise(union):
        if start - end < min_ms:
            continue
        before = [spk for spk, ivs in merged.items() if any(e == end for _, e in ivs)]
        after = [spk for spk, ivs in merged.items() if any(s == start for s, _ in ivs)]
        if len(before) == 1 and len(after) == 1:
            out.append(Silence(start_ms=end, end_ms=start, before=before[0], after=after[0]))
    return out


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Area under the ROC curve of a score that should be higher for ``positives``: the
    probability that a random positive scores above a random negative, ties counting half
    (the Mann-Whitney U statistic over the product of the counts). 0.5: no separation."""
    if not positives or not negatives:
        raise ValueError(f"an AUC needs positives and negatives, got {len(positives)} and {len(negatives)}")
    ranked = sorted([(float(v), 1) for v in positives] + [(float(v), 0) for v in negatives])
    # Mid-ranks (1-based) so that ties count half.
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (i + 1 + j) / 2
        rank_sum += mid * sum(label for _, label in ranked[i:j])
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
