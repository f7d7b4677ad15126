"""The folder ``microturn export`` writes: owned through a marker, never holding others' files.

A folder is written only when it is new, empty, or an earlier export's: that export's marker
(``_microturn_stage.json`` with stage ``export lhotse``) lists the files it wrote, and any other
entry makes the folder foreign, refused before any work with nothing touched. Files are written
under temporary names (``.microturn-export-NAME``) and renamed into place; the marker is written
first listing the old and the new names, so a run killed half-way leaves nothing that a rerun
would take for someone else's; files of an earlier export that this one does not write again
(another ``--prefix``) are removed last.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping

from microturn.schemas.stage_marker import MARKER, read_marker

__all__ = ["STAGE", "check_export_dir", "publish_files"]

STAGE = "export lhotse"
TMP_PREFIX = ".microturn-export-"
LAYOUT_VERSION = 1


def _listed(marker: Mapping | None) -> set[str]:
    """The file names a marker lists; only plain names inside the folder (a damaged or hand-made
    marker must not make a rerun remove ``../x``)."""
    files = (marker or {}).get("files")
    if not isinstance(files, list):
        return set()
    return {f for f in files if isinstance(f, str) and f not in ("", ".", "..") and os.path.basename(f) == f
            and "/" not in f and "\\" not in f}


def check_export_dir(path: str) -> None:
    """``ValueError`` for a folder the export must not write: not local, a file, or a non-empty
    folder holding anything but an earlier export's marker and the files it lists."""
    if "://" in path:
        raise ValueError(f"--output {path}: an export is written to a local folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--output {path}: is a file, not a folder")
    if not os.path.isdir(path) or not os.listdir(path):
        return
    marker = read_marker(path)
    if marker is None or marker.get("stage") != STAGE:
        raise ValueError(f"--output {path}: is not empty and was not written by `microturn export lhotse` "
                         f"(no {MARKER} naming it); give a new or empty folder")
    ours = {MARKER, *_listed(marker)}
    foreign = sorted(n for n in os.listdir(path) if n not in ours and not n.startswith(TMP_PREFIX))
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise ValueError(f"--output {path}: holds files that no export wrote ({', '.join(foreign[:5])}{more}); "
                         "give a new or empty folder, or move them away")


def _write_marker(path: str, files: list[str]) -> None:
    data = json.dumps({"stage": STAGE, "layout_version": LAYOUT_VERSION, "files": sorted(files)}, sort_keys=True)
    tmp = os.path.join(path, TMP_PREFIX + MARKER)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data + "\n")
    os.replace(tmp, os.path.join(path, MARKER))


def publish_files(path: str, writers: Mapping[str, Callable[[str], None]]) -> None:
    """Write each ``name: writer`` into the folder ``path`` (checked with :func:`check_export_dir`):
    ``writer(tmp_path)`` writes the file, which then takes its name. On any error the temporary
    files go and the exception is raised; files already in place stay listed in the marker."""
    check_export_dir(path)
    os.makedirs(path, exist_ok=True)
    old = _listed(read_marker(path))
    new = sorted(writers)
    _write_marker(path, sorted(old | set(new)))
    tmps = {name: os.path.join(path, TMP_PREFIX + name) for name in new}
    try:
        for name in new:
            writers[name](tmps[name])
        for name in new:
            os.replace(tmps[name], os.path.join(path, name))
    except BaseException:
        for tmp in tmps.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    _write_marker(path, new)
    for name in sorted(old - set(new)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, name))
