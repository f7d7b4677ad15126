"""Finding Full-Duplex-Bench items under a folder and reading their annotations and streams.

An item is a folder holding the user's stream ``input.wav`` and the model's ``output.wav`` (both
mono), or one stereo ``conversation.wav`` (channel 0 the user, channel 1 the model: what
``microturn session`` writes). Its task is named by the annotation file it holds:

==================  ====================  =====================================================
file                task                  read
==================  ====================  =====================================================
turn_taking.json    smooth_turn_taking    ``[0]["timestamp"][0]``: the user's turn end (s)
pause.json          pause_handling        ``[{"timestamp": [start, end]}, ...]``, checked only
interrupt.json      user_interruption     ``[0]["timestamp"]``: the interrupt's start and end (s)
backchannel.json    backchannel           ``{"window_s": 0.2, "distribution": [...], ...}``
visual_cue.json     visual_cue            microturn's behaviour tasks (:mod:`.layout_behaviours`
repetition.json     repetition            reads them, :mod:`.items_behaviours` writes them):
background.json     background_result     the checked figures are :attr:`Item.details`
simultaneous.json   simultaneous
==================  ====================  =====================================================

Full-Duplex-Bench's own backchannel items hold no annotation; ``task="backchannel"`` with a
reference file ``{item folder name: distribution}`` (its ``icc_gt_distribution.json``) scores them.
When ``task`` is given, items without an annotation file are taken as that task and items of any
other task are left out. Every malformed annotation is a ``ValueError`` naming the file and what is
wrong; so is an item without the model's stream, two annotation files in one folder, and a user
and model stream whose lengths differ by more than one 200 ms chunk (3,200 samples: a session
writes whole chunks, so its output may end up to one chunk off the input's length).

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz, C channels.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from microturn.pipelines.duplex.layout_behaviours import FILES as BEHAVIOUR_FILES
from microturn.pipelines.duplex.layout_behaviours import read_annotation
from microturn.schemas.sample import SAMPLE_RATE

__all__ = ["ANNOTATIONS", "TASKS", "WINDOW_S", "Item", "distribution", "find_items", "item_streams",
           "read_reference_distributions"]

ANNOTATIONS = {"turn_taking.json": "smooth_turn_taking", "pause.json": "pause_handling",
               "interrupt.json": "user_interruption", "backchannel.json": "backchannel", **BEHAVIOUR_FILES}
TASKS = tuple(ANNOTATIONS.values())
# Full-Duplex-Bench's backchannel window (eval_backchannel.py's window_size).
WINDOW_S = 0.2
# One 200 ms chunk at 16 kHz: the most the user's and the model's stream may differ in length.
MAX_LENGTH_GAP_N = 3_200


@dataclass(frozen=True, kw_only=True)
class Item:
    """One item folder: where it is, its task and what its annotation says (seconds)."""

    path: str
    rel: str
    task: str
    # smooth_turn_taking: the user's turn end; user_interruption: the interrupt's end.
    event_s: float | None = None
    # user_interruption: the interrupt's start.
    event_start_s: float | None = None
    # backchannel: the reference listener's distribution over 0.2 s windows (None: unknown).
    distribution: tuple[float, ...] | None = None
    pauses: tuple[tuple[float, float], ...] = field(default=())
    # The behaviour tasks (visual_cue, repetition, background_result, simultaneous): their
    # annotation's checked figures (:func:`.layout_behaviours.read_annotation`); None otherwise.
    details: dict | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from None


def _seconds(value, path: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {what} must be a finite number of seconds, got {value!r}")
    return float(value)


def _timestamp(data, path: str, shape: str) -> list:
    """``data[0]["timestamp"]`` of a list-of-events annotation, checked to be a pair."""
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise ValueError(f"{path}: expected a non-empty list of events like {shape}, got {type(data).__name__}")
    stamp = data[0].get("timestamp")
    if not isinstance(stamp, list) or len(stamp) != 2:
        raise ValueError(f"{path}: event 0 needs \"timestamp\": [start_s, end_s], got {stamp!r}")
    return stamp


def distribution(values, path: str) -> tuple[float, ...]:
    """A reference backchannel distribution, checked: at least two finite non-negative numbers, not
    all 0 (the interpolation onto the prediction's windows needs two points, normalising a sum)."""
    if not isinstance(values, list) or len(values) < 2:
        raise ValueError(f"{path}: a backchannel distribution is a list of at least 2 numbers, got {values!r:.80}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{path}: distribution[{i}] must be a finite number >= 0, got {v!r}")
        out.append(float(v))
    if not sum(out) > 0:
        raise ValueError(f"{path}: a backchannel distribution needs some weight; all its values are 0")
    return tuple(out)


def _annotated(path: str, rel: str, task: str, annotation: str | None) -> Item:
    """The item at ``path`` with its annotation file ``annotation`` (None: none) parsed."""
    if annotation is None:
        return Item(path=path, rel=rel, task=task)
    file = os.path.join(path, annotation)
    data = _read_json(file)
    if task in BEHAVIOUR_FILES.values():
        return Item(path=path, rel=rel, task=task, details=read_annotation(task, data, file))
    if task == "smooth_turn_taking":
        stamp = _timestamp(data, file, '[{"timestamp": [turn_end_s, t1]}]')
        return Item(path=path, rel=rel, task=task, event_s=_seconds(stamp[0], file, "timestamp[0]"))
    if task == "user_interruption":
        stamp = _timestamp(data, file, '[{"timestamp": [interrupt_start_s, interrupt_end_s]}]')
        return Item(path=path, rel=rel, task=task, event_start_s=_seconds(stamp[0], file, "timestamp[0]"),
                    event_s=_seconds(stamp[1], file, "timestamp[1]"))
    if task == "pause_handling":
        if not isinstance(data, list):
            raise ValueError(f"{file}: expected a list of {{\"timestamp\": [pause_start_s, pause_end_s]}}")
        pauses = []
        for i, event in enumerate(data):
            stamp = event.get("timestamp") if isinstance(event, dict) else None
            if not isinstance(stamp, list) or len(stamp) != 2:
                raise ValueError(f"{file}: event {i} needs \"timestamp\": [pause_start_s, pause_end_s]")
            pauses.append((_seconds(stamp[0], file, f"event {i} start"), _seconds(stamp[1], file, f"event {i} end")))
        return Item(path=path, rel=rel, task=task, pauses=tuple(pauses))
    assert task == "backchannel", task
    if not isinstance(data, dict) or "distribution" not in data:
        raise ValueError(f"{file}: expected {{\"window_s\": 0.2, \"distribution\": [...], \"backchannels\": [...]}}")
    window = data.get("window_s", WINDOW_S)
    if window != WINDOW_S:
        raise ValueError(f"{file}: window_s is {window!r}; Full-Duplex-Bench's distributions are over "
                         f"{WINDOW_S} s windows")
    return Item(path=path, rel=rel, task=task, distribution=distribution(data["distribution"], file))


def find_items(root: str, *, task: str | None = None) -> list[Item]:
    """Every item under ``root`` (searched recursively), sorted by path under ``root``; the module
    notes say what an item is and which errors are raised."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not os.path.isdir(root):
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise ValueError(f"{root} {what}; give a folder of items in Full-Duplex-Bench's layout")
    items = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        names = set(files)
        if not names & {"input.wav", "output.wav", "conversation.wav"}:
            continue
        if "conversation.wav" not in names and not {"input.wav", "output.wav"} <= names:
            missing = "output.wav" if "input.wav" in names else "input.wav"
            raise ValueError(f"item {folder} has no {missing}; an item holds input.wav and output.wav "
                             "(or one stereo conversation.wav)")
        held = [name for name in ANNOTATIONS if name in names]
        if len(held) > 1:
            raise ValueError(f"item {folder} holds {' and '.join(held)}; an item holds one annotation file, "
                             "which names its task")
        own = ANNOTATIONS[held[0]] if held else None
        if own is None and task is None:
            raise ValueError(f"item {folder} holds none of {', '.join(ANNOTATIONS)}, so its task is unknown; "
                             "add one or give --task")
        if task is not None and own not in (None, task):
            continue
        rel = os.path.relpath(folder, root)
        items.append(_annotated(os.path.abspath(folder), rel, own or task or "", held[0] if held else None))
    if not items:
        which = f" of task {task}" if task else ""
        raise ValueError(f"{root} holds no item{which} (no folder with input.wav and output.wav, "
                         "or conversation.wav)")
    return sorted(items, key=lambda i: i.rel)


def read_reference_distributions(path: str) -> dict[str, tuple[float, ...]]:
    """Full-Duplex-Bench's ``icc_gt_distribution.json``: ``{item folder name: distribution}``."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {{item folder name: [distribution...]}}, got {type(data).__name__}")
    return {str(name): distribution(values, f"{path} [{name!r}]") for name, values in data.items()}


def item_streams(item: Item) -> tuple[np.ndarray, np.ndarray]:
    """``(user_N, model_N)`` of ``item`` at 16 kHz: ``input.wav`` and ``output.wav``, else the two
    channels of ``conversation.wav``. ``ValueError`` when their lengths differ by more than one chunk."""
    # Imported here: the audio module loads torch and silero, which finding items does not need.
    from microturn.pipelines.duplex.audio import read_mono_N, read_wav_NC

    if os.path.exists(os.path.join(item.path, "output.wav")):
        user_N = read_mono_N(os.path.join(item.path, "input.wav"))
        model_N = read_mono_N(os.path.join(item.path, "output.wav"))
        what = "input.wav and output.wav"
    else:
        path = os.path.join(item.path, "conversation.wav")
        data_NC = read_wav_NC(path)
        if data_NC.shape[1] != 2:
            raise ValueError(f"{path} has {data_NC.shape[1]} channel(s); a conversation holds the user in "
                             "channel 0 and the model in channel 1")
        user_N, model_N = data_NC[:, 0], data_NC[:, 1]
        what = "conversation.wav's channels"
    if abs(user_N.size - model_N.size) > MAX_LENGTH_GAP_N:
        raise ValueError(f"item {item.path}: {what} last {user_N.size / SAMPLE_RATE:.3f} s and "
                         f"{model_N.size / SAMPLE_RATE:.3f} s; the user's and the model's stream must be "
                         "equally long (within one 200 ms chunk)")
    return user_N, model_N
