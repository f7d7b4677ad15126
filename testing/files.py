"""Reading a folder back byte for byte, to compare the outputs of two runs."""

from __future__ import annotations

import os

__all__ = ["tree"]


def tree(root: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every file under ``root`` (dot files too) by path relative to ``root``, with its bytes."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out
