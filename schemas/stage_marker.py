"""The marker a command leaves in the folder it writes, so that it never writes into another's.

Every stage and command that owns an output folder writes ``_microturn_stage.json`` there (at
least ``{"stage": NAME}``); before writing it reads the marker to tell its own earlier output
from a folder that belongs to someone else. :func:`read_marker` is that read for local folders
(the Beam stages read theirs through Beam's filesystems, which also reach remote storage).
"""

from __future__ import annotations

import json
import os

__all__ = ["MARKER", "read_marker"]

MARKER = "_microturn_stage.json"


def read_marker(folder: str) -> dict | None:
    """The marker of ``folder`` as a dict; None when there is none; ``{}`` when it is unreadable or
    not a JSON object (so that a damaged marker names no stage and the folder counts as foreign)."""
    path = os.path.join(folder, MARKER)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
