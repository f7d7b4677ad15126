"""Seeds derived from sha256, the same in every process, run and machine.

Python's ``hash()`` of a ``str`` (and of a tuple holding one) is salted per process
(``PYTHONHASHSEED``), so a seed made with it differs between the ranks of one job and between a
run and its resume. :func:`seed_from` hashes its parts with sha256 instead, so any tuple of
ints and strings names one seed for good.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["seed_from"]

# 63 bits: accepted by torch.Generator.manual_seed (int64) and numpy.random.default_rng alike.
_SEED_MASK = (1 << 63) - 1


def seed_from(*parts: int | str) -> int:
    """A seed in [0, 2**63) that is a pure function of ``parts`` (ints and strings, in order).

    ``seed_from(0, "flow", 3)`` and ``seed_from(0, "flow", "3")`` differ: the parts are encoded
    as a JSON list, so types and boundaries are kept. Raises ``TypeError`` for other types
    (a float or a bool would make a seed that reads like an int but is not one).
    """
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, (int, str)):
            raise TypeError(f"seed parts must be ints or strings, got {part!r} ({type(part).__name__})")
    digest = hashlib.sha256(("microturn/seed/" + json.dumps(list(parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big") & _SEED_MASK
