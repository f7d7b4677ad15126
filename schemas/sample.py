"""The micro-turn sample (DESIGN.md, "The micro-turn sample", schema version 3).

A sample is a window of K chunks of 200 ms of one conversation under one role assignment (one
speaker as ``model``, everyone else as ``user``). In a WebDataset tar it is a run of members
named ``{key}.{field}``:

=====================  ==================  ============================================
field                  array / content     meaning
=====================  ==================  ============================================
``json``               JSON object         meta: ids, window, speakers, origin, license
``user.dmel.npy``      uint8 [T, M]        dMel of the user stream (T = 4 K, M = 80)
``model.dmel.npy``     uint8 [T, M]        dMel of the model stream
``model.logmel.npy``   float16 [T, M]      log-mel before quantisation (flow-head target)
``user.labels.npy``    uint16 [K]          :class:`Label` bits per chunk, user stream
``model.labels.npy``   uint16 [K]          :class:`Label` bits per chunk, model stream
``words.json``         JSON object         ``{"user", "model", "background"}`` word lists
``events.json``        JSON list           events inside the window
``video.mp4``          H.264 in MP4        optional: 10 fps frames, sides multiples of 40
=====================  ==================  ============================================

Times inside a sample (words, events) are integer ms from the start of the window; the meta's
``offset_ms`` is where the window starts in the conversation. A word's ``chunk`` is the chunk
(0..K-1) holding its start. Arrays are ``.npy`` written and read with ``allow_pickle=False``.

The ``background`` list of ``words.json`` is the third, input-side stream: text that a
background model (a search, a tool, a slower model the speaker delegated to) delivers to the
model-role speaker while the conversation goes on. Each entry is one result,
``{"text", "start_ms", "end_ms", "chunk"}`` with ``start_ms == end_ms`` its arrival and ``chunk``
the chunk it arrives in; the trainer tokenises it like user text at that chunk. Only results for
the sample's model speaker are in it (the other role assignment of the same window has none).

Shape suffixes follow :mod:`microturn.schemas.legend`: K chunks, T = 4 K dMel frames, M = 80 mel
channels, P video patches per chunk (``patches_h * patches_w``), F = 2 video frames per temporal
patch, H = W = 40 pixels, C = 3 colour channels.
"""

from __future__ import annotations

import enum
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from microturn.schemas.tables import SCHEMA_VERSION

SAMPLE_RATE = 16_000  # Hz: every audio stream of the contract is 16 kHz mono
CHUNK_MS = 200
FRAMES_PER_CHUNK = 4  # dMel hop of 50 ms
N_MELS = 80
DMEL_BINS = 16
PATCH_PX = 40
VIDEO_FPS = 10
FRAMES_PER_PATCH = 2  # 10 fps x 200 ms
ROLES = ("user", "model")
DEFAULT_CHUNKS = 150  # 30 s windows


class Label(enum.IntFlag):
    """Per-chunk, per-stream label bits (uint16 since schema version 3).

    VOICED (since schema version 2) follows speech, not turns. A stream's speech is the union
    of its words' spans and the 10 ms frames of its own audio within 35 dB of its speech level
    (95th percentile of its frame levels inside its turns; never under -70 dBFS), kept inside
    its diarized segments; where its audio also carries the other stream (a mixed recording's
    gate open while the other speaker talks) only its words count (or, for a stream without
    words, its segments). Pauses under 200 ms in that speech are closed; a chunk is VOICED when
    speech covers at least 100 ms of its 200 ms. So a silence of 200 ms or more covering most
    of a chunk leaves it unvoiced even inside a turn. OVERLAP is set where both streams are
    VOICED. TURN_START, TURN_END and BACKCHANNEL follow the turns. CUE_RESPONSE, BACKGROUND and
    SIMULTANEOUS (since version 3) follow the events of those types: the stream's answer to a
    visual cue, its mention of a background result, its speech over the other stream on purpose
    (a rendering; such overlap is the task, never an INTERRUPT).
    """

    VOICED = 1  # the stream's speech covers at least 100 ms of the chunk (see above)
    WORD_START = 2  # a word of the stream starts in the chunk
    TURN_START = 4  # a main turn (not a backchannel) of the stream starts in the chunk
    TURN_END = 8  # a main turn of the stream ends in the chunk
    BACKCHANNEL = 16  # a backchannel of the stream is under way in the chunk
    INTERRUPT = 32  # the stream's speaker interrupts the other stream in the chunk
    OVERLAP = 64  # both streams are VOICED in the chunk
    LEAK = 128  # mixed source: the other stream's speech may be audible in this stream
    CUE_RESPONSE = 256  # the stream answers a visual cue in the chunk (no audio cue from the other stream)
    BACKGROUND = 512  # the stream brings up a background result in the chunk
    SIMULTANEOUS = 1024  # the stream speaks over the other on purpose (renders it) in the chunk


EVENT_TYPES = ("backchannel", "interruption", "turn_end", "timed_instruction", "visual_cue", "background_result",
               "simultaneous")
WORD_STREAMS = (*ROLES, "background")  # the lists of words.json
LABEL_DTYPE = "uint16"
FIELDS = ("json", "user.dmel.npy", "model.dmel.npy", "model.logmel.npy", "user.labels.npy",
          "model.labels.npy", "words.json", "events.json", "video.mp4")
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


class SampleError(ValueError):
    """A sample that does not satisfy the contract."""


def sample_key(conversation_id: str, role: str, window: int) -> str:
    """``{conversation_id}.{role}.{window:05d}`` made filesystem- and tar-safe.

    WebDataset splits a member name at the first dot of its base name, so the key must hold no
    dot: the separators become ``_`` and any other character outside ``[A-Za-z0-9-]`` becomes
    ``-``. ``role`` names the role assignment (the model speaker); it is cut to 32 characters.
    """
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    parts = [_UNSAFE.sub("-", conversation_id).strip("-") or "x",
             (_UNSAFE.sub("-", role).strip("-") or "x")[:32]]
    return f"{parts[0]}_{parts[1]}_{window:05d}"


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One micro-turn sample, decoded.

    Attributes:
        key: the WebDataset key (:func:`sample_key`).
        meta: the ``json`` field (see :func:`make_meta`).
        dmel: role -> uint8 [T, M] dMel.
        logmel_TM: float16 [T, M] log-mel of the model stream.
        labels: role -> uint16 [K] label bits.
        words: role or "background" -> list of ``{"text", "start_ms", "end_ms", "chunk"}``.
        events: list of ``{"type", "speaker", "role", "t_ms", "chunk", "payload"}``.
        video: the encoded clip (bytes) or None; :func:`decode_sample` adds its patches.
    """

    key: str
    meta: dict
    dmel: dict[str, np.ndarray]
    logmel_TM: np.ndarray
    labels: dict[str, np.ndarray]
    words: dict[str, list[dict]] = field(default_factory=lambda: {"user": [], "model": [], "background": []})
    events: list[dict] = field(default_factory=list)
    video: bytes | None = None

    @property
    def chunks(self) -> int:
        return int(self.meta["chunks"])


def make_meta(*, key: str, conversation_id: str, window: int, chunks: int, window_chunks: int,
              model_speaker: str, user_speakers: list[str], origin: str, license: str | None,
              split: str, channel_layout: str, conversation_ms: int, video: dict | None = None) -> dict:
    """The ``json`` field of a sample.

    ``window_chunks`` is the configured K (windows start at ``window * window_chunks`` chunks);
    ``chunks`` is this sample's own length (K, or fewer for the last window of a conversation).
    ``video`` is ``{"width", "height", "patches_h", "patches_w", "frames"}`` when the sample
    carries a clip.
    """
    offset_ms = window * window_chunks * CHUNK_MS
    return {
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "conversation_id": conversation_id,
        "window": window,
        "window_chunks": window_chunks,
        "chunks": chunks,
        "offset_ms": offset_ms,
        "duration_ms": chunks * CHUNK_MS,
        # Where speech content ends inside the window; the rest of the last chunk is padding.
        "content_ms": max(0, min(chunks * CHUNK_MS, conversation_ms - offset_ms)),
        "model_speaker": model_speaker,
        "user_speakers": list(user_speakers),
        "origin": origin,
        "license": license,
        "split": split,
        "channel_layout": channel_layout,
        "video": video,
    }


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def npy_bytes(array: np.ndarray) -> bytes:
    """``.npy`` bytes of ``array`` (C order, no pickle); the same array always gives the same bytes."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes) -> np.ndarray:
    """Read ``.npy`` bytes; object arrays (which need pickle) are refused."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise SampleError(f"not a plain .npy array: {exc}") from None


def encode_sample(sample: Sample) -> list[tuple[str, bytes]]:
    """The tar members of ``sample`` in their fixed order, after :func:`validate_sample`."""
    validate_sample(sample)
    k = sample.key
    members = [
        (f"{k}.json", _json_bytes(sample.meta)),
        (f"{k}.user.dmel.npy", npy_bytes(sample.dmel["user"])),
        (f"{k}.model.dmel.npy", npy_bytes(sample.dmel["model"])),
        (f"{k}.model.logmel.npy", npy_bytes(sample.logmel_TM)),
        (f"{k}.user.labels.npy", npy_bytes(sample.labels["user"])),
        (f"{k}.model.labels.npy", npy_bytes(sample.labels["model"])),
        (f"{k}.words.json", _json_bytes(sample.words)),
        (f"{k}.events.json", _json_bytes(sample.events)),
    ]
    if sample.video is not None:
        members.append((f"{k}.video.mp4", bytes(sample.video)))
    return members


def _field(fields: Mapping[str, Any], name: str) -> bytes:
    if name not in fields:
        raise SampleError(f"sample has no {name!r} field; fields: {sorted(fields)}")
    value = fields[name]
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise SampleError(f"field {name!r} must be raw bytes (read the tar without decoders), "
                          f"got {type(value).__name__}")
    return bytes(value)


def decode_sample(fields: Mapping[str, Any], *, video: bool = True) -> dict[str, Any]:
    """Turn one sample's raw fields into arrays.

    ``fields`` maps field names (``"json"``, ``"user.dmel.npy"``, ...) to bytes, as a plain
    ``webdataset.WebDataset(url)`` yields them (its ``__key__``/``__url__`` entries are ignored).
    Returns ``{"key", "meta", "dmel": {role: uint8 [T, M]}, "logmel_TM": float16 [T, M],
    "labels": {role: uint16 [K]}, "words", "events", "video_KPFHWC"}`` where ``video_KPFHWC`` is
    uint8 [K, P, 2, 40, 40, 3] (or None without a clip, or when ``video`` is False). The result
    is validated: a sample that breaks the contract raises :class:`SampleError`.
    """
    try:
        meta = json.loads(_field(fields, "json"))
        words = json.loads(_field(fields, "words.json"))
        events = json.loads(_field(fields, "events.json"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SampleError(f"a JSON field does not parse: {exc}") from None
    if not isinstance(meta, dict):
        raise SampleError("the json field must be an object")
    clip = bytes(fields["video.mp4"]) if "video.mp4" in fields else None
    sample = Sample(
        key=str(meta.get("key", fields.get("__key__", ""))),
        meta=meta,
        dmel={r: npy_load(_field(fields, f"{r}.dmel.npy")) for r in ROLES},
        logmel_TM=npy_load(_field(fields, "model.logmel.npy")),
        labels={r: npy_load(_field(fields, f"{r}.labels.npy")) for r in ROLES},
        words=words,
        events=events,
        video=clip,
    )
    validate_sample(sample)
    out = {"key": sample.key, "meta": meta, "dmel": sample.dmel, "logmel_TM": sample.logmel_TM,
           "labels": sample.labels, "words": words, "events": events, "video_KPFHWC": None}
    if video and clip is not None:
        from microturn.schemas.video import decode_patches

        v = meta["video"]
        out["video_KPFHWC"] = decode_patches(clip, patches_h=v["patches_h"], patches_w=v["patches_w"],
                                             chunks=sample.chunks)
    return out


def _check_array(name: str, a: Any, dtype: str, shape: tuple[int, ...]) -> None:
    if not isinstance(a, np.ndarray):
        raise SampleError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise SampleError(f"{name} must be {dtype}, got {a.dtype}")
    if a.shape != shape:
        raise SampleError(f"{name} must have shape {shape}, got {a.shape}")


_META_KEYS = {"schema_version", "key", "conversation_id", "window", "window_chunks", "chunks", "offset_ms",
              "duration_ms", "content_ms", "model_speaker", "user_speakers", "origin", "license", "split",
              "channel_layout", "video"}


def validate_sample(sample: Sample) -> None:
    """Check ``sample`` against the contract; :class:`SampleError` names what is wrong.

    Checks: the key and meta fields, array dtypes and shapes against K, dMel bins in 0..15,
    finite log-mel, words and events inside the window with consistent chunk indices, the
    WORD_START bit wherever a word starts, and the video geometry.
    """
    meta = sample.meta
    if not _KEY_RE.match(sample.key or ""):
        raise SampleError(f"key {sample.key!r} is not tar-safe: use sample_key()")
    if set(meta) != _META_KEYS:
        raise SampleError(f"meta keys differ from the contract: missing {sorted(_META_KEYS - set(meta))}, "
                          f"unknown {sorted(set(meta) - _META_KEYS)}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise SampleError(f"schema_version {meta['schema_version']!r}: this reader knows {SCHEMA_VERSION}")
    if meta["key"] != sample.key:
        raise SampleError(f"meta.key {meta['key']!r} differs from the key {sample.key!r}")
    K = meta["chunks"]
    if not isinstance(K, int) or isinstance(K, bool) or not 1 <= K <= meta["window_chunks"]:
        raise SampleError(f"chunks must be an integer in 1..window_chunks, got {K!r}")
    if meta["duration_ms"] != K * CHUNK_MS or meta["offset_ms"] != meta["window"] * meta["window_chunks"] * CHUNK_MS:
        raise SampleError("duration_ms/offset_ms disagree with chunks/window")
    T = K * FRAMES_PER_CHUNK
    for role in ROLES:
        if role not in sample.dmel or role not in sample.labels:
            raise SampleError(f"missing the {role} stream")
        _check_array(f"{role}.dmel", sample.dmel[role], "uint8", (T, N_MELS))
        if sample.dmel[role].size and int(sample.dmel[role].max()) >= DMEL_BINS:
            raise SampleError(f"{role}.dmel has a bin >= {DMEL_BINS}")
        _check_array(f"{role}.labels", sample.labels[role], LABEL_DTYPE, (K,))
    _check_array("model.logmel", sample.logmel_TM, "float16", (T, N_MELS))
    if not np.isfinite(sample.logmel_TM).all():
        raise SampleError("model.logmel has non-finite values")
    if not isinstance(sample.words, dict) or set(sample.words) != set(WORD_STREAMS):
        raise SampleError(f"words must be an object with keys {WORD_STREAMS}")
    span = K * CHUNK_MS
    for role in WORD_STREAMS:
        starts = np.zeros(K, dtype=bool)
        for w in sample.words[role]:
            if set(w) != {"text", "start_ms", "end_ms", "chunk"} or not isinstance(w["text"], str) or not w["text"]:
                raise SampleError(f"{role} word {w!r} must be {{text, start_ms, end_ms, chunk}} with text")
            if not 0 <= w["start_ms"] < span or not w["start_ms"] <= w["end_ms"]:
                raise SampleError(f"{role} word {w['text']!r} [{w['start_ms']}, {w['end_ms']}] ms does not start "
                                  f"inside the window of {span} ms")
            if w["chunk"] != w["start_ms"] // CHUNK_MS:
                raise SampleError(f"{role} word {w['text']!r}: chunk {w['chunk']} does not hold its start")
            if role == "background" and w["end_ms"] != w["start_ms"]:
                raise SampleError(f"background entry {w['text'][:40]!r} must have end_ms == start_ms (its arrival)")
            starts[w["chunk"]] = True
        if role == "background":
            continue
        has_bit = (sample.labels[role] & Label.WORD_START).astype(bool)
        if not np.array_equal(starts, has_bit):
            raise SampleError(f"{role}.labels WORD_START bits disagree with the words' chunks")
    if not isinstance(sample.events, list):
        raise SampleError("events must be a list")
    for e in sample.events:
        if e.get("type") not in EVENT_TYPES or not 0 <= e.get("t_ms", -1) < span \
                or e.get("chunk") != e["t_ms"] // CHUNK_MS or e.get("role") not in ROLES:
            raise SampleError(f"event {e!r} is not a known type with a role inside the window")
    v = meta["video"]
    if (v is None) != (sample.video is None):
        raise SampleError("meta.video and the video field must be given together")
    if v is not None:
        if set(v) != {"width", "height", "patches_h", "patches_w", "frames"}:
            raise SampleError(f"meta.video must be {{width, height, patches_h, patches_w, frames}}, got {v!r}")
        if v["width"] != v["patches_w"] * PATCH_PX or v["height"] != v["patches_h"] * PATCH_PX \
                or v["frames"] != K * FRAMES_PER_PATCH or min(v["patches_h"], v["patches_w"]) < 1:
            raise SampleError(f"meta.video geometry {v!r} is not {PATCH_PX}-px patches over {K} chunks")
