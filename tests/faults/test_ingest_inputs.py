"""Faults in ingest's inputs: every bad entry is one reject with its reason, the rest complete.

Each test runs the real ingest command (``python -m microturn.pipelines.ingest``: Beam's
DirectRunner, real ffmpeg) over files it makes, in a subprocess whose generous timeout only
guards against a hang (a FIFO or ``/dev/zero`` once hung ingest forever); it asserts no speed.

- unreadable entries in an input folder: a name that is not UTF-8, a FIFO, a link to
  ``/dev/zero``, a broken link, a link loop, a socket, an oversized sidecar;
- names ffmpeg would read as an option or a protocol (``-report``, ``concat:other.wav``,
  ``10:30.wav``, ...), given as they are, relative to the working folder;
- limits on what is decoded: an MP3 whose header claims 1 s and holds 9 s, a streaming WAV
  (no length in its header), a sidecar cue of a million words.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from microturn.pipelines.tables import read_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))  # the media corpus
from media_corpus import SAMPLE_WAV, ffmpeg, lying_mp3, streaming_wav  # noqa: E402

pytestmark = pytest.mark.slow

HANG_GUARD_S = 900  # far past a normal run (about 30 s here); only a hang reaches it


def ingest(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "microturn.pipelines.ingest", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def clip(path: str, start: float, dur: float = 1.5) -> str:
    # A file: URL, so that the name cannot steer this ffmpeg either.
    ffmpeg("-ss", str(start), "-t", str(dur), "-i", SAMPLE_WAV, "-f", "wav",
           "file:" + os.path.abspath(path))
    return path


def rows(out: str, table: str) -> list[dict]:
    return read_table(out, table).to_pylist()


def test_unreadable_entries_are_rejects_and_the_rest_completes(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    clip(str(src / "good.wav"), 6.5, 2.0)
    clip(os.fsdecode(os.path.join(os.fsencode(src), b"caf\xe9.wav")), 10.0)  # Latin-1 name
    os.mkfifo(src / "pipe.wav")  # no writer: opening it for reading waits forever
    (src / "zero.wav").symlink_to("/dev/zero")  # reading it never ends
    (src / "broken.wav").symlink_to(src / "gone.wav")
    (src / "loop.wav").symlink_to(src / "loop.wav")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "sock.wav"))
    # The good file's sidecar is 17 MiB, over the 16 MiB cap: refused unread, words lost only.
    with open(src / "good.srt", "wb") as f:
        f.write(b"1\n00:00:00,000 --> 00:00:01,000\n" + b"word " * (17 << 18) + b"\n")
    out = str(tmp_path / "out")
    ingest("--input", f"{src}/*", "--output", out)

    convs = rows(out, "conversations")
    assert [os.path.basename(c["source_uri"]) for c in convs] == ["good.wav"]
    got = {os.path.basename(r["input"]): r for r in rows(out, "rejects")}
    assert len(got) == len(rows(out, "rejects")), "one reject per entry"
    expected = {
        "caf\\xe9.wav": ("match", "NotUtf8Name", "not valid UTF-8"),
        "pipe.wav": ("match", "NotARegularFile", "FIFO"),
        "zero.wav": ("match", "NotARegularFile", "character device"),
        "broken.wav": ("match", "BrokenSymlink", "does not exist"),
        "loop.wav": ("match", "OSError", "symbolic links"),
        "sock.wav": ("match", "NotARegularFile", "socket"),
        "good.srt": ("sidecar", "SidecarError", "larger than 16 MiB"),
    }
    assert set(got) == set(expected)
    for name, (stage, error_type, words) in expected.items():
        r = got[name]
        assert (r["stage"], r["error_type"]) == (stage, error_type), r
        assert words in r["message"], r
    assert got["caf\\xe9.wav"]["input"] == f"{src}/caf\\xe9.wav"  # the byte, escaped


TRICKY_NAMES = [
    "other.wav", "concat:other.wav", "-report", "10:30.wav", "pipe:1", "file:x.wav",
    "has space.wav", "new\nline.wav", "a|b.wav", "a;b.wav", "-y.wav",
]


def test_names_reach_ffmpeg_as_files(tmp_path):
    """Each name, given as it is relative to the working folder, is decoded from its own bytes
    and recorded under its own hash; ``-report`` writes no log into the working folder."""
    src = tmp_path / "in"
    src.mkdir()
    for k, name in enumerate(TRICKY_NAMES):  # different audio in every file
        clip(str(src / name), 6.5 + 1.5 * k)
    out = str(tmp_path / "out")
    ingest(*[f"--input={name}" for name in TRICKY_NAMES], "--output", out, cwd=str(src))

    assert sorted(os.listdir(src)) == sorted(TRICKY_NAMES)  # no ffmpeg-*.log
    assert rows(out, "rejects") == []
    sources = {r["uri"]: r for r in rows(out, "sources")}
    assert sorted(sources) == sorted(TRICKY_NAMES)
    convs = {c["source_uri"]: c for c in rows(out, "conversations")}
    for name in TRICKY_NAMES:
        data = (src / name).read_bytes()
        assert sources[name]["sha256"] == hashlib.sha256(data).hexdigest(), name
        own, _ = sf.read(str(src / name), dtype="float32")
        conv = convs[name]
        normalised, _ = sf.read(os.path.join(out, conv["media_dir"], conv["audio_files"][0]),
                                dtype="float32")
        assert normalised.shape == own.shape and np.max(np.abs(normalised - own)) < 1e-4, name


def test_limits_hold_on_what_is_decoded(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    lying_mp3(str(src / "liar.mp3"), says_s=1, holds_s=9)
    streaming_wav(str(src / "stream.wav"), start=6.5, dur=2.5)
    # One cue of a million words (it took 104 s and lost all but 3,500 words), then a real one.
    with open(src / "stream.srt", "w") as f:
        f.write("1\n00:00:00,100 --> 00:00:00,700\n" + "hello " * 1_000_000 + "\n\n"
                "2\n00:00:00,100 --> 00:00:00,700\nHello?\n")
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=6:c=pink:r=16000:a=0.05", str(src / "long.flac"))
    out = str(tmp_path / "out")
    ingest("--input", f"{src}/*", "--output", out, "--max-duration-s", "4")

    got = {os.path.basename(r["input"]): r for r in rows(out, "rejects")}
    assert set(got) == {"liar.mp3", "long.flac", "stream.srt"}, got
    liar = got["liar.mp3"]
    assert (liar["stage"], liar["error_type"]) == ("normalise", "TooLongError")
    assert "more than 4 s" in liar["message"] and "header says 1.1 s" in liar["message"]
    assert got["long.flac"]["stage"] == "probe" and "over the limit" in got["long.flac"]["message"]
    sidecar = got["stream.srt"]
    assert sidecar["error_type"] == "SidecarOverLimit" and "1000000 words" in sidecar["message"]

    (conv,) = rows(out, "conversations")
    assert conv["source_uri"].endswith("stream.wav") and conv["duration_ms"] == 2500
    sources = {os.path.basename(r["uri"]): r for r in rows(out, "sources")}
    assert sources["stream.wav"]["duration_ms"] == 2500
    assert [w["text"] for w in rows(out, "words")] == ["Hello?"]
