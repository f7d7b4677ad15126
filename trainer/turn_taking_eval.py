"""Shift/hold at mutual silences after user speech, scored from a model and from a user-only rule.

Events (:func:`user_events`): VAP's ``shift`` and ``hold`` (:mod:`microturn.schemas.vap`) on the
200 ms chunk grid (:data:`CHUNK_VAP`: VAP's default conditions at 5 Hz, so 3 s of context = 15
chunks before the silence, 1 s = 5 chunks of one speaker alone on each side of it, a silence of
at least one chunk), from the VOICED bits of a sample's two streams, user as speaker 0 and model
as speaker 1, keeping those where the user spoke before the silence: a shift when the model
speaks next, a hold when the user goes on. Every condition is read inside the sample's window,
so an event whose context or aftermath lies in another window is not counted there.

The model's decision (:func:`model_score`): the model's probability that a word of its own starts
within the first :data:`DECISION_CHUNKS` chunks of the silence (fewer when the silence is
shorter): ``1 - prod(1 - p_k)`` over those chunks, where ``p_k`` is the text head's probability,
at chunk k's MODEL_MARK position, of a token other than end-of-text (a word of the model starts in
chunk k). Why the product: the text head says *in which chunk* a word starts, and a model sure
that it answers, but unsure whether 200 or 400 ms into the silence, splits its probability
between the two chunks; their highest would then stay under one half for a confident answer (on
300 held-out generated dialogues, a 400-step tiny-cpu run: AUC 0.997 but balanced accuracy 0.53
at one half with the highest, 0.685 with this).
Why this position: the 4 MODEL_AUDIO positions of a chunk come after
its true model text and see its own frames, which give the answer away (AUC 1.0 on onsets);
MODEL_MARK comes after the chunk's user audio and before anything of the model's own chunk.
Why the text head: at MODEL_MARK it is trained on every chunk (the target is the chunk's first
model token, or end-of-text when none starts in it), whereas the dMel head is trained there
only on chunks where no model word starts, so it never learns what an onset chunk begins with.
Why the silence's chunks only: a chunk's MODEL_MARK sees that chunk's user audio, so from the
chunk where the silence ends a hold is given away by the user's voice coming back.

The baseline (:func:`endpointer_shift`): "shift if the user is still silent in the second chunk
of the silence", a 400 ms endpointer that sees only the user stream (for a one-chunk silence the
second chunk is the first after it). It has no score of its own, so only its balanced accuracy
is reported.

Scores (:func:`score`): balanced accuracy at the fixed threshold :data:`THRESHOLD` (chosen
before seeing any data: "more likely than not a word starts"), threshold-free AUC, and 95%
percentile bootstrap intervals over events (:func:`bootstrap_interval`, seeded). Shift is the
positive class.

Shape suffixes follow :mod:`microturn.schemas.legend`: K chunks of a sample's window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from microturn.schemas.sample import CHUNK_MS, Label
from microturn.schemas.vap import VapConfig, VapEvent, auc, balanced_accuracy, shift_hold_events

__all__ = ["BOOTSTRAP_RESAMPLES", "CHUNK_VAP", "DECISION_CHUNKS", "THRESHOLD", "ScoredEvent", "bootstrap_interval",
           "calibrate",
           "collect_events", "endpointer_shift", "model_score", "render_lines", "score", "user_events",
           "voiced_K"]

CHUNK_VAP = VapConfig(frame_hz=1000 / CHUNK_MS)
# Two chunks, 400 ms: the horizon of the endpointer baseline, so that both decide on the user's
# audio up to the same moment.
DECISION_CHUNKS = 2
THRESHOLD = 0.5
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def voiced_K(labels_K) -> np.ndarray:
    """bool [K]: the VOICED bit of each chunk's :class:`~microturn.schemas.sample.Label` bits."""
    return (np.asarray(labels_K).astype(np.int64) & int(Label.VOICED)) != 0


def user_events(user_voiced_K, model_voiced_K, config: VapConfig = CHUNK_VAP) -> list[VapEvent]:
    """The ``shift`` / ``hold`` events of one window that follow the user's speech, in order
    (speaker 0 is the user, 1 the model; module notes)."""
    user, model = np.asarray(user_voiced_K, dtype=bool), np.asarray(model_voiced_K, dtype=bool)
    if user.ndim != 1 or user.shape != model.shape:
        raise ValueError(f"user and model VOICED must be two [K] arrays of one length, got {user.shape} "
                         f"and {model.shape}")
    return [e for e in shift_hold_events(np.stack([user, model], axis=1), config)
            if e.kind in ("shift", "hold") and e.speaker_before == 0]


def model_score(event: VapEvent, speak_K, chunks: int = DECISION_CHUNKS) -> float | None:
    """``1 - prod(1 - p)`` of ``speak_K`` (P(a model word starts) at each chunk's MODEL_MARK; NaN
    where the model was not read) over the first ``chunks`` chunks of the event's silence: the
    probability that a word of the model starts in one of them. None when any of them is NaN."""
    values = np.asarray(speak_K, dtype=np.float64)[event.start:min(event.start + chunks, event.end)]
    if values.size == 0 or np.isnan(values).any():
        return None
    return float(1.0 - np.prod(1.0 - values))


def endpointer_shift(event: VapEvent, user_voiced_K) -> bool:
    """The user-only rule: shift when the user is silent in the second chunk of the silence."""
    user = np.asarray(user_voiced_K, dtype=bool)
    # VAP's post-condition keeps 5 chunks after the silence inside the window, so start + 1 exists.
    assert event.start + 1 < user.size, (event, user.size)
    return not bool(user[event.start + 1])


@dataclass(frozen=True, kw_only=True)
class ScoredEvent:
    """One event with both decisions: ``model`` is :func:`model_score`, ``endpointer`` is
    :func:`endpointer_shift`."""

    shift: bool
    model: float
    endpointer: bool


Window = tuple[Mapping, np.ndarray, np.ndarray, np.ndarray]


def collect_events(windows: Iterable[Window]) -> tuple[list[ScoredEvent], dict]:
    """The scored events of ``windows`` and counts of what was left out.

    Each window is ``(meta, user_labels_K, model_labels_K, speak_K)``: a sample's ``json`` meta,
    its two label arrays, and P(a model word starts) per chunk (NaN where unread). An event is
    counted once per (conversation, model speaker, chunk of the conversation where its silence
    starts), so windows that overlap do not count one event twice (``duplicates``); an event
    whose decision chunks were not all read is left out (``unread``).
    """
    seen: set[tuple[str, str, int]] = set()
    events: list[ScoredEvent] = []
    counts = {"duplicates": 0, "unread": 0}
    for meta, user_labels_K, model_labels_K, speak_K in windows:
        user_K, model_K = voiced_K(user_labels_K), voiced_K(model_labels_K)
        first_chunk = int(meta["offset_ms"]) // CHUNK_MS
        for event in user_events(user_K, model_K):
            where = (str(meta["conversation_id"]), str(meta["model_speaker"]), first_chunk + event.start)
            if where in seen:
                counts["duplicates"] += 1
                continue
            seen.add(where)
            value = model_score(event, speak_K)
            if value is None:
                counts["unread"] += 1
                continue
            events.append(ScoredEvent(shift=event.kind == "shift", model=value,
                                      endpointer=endpointer_shift(event, user_K)))
    return events, counts


def bootstrap_interval(labels, values, metric: Callable[[np.ndarray, np.ndarray], float | None], *,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = 0.95) -> tuple[float, float] | None:
    """The ``level`` percentile interval of ``metric(labels, values)`` over ``resamples`` draws of
    the events with replacement (``numpy.random.default_rng(seed)``: the same inputs give the
    same interval). Draws holding one class only are skipped (the metric is undefined there);
    None when every draw was."""
    y, v = np.asarray(labels, dtype=bool), np.asarray(values)
    if y.shape != v.shape or y.ndim != 1:
        raise ValueError(f"labels and values must be two 1-d arrays of one length, got {y.shape} and {v.shape}")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be >= 1 and level in (0, 1), got {resamples} and {level}")
    if y.size == 0:
        return None
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(resamples):
        pick = rng.integers(0, y.size, size=y.size)
        value = metric(y[pick], v[pick])
        if value is not None:
            found.append(value)
    if not found:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(found, [tail, 100 - tail])
    return float(low), float(high)


def _metric(y, v, fn, *, resamples: int, seed: int) -> dict:
    return {"value": fn(y, v), "ci95": bootstrap_interval(y, v, fn, resamples=resamples, seed=seed)}


def score(events: list[ScoredEvent], *, threshold: float = THRESHOLD, resamples: int = BOOTSTRAP_RESAMPLES,
          seed: int = BOOTSTRAP_SEED) -> dict:
    """JSON-ready scores of ``events`` (shift positive): ``{"n_shift", "n_hold", "threshold",
    "decision_chunks", "resamples", "model": {"balanced_accuracy", "auc"}, "endpointer":
    {"balanced_accuracy"}}``, each metric ``{"value", "ci95"}`` (None where a class is absent)."""
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite probability, got {threshold!r}")
    y = np.array([e.shift for e in events], dtype=bool)
    model = np.array([e.model for e in events], dtype=np.float64)
    rule = np.array([e.endpointer for e in events], dtype=bool)

    def ba_at(labels, values):
        return balanced_accuracy(labels, values >= threshold)

    kw = {"resamples": resamples, "seed": seed}
    return {"n_shift": int(y.sum()), "n_hold": int((~y).sum()), "threshold": threshold,
            "decision_chunks": DECISION_CHUNKS, "resamples": resamples,
            "model": {"balanced_accuracy": _metric(y, model, ba_at, **kw), "auc": _metric(y, model, auc, **kw)},
            "endpointer": {"balanced_accuracy": _metric(y, rule, balanced_accuracy, **kw)}}


def calibrate(events: list[ScoredEvent]) -> tuple[float, dict]:
    """The threshold on the model's P that maximises balanced accuracy over ``events`` (the
    midpoint between two neighbouring readings, the lower on a tie), and ``{"events", "n_shift",
    "n_hold", "balanced_accuracy"}`` at it. ``ValueError`` unless both classes are present."""
    y = np.array([e.shift for e in events], dtype=bool)
    values = np.array([e.model for e in events], dtype=np.float64)
    if y.all() or not y.any():
        raise ValueError(f"the calibration shards give {int(y.sum())} shift(s) and {int((~y).sum())} hold(s): "
                         "a threshold needs both")
    levels = np.unique(values)
    candidates = np.concatenate([[levels[0]], (levels[:-1] + levels[1:]) / 2, [np.nextafter(levels[-1], 2.0)]])
    # Both classes are present, so balanced accuracy is defined at every candidate.
    scores = [float(balanced_accuracy(y, values >= c) or 0.0) for c in candidates]
    best = int(np.argmax(scores))
    return float(candidates[best]), {"events": int(y.size), "n_shift": int(y.sum()), "n_hold": int((~y).sum()),
                                     "balanced_accuracy": scores[best]}


def _figure(metric: Mapping) -> str:
    if metric["value"] is None:
        return "n/a (one class only)"
    ci = metric["ci95"]
    return f"{metric['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None else "")


def render_lines(result: Mapping) -> list[str]:
    """The report lines of :func:`score`'s result (with ``collect_events``' counts merged in)."""
    left = [f"{result[k]} {what}" for k, what in (("unread", "with unread chunks"), ("duplicates", "seen twice"))
            if result.get(k)]
    head = (f"  shift/hold at mutual silences after user speech (200 ms chunks): {result['n_shift']} shifts, "
            f"{result['n_hold']} holds" + (f"; left out {', '.join(left)}" if left else ""))
    if not result["n_shift"] + result["n_hold"]:
        return [head + " (none has VAP's 3 s of context and 1 s of one speaker on each side inside a window)"]
    n = result["decision_chunks"]
    cal = result.get("calibration")
    chosen = (f"; threshold chosen on {cal['events']} calibration events ({cal['n_shift']} shifts, "
              f"{cal['n_hold']} holds; BA there {cal['balanced_accuracy']:.3f})" if cal else " (fixed)")
    return [
        head,
        f"    model       balanced accuracy {_figure(result['model']['balanced_accuracy'])} at P >= threshold   "
        f"AUC {_figure(result['model']['auc'])}",
        f"                P: P(a model word starts in the silence's first {n} chunks), "
        "from the text head at MODEL_MARK",
        f"                threshold {result['threshold']:.4g}{chosen}",
        f"    endpointer  balanced accuracy {_figure(result['endpointer']['balanced_accuracy'])}   "
        "(shift if the user is silent in the silence's 2nd chunk)",
        f"    [intervals: 95% bootstrap over events, {result['resamples']} draws]",
    ]
