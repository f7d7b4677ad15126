"""Assigning samples to shards: a pure function of the samples' keys and sizes.

Within a split, samples are taken in key order and packed into consecutive shards; a shard
closes when the next sample would push its archive past the target size (a sample larger than
the target gets a shard of its own). Key order scatters conversations across shards (keys start
with the conversation id, a hash) while keeping a conversation's windows together.
"""

from __future__ import annotations

from collections.abc import Iterable

from microturn.pipelines.shard.tar import archive_bytes


def shard_name(split: str, index: int) -> str:
    """``{split}/{split}-{index:06d}.tar`` (relative to the shard output)."""
    return f"{split}/{split}-{index:06d}.tar"


def plan_split(sizes: Iterable[tuple[str, int]], *, target_bytes: int) -> dict[str, int]:
    """Map each sample key to its shard index, given ``(key, member bytes)`` of one split."""
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
