"""Reading the annotation files of the behaviour tasks (visual cues, repetition counting,
background results, simultaneous speech): what :mod:`.items_behaviours` writes, checked.

Each reader takes the file's JSON value and returns the figures the scorer reads, in seconds from
the item's start; every malformed value is a ``ValueError`` naming the file and the key:

==================  ====================  ====================================================
file                task                  read
==================  ====================  ====================================================
visual_cue.json     visual_cue            ``request_end_s``, ``cues[i].t_s`` (+ cue, object, answer),
                                          ``other_cues_s`` (optional)
repetition.json     repetition            ``request_end_s``, ``count``, ``reps_s``, ``aloud``
background.json     background_result     ``arrival_s``, ``result`` (+ delegated_s, user_speech_s)
simultaneous.json   simultaneous          ``segments[i].source_start_s`` / ``source_end_s``
==================  ====================  ====================================================
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["FILES", "read_annotation"]

FILES = {"visual_cue.json": "visual_cue", "repetition.json": "repetition", "background.json": "background_result",
         "simultaneous.json": "simultaneous"}


def _seconds(value: Any, path: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {what} must be a finite number of seconds, got {value!r}")
    return float(value)


def _object(data: Any, path: str, shape: str) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object like {shape}, got {type(data).__name__}")
    return data


def _list(data: dict, key: str, path: str, *, empty: bool = False) -> list:
    value = data.get(key)
    if not isinstance(value, list) or (not value and not empty):
        raise ValueError(f"{path}: \"{key}\" must be a {'' if empty else 'non-empty '}list, got {value!r:.80}")
    return value


def _string(data: dict, key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _visual_cue(data: Any, path: str) -> dict:
    data = _object(data, path, '{"request_end_s": s, "cues": [{"t_s": s, "cue", "object", "answer"}]}')
    cues = []
    for i, cue in enumerate(_list(data, "cues", path)):
        if not isinstance(cue, dict):
            raise ValueError(f"{path}: cues[{i}] must be an object with \"t_s\", got {cue!r:.80}")
        cues.append({"t_s": _seconds(cue.get("t_s"), path, f"cues[{i}].t_s"), "cue": _string(cue, "cue"),
                     "object": _string(cue, "object"), "answer": _string(cue, "answer")})
    cues.sort(key=lambda c: c["t_s"])
    listed = _list(data, "other_cues_s", path, empty=True) if "other_cues_s" in data else []
    others = sorted(_seconds(v, path, f"other_cues_s[{i}]") for i, v in enumerate(listed))
    return {"request_end_s": _seconds(data.get("request_end_s"), path, "request_end_s"), "cues": tuple(cues),
            "other_cues_s": tuple(others)}


def _repetition(data: Any, path: str) -> dict:
    data = _object(data, path, '{"request_end_s": s, "count": N, "reps_s": [s, ...], "aloud": bool}')
    count = data.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{path}: \"count\" must be a whole number of repetitions >= 1, got {count!r}")
    reps = sorted(_seconds(v, path, f"reps_s[{i}]") for i, v in enumerate(_list(data, "reps_s", path)))
    aloud = data.get("aloud")
    if not isinstance(aloud, bool):
        raise ValueError(f"{path}: \"aloud\" must be true or false, got {aloud!r}")
    return {"request_end_s": _seconds(data.get("request_end_s"), path, "request_end_s"), "count": count,
            "reps_s": tuple(reps), "aloud": aloud}


def _background(data: Any, path: str) -> dict:
    data = _object(data, path, '{"arrival_s": s, "result": text, "delegated_s": s, "user_speech_s": [[s, e]]}')
    result = data.get("result")
    if not isinstance(result, str):
        raise ValueError(f"{path}: \"result\" must be the background text, got {result!r:.80}")
    spans = []
    for i, span in enumerate(_list(data, "user_speech_s", path, empty=True) if "user_speech_s" in data else []):
        if not isinstance(span, list) or len(span) != 2:
            raise ValueError(f"{path}: user_speech_s[{i}] must be [start_s, end_s], got {span!r:.80}")
        spans.append((_seconds(span[0], path, f"user_speech_s[{i}][0]"),
                      _seconds(span[1], path, f"user_speech_s[{i}][1]")))
    delegated = data.get("delegated_s")
    return {"arrival_s": _seconds(data.get("arrival_s"), path, "arrival_s"), "result": result,
            "delegated_s": None if delegated is None else _seconds(delegated, path, "delegated_s"),
            "user_speech_s": tuple(spans)}


def _simultaneous(data: Any, path: str) -> dict:
    data = _object(data, path, '{"segments": [{"source_start_s", "source_end_s", "text", "source_text"}], '
                               '"language"}')
    segments = []
    for i, seg in enumerate(_list(data, "segments", path)):
        if not isinstance(seg, dict):
            raise ValueError(f"{path}: segments[{i}] must be an object with source_start_s and source_end_s")
        start = _seconds(seg.get("source_start_s"), path, f"segments[{i}].source_start_s")
        end = _seconds(seg.get("source_end_s"), path, f"segments[{i}].source_end_s")
        if end < start:
            raise ValueError(f"{path}: segments[{i}] ends ({end} s) before it starts ({start} s)")
        segments.append({"source_start_s": start, "source_end_s": end, "text": _string(seg, "text"),
                         "source_text": _string(seg, "source_text")})
    segments.sort(key=lambda s: s["source_start_s"])
    return {"segments": tuple(segments), "language": _string(data, "language")}


_READERS = {"visual_cue": _visual_cue, "repetition": _repetition, "background_result": _background,
            "simultaneous": _simultaneous}


def read_annotation(task: str, data: Any, path: str) -> dict:
    """The checked figures of a behaviour task's annotation ``data`` (read from ``path``)."""
    return _READERS[task](data, path)
