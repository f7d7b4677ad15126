"""A full disk or a read-only filesystem under a stage's output.

Each test mounts a small tmpfs (skipped, with the reason, where mounting is not permitted),
writes a good output there, fills the disk (to nothing free, or to a little room so the run
gets further before a write fails) or remounts it read-only, and reruns the stage: one error
line about the output, non-zero exit, no reject blaming an input, the earlier output byte for
byte as it was, and no temporary, pending or lock file left.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from microturn.testing.files import tree
from stage_runs import SHARD_ARGS, error_lines, leftovers, make_records, run_stage

pytestmark = pytest.mark.slow

DISK_BYTES = 32 << 20


@pytest.fixture
def disk(tmp_path):
    where = tmp_path / "disk"
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk, room: int) -> None:
    """Fill ``disk`` until a write fails with ENOSPC, then free ``room`` bytes."""
    path = disk / "filler"
    block = b"\0" * (1 << 20)
    with open(path, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    size = os.path.getsize(path)
    os.truncate(path, max(0, size - room))


def assert_output_error(proc, stage: str, out) -> None:
    assert proc.returncode not in (0, -9), proc.stderr[-3000:]
    lines = error_lines(proc)
    assert lines and lines[-1].startswith(f"microturn {stage}: error: cannot write the output"), proc.stderr[-3000:]
    assert [ln for ln in lines if ln.startswith("microturn")] == [lines[-1]]
    assert "Traceback" not in proc.stderr
    assert leftovers(out) == []


@pytest.mark.parametrize("room", [0, 40 << 10, 400 << 10])
def test_shard_on_a_full_disk(disk, tmp_path, room):
    records = make_records(tmp_path / "rec")
    out = disk / "out"
    assert run_stage("shard", "--input", records, "--output", out, *SHARD_ARGS).returncode == 0
    before = tree(out)
    fill(disk, room)
    # Another window size: every tar and table differs from the earlier run's.
    proc = run_stage("shard", "--input", records, "--output", out, *SHARD_ARGS[2:], "--window-chunks", "20")
    assert_output_error(proc, "shard", out)
    assert tree(out) == before


def test_shard_on_a_read_only_disk(disk, tmp_path):
    records = make_records(tmp_path / "rec")
    out = disk / "out"
    assert run_stage("shard", "--input", records, "--output", out, *SHARD_ARGS).returncode == 0
    before = tree(out)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    proc = run_stage("shard", "--input", records, "--output", out, *SHARD_ARGS)
    assert_output_error(proc, "shard", out)
    assert tree(out) == before


def test_ingest_on_a_full_disk(disk, speech_dir):
    out = disk / "out"
    proc = run_stage("ingest", "--input", speech_dir / "*.wav", "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = tree(out)
    fill(disk, 4 << 10)  # a page: room for the lock, not for the media (about 40 KiB of FLAC)
    proc = run_stage("ingest", "--input", speech_dir / "*.wav", "--output", out)
    assert_output_error(proc, "ingest", out)
    assert tree(out) == before


def test_synthesize_on_a_full_disk(disk, scripts_file):
    out = disk / "out"
    args = ["--scripts", scripts_file, "--seed", "3"]
    proc = run_stage("synthesize", *args, "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = tree(out)
    fill(disk, 4 << 10)  # a page: room for the lock, not for the stems
    proc = run_stage("synthesize", *args, "--output", out)
    assert_output_error(proc, "synthesize", out)
    assert tree(out) == before


def test_ingest_of_a_video_on_a_full_disk(disk, tmp_path, speech_dir):
    # ffmpeg writes the normalised video itself: its "No space left on device" is about the
    # output, and the earlier video.mp4 must not be replaced by half a file.
    clip = tmp_path / "clips" / "call.mp4"
    clip.parent.mkdir()
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error",
                    "-f", "lavfi", "-i", "nullsrc=size=320x240:rate=25,geq=random(1)*255:128:128",
                    "-i", str(speech_dir / "call.wav"), "-t", "2", "-c:v", "libx264", "-preset", "ultrafast",
                    "-c:a", "aac", "-shortest", str(clip)], check=True)
    small = tmp_path / "small.toml"
    small.write_text("video_max_side = 64\n")
    out = disk / "out"
    proc = run_stage("ingest", "--input", clip, "--output", out, "--config", small)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = tree(out)
    assert any(p.endswith("video.mp4") for p in before)
    fill(disk, 8 << 10)
    # The rerun's video (noise at 320x240, not 64x48) is larger than the earlier one and the room left.
    proc = run_stage("ingest", "--input", clip, "--output", out)
    assert_output_error(proc, "ingest", out)
    assert "video.mp4" in error_lines(proc)[-1]
    assert tree(out) == before
