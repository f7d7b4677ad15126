"""Which paths an input pattern names, and which of them ingest may read.

Beam's local filesystem lists a folder with ``os.walk`` and drops every entry whose size it
cannot read, so a broken symbolic link matched by a glob vanished without a trace; and it lists
FIFOs and devices like files, whose hashing then hung (a FIFO without a writer) or never ended
(a link to ``/dev/zero``). Local patterns are therefore matched here, with Beam's own pattern
syntax (``*`` within a folder, ``**`` across folders), and every match is classified: a regular
file (after symbolic links) is an input; anything else is a :class:`Skipped` entry that the
caller turns into a ``rejects`` row with its reason. Remote patterns (``gs://``, ``s3://``)
still go through Beam's ``FileSystems.match``: object stores hold no such entries.

File names that are not valid UTF-8 (a Latin-1 ``café.wav`` from an old archive) arrive from
the OS as strings with lone surrogates (Python's ``surrogateescape``), which no table, coder or
JSON can hold. They are skipped too, and shown by :func:`display_path` with each undecodable
byte as a ``\\xNN`` escape (``caf\\xe9.wav``), which is valid UTF-8 and names the byte.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from microturn.pipelines.media import file_kind

_GLOB_CHARS = re.compile(r"^[^[*?]*")


@dataclass(frozen=True)
class Skipped:
    """A matched entry that is not read: its displayable path, an error type and the reason."""

    path: str
    error_type: str
    reason: str


def display_path(path: str) -> str:
    """``path`` as valid UTF-8: bytes that were not UTF-8 in the OS name become ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_local(pattern: str) -> bool:
    return "://" not in pattern or pattern.startswith("file://")


def _walk(root: str, recursive: bool) -> tuple[list[str], list[Skipped]]:
    """Every non-folder entry under ``root`` (symbolic links to folders are not followed), and
    the sub-folders that could not be listed when the pattern reaches into sub-folders."""
    unlisted: list[Skipped] = []

    def failed(exc: OSError) -> None:
        if os.path.normpath(exc.filename or "") == os.path.normpath(root or "."):
            if isinstance(exc, FileNotFoundError):
                return  # no folder, no match (as Beam has it): the pattern matches nothing
            raise exc  # the pattern's own folder cannot be listed: the whole pattern is rejected
        if recursive:
            unlisted.append(Skipped(display_path(exc.filename), type(exc).__name__,
                                    f"a folder that cannot be listed: {exc.strerror}"))

    out = []
    for dirpath, _, names in os.walk(root or ".", onerror=failed):
        for n in names:
            path = os.path.join(dirpath, n)
            # A pattern without a folder ("*.wav") is relative to the working folder.
            out.append(path if root else os.path.relpath(path))
    return out, unlisted


def _match_local(pattern: str) -> list[str | Skipped]:
    """Local paths matching ``pattern`` with Beam's syntax, broken links and FIFOs included."""
    if pattern.endswith(("/", "\\")):
        pattern += "*"
    found = _GLOB_CHARS.match(pattern)
    assert found is not None  # the pattern's part before any glob character, empty included
    prefix = found.group(0)
    if prefix == pattern:
        return [pattern] if os.path.lexists(pattern) else []
    candidates, unlisted = _walk(os.path.dirname(prefix), recursive="**" in pattern)
    regex = re.compile(FileSystem.translate_pattern(pattern))
    return [p for p in candidates if regex.match(p)] + unlisted


def classify(path: str) -> Skipped | None:
    """None when ``path`` is a readable input: a regular file, by a valid UTF-8 name."""
    shown = display_path(path)
    if shown != path:
        return Skipped(shown, "NotUtf8Name",
                       "the file name is not valid UTF-8 (undecodable bytes shown as \\xNN); "
                       "rename it to UTF-8, e.g. `convmv -f latin1 -t utf-8 --notest FILE`")
    try:
        mode = os.stat(path).st_mode  # follows symbolic links
    except FileNotFoundError:
        if os.path.islink(path):
            return Skipped(path, "BrokenSymlink",
                           f"a symbolic link to {os.readlink(path)!r}, which does not exist")
        return Skipped(path, "FileNotFound", "the file disappeared while the input was listed")
    except OSError as exc:  # a link loop, a folder that cannot be searched
        return Skipped(path, type(exc).__name__, f"cannot read what it is: {exc.strerror}")
    if not stat.S_ISREG(mode):
        link = " (through a symbolic link)" if os.path.islink(path) else ""
        return Skipped(path, "NotARegularFile",
                       f"{file_kind(mode)}{link}, not a regular file: only regular files "
                       "(or symbolic links to them) are read")
    return None


def match(pattern: str) -> list[str | Skipped]:
    """Paths that ``pattern`` matches, sorted: readable inputs as strings, the rest as
    :class:`Skipped`. Raises what the filesystem raises when the pattern cannot be listed."""
    if not is_local(pattern):
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    scheme = "file://" if pattern.startswith("file://") else ""
    found = _match_local(pattern[len(scheme):])
    out: list[str | Skipped] = [Skipped(scheme + s.path, s.error_type, s.reason)
                                for s in found if isinstance(s, Skipped)]
    for p in sorted(p for p in found if isinstance(p, str)):
        skipped = classify(p)
        out.append(scheme + p if skipped is None
                   else Skipped(scheme + skipped.path, skipped.error_type, skipped.reason))
    return out
