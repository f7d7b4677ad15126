"""Shard names are data, and tars are read within bounds.

Names: whatever a glob matches is opened as a local file by our own code, never as a URL or a
command (``pipe:...``, ``s3:...``, ``-x``, ``a::b``, brackets and braces in names); a ``pipe:`` URL
runs only with ``allow_pipe``. Tars: compressed streams, oversized members, lying headers, links,
devices, odd names and oversized samples are refused, counted and warned, and the good samples
around them still arrive; nothing is read whole before its size is checked.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import tarfile
import tracemalloc
import warnings

import pytest

from microturn.trainer.data import glob_shards, make_loader, resolve_shards
from microturn.trainer.shard_reader import ReadLimits, ShardError, read_all
from microturn.trainer.tokenizer import ByteTokenizer
from trainer_shards import train_shards

TOK = ByteTokenizer()
LIMITS = ReadLimits(max_member_bytes=64 << 20, max_sample_bytes=128 << 20)
PIPE_NAME = "pipe:touch X; cat train-000000.tar; echo .tar"


def _payload(path: str) -> bytes:
    """The tar's members without its end blocks."""
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    with open(path, "rb") as f:
        return f.read()[:last.offset_data + -(-last.size // 512) * 512]


def _keys_of(path: str) -> list[str]:
    with tarfile.open(path) as tar:
        return list(dict.fromkeys(m.name.split(".", 1)[0] for m in tar.getmembers()))


def _read(urls, **kw):
    loader = make_loader(urls, tokenizer=TOK, batch_size=4, max_len=4000, buffer=0, shuffle_shards=False,
                         max_text_per_chunk=64, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = [k for b in loader for k in b["keys"]]
    return keys, loader.stats, [str(w.message) for w in caught]


def test_glob_matches_are_files_whatever_their_names(tmp_path, monkeypatch):
    real = train_shards()
    monkeypatch.chdir(tmp_path)
    shutil.copy(real[0], "train-000000.tar")
    # Names that a URL opener, a shell or a brace/glob expander would read as something else;
    # each holds a real shard, so its samples arriving shows it was read as that file.
    as_files = {"-rf.tar": real[1], "a::b.tar": real[2], "s3:bucket.tar": real[3], "x[1].tar": real[4],
                "y{0..1}.tar": real[5], "file:z.tar": real[6], "with space.tar": real[1]}
    for name, src in as_files.items():
        shutil.copy(src, name)
    with open(PIPE_NAME, "wb") as f:  # the file: were it run, X would appear
        f.write(b"not a tar, and not a command either\n" * 20)
    found = glob_shards("*.tar")
    assert len(found) == 2 + len(as_files) and all(os.path.isabs(p) for p in found)
    assert resolve_shards(found) == found  # resolving again changes nothing (no brace or glob expansion)
    for name in ("a::b.tar", "-rf.tar", "x[1].tar", "y{0..1}.tar"):  # an existing file is that file
        assert resolve_shards(name) == [os.path.abspath(name)]
    keys, stats, messages = _read("*.tar")
    assert not os.path.exists("X") and not os.path.exists(tmp_path / "X")
    expected = _keys_of(real[0]) + [k for src in as_files.values() for k in _keys_of(src)]
    assert sorted(keys) == sorted(expected)
    assert stats["shard_errors"] == 1 and stats["samples"] == len(expected)
    assert any("skipped a shard" in m and "pipe:touch X" in m and "bad checksum" in m for m in messages)


def test_a_pipe_url_runs_only_when_allowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shard = train_shards()[0]
    url = f"pipe:touch X; cat '{shard}'"
    for urls in (url, [url], f"{shard}::{url}"):
        with pytest.raises(ValueError, match="allow_pipe"):
            make_loader(urls, tokenizer=TOK, batch_size=2, max_len=4000)
    assert not os.path.exists("X")
    keys, stats, _ = _read(url, allow_pipe=True)  # the opt-in: the command runs, as asked
    assert os.path.exists("X") and sorted(keys) == sorted(_keys_of(shard))


def test_the_cli_refuses_a_pipe_url_before_any_work(tmp_path, monkeypatch):
    from microturn.trainer.run import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--allow-pipe"):
        main(["--config", "tiny-cpu", "--shards", "pipe:touch X; cat a.tar", "--output", "out"])
    assert not os.path.exists("X") and not os.path.exists("out")


@pytest.mark.parametrize("pattern", ["missing.tar", "a.tar,b.tar", "train-{000000..000001}.tar"])
def test_the_cli_refuses_local_shards_that_do_not_exist_before_any_work(tmp_path, monkeypatch, pattern):
    # A typo, a comma-joined list (--shards repeats instead) or a brace range past the last shard.
    from microturn.trainer.run import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train-000000.tar").write_bytes(b"")
    with pytest.raises(SystemExit, match="do not exist"):
        main(["--config", "tiny-cpu", "--shards", pattern, "--output", "out"])
    assert not os.path.exists("out")


# ------------------------------------------------------------------ crafted tars


def _member(name: str, data: bytes = b"", *, type_=tarfile.REGTYPE, size: int | None = None,
            linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, linkname
    info.size = len(data) if size is None else size
    head = info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="surrogateescape")
    return head + data + bytes(-len(data) % 512)


def _good(key: str, n: int = 3) -> bytes:
    return b"".join(_member(f"{key}.f{i}", f"{key}-{i}".encode()) for i in range(n))


END = bytes(1024)


def _keys(samples: list[dict]) -> list[str]:
    return [s["__key__"] for s in samples]


@pytest.mark.parametrize("bad, reason", [
    (_member("k1.lnk", type_=tarfile.SYMTYPE, linkname="/etc/passwd"), "symbolic link"),
    (_member("k1.hard", type_=tarfile.LNKTYPE, linkname="k0.f0"), "hard link"),
    (_member("k1.dev", type_=tarfile.CHRTYPE), "character device"),
    (_member("k1.blk", type_=tarfile.BLKTYPE), "block device"),
    (_member("k1.fifo", type_=tarfile.FIFOTYPE), "FIFO"),
    (_member("k1.dir", b"x" * 700, type_=tarfile.DIRTYPE), "directory with content"),
    (_member("/etc/k1.json", b"{}"), "absolute"),
    (_member("../k1.json", b"{}"), "'..'"),
    (_member("a/../../k1.json", b"{}"), "'..'"),
    (_member("noextension", b"data"), "no .FIELD"),
    (_member("\udcff\udcfe.json", b"{}"), "not UTF-8"),
    (_member("k1.f0", b"again"), "second 'f0'"),
    (_member("k1.sparse", b"x" * 10, type_=tarfile.GNUTYPE_SPARSE), "sparse"),
])
def test_members_a_shard_never_holds_are_skipped_and_counted(bad, reason):
    data = _good("k0") + _good("k1", 1) + bad + _good("k1", 3)[512 + 512:] + _good("k2") + END
    samples, notes = read_all(data, "crafted.tar", LIMITS)
    assert _keys(samples) == ["k0", "k1", "k2"]
    assert samples[0] == {"__key__": "k0", "__url__": "crafted.tar", "f0": b"k0-0", "f1": b"k0-1", "f2": b"k0-2"}
    assert samples[1]["f0"] == b"k1-0" and set(samples[1]) == {"__key__", "__url__", "f0", "f1", "f2"}
    assert len(notes) == 1 and reason in notes[0] and "skipped" in notes[0]


def test_an_empty_directory_entry_is_harmless():
    data = _member("d", type_=tarfile.DIRTYPE) + _good("k0") + END
    samples, notes = read_all(data, "d.tar", LIMITS)
    assert _keys(samples) == ["k0"] and notes == []


def test_a_header_claiming_gigabytes_is_refused_without_reading_it():
    # 3 GiB claimed in a file of a few KB (the 3 GiB member), in a member and in a pax header.
    for bad in (_member("k1.video.mp4", size=3 << 30), _member("k1.pax", size=3 << 30, type_=tarfile.XHDTYPE),
                _member("././@LongLink", size=3 << 30, type_=tarfile.GNUTYPE_LONGNAME)):
        data = _good("k0") + bad + b"x" * 4096 + END
        tracemalloc.start()
        with pytest.raises(ShardError, match=r"claims 3221225472 bytes"):
            read_all(data, "huge.tar", LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1 << 20, peak  # nothing near the claimed size was allocated
    # The samples before the bad member still arrive through the loader's reader.
    samples = []
    with pytest.raises(ShardError):
        from microturn.trainer.shard_reader import iter_samples

        for s in iter_samples(io.BytesIO(_good("k0") + _member("k1.x", size=3 << 30)), "h.tar", LIMITS,
                              on_member=print, on_sample=print):
            samples.append(s)
    assert _keys(samples) == ["k0"]


def test_member_and_sample_caps_are_configurable():
    limits = ReadLimits(max_member_bytes=1000, max_sample_bytes=1500)
    big = _member("k1.a", b"a" * 900) + _member("k1.b", b"b" * 900)  # each under 1000, together over 1500
    samples, notes = read_all(_good("k0") + big + _good("k2") + END, "caps.tar", limits)
    assert _keys(samples) == ["k0", "k2"] and len(notes) == 1 and "max_sample_bytes=1500" in notes[0]
    with pytest.raises(ShardError, match="max_member_bytes=1000"):
        read_all(_good("k0") + _member("k1.a", b"a" * 1001) + END, "caps.tar", limits)


@pytest.mark.parametrize("compress, name", [(gzip.compress, "gzip"), (bz2.compress, "bzip2"),
                                            (lzma.compress, "xz")])
def test_compressed_tars_are_refused_before_decompressing(compress, name):
    with open(train_shards()[0], "rb") as f:
        packed = compress(f.read())
    with pytest.raises(ShardError, match=f"{name}-compressed"):
        read_all(packed, "c.tar", LIMITS)


def test_truncated_and_corrupt_tars_keep_the_samples_before_the_damage():
    data = _good("k0") + _good("k1") + END
    cut, notes = [], []
    for at in (len(_good("k0")) + 700, len(_good("k0")) + 512 + 100):  # mid header, mid data
        with pytest.raises(ShardError, match="truncated"):
            from microturn.trainer.shard_reader import iter_samples

            for s in iter_samples(io.BytesIO(data[:at]), "t.tar", LIMITS, on_member=notes.append,
                                  on_sample=notes.append):
                cut.append(s)
    assert _keys(cut) == ["k0", "k0"] and all("k1" in n for n in notes)
    garbled = bytearray(data)
    garbled[len(_good("k0")) + 10] ^= 0xFF  # a byte of k1's first header
    with pytest.raises(ShardError, match="bad checksum"):
        read_all(bytes(garbled), "g.tar", LIMITS)
    for junk, message in ((b"", "empty file"), (b"short", "shorter than one header")):
        with pytest.raises(ShardError, match=message):
            read_all(junk, "j.tar", LIMITS)


def test_the_loader_counts_every_kind_of_bad_shard_and_reads_the_rest(tmp_path):
    good = train_shards()[:2]
    with open(good[0], "rb") as f:
        first = f.read()
    bad = {
        "gzip.tar": gzip.compress(first),
        "huge.tar": _member("x.json", size=3 << 30) + b"{}",
        "links.tar": _payload(good[0]) + _member("evil.json", type_=tarfile.SYMTYPE, linkname="/etc/passwd") + END,
        "empty.tar": END,
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    keys, stats, messages = _read([*good, *(str(tmp_path / n) for n in bad)])
    in_links = _keys_of(good[0])  # links.tar: the same samples, then a symlink member
    assert sorted(keys) == sorted(_keys_of(good[0]) + _keys_of(good[1]) + in_links)
    assert stats["shard_errors"] == 3 and stats["bad_members"] == 1 and stats["skipped"] == 0
    assert sum("skipped a shard" in m for m in messages) == 3 and sum("tar member" in m for m in messages) == 1
