"""Writing one evaluation item folder from a :class:`~microturn.pipelines.duplex.items_select.Plan`.

An item holds ``input.wav`` (the user stream over the window, silent from the plan's
``silence_from_ms`` on), ``reference.wav`` (the model-role speaker's true stream over the same
window: the ground-truth second stream; silent outside the plan's ``reference_spans`` where a
behaviour task keeps only the answers to what the item holds), ``reference.json`` (that speaker's
words in Full-Duplex-Bench's ASR format, seconds from the window start), the task's annotation
file and ``item.json``; items of the visual tasks also ``input.mp4``, the conversation's video over the
window (cut by :mod:`.items`, 10 fps, two frames per 200 ms chunk of ``input.wav``). Wavs are
16 kHz mono PCM16 written with soundfile; JSON is written with sorted keys and no time stamps, so
the same plan and streams give the same bytes.

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import numpy as np
import soundfile

from microturn.pipelines.duplex.items_behaviours import ANNOTATION_FILE
from microturn.pipelines.duplex.items_select import Plan
from microturn.schemas.sample import SAMPLE_RATE

# 1: Full-Duplex-Bench's four tasks. 2: the behaviour tasks (visual_cue, repetition,
# background_result, simultaneous) with their annotation files and, for the visual ones,
# input.mp4; the files of the four earlier tasks are unchanged.
LAYOUT_VERSION = 2
_PER_MS = SAMPLE_RATE // 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def item_name(task: str, conversation_id: str, index: int) -> str:
    """``<task>/<conversation_id>-<index>``, the id sanitised to letters, digits, ``-`` and ``_``."""
    return f"{task}/{_UNSAFE.sub('_', conversation_id)}-{index}"


def cut_N(wave_N: np.ndarray, start_ms: int, end_ms: int, *, silence_from_ms: int | None = None) -> np.ndarray:
    """``wave_N`` over [start, end) ms, zero-padded where the media is shorter than the record's
    duration (within the shard stage's tolerance), zero from ``silence_from_ms`` on."""
    out_N = np.zeros((end_ms - start_ms) * _PER_MS, dtype=np.float32)
    piece = wave_N[start_ms * _PER_MS: end_ms * _PER_MS]
    out_N[: piece.shape[0]] = piece
    if silence_from_ms is not None:
        out_N[max(0, silence_from_ms - start_ms) * _PER_MS:] = 0.0
    return out_N


def word_chunks(words: Sequence[tuple[str, int, int]], start_ms: int, end_ms: int) -> dict:
    """Full-Duplex-Bench's ASR format ``{"text", "chunks": [{"text", "timestamp": [s, e]}]}`` of
    the words starting inside [start, end) ms, seconds from ``start_ms`` (ends cut to the window)."""
    chunks = [{"text": t, "timestamp": [(s - start_ms) / 1000, (min(e, end_ms) - start_ms) / 1000]}
              for t, s, e in words if start_ms <= s < end_ms]
    return {"text": " ".join(c["text"] for c in chunks), "chunks": chunks}


def _json(path: str, value: object) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(value, sort_keys=True, ensure_ascii=False) + "\n")


def write_item(folder: str, plan: Plan, *, conversation: dict, split: str, user_N: np.ndarray,
               reference_N: np.ndarray, reference_words: Sequence[tuple[str, int, int]],
               user_speakers: Sequence[str], user_words: Sequence[tuple[str, int, int]] = (),
               video_mp4: bytes | None = None) -> dict:
    """Write the item folder and return its ``item.json`` value (also a line of ``items.jsonl``).

    ``transcription.json`` (Full-Duplex-Bench's supplementary file, in ``reference.json``'s
    format) holds the user's words that start in the window before the user stream falls silent:
    what a streaming recogniser would give a system listening to ``input.wav``. ``video_mp4``:
    the bytes of ``input.mp4``, required exactly when the plan is of a visual task."""
    if plan.video != (video_mp4 is not None):
        raise ValueError(f"{folder}: a {plan.task} item {'needs' if plan.video else 'holds no'} input.mp4")
    os.makedirs(folder, exist_ok=True)
    if video_mp4 is not None:
        with open(os.path.join(folder, "input.mp4"), "wb") as f:
            f.write(video_mp4)
    input_N = cut_N(user_N, plan.start_ms, plan.end_ms, silence_from_ms=plan.silence_from_ms)
    ref_N = cut_N(reference_N, plan.start_ms, plan.end_ms)
    if plan.reference_spans is not None:
        keep_N = np.zeros(ref_N.shape, bool)
        for s, e in plan.reference_spans:
            keep_N[max(0, s - plan.start_ms) * _PER_MS: max(0, e - plan.start_ms) * _PER_MS] = True
        ref_N[~keep_N] = 0.0
        reference_words = [w for w in reference_words if any(s <= w[1] < e for s, e in plan.reference_spans)]
    assert input_N.shape == ref_N.shape
    for name, wave_N in (("input.wav", input_N), ("reference.wav", ref_N)):
        soundfile.write(os.path.join(folder, name), wave_N, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    _json(os.path.join(folder, "reference.json"), word_chunks(reference_words, plan.start_ms, plan.end_ms))
    heard_until = plan.end_ms if plan.silence_from_ms is None else min(plan.end_ms, plan.silence_from_ms)
    user_chunks = word_chunks([w for w in user_words if w[1] < heard_until], plan.start_ms, plan.end_ms)
    _json(os.path.join(folder, "transcription.json"), user_chunks)
    _json(os.path.join(folder, ANNOTATION_FILE[plan.task]), plan.annotation)
    users = sorted(user_speakers)
    item = {
        "task": plan.task, "conversation_id": conversation["conversation_id"], "split": split,
        "source": conversation["origin"], "channel_layout": conversation["channel_layout"],
        # One mixed channel: the user stream is the mixture gated by the user speakers'
        # diarization (the shard stage's streams), so the other speaker can leak in at overlaps.
        "user_stream": "diarization_gated_mixture" if conversation["channel_layout"] == "mixed" else "own_channels",
        "window_start_ms": plan.start_ms, "window_end_ms": plan.end_ms,
        "user_silenced_from_ms": plan.silence_from_ms,
        "user_speaker": "+".join(users), "user_speakers": users, "reference_speaker": plan.model,
        "events": plan.events, "layout_version": LAYOUT_VERSION,
        "reference_kept_ms": None if plan.reference_spans is None else [list(s) for s in plan.reference_spans],
    }
    _json(os.path.join(folder, "item.json"), item)
    return item
