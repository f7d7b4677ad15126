"""Assigning samples to shards: a pure function of the samples' conversations, keys and sizes,
computed without any step that sees every sample of a split.

Three steps, each of them local to a small group:

1. **Buckets.** A split's samples are spread over ``buckets = ceil(payload / bucket_bytes)``
   buckets by a hash of their conversation id (:func:`bucket_of`), so a conversation's windows
   stay together and a bucket holds a few shards' worth of samples whatever the corpus size.
   The split's payload is a sum (a combiner: each worker adds its own samples, the runner adds
   the partial sums), the only figure every bucket needs.
2. **Parts.** Within a bucket, samples are taken in key order and packed into consecutive
   shards; a shard closes when the next sample would push its archive past the target size (a
   sample larger than the target gets a shard of its own) (:func:`plan_bucket`).
3. **Names.** Shard indices run 0..n-1 over the split: a bucket's first index is the number of
   shards of the buckets before it (:func:`first_indices`), one integer per bucket.

A split that fits one bucket is packed exactly as a whole-split plan in key order would pack it.

Each step runs per *shard set* of a split: samples with a video clip and audio-only samples
carry different tar members (``video.mp4`` or not), and a tar must hold one member set for
loaders that type the columns from its first samples (Hugging Face ``datasets``' WebDataset
builder refuses a tar whose samples differ in members). So a split has two shard sets, each
numbered from 0 (:func:`shard_name`): audio-only ``{split}/{split}-{index:06d}.tar`` and
``{split}/{split}-video-{index:06d}.tar``. All windows of a conversation are in one set (video
is per conversation), so a set's buckets still keep conversations together.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from microturn.pipelines.shard.tar import archive_bytes

MEMBER_SETS = ("audio", "video")  # the shard sets of a split; "audio" samples have no video.mp4


def member_set(has_video: bool) -> str:
    """The shard set of a sample: ``"video"`` when it carries a clip, else ``"audio"``."""
    return "video" if has_video else "audio"


def shard_name(split: str, index: int, members: str = "audio") -> str:
    """``{split}/{split}-{index:06d}.tar`` for audio-only samples, ``{split}/{split}-video-{index:06d}.tar``
    for samples with a video clip (relative to the shard output). Both sets sit in the split's
    folder, so a reader of ``{split}/*.tar`` (the trainer) gets every sample of the split."""
    if members not in MEMBER_SETS:
        raise ValueError(f"shard set must be one of {MEMBER_SETS}, got {members!r}")
    infix = "" if members == "audio" else f"-{members}"
    return f"{split}/{split}{infix}-{index:06d}.tar"


def members_of(path: str) -> str:
    """The shard set of a shard path written by :func:`shard_name`."""
    name = path.rpartition("/")[2]
    return "video" if re.fullmatch(r"[a-z][a-z0-9_]*-video-\d{6}\.(tar|parquet)", name) else "audio"


def bucket_count(payload_bytes: int, *, bucket_bytes: int) -> int:
    """Buckets of a split whose samples take ``payload_bytes`` in their archives: enough that
    none expects more than ``bucket_bytes`` (at least one)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be positive, got {bucket_bytes}")
    if payload_bytes < 0:
        raise ValueError(f"payload must be >= 0, got {payload_bytes}")
    return max(1, -(-payload_bytes // bucket_bytes))


def bucket_of(conversation_id: str, buckets: int) -> int:
    """The bucket (0..buckets-1) of a conversation's samples: a stable hash of its id, the same
    on every machine, Python version and run (Python's ``hash`` of a str is salted per process)."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    digest = hashlib.sha256(f"shard-bucket/{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def plan_bucket(sizes: Iterable[tuple[str, int]], *, target_bytes: int) -> dict[str, int]:
    """Map each sample key to its part (0..) within one bucket, given ``(key, member bytes)``."""
    if target_bytes <= 0:
        raise ValueError(f"target shard size must be positive, got {target_bytes}")
    plan: dict[str, int] = {}
    index, payload = 0, 0
    for key, size in sorted(sizes):
        if key in plan:
            raise ValueError(f"duplicate sample key {key!r}")
        if payload and archive_bytes(payload + size) > target_bytes:
            index, payload = index + 1, 0
        plan[key] = index
        payload += size
    return plan


def first_indices(parts: Mapping[tuple[Any, int], int]) -> dict[tuple[Any, int], int]:
    """``(group, bucket) → shards in it`` → ``(group, bucket) → index of its first shard``:
    buckets in order, each group numbered from 0. A group is what shares one numbering: a
    split, or (as the shard stage uses it) a ``(split, shard set)`` pair."""
    out: dict[tuple[Any, int], int] = {}
    next_index: dict[Any, int] = {}
    for group, bucket in sorted(parts):
        n = parts[(group, bucket)]
        if n < 1:
            raise ValueError(f"bucket {bucket} of {group!r} has {n} shards")
        out[(group, bucket)] = next_index.get(group, 0)
        next_index[group] = out[(group, bucket)] + n
    return out
