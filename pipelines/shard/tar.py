"""Deterministic WebDataset tar writing.

Every member gets the same metadata (mtime 0, owner 0:0 with empty names, mode 0444, USTAR
format), members go in the order given, and the archive ends as ``tarfile`` ends it (two zero
blocks, padded to a 10 KiB record), so the same samples always give the same bytes.
:func:`member_bytes` predicts a sample's size in the archive exactly, which lets the shard
plan rotate shards at a target size before any byte is written.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Sequence
from typing import BinaryIO

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240: tarfile pads the end of an archive to a whole record


def member_bytes(members: Sequence[tuple[str, bytes]]) -> int:
    """Bytes that ``members`` take in a USTAR archive: one header block each plus data padded
    to whole blocks."""
    return sum(BLOCK + -(-len(data) // BLOCK) * BLOCK for _, data in members)


def archive_bytes(payload: int) -> int:
    """Size of an archive whose members take ``payload`` bytes (end blocks and record padding)."""
    end = payload + 2 * BLOCK
    return -(-end // RECORD) * RECORD


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class _Tee:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.pos = raw, 0
        self.whole = hashlib.sha256()
        self.part = hashlib.sha256()

    def write(self, data) -> int:
        self.raw.write(data)
        self.whole.update(data)
        self.part.update(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos


class TarWriter:
    """Write samples into one tar, recording each sample's byte range and SHA-256.

    ``add`` returns ``(offset, size, sha256)`` of the sample's members in the archive.
    ``close`` finishes the archive and returns ``(bytes, sha256)`` of the whole file.
    """

    def __init__(self, raw: BinaryIO):
        self._tee = _Tee(raw)
        self._tar = tarfile.open(fileobj=self._tee, mode="w", format=tarfile.USTAR_FORMAT)

    def add(self, members: Sequence[tuple[str, bytes]]) -> tuple[int, int, str]:
        start = self._tee.pos
        self._tee.part = hashlib.sha256()
        for name, data in members:
            self._tar.addfile(_info(name, len(data)), io.BytesIO(data))
        size = self._tee.pos - start
        assert size == member_bytes(members), "tar layout differs from member_bytes()"
        return start, size, self._tee.part.hexdigest()

    def close(self) -> tuple[int, str]:
        self._tar.close()
        return self._tee.pos, self._tee.whole.hexdigest()
