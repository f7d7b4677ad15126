"""Voice Activity Projection's turn-taking events on a two-speaker voice-activity grid (pure numpy).

The definitions are those of Voice Activity Projection (Ekstedt and Skantze; its ``events`` module),
restated here on a boolean ``va_T2`` array: frame t, speaker 0 or 1, True where that speaker is
active. Every function takes the frame rate from :class:`VapConfig`: the duplex evaluation passes
the 50 ms T grid (``frame_hz=20``, the default; VAP's own grid is 50 Hz, so a time rounds down to
whole 50 ms frames here), a trainer passes the 200 ms chunk grid (``frame_hz=5``, a ``va_K2``
array) to the same functions. Times convert to frames rounding down, as VAP does.

Dialog states per frame: silence, only speaker 0, only speaker 1, both. A *mutual silence* is a run
of silence frames. Before the events are read, the silences inside one speaker's turn are filled:
a silence with the same single speaker on both sides counts as that speaker's activity for the
conditions below (VAP's ``fill_pauses``); the events are still found on the unfilled states.

Events (:class:`VapEvent`, frames ``[start, end)``):

- ``shift`` / ``hold``: a mutual silence between a run of only speaker a and a run of only
  speaker b; ``hold`` when a == b, ``shift`` otherwise. ``[start, end)`` is the silence. Kept when
  the silence starts at or after ``min_context_time`` (and before ``max_time`` when set), lasts at
  least ``metric_time + metric_pad_time`` (0.25 s: VAP reads a model in the 0.2 s after a 0.05 s
  pad), a alone was active (filled) for the whole ``sh_pre_cond_time`` before it, and b alone
  is active (filled) for the whole ``sh_post_cond_time`` from its end; windows that would leave
  the array fail the condition.
- ``pred_shift`` / ``pred_hold``: for each shift / hold, the ``prediction_region_time`` before its
  silence, ``[start - P, start)``, when it starts at or after ``min_context_time`` and (with
  ``sh_prediction_region_on_active``) the run of only a before the silence is at least that long.
  ``pred_hold`` regions are the negatives of shift prediction: the end of a stretch of speech
  after which the same speaker goes on.
- ``backchannel``: a run of one speaker's (filled) activity of at most ``bc_max_duration`` with
  at least ``bc_pre_cond_time`` of that speaker's silence before it and ``bc_post_cond_time``
  after it (within the array), starting at or after ``min_context_time``. VAP calls these short
  utterances; it does not require the other speaker to be talking.
- ``pred_backchannel``: the ``prediction_region_time`` before a backchannel (from
  ``min_context_time`` on).
- ``pred_backchannel_neg``: the negatives of backchannel prediction, inside runs where only one
  speaker is active (filled): each run less ``bc_negative_pad_left_time`` at its start and
  ``bc_negative_pad_right_time`` at its end (and nothing before ``min_context_time``), cut into
  consecutive regions of ``prediction_region_time``. VAP samples one such region at random; they
  are all kept here, in order, so that the events are a pure function of the input.

Speakers of an event: ``speaker_before`` had the floor, ``speaker_after`` is the one whose
activity comes (or could come) at the event's decision point. Shift/hold and their prediction
regions: the speaker before and after the silence. Backchannel events and regions:
``speaker_after`` is the short utterance's speaker (a potential backchanneller for the negatives),
``speaker_before`` the other speaker.

VAP balances holds against shifts by random sampling (``equal_hold_shift``); here every event is
kept and the scores that read them are balanced instead (:func:`balanced_accuracy`, :func:`auc`).

Shape suffixes follow :mod:`microturn.schemas.legend`: T frames of the 50 ms grid (or K chunks of
the 200 ms grid with ``frame_hz=5``); the 2 is the two speakers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

__all__ = ["KINDS", "VapConfig", "VapEvent", "auc", "backchannel_events", "balanced_accuracy", "check_va",
           "fill_pauses_T2", "find_events", "shift_hold_events"]

KINDS = ("shift", "hold", "pred_shift", "pred_hold", "backchannel", "pred_backchannel", "pred_backchannel_neg")

# Dialog states: bit 0 = speaker 0 active, bit 1 = speaker 1 active.
_SILENCE, _ONLY_0, _ONLY_1, _BOTH = 0, 1, 2, 3
_ONLY = (_ONLY_0, _ONLY_1)
# Frames per time rounds down as VAP's int(time * frame_hz) does; the epsilon keeps a product that
# lands a hair under a whole number (0.29 * 100 = 28.999999999999996) on that number.
_EPS = 1e-9


@dataclass(frozen=True, kw_only=True)
class VapConfig:
    """VAP's event settings, in seconds (its ``EventConfig`` defaults), and the grid's frame rate."""

    frame_hz: float = 20.0  # the 50 ms T grid; VAP's own default is 50 Hz; 5 for the 200 ms K grid
    min_context_time: float = 3.0
    metric_time: float = 0.2
    metric_pad_time: float = 0.05
    # VAP's default is 20 s, the length of its training windows; None: no limit, for whole items.
    max_time: float | None = None
    prediction_region_time: float = 0.5
    sh_pre_cond_time: float = 1.0
    sh_post_cond_time: float = 1.0
    sh_prediction_region_on_active: bool = True
    bc_pre_cond_time: float = 1.0
    bc_post_cond_time: float = 1.0
    bc_max_duration: float = 1.0
    bc_negative_pad_left_time: float = 1.0
    bc_negative_pad_right_time: float = 2.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sh_prediction_region_on_active":
                if not isinstance(value, bool):
                    raise TypeError(f"VapConfig.{f.name} must be True or False, got {value!r}")
                continue
            if value is None and f.name == "max_time":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"VapConfig.{f.name} must be a finite number of seconds >= 0, got {value!r}")
        if self.frame_hz <= 0:
            raise ValueError(f"VapConfig.frame_hz must be > 0 frames per second, got {self.frame_hz!r}")
        if self.frames(self.prediction_region_time) < 1:
            raise ValueError(f"VapConfig.prediction_region_time {self.prediction_region_time} s is under one frame "
                             f"at {self.frame_hz} Hz; give at least {1 / self.frame_hz} s")

    def frames(self, seconds: float) -> int:
        """Whole frames in ``seconds`` (rounded down)."""
        return int(math.floor(seconds * self.frame_hz + _EPS))

    @property
    def min_silence_time(self) -> float:
        """The shortest mutual silence that is an event: the metric's pad plus its window."""
        return self.metric_time + self.metric_pad_time


@dataclass(frozen=True, kw_only=True)
class VapEvent:
    """One event: frames ``[start, end)`` of the grid and its speakers (module notes per kind)."""

    kind: str
    start: int
    end: int
    speaker_before: int
    speaker_after: int

    def swapped(self) -> VapEvent:
        """The same event with the two speakers' indices exchanged."""
        return VapEvent(kind=self.kind, start=self.start, end=self.end,
                        speaker_before=1 - self.speaker_before, speaker_after=1 - self.speaker_after)


def check_va(va_T2) -> np.ndarray:
    """``va_T2`` as a boolean ``[T, 2]`` array; ``ValueError`` for another shape or non-0/1 values."""
    array = np.asarray(va_T2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"voice activity must be [frames, 2 speakers], got shape {array.shape}")
    if array.dtype != np.bool_:
        if not np.issubdtype(array.dtype, np.number) or not np.isin(array, (0, 1)).all():
            raise ValueError("voice activity must be boolean (or 0/1) per frame and speaker")
        array = array.astype(bool)
    return array


def _runs(x_T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(starts, lengths, values)`` of the runs of equal values in ``x_T``."""
    if x_T.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, x_T[:0]
    change = np.flatnonzero(x_T[1:] != x_T[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    lengths = np.diff(np.concatenate([starts, [x_T.size]])).astype(np.int64)
    return starts, lengths, x_T[starts]


def _states_T(va_T2: np.ndarray) -> np.ndarray:
    return va_T2[:, 0].astype(np.int8) + 2 * va_T2[:, 1].astype(np.int8)


def fill_pauses_T2(va_T2) -> np.ndarray:
    """``va_T2`` with each mutual silence between two runs of the same single speaker marked as
    that speaker's activity (a pause inside a turn)."""
    va_T2 = check_va(va_T2)
    filled_T2 = va_T2.copy()
    starts, lengths, states = _runs(_states_T(va_T2))
    for i in range(1, len(states) - 1):
        if states[i] == _SILENCE and states[i - 1] == states[i + 1] and states[i - 1] in _ONLY:
            filled_T2[starts[i]:starts[i] + lengths[i], 0 if states[i - 1] == _ONLY_0 else 1] = True
    return filled_T2


def _alone(filled_T2: np.ndarray, speaker: int, a: int, b: int) -> bool:
    """Whether ``speaker`` alone is active over all of frames ``[a, b)``, which lie in the array."""
    if a < 0 or b > filled_T2.shape[0]:
        return False
    return bool(filled_T2[a:b, speaker].all() and not filled_T2[a:b, 1 - speaker].any())


def _max_frame(config: VapConfig) -> float:
    return math.inf if config.max_time is None else config.frames(config.max_time)


def _turn_events(va_T2: np.ndarray, config: VapConfig) -> list[VapEvent]:
    """Shifts, holds and their prediction regions (module notes)."""
    filled_T2 = fill_pauses_T2(va_T2)
    starts, lengths, states = _runs(_states_T(va_T2))
    pre, post = config.frames(config.sh_pre_cond_time), config.frames(config.sh_post_cond_time)
    region = config.frames(config.prediction_region_time)
    min_context, min_silence = config.frames(config.min_context_time), config.frames(config.min_silence_time)
    max_frame = _max_frame(config)
    events: list[VapEvent] = []
    for i in range(1, len(states) - 1):
        if states[i] != _SILENCE or states[i - 1] not in _ONLY or states[i + 1] not in _ONLY:
            continue
        before, after = int(states[i - 1]) - 1, int(states[i + 1]) - 1  # _ONLY_0 -> 0, _ONLY_1 -> 1
        silence, onset = int(starts[i]), int(starts[i + 1])
        if silence < min_context or silence >= max_frame or lengths[i] < min_silence:
            continue
        if not _alone(filled_T2, before, silence - pre, silence) or not _alone(filled_T2, after, onset, onset + post):
            continue
        kind = "hold" if before == after else "shift"
        events.append(VapEvent(kind=kind, start=silence, end=onset, speaker_before=before, speaker_after=after))
        if config.sh_prediction_region_on_active and lengths[i - 1] < region:
            continue
        if silence - region >= min_context:
            events.append(VapEvent(kind=f"pred_{kind}", start=silence - region, end=silence,
                                   speaker_before=before, speaker_after=after))
    return events


def shift_hold_events(va_T2, config: VapConfig | None = None) -> list[VapEvent]:
    """The ``shift`` and ``hold`` events and their ``pred_shift`` / ``pred_hold`` regions of a
    two-speaker voice activity (module notes), in order of time."""
    config = config or VapConfig()
    return sorted(_turn_events(check_va(va_T2), config), key=_order)


def _backchannels(va_T2: np.ndarray, config: VapConfig) -> list[VapEvent]:
    filled_T2 = fill_pauses_T2(va_T2)
    region = config.frames(config.prediction_region_time)
    min_context, max_frame = config.frames(config.min_context_time), _max_frame(config)
    longest = config.frames(config.bc_max_duration)
    pre, post = config.frames(config.bc_pre_cond_time), config.frames(config.bc_post_cond_time)
    events: list[VapEvent] = []
    for speaker in (0, 1):
        starts, lengths, active = _runs(filled_T2[:, speaker])
        for i in range(1, len(active) - 1):
            if not active[i] or active[i - 1] or active[i + 1]:
                continue
            start, end = int(starts[i]), int(starts[i + 1])
            if start < min_context or start >= max_frame or lengths[i] > longest:
                continue
            if lengths[i - 1] < pre or lengths[i + 1] < post:
                continue
            events.append(VapEvent(kind="backchannel", start=start, end=end,
                                   speaker_before=1 - speaker, speaker_after=speaker))
            if start - region >= min_context:
                events.append(VapEvent(kind="pred_backchannel", start=start - region, end=start,
                                       speaker_before=1 - speaker, speaker_after=speaker))
    # Negatives: stretches where one speaker alone talks (pauses filled), away from their edges.
    left, right = config.frames(config.bc_negative_pad_left_time), config.frames(config.bc_negative_pad_right_time)
    starts, lengths, states = _runs(_states_T(filled_T2))
    for start, length, state in zip(starts, lengths, states, strict=True):
        if state not in _ONLY or length < left + right:
            continue
        speaker = int(state) - 1
        a = max(int(start) + left, min_context)
        b = min(int(start + length) - right, max_frame)
        while a + region <= b:
            events.append(VapEvent(kind="pred_backchannel_neg", start=a, end=a + region,
                                   speaker_before=speaker, speaker_after=1 - speaker))
            a += region
    return events


def backchannel_events(va_T2, config: VapConfig | None = None) -> list[VapEvent]:
    """The ``backchannel`` events, their ``pred_backchannel`` regions and the
    ``pred_backchannel_neg`` regions of a two-speaker voice activity (module notes), in order."""
    config = config or VapConfig()
    return sorted(_backchannels(check_va(va_T2), config), key=_order)


def _order(event: VapEvent) -> tuple[int, int, int, int]:
    return event.start, KINDS.index(event.kind), event.end, event.speaker_after


def find_events(va_T2, config: VapConfig | None = None) -> list[VapEvent]:
    """Every event of every kind (:data:`KINDS`), ordered by start frame, then kind."""
    config = config or VapConfig()
    va_T2 = check_va(va_T2)
    return sorted(_turn_events(va_T2, config) + _backchannels(va_T2, config), key=_order)


def _labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(labels, dtype=bool).reshape(-1)


def balanced_accuracy(labels: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray) -> float | None:
    """The mean of the recall of the positives and the recall of the negatives; None when either
    class is absent (a one-class set says nothing about telling them apart)."""
    y, p = _labels(labels), _labels(predicted)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} predictions")
    if y.all() or not y.any():
        return None
    return float((p[y].mean() + (~p[~y]).mean()) / 2)


def auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative,
    ties counting one half (Mann-Whitney U / (n_pos n_neg)); None when either class is absent."""
    y = _labels(labels)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if y.all() or not y.any():
        return None
    pos, neg = s[y], s[~y]
    # Mid-ranks over both classes count ties as one half.
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    values = np.concatenate([pos, neg])[order]
    ranks = np.empty(values.size)
    starts, lengths, _ = _runs(values)
    for start, length in zip(starts, lengths, strict=True):
        ranks[start:start + length] = start + (length + 1) / 2
    ranks_by_item = np.empty(values.size)
    ranks_by_item[order] = ranks
    u = ranks_by_item[:pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))
