"""Small real shards for the trainer tests, made once per test process by the real shard stage.

Three conversations from the shard tests' corpus: the pyannote phone call (mixed mono), a
two-stream synthetic call, and a 12 s two-stream call with a video (a moving ffmpeg test
picture, 4 patches per chunk at most). Windows of 25 chunks and 256 KiB shards give 34 samples
in 7 tars; 6 samples carry video.
"""

from __future__ import annotations

import atexit
import functools
import glob
import os
import shutil
import subprocess
import tempfile

from microturn.testing.records import real_call, two_streams, write_records

VIDEO_CONVERSATION = "s-00000000000000e1"
WINDOW_CHUNKS = 25


def _normalised_video(tmp: str, seconds: float) -> str:
    from microturn.pipelines import media

    src, out = os.path.join(tmp, "src.mp4"), os.path.join(tmp, "norm.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=160x120:rate=25", "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", src], check=True)
    stream = media.probe(src).video
    assert stream is not None, src  # ffmpeg's test picture always has a video stream
    media.normalise_video(src, out, stream=stream)
    return out


@functools.cache
def train_shards() -> tuple[str, ...]:
    """Paths of the train tars (sorted); made on the first call, removed when the process exits."""
    from microturn.pipelines.shard.run import run

    tmp = tempfile.mkdtemp(prefix="microturn-trainer-shards-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    video = _normalised_video(tmp, 12.0)
    rec = write_records(os.path.join(tmp, "rec"),
                        [real_call(), two_streams(), two_streams(VIDEO_CONVERSATION, seconds=12.0, seed=1)],
                        video={VIDEO_CONVERSATION: video})
    out = os.path.join(tmp, "shards")
    run(["--input", rec, "--output", out, "--window-chunks", str(WINDOW_CHUNKS), "--splits", "train=1",
         "--shard-bytes", "256KiB", "--patch-budget", "4"], print_summary=False)
    shards = tuple(sorted(glob.glob(os.path.join(out, "train", "*.tar"))))
    assert len(shards) >= 4, shards
    return shards


def shard_dir() -> str:
    """The folder holding :func:`train_shards`."""
    return os.path.dirname(train_shards()[0])
