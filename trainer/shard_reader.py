"""Reading WebDataset shards: opening a shard by name, and a bounded tar reader.

A shard name is data. A local path (what a glob matched, or a plain path) is opened with
``open()`` whatever characters it holds, so no name can select a protocol or run a command;
``file:`` URLs are opened the same way; other URL schemes go through ``fsspec`` (no
subprocess, no shell); a ``pipe:`` URL runs a shell command and is opened only when the caller
passes ``allow_pipe=True``.

:func:`iter_samples` reads one uncompressed tar as a stream of 512-byte blocks with its own
header parser, so that no member, pax header or long name is read before its size has been
checked against :class:`ReadLimits`. What the shard stage writes (USTAR regular files named
``KEY.FIELD``) always passes; everything else is refused:

- a compressed stream (gzip, bzip2, xz, zstd, lz4): shards are never compressed, and a small
  compressed file can expand to any size. The whole shard is refused.
- a member over ``max_member_bytes``, a header with a bad checksum, or data cut short: the rest
  of the shard is not read (its header can no longer be trusted to find the next one).
- links, devices, FIFOs, sparse or contiguous files, directories with content, names that are
  absolute, hold a ``..`` component, are not UTF-8 or have no ``.FIELD``, and repeated fields:
  the member is skipped unread (``on_member``) and the shard goes on.
- a sample whose members add up to more than ``max_sample_bytes``: the sample is dropped
  (``on_sample``) and its further members skipped unread.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import unquote, urlparse

__all__ = ["ReadLimits", "SamplePosition", "ShardError", "compression_of", "is_url", "iter_samples", "local_path",
           "open_shard", "open_shard_at", "scheme_of", "seekable"]

BLOCK = 512
# A pax header or GNU long name holds a few path and time records; 64 KiB is 16x the longest
# path Linux accepts (PATH_MAX 4096), so no legitimate header comes near it.
_MAX_EXTENDED_HEADER = 64 << 10
_SKIP_CHUNK = 1 << 20  # skipped data is read and dropped in pieces of this size

# Leading bytes of the compressed formats ``tarfile`` and common tools would auto-detect.
_COMPRESSION_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
                      (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x04\x22\x4d\x18", "lz4"))
_REFUSED_TYPES = {b"1": "hard link", b"2": "symbolic link", b"3": "character device", b"4": "block device",
                  b"6": "FIFO", b"7": "contiguous file", b"S": "sparse file", b"K": "GNU long link name",
                  b"V": "volume label", b"M": "multi-volume continuation", b"D": "GNU dump directory"}


class ShardError(ValueError):
    """A shard that cannot be read on: compressed, a header that lies, data cut short."""


@dataclass(frozen=True, kw_only=True)
class ReadLimits:
    """Bounds of :func:`iter_samples` (see ``LoaderConfig`` for the defaults' reasons)."""

    max_member_bytes: int
    max_sample_bytes: int


def scheme_of(url: str) -> str | None:
    """The URL scheme of ``url`` (``"pipe"``, ``"s3"``, ...), or None for a local path.

    One letter is a Windows drive, not a scheme; a name that starts with ``/`` or ``.`` is a
    path whatever follows."""
    if url.startswith("pipe:"):
        return "pipe"
    if url.startswith(("/", ".")):
        return None
    scheme = urlparse(url).scheme
    return scheme if len(scheme) > 1 else None


def is_url(name: str) -> bool:
    """Whether ``name`` is a URL (has a scheme) rather than a local path."""
    return scheme_of(name) is not None


def local_path(url: str) -> str | None:
    """The local path of a plain path or ``file:`` URL; None for any other URL."""
    scheme = scheme_of(url)
    if scheme is None:
        return url
    if scheme == "file":
        return unquote(urlparse(url).path)
    return None


def open_shard(url: str, *, allow_pipe: bool = False) -> BinaryIO:
    """A binary stream of the shard ``url``.

    Local paths and ``file:`` URLs: ``open()``. ``pipe:CMD``: webdataset's pipe opener, which
    runs CMD in a shell, only with ``allow_pipe``; otherwise :class:`ValueError`. Any other
    scheme: ``fsspec`` (``ValueError`` when it is not installed)."""
    path = local_path(url)
    if path is not None:
        return open(path, "rb")
    if scheme_of(url) == "pipe":
        if not allow_pipe:
            raise ValueError(pipe_refusal(url))
        from webdataset.gopen import gopen

        return gopen(url, "rb")  # pyright: ignore[reportReturnType]  (its Pipe is a binary stream)
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"shard {url!r}: install fsspec with the filesystem driver for "
                         f"{scheme_of(url)}:// to read it") from None
    # One URL gives one OpenFile; fsspec's annotation covers the list form (OpenFiles) too.
    return fsspec.open(url, "rb").open()  # pyright: ignore[reportAttributeAccessIssue]


def seekable(stream: BinaryIO) -> bool:
    """Whether ``stream`` can seek (files and most fsspec files can; a pipe cannot)."""
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def open_shard_at(url: str, offset: int, *, allow_pipe: bool = False) -> BinaryIO:
    """:func:`open_shard` positioned at byte ``offset``: a seek where the stream can, otherwise
    the bytes before it are read and dropped. Raises :class:`ShardError` when the shard ends
    before ``offset``."""
    stream = open_shard(url, allow_pipe=allow_pipe)
    if not offset:
        return stream
    try:
        if seekable(stream):
            stream.seek(offset)
        elif _skip(stream, offset) < offset:
            raise ShardError(f"the shard ends before byte {offset}")
    except BaseException:
        stream.close()
        raise
    return stream


def pipe_refusal(url: str) -> str:
    """The error message for a ``pipe:`` shard given without the opt-in."""
    return (f"shard {url!r} is a pipe: URL, which runs a shell command; pass allow_pipe=True "
            "(microturn train --allow-pipe) to run it, or write ./NAME for a local file whose name "
            "starts with pipe:")


def compression_of(head: bytes) -> str | None:
    """The compression format whose magic bytes start ``head``, or None."""
    for magic, name in _COMPRESSION_MAGIC:
        if head.startswith(magic):
            return name
    return None


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    parts, left = [], n
    while left:
        data = stream.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _skip(stream: BinaryIO, n: int) -> int:
    """Read and drop ``n`` bytes in bounded pieces; returns how many there were."""
    done = 0
    while done < n:
        data = stream.read(min(_SKIP_CHUNK, n - done))
        if not data:
            break
        done += len(data)
    return done


def _skip_member(stream: BinaryIO, on_member: Callable[[str], None], what: str, reason: str, padded: int,
                 data_at: int) -> None:
    """Report ``what`` (a member) as skipped for ``reason`` and read past its ``padded`` bytes."""
    on_member(f"{what}: {reason}; skipped")
    got = _skip(stream, padded)
    if got < padded:
        raise ShardError(f"truncated at byte {data_at + got}")


def _octal(field: bytes, what: str, offset: int) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for values over the 11 octal digits
        if field[0] & 0x40:
            raise ShardError(f"header at byte {offset}: negative {what}")
        value = field[0] & 0x3F
        for b in field[1:]:
            value = value << 8 | b
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ShardError(f"header at byte {offset}: {what} {text!r} is not an octal number") from None


def _checksum_ok(header: bytes, offset: int) -> bool:
    try:
        stored = _octal(header[148:156], "checksum", offset)
    except ShardError:
        return False
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + 8 * 32
    return stored in (unsigned, signed)


def _pax_records(data: bytes, offset: int) -> dict[str, str]:
    out, at = {}, 0
    while at < len(data) and data[at:at + 1] != b"\0":
        space = data.find(b" ", at)
        if space < 0:
            raise ShardError(f"pax header at byte {offset}: malformed record")
        try:
            length = int(data[at:space])
        except ValueError:
            raise ShardError(f"pax header at byte {offset}: malformed record length") from None
        record = data[space + 1:at + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ShardError(f"pax header at byte {offset}: malformed record")
        key, _, value = record[:-1].partition(b"=")
        try:
            out[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ShardError(f"pax header at byte {offset}: a record is not UTF-8") from None
        at += length
    return out


def _bad_name(name: str) -> str | None:
    if not name:
        return "an empty name"
    if name.startswith("/"):
        return "an absolute name"
    if ".." in name.split("/"):
        return "a '..' component"
    if "\0" in name:
        return "a NUL byte"
    if "." not in name.rsplit("/", 1)[-1]:
        return "no .FIELD suffix"
    return None


def _split_name(name: str) -> tuple[str, str]:
    """(key, field) the way webdataset groups members: the folder and the base name up to its
    first dot are the key, the rest is the field."""
    folder, _, base = name.rpartition("/")
    stem, _, field = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), field


@dataclass
class SamplePosition:
    """Where the sample :func:`iter_samples` yielded last lies in its tar: ``start``, the byte of
    its first header (a pax or long-name header before it included), and ``end``, the byte
    where whatever follows it begins (the next sample's first header, or the end of the
    archive). Reading again from ``end`` gives the samples after it; from ``start``, it again."""

    start: int = 0
    end: int = 0


def iter_samples(stream: BinaryIO, url: str, limits: ReadLimits, *, on_member: Callable[[str], None],
                 on_sample: Callable[[str], None], start: int = 0,
                 position: SamplePosition | None = None) -> Iterator[dict]:
    """Raw samples (``{"__key__", "__url__", FIELD: bytes, ...}``) of the tar on ``stream``.

    ``on_member(message)`` is called for each member skipped unread, ``on_sample(message)`` for
    each sample dropped whole (over ``max_sample_bytes``, or cut off by the end of a truncated
    shard). Raises :class:`ShardError` for a shard that cannot be read on, after yielding the
    samples before the problem; a stream with no tar header at all is a ``ShardError`` too.

    ``start`` is the byte of the tar that ``stream`` is at: a ``SamplePosition`` of an earlier
    reading, to go on from there (the compression and empty-file checks are those of byte 0,
    so they are not made again). ``position``, when given, is set before each sample is yielded.
    """
    offset = start
    resumed = start > 0
    member_start: int | None = None  # first header of the member being read (its pax header's, if any)
    sample_start = start
    pending: dict[str, str] = {}  # path/size from a pax header or GNU long name, for the next member
    current: dict | None = None
    current_bytes = 0
    dropped_key: str | None = None  # a sample over the size cap: its later members are skipped
    headers = 0

    def finish(end: int):
        nonlocal current, current_bytes
        sample, current, current_bytes = current, None, 0
        assert sample is not None  # called only with a sample under way
        if position is not None:
            position.start, position.end = sample_start, end
        return sample

    while True:
        if member_start is None:
            member_start = offset
        header = _read_exact(stream, BLOCK)
        if offset == 0:
            kind = compression_of(header)
            if kind:
                raise ShardError(f"{kind}-compressed stream; shards are plain tars and never compressed")
        if len(header) < BLOCK:
            if header or (headers == 0 and not resumed):
                if current is not None:
                    on_sample(f"sample {current['__key__']!r} of {url!r} cut off by the end of the shard")
                raise ShardError(f"truncated at byte {offset + len(header)}" if headers or resumed else
                                 ("empty file" if not header else "not a tar (shorter than one header)"))
            break  # no end blocks: tolerated, as tarfile does, when the data ended on a header
        if header == bytes(BLOCK):
            member_start = offset
            break  # end of archive
        if not _checksum_ok(header, offset):
            if current is not None:
                on_sample(f"sample {current['__key__']!r} of {url!r} cut off by a bad header")
            raise ShardError(f"header at byte {offset} has a bad checksum" + ("" if headers else " (not a tar)"))
        headers += 1
        size = _octal(header[124:136], "size", offset)
        kind = header[156:157]
        data_at = offset + BLOCK
        padded = size + (-size % BLOCK)
        offset = data_at + padded
        if kind in (b"x", b"g", b"L"):
            if size > _MAX_EXTENDED_HEADER:
                raise ShardError(f"extended header at byte {data_at - BLOCK} claims {size} bytes "
                                 f"(more than {_MAX_EXTENDED_HEADER})")
            data = _read_exact(stream, padded)
            if len(data) < padded:
                raise ShardError(f"truncated at byte {data_at + len(data)}")
            data = data[:size]
            if kind == b"x":
                records = _pax_records(data, data_at - BLOCK)
                pending.update({k: v for k, v in records.items() if k in ("path", "size")})
            elif kind == b"L":
                pending["path_bytes"] = data.split(b"\0", 1)[0].decode("latin-1")
            continue
        this_start, member_start = member_start, None
        if "size" in pending:
            try:
                size = int(pending["size"])
            except ValueError:
                raise ShardError(f"pax header before byte {data_at}: size {pending['size']!r}") from None
            padded = size + (-size % BLOCK)
            offset = data_at + padded
        raw_name = header[:100].split(b"\0", 1)[0]
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0]
            if prefix:
                raw_name = prefix + b"/" + raw_name
        if "path_bytes" in pending:
            raw_name = pending["path_bytes"].encode("latin-1")
        if "path" in pending:
            name: str | None = pending["path"]
        else:
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                name = None
        pending = {}
        if size > limits.max_member_bytes:
            if current is not None:
                if name is not None and not _bad_name(name) and _split_name(name)[0] != current["__key__"]:
                    yield finish(this_start)  # the oversized member belongs to the next sample: this one is complete
                else:
                    on_sample(f"sample {current['__key__']!r} of {url!r} cut off by an oversized member")
            raise ShardError(f"member {name or raw_name!r} claims {size} bytes, over max_member_bytes="
                             f"{limits.max_member_bytes}; the rest of the shard is not read")

        what = f"member {name if name is not None else raw_name!r} of {url!r}"
        if kind in _REFUSED_TYPES:
            _skip_member(stream, on_member, what, f"a {_REFUSED_TYPES[kind]}, which a shard never holds", padded,
                         data_at)
            continue
        if kind == b"5":
            if size:
                _skip_member(stream, on_member, what, "a directory with content", padded, data_at)
            continue  # an empty directory entry holds nothing: nothing is lost
        if kind not in (b"0", b"\0"):
            _skip_member(stream, on_member, what, f"unknown member type {kind!r}", padded, data_at)
            continue
        if name is None:
            _skip_member(stream, on_member, what, "a name that is not UTF-8", padded, data_at)
            continue
        bad = _bad_name(name)
        if bad:
            _skip_member(stream, on_member, what, f"{bad} in its name", padded, data_at)
            continue
        key, field = _split_name(name)
        if current is not None and key != current["__key__"]:
            yield finish(this_start)
        if key == dropped_key:
            _skip_member(stream, on_member, what, f"sample {key!r} already dropped", padded, data_at)
            continue
        if current is not None and field in current:
            _skip_member(stream, on_member, what, f"a second {field!r} field of sample {key!r}", padded, data_at)
            continue
        if current_bytes + size > limits.max_sample_bytes:
            on_sample(f"sample {key!r} of {url!r} is over max_sample_bytes={limits.max_sample_bytes}")
            dropped_key, current, current_bytes = key, None, 0
            got = _skip(stream, padded)
            if got < padded:
                raise ShardError(f"truncated at byte {data_at + got}")
            continue
        data = _read_exact(stream, size)  # no padding read into it: no copy of up to the cap
        got = len(data) + (_skip(stream, padded - size) if len(data) == size else 0)
        if got < padded:
            on_sample(f"sample {key!r} of {url!r} cut off by the end of the shard")
            raise ShardError(f"truncated at byte {data_at + got}")
        if current is None:
            current = {"__key__": key, "__url__": url}
            sample_start = this_start
            dropped_key = None
        current[field] = data
        current_bytes += size
    if current is not None:
        yield finish(member_start if member_start is not None else offset)


def read_all(data: bytes, url: str, limits: ReadLimits) -> tuple[list[dict], list[str]]:
    """Every sample of an in-memory tar and the messages of what was skipped (for tests and tools);
    a :class:`ShardError` propagates."""
    notes: list[str] = []
    samples = list(iter_samples(io.BytesIO(data), url, limits, on_member=notes.append, on_sample=notes.append))
    return samples, notes
