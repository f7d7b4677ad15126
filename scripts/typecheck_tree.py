"""Build `build/typecheck/microturn/`, a tree of symlinks that lets pyright resolve `microturn.*`.

The subsystems are top-level folders mapped onto the `microturn` namespace with setuptools
`package-dir`; an editable install reaches them through an import hook that static checkers
cannot follow. This script reads the same mapping from pyproject.toml (so a package added there
needs no change here) and links `build/typecheck/microturn/<name>` to each folder; pyright's
`extraPaths` points at `build/typecheck`. Run from anywhere: `python scripts/typecheck_tree.py`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"
NAMESPACE = "microturn"


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """Map each top-level `microturn.<name>` of `[tool.setuptools] package-dir` to its folder.

    Nested entries (`microturn.a.b`) whose parent is mapped live inside the parent's folder and
    need no link of their own; a nested entry whose parent is not mapped is refused, since a
    symlink cannot stand inside another symlinked folder.
    """
    mapping = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    top: dict[str, Path] = {}
    for name, folder in sorted(mapping.items()):
        parts = name.split(".")
        if parts[0] != NAMESPACE or len(parts) < 2:
            raise ValueError(f"package-dir entry {name!r} is not under the {NAMESPACE} namespace")
        if len(parts) == 2:
            top[parts[1]] = ROOT / folder
        elif parts[1] not in top:
            raise ValueError(f"package-dir entry {name!r} is nested under an unmapped package")
    return top


def build(tree: Path = TREE) -> Path:
    """(Re)create the symlink tree and return the folder to give pyright as an extra path."""
    package_root = tree / NAMESPACE
    if package_root.exists() or package_root.is_symlink():
        shutil.rmtree(package_root)
    package_root.mkdir(parents=True)
    for name, folder in package_dirs(ROOT / "pyproject.toml").items():
        if not folder.is_dir():
            raise ValueError(f"package-dir maps {NAMESPACE}.{name} to {folder}, which is not a folder")
        # Relative links keep the tree valid when the checkout moves or is mounted elsewhere.
        os.symlink(os.path.relpath(folder, package_root), package_root / name, target_is_directory=True)
    return tree


def main() -> int:
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
