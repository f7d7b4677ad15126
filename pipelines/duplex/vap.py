"""Voice Activity Projection scoring of duplex items: does the model speak next when it should?

The true conversation of an item is its user stream (``input.wav``) and the real or scripted
second speaker (``reference.wav``): the events of :mod:`microturn.schemas.vap` are found on their
voice activity, speaker 0 the user and speaker 1 the reference, whose place the model takes.
Voice activity is silero's speech segments (:func:`.audio.speech_segments`, Full-Duplex-Bench's
settings) on the 50 ms T grid: frame t is active when its centre, ``(t + 0.5) * 50 ms``, lies in a
segment. VAP's own grid is 20 ms; on 50 ms every time of its definitions rounds down to whole
frames (a 0.25 s minimum silence is 5 frames). An item without ``reference.wav`` (Full-Duplex-Bench's
own items) has no true second speaker, gives no event and is counted as skipped.

The model's prediction is read from its own output, ``output.wav`` (or channel 1 of
``conversation.wav``), through the same detector: the *score* of an event is the share of the
frames of ``[start, start + horizon_s)`` (1 s: VAP's post-condition, within which the next speaker
of a true event is talking) in which the model's output is voiced, where ``start`` is the
silence's first frame for shift/hold and the region's first frame for the prediction regions.
The model *predicts* that it speaks next when the score is above 0. Read per category:

- ``shift_hold``: shifts from the user to the reference (positives: the model should take the
  turn) against the user's holds (negatives: the model should stay quiet while the user pauses and
  goes on). Silences after the reference's own speech are not scored (``n_after_reference``): the
  model did not say what the reference said before them, so the turn was not the model's to keep.
- ``shift_prediction``: VAP's regions of 0.5 s before those shifts (positives) and holds
  (negatives): a model that foresees the user's turn end starts at or just after it, within the
  window that opens 0.5 s before the silence.
- ``backchannel_prediction``: 0.5 s before each short utterance of the reference while the user
  talks (positives) against VAP's negative regions inside the user's long stretches of speech.

Each category reports its counts, the share of positives and of negatives predicted right,
balanced accuracy (their mean) and AUC of the score (ties count one half); a figure that needs a
class the items lack is None.

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz, T frames of the
50 ms grid (the 2 is the two speakers).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from microturn.pipelines.duplex.audio import SAMPLE_RATE, Segment, read_mono_N, speech_segments
from microturn.pipelines.duplex.layout import MAX_LENGTH_GAP_N, Item, item_streams
from microturn.schemas.vap import VapConfig, VapEvent, auc, balanced_accuracy, find_events

__all__ = ["HORIZON_S", "REFERENCE", "Scored", "item_events", "score_vap", "voice_activity_T"]

REFERENCE = "reference.wav"
# VAP's shift/hold post-condition (1 s): after a true shift the next speaker talks for at least this
# long, so a model that answers at a usual 0.2-0.9 s latency starts inside the window.
HORIZON_S = 1.0
USER, OTHER = 0, 1
# Category -> (positive kind, negative kind).
_CATEGORIES = {"shift_hold": ("shift", "hold"), "shift_prediction": ("pred_shift", "pred_hold"),
               "backchannel_prediction": ("pred_backchannel", "pred_backchannel_neg")}
_NAMES = {"shift_hold": ("shift", "hold"), "shift_prediction": ("shift", "hold"),
          "backchannel_prediction": ("backchannel", "negative")}


@dataclass(frozen=True, kw_only=True)
class Scored:
    """One event of one item with the model's score (share of the window voiced)."""

    item: str
    event: VapEvent
    score: float


def voice_activity_T(segments: Sequence[Segment], n_frames: int, frame_hz: float) -> np.ndarray:
    """Boolean ``[n_frames]``: frame t is active when its centre lies in one of ``segments`` (seconds)."""
    centres_T = (np.arange(n_frames) + 0.5) / frame_hz
    active_T = np.zeros(n_frames, bool)
    for start, end in segments:
        active_T |= (centres_T >= start) & (centres_T < end)
    return active_T


def _as_item(item: Item | str | os.PathLike) -> Item:
    if isinstance(item, Item):
        return item
    path = os.fspath(item)
    return Item(path=os.path.abspath(path), rel=path, task="")


def item_events(item: Item | str | os.PathLike, config: VapConfig) -> list[Scored] | None:
    """The events of one item with the model's score each; None when it holds no ``reference.wav``."""
    item = _as_item(item)
    reference = os.path.join(item.path, REFERENCE)
    if not os.path.exists(reference):
        return None
    user_N, model_N = item_streams(item)
    other_N = read_mono_N(reference)
    if abs(other_N.size - user_N.size) > MAX_LENGTH_GAP_N:
        raise ValueError(f"item {item.path}: {REFERENCE} lasts {other_N.size / SAMPLE_RATE:.3f} s and the user's "
                         f"stream {user_N.size / SAMPLE_RATE:.3f} s; they must be equally long "
                         "(within one 200 ms chunk)")
    n_frames = int(min(user_N.size, other_N.size) * config.frame_hz // SAMPLE_RATE)
    va_T2 = np.stack([voice_activity_T(speech_segments(user_N), n_frames, config.frame_hz),
                      voice_activity_T(speech_segments(other_N), n_frames, config.frame_hz)], axis=1)
    model_T = voice_activity_T(speech_segments(model_N), n_frames, config.frame_hz)
    horizon = config.frames(HORIZON_S)
    scored = []
    for event in find_events(va_T2, config):
        window_T = model_T[event.start:event.start + horizon]
        scored.append(Scored(item=item.rel, event=event, score=float(window_T.mean())))
    return scored


def _wanted(category: str, event: VapEvent) -> bool:
    """Whether an event is the model's to predict (module notes)."""
    if category == "backchannel_prediction":
        return event.speaker_after == OTHER and event.speaker_before == USER
    return event.speaker_before == USER


def _section(category: str, scored: Sequence[Scored]) -> dict:
    positive, negative = _CATEGORIES[category]
    pos_name, neg_name = _NAMES[category]
    rows = [s for s in scored if s.event.kind in (positive, negative) and _wanted(category, s.event)]
    labels = np.array([s.event.kind == positive for s in rows], bool)
    scores = np.array([s.score for s in rows], np.float64)
    predicted = scores > 0
    section = {f"n_{pos_name}": int(labels.sum()), f"n_{neg_name}": int((~labels).sum()),
               f"{pos_name}_accuracy": float(predicted[labels].mean()) if labels.any() else None,
               f"{neg_name}_accuracy": float((~predicted[~labels]).mean()) if (~labels).any() else None,
               "balanced_accuracy": balanced_accuracy(labels, predicted), "auc": auc(labels, scores)}
    if category != "backchannel_prediction":
        section["n_after_reference"] = sum(1 for s in scored if s.event.kind in (positive, negative)
                                           and s.event.speaker_before == OTHER)
    return section


def score_vap(items: Iterable[Item | str | os.PathLike], *, config: VapConfig | None = None) -> dict:
    """The ``"vap"`` report section for ``items`` (:class:`~.layout.Item` or item folders): per
    category its counts, accuracies, balanced accuracy and AUC (module notes), plus how many items
    were scored and how many were skipped for want of ``reference.wav``."""
    config = config or VapConfig()
    scored: list[Scored] = []
    n_items = skipped = 0
    for item in items:
        n_items += 1
        events = item_events(item, config)
        if events is None:
            skipped += 1
        else:
            scored.extend(events)
    report: dict = {"items": n_items, "scored_items": n_items - skipped, "skipped_without_reference": skipped,
                    "frame_hz": config.frame_hz, "horizon_s": HORIZON_S}
    for category in _CATEGORIES:
        report[category] = _section(category, scored)
    return report
