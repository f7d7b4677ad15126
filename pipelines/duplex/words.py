"""The model's words in an item, with their times: the word chunks Full-Duplex-Bench's rules read.

Sources, first found wins (every report names the one each item used):

- ``output.json``: Full-Duplex-Bench's ASR format ``{"text": str, "chunks": [{"text": str,
  "timestamp": [start_s, end_s or null]}]}``, read as it is. Its start may be null too (the
  rules skip or refuse such a word as the reference scripts do).
- ``timeline.jsonl``: the session's per-chunk record (``start_ms``, ``text``). Each
  whitespace-separated word of a chunk's text becomes a chunk spanning that 200 ms chunk,
  ``[start_ms, start_ms + 200] / 1000``: the session decides its text one chunk at a time, so the
  chunk is the finest time a word has.
- neither: None, and the rules fall back on the model's voice activity (:mod:`.rules`).

For ``user_interruption`` Full-Duplex-Bench transcribes only the model's audio after the
interrupt's end and shifts the word times back onto the item's timeline (its ``asr.py``), so its
``output.json`` holds only those words at absolute times. Words from ``timeline.jsonl`` are cut the
same way: a word is kept when it ends after the interrupt's end, and a word heard across that
instant starts there (the ASR would hear only its remainder).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

from microturn.pipelines.duplex.layout import Item

__all__ = ["CHUNK_S", "Chunk", "Words", "crop_after", "read_words"]

CHUNK_S = 0.2  # the session's chunk: 200 ms
Chunk = tuple[str, float | None, float | None]  # (text, start_s, end_s); None where the ASR gave none


@dataclass(frozen=True, kw_only=True)
class Words:
    """An item's word chunks in time order, and the file they came from."""

    source: str
    chunks: tuple[Chunk, ...]


def _time(value, path: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {where} must be a number of seconds or null, got {value!r}")
    return float(value)


def _read_output_json(path: str) -> tuple[Chunk, ...]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("chunks"), list):
        raise ValueError(f"{path}: expected {{\"text\": ..., \"chunks\": "
                         "[{\"text\", \"timestamp\": [start_s, end_s]}]}")
    chunks = []
    for i, chunk in enumerate(data["chunks"]):
        stamp = chunk.get("timestamp") if isinstance(chunk, dict) else None
        if not isinstance(stamp, list | tuple) or len(stamp) != 2:
            raise ValueError(f"{path}: chunks[{i}] needs \"timestamp\": [start_s, end_s], got {stamp!r}")
        chunks.append((str(chunk.get("text", "")), _time(stamp[0], path, f"chunks[{i}] start"),
                       _time(stamp[1], path, f"chunks[{i}] end")))
    return tuple(chunks)


def _read_timeline(path: str) -> tuple[Chunk, ...]:
    chunks: list[Chunk] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path} line {number} is not JSON: {exc}") from None
            start_ms = row.get("start_ms") if isinstance(row, dict) else None
            if isinstance(start_ms, bool) or not isinstance(start_ms, int | float) or not math.isfinite(start_ms):
                raise ValueError(f"{path} line {number}: needs a number \"start_ms\", got {start_ms!r}")
            text = row.get("text") or ""
            if not isinstance(text, str):
                raise ValueError(f"{path} line {number}: \"text\" must be a string, got {text!r}")
            start = start_ms / 1000
            chunks.extend((word, start, start + CHUNK_S) for word in text.split())
    return tuple(sorted(chunks, key=lambda c: (c[1], c[2])))


def crop_after(chunks: tuple[Chunk, ...], at_s: float) -> tuple[Chunk, ...]:
    """The words heard after ``at_s`` (module notes), at their absolute times."""
    return tuple((text, max(start, at_s), end) for text, start, end in chunks
                 if start is not None and end is not None and end > at_s)


def read_words(item: Item) -> Words | None:
    """``item``'s model words from ``output.json`` or ``timeline.jsonl``; None when it has neither."""
    path = os.path.join(item.path, "output.json")
    if os.path.exists(path):
        return Words(source="output.json", chunks=_read_output_json(path))
    path = os.path.join(item.path, "timeline.jsonl")
    if not os.path.exists(path):
        return None
    chunks = _read_timeline(path)
    if item.task == "user_interruption":
        assert item.event_s is not None, "an interruption item always has its interrupt's end"
        chunks = crop_after(chunks, item.event_s)
    return Words(source="timeline.jsonl", chunks=chunks)
