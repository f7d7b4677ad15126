"""Deterministic WebDataset tar writing.

Every member gets the same metadata (mtime 0, owner 0:0 with empty names, mode 0444, USTAR
format), members go in the order given, and the archive ends as ``tarfile`` ends it (two zero
blocks, padded to a 10 KiB record), so the same samples always give the same bytes.
:func:`member_bytes` predicts a sample's size in the archive exactly, which lets the shard
plan rotate shards at a target size before any byte is written.
"""

from __future__ import annotations

import hashlib
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


_ZEROS = bytes(BLOCK)


def sample_blob(members: Sequence[tuple[str, bytes]]) -> bytes:
    """The exact archive bytes of ``members``: for each, its USTAR header block, its data and zero
    padding to a whole block. Built once per sample (where samples are made, in parallel), so
    the shard writer only appends blobs and hashes the file."""
    parts = []
    for name, data in members:
        parts.append(_info(name, len(data)).tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict"))
        parts.append(data)
        pad = -len(data) % BLOCK
        if pad:
            parts.append(_ZEROS[:pad])
    blob = b"".join(parts)
    assert len(blob) == member_bytes(members), "tar layout differs from member_bytes()"
    return blob


class TarWriter:
    """Append samples to one tar, recording each sample's byte range, and hash the file.

    ``add_blob`` takes a :func:`sample_blob` and returns its offset; ``add`` builds the blob
    and returns ``(offset, size, sha256)``; ``close`` writes the end blocks and the record
    padding and returns ``(bytes, sha256)`` of the whole file. The output is byte for byte
    what ``tarfile`` writes for the same members and metadata.
    """

    def __init__(self, raw: BinaryIO):
        self._raw, self._pos = raw, 0
        self._sha = hashlib.sha256()
        self._closed = False

    def _write(self, data: bytes) -> None:
        self._raw.write(data)
        self._sha.update(data)
        self._pos += len(data)

    def add_blob(self, blob: bytes) -> int:
        if self._closed:
            raise ValueError("the archive is closed")
        if len(blob) % BLOCK:
            raise ValueError(f"a sample blob must be whole {BLOCK}-byte blocks, got {len(blob)} bytes")
        offset = self._pos
        self._write(blob)
        return offset

    def add(self, members: Sequence[tuple[str, bytes]]) -> tuple[int, int, str]:
        blob = sample_blob(members)
        return self.add_blob(blob), len(blob), hashlib.sha256(blob).hexdigest()

    def close(self) -> tuple[int, str]:
        if not self._closed:
            self._closed = True
            self._write(bytes(archive_bytes(self._pos) - self._pos))
        return self._pos, self._sha.hexdigest()
