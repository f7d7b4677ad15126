"""Writing a system's answers to evaluation items as a tree in Full-Duplex-Bench's item layout.

``microturn eval interaction`` scores several systems on one item set. Each system gets its own
copy of the item tree, ``DIR/<system>/<item's path under ITEMS>/``, so that the scorer reads every
system's folder as any Full-Duplex-Bench item set. An item folder of a system holds:

- everything the item holds except a system's answer (``input.wav``, the annotation files,
  ``reference.wav`` / ``reference.json``, ``item.json``), copied byte for byte;
- ``output.wav``: the system's stream, 16 kHz mono 16-bit PCM, exactly as many samples as the
  user's ``input.wav`` at 16 kHz (cut or padded with silence);
- ``output.json`` when the system's words are known (Full-Duplex-Bench's ASR format,
  ``{"text", "chunks": [{"text", "timestamp": [start_s, end_s]}]}``), and/or the session's
  ``timeline.jsonl`` (the trained model's words, read by the scorer by the design's rule).

Words of ``user_interruption`` items are written as Full-Duplex-Bench's ``asr.py`` leaves them:
its ASR hears only the audio after the interrupt's end and shifts the times it finds back onto
the item's timeline. So a word is kept when it ends after the interrupt's end, its start clipped
to that end (the cut audio still holds its tail), at its absolute time.

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soundfile

from microturn.pipelines.duplex.audio import SAMPLE_RATE, read_mono_N, read_wav_NC
from microturn.pipelines.duplex.layout import ANNOTATIONS
from microturn.pipelines.duplex.words import crop_after

__all__ = ["ANSWER_FILES", "Item", "find_items", "fdb_words", "item_input_N", "prepare_item", "read_fdb_words",
           "write_answer", "write_reference"]

# A system's answer: never copied from the item set into a system's tree.
ANSWER_FILES = ("output.wav", "output.json", "timeline.jsonl", "conversation.wav", "session.json")

Word = tuple[str, float, float]  # (text, start_s, end_s)


@dataclass(frozen=True, kw_only=True)
class Item:
    """An item folder: its absolute path, its path under the item set's root, and its task."""

    path: str
    rel: str
    task: str

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def _tasks(names: set[str]) -> list[str]:
    return [task for file, task in ANNOTATIONS.items() if file in names]


def find_items(root: str) -> list[Item]:
    """Every item under ``root`` (a folder holding ``input.wav`` or ``conversation.wav``), sorted
    by path. ``ValueError`` for a missing root, no items, or an item whose task is unknown (no
    annotation file, or two of them), naming the folder.

    The scorer's :func:`~microturn.pipelines.duplex.layout.find_items` wants the answer
    (``output.wav``) already there; here the items are still unanswered."""
    if not os.path.isdir(root):
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise ValueError(f"--items {root} {what}; give the --output folder of `microturn eval items` "
                         "or a Full-Duplex-Bench item set")
    items = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        names = set(files)
        if not names & {"input.wav", "conversation.wav"}:
            continue
        tasks = _tasks(names)
        if len(tasks) != 1:
            held = "none" if not tasks else " and ".join(t for t in ANNOTATIONS if t in names)
            raise ValueError(f"item {folder} holds {held} of the annotation files {', '.join(ANNOTATIONS)}; "
                             "an item holds exactly one, which names its task")
        items.append(Item(path=os.path.abspath(folder), rel=os.path.relpath(folder, root), task=tasks[0]))
    if not items:
        raise ValueError(f"--items {root} holds no item (no folder with an input.wav or conversation.wav)")
    return sorted(items, key=lambda i: i.rel)


def item_input_N(item: Item) -> np.ndarray:
    """The user's stream of ``item``: ``input.wav``, else channel 0 of ``conversation.wav``."""
    path = os.path.join(item.path, "input.wav")
    if os.path.exists(path):
        return read_mono_N(path)
    data_NC = read_wav_NC(os.path.join(item.path, "conversation.wav"))
    if data_NC.shape[1] != 2:
        raise ValueError(f"{item.path}/conversation.wav has {data_NC.shape[1]} channels; it holds the user "
                         "in channel 0 and the model in channel 1")
    return data_NC[:, 0]


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from None


def interrupt_end_s(item: Item) -> float | None:
    """The interrupt's end of a ``user_interruption`` item (``interrupt.json[0].timestamp[1]``), else None."""
    if item.task != "user_interruption":
        return None
    path = os.path.join(item.path, "interrupt.json")
    data = _read_json(path)
    try:
        return float(data[0]["timestamp"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise ValueError(f"{path}: expected [{{\"timestamp\": [start_s, end_s], ...}}]") from None


def fdb_words(words: Sequence[Word], item: Item) -> dict:
    """``words`` (absolute times) as the ``output.json`` Full-Duplex-Bench's scorer reads for ``item``."""
    at = interrupt_end_s(item)
    # The scorer's own crop of the session's words (module notes: the same rule).
    shown = crop_after(tuple(words), at) if at is not None else tuple(words)
    chunks = []
    for text, start, end in shown:
        assert start is not None and end is not None, "a system's words always have both times"
        chunks.append({"text": text, "timestamp": [round(start, 3), round(end, 3)]})
    return {"text": " ".join(text for text, _, _ in shown), "chunks": chunks}


def read_fdb_words(path: str) -> list[Word]:
    """The words of an ``output.json``-format file (a missing end is the word's start)."""
    data = _read_json(path)
    try:
        words = []
        for chunk in data["chunks"]:
            start, end = chunk["timestamp"]
            words.append((str(chunk["text"]).strip(), float(start), float(start if end is None else end)))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: expected {{\"chunks\": [{{\"text\", \"timestamp\": [start_s, end_s]}}]}}") from None
    return words


def prepare_item(item: Item, dest: str) -> int:
    """Create ``dest`` with the item's files but its answer (``input.wav`` written from channel 0 of
    ``conversation.wav`` when the item has only that); returns the user stream's length in samples."""
    os.makedirs(dest, exist_ok=True)
    for name in sorted(os.listdir(item.path)):
        src = os.path.join(item.path, name)
        if name not in ANSWER_FILES and os.path.isfile(src):
            shutil.copyfile(src, os.path.join(dest, name))
    input_N = item_input_N(item)
    if not os.path.exists(os.path.join(item.path, "input.wav")):
        _write_wav(os.path.join(dest, "input.wav"), input_N)
    return int(input_N.size)


def _write_wav(path: str, wave_N: np.ndarray) -> None:
    tmp = path + ".tmp"
    soundfile.write(tmp, np.clip(wave_N, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _write_json(path: str, value) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def write_answer(item: Item, dest: str, output_N: np.ndarray, *, samples: int,
                 words: Sequence[Word] | None = None) -> None:
    """Write a system's stream into the prepared folder ``dest``: ``output.wav`` cut or padded to
    ``samples``, and ``output.json`` from ``words`` (absolute times) when given."""
    out_N = np.zeros(samples, np.float32)
    n = min(samples, int(output_N.size))
    out_N[:n] = output_N[:n]
    _write_wav(os.path.join(dest, "output.wav"), out_N)
    if words is not None:
        _write_json(os.path.join(dest, "output.json"), fdb_words(words, item))


def write_reference(item: Item, dest: str, samples: int) -> None:
    """The "reference" system: the item's true second speaker (``reference.wav``, its words from
    ``reference.json`` when present) written as the answer into ``dest``."""
    path = os.path.join(item.path, "reference.wav")
    if not os.path.exists(path):
        raise ValueError(f"item {item.path} has no reference.wav: the reference system needs the item's "
                         "second speaker; leave `reference` out of --systems for this item set")
    words_path = os.path.join(item.path, "reference.json")
    words = read_fdb_words(words_path) if os.path.exists(words_path) else None
    write_answer(item, dest, read_mono_N(path), samples=samples, words=words)
