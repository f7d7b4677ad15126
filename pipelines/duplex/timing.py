"""Full-Duplex-Bench v1.5's timing: how long the model talks over the user, how soon it answers.

Both streams' speech (silero at its defaults) is merged across short gaps: the user's across gaps
up to 0.6 s (a pause inside a turn), the model's up to 0.5 s (splits of one response), as the
reference's ``get_timing.py`` does.

- Overlaps: the intersections of a user segment and a model segment, walked with two pointers
  (the one ending first advances); of several ending at the same millisecond the shortest is
  kept. Its length is the *stop latency*: how long the model kept talking over the user.
- Response gaps: for each user segment the first model segment starting strictly after its end;
  a model start claimed by several user ends keeps the latest one. The gap's length is the
  *response latency*.

Interval ends are rounded to the millisecond as the reference writes them, and lengths are
taken from the rounded ends.
"""

from __future__ import annotations

from collections.abc import Sequence

from microturn.pipelines.duplex.audio import Segment, merge_segments

__all__ = ["MODEL_MERGE_GAP_S", "USER_MERGE_GAP_S", "merged_model", "merged_user", "overlaps", "response_gaps"]

USER_MERGE_GAP_S = 0.6
MODEL_MERGE_GAP_S = 0.5


def merged_user(segments: Sequence[Segment]) -> list[Segment]:
    """The user's VAD segments merged across gaps up to 0.6 s."""
    return merge_segments(list(segments), USER_MERGE_GAP_S)


def merged_model(segments: Sequence[Segment]) -> list[Segment]:
    """The model's VAD segments merged across gaps up to 0.5 s."""
    return merge_segments(list(segments), MODEL_MERGE_GAP_S)


def _ms(t: float) -> int:
    return int(round(t * 1000))


def overlaps(user: Sequence[Segment], model: Sequence[Segment]) -> list[Segment]:
    """Overlap intervals (module notes), sorted by end, rounded to ms."""
    shortest: dict[int, Segment] = {}
    i = j = 0
    while i < len(user) and j < len(model):
        start = max(user[i][0], model[j][0])
        end = min(user[i][1], model[j][1])
        if end > start:
            key = _ms(end)
            if key not in shortest or end - start < shortest[key][1] - shortest[key][0]:
                shortest[key] = (start, end)
        if user[i][1] < model[j][1]:
            i += 1
        else:
            j += 1
    return [(round(s, 3), round(e, 3)) for s, e in sorted(shortest.values(), key=lambda se: se[1])]


def response_gaps(user: Sequence[Segment], model: Sequence[Segment]) -> list[Segment]:
    """``(user end, model start)`` response gaps (module notes), sorted by model start, rounded to ms."""
    latest: dict[int, Segment] = {}
    for _, user_end in user:
        start = next((s for s, _ in model if s > user_end), None)
        if start is None:
            continue
        key = _ms(start)
        gap = (round(user_end, 3), round(start, 3))
        if key not in latest or gap[0] > latest[key][0]:
            latest[key] = gap
    return sorted(latest.values(), key=lambda g: g[1])
