"""Stable identifiers and split assignment.

A conversation id is a pure function of the bytes of its source, so reruns, other runners and
other machines give the same id. The split is a pure function of the id, so a conversation can
never land in two splits.
"""

from __future__ import annotations

import hashlib
import re

# 16 hex digits = 64 bits: collisions are out of reach for any realistic corpus (2^32 sources
# before a 50% chance), and ids stay short enough to read in logs and keys.
_ID_HEX = 16
_ID_RE = re.compile(r"^[a-z]{1,8}-[0-9a-f]{16}$")

DEFAULT_SPLITS: tuple[tuple[str, float], ...] = (("train", 0.98), ("valid", 0.01), ("test", 0.01))


def conversation_id(content_sha256: str, *, prefix: str = "c") -> str:
    """Id of the conversation whose source content has the given SHA-256 (hex).

    ``prefix`` tells origins apart (``c`` real, ``s`` synthetic, ``r`` remix) without changing
    the hashing.
    """
    if not re.fullmatch(r"[0-9a-f]{64}", content_sha256 or ""):
        raise ValueError(f"expected a 64-digit lowercase hex SHA-256, got {content_sha256!r}")
    if not re.fullmatch(r"[a-z]{1,8}", prefix):
        raise ValueError(f"prefix must be 1-8 lowercase letters, got {prefix!r}")
    digest = hashlib.sha256(f"microturn/conversation/{content_sha256}".encode()).hexdigest()
    return f"{prefix}-{digest[:_ID_HEX]}"


def is_conversation_id(value: str) -> bool:
    """Whether ``value`` has the shape of an id made by :func:`conversation_id`."""
    return bool(_ID_RE.match(value))


def split_of(conv_id: str, splits: tuple[tuple[str, float], ...] = DEFAULT_SPLITS) -> str:
    """Split of a conversation: a pure function of its id and the split ratios.

    The id is hashed to a point in [0, 1) and the ratios, taken in the order given, cut that
    interval; ratios must be positive and sum to 1 (within 1e-9).
    """
    if not splits:
        raise ValueError("splits must name at least one split")
    total = sum(r for _, r in splits)
    if any(r <= 0 for _, r in splits) or abs(total - 1.0) > 1e-9:
        raise ValueError(f"split ratios must be positive and sum to 1, got {dict(splits)}")
    h = hashlib.sha256(f"microturn/split/{conv_id}".encode()).digest()
    point = int.from_bytes(h[:8], "big") / 2**64
    edge = 0.0
    for name, ratio in splits:
        edge += ratio
        if point < edge:
            return name
    return splits[-1][0]
