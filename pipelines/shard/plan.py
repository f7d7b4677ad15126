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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from microturn.pipelines.shard.tar import archive_bytes


def shard_name(split: str, index: int) -> str:
    """``{split}/{split}-{index:06d}.tar`` (relative to the shard output)."""
    return f"{split}/{split}-{index:06d}.tar"


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


def first_indices(parts: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """``(split, bucket) → shards in it`` → ``(split, bucket) → index of its first shard``:
    buckets in order, each split numbered from 0."""
    out: dict[tuple[str, int], int] = {}
    next_index: dict[str, int] = {}
    for split, bucket in sorted(parts):
        n = parts[(split, bucket)]
        if n < 1:
            raise ValueError(f"bucket {bucket} of split {split!r} has {n} shards")
        out[(split, bucket)] = next_index.get(split, 0)
        next_index[split] = out[(split, bucket)] + n
    return out
