"""End to end with video: a conversation with a normalised video gives samples whose clips
decode to patches of the planned grid; a broken video is a reject, not a crash."""

from __future__ import annotations

import os
import subprocess

import numpy as np
from webdataset.compat import WebDataset  # its own module: pyright does not follow the package re-export

from microturn.pipelines import media
from microturn.pipelines.shard.run import run
from microturn.pipelines.tables import read_table
from microturn.schemas.sample import decode_sample
from microturn.schemas.video import patch_grid
from microturn.testing.records import two_streams, write_records


def _normalised_video(tmp, seconds: float) -> str:
    src, out = str(tmp / "src.mp4"), str(tmp / "norm.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=426x240:rate=25", "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", src], check=True)
    stream = media.probe(src).video
    assert stream is not None
    media.normalise_video(src, out, stream=stream)
    return out


def test_video_samples_carry_clips_of_the_planned_grid_and_bad_video_is_rejected(tmp_path):
    video = _normalised_video(tmp_path, 12.0)
    good = two_streams("s-00000000000000e1", seconds=12.0)
    broken = two_streams("s-00000000000000e2", seconds=12.0)
    bad_video = str(tmp_path / "broken.mp4")
    with open(bad_video, "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    root = write_records(str(tmp_path / "rec"), [good, broken],
                         video={"s-00000000000000e1": video, "s-00000000000000e2": bad_video})
    out = tmp_path / "out"
    summary = run(["--input", root, "--output", str(out), "--window-chunks", "25", "--patch-budget", "12"],
                  print_summary=False)
    ph, pw = patch_grid(426, 240, patch_budget=12)
    decoded = [decode_sample(s) for rel in sorted(os.listdir(out / "train"))
               if rel.endswith(".tar") for s in WebDataset(str(out / "train" / rel), shardshuffle=False)]
    assert len(decoded) == summary["samples"] == 2 * 3  # 60 chunks: windows of 25, 25, 10; two roles
    for d in decoded:
        k = d["meta"]["chunks"]
        assert d["video_KPFHWC"].shape == (k, ph * pw, 2, 40, 40, 3)
        assert d["meta"]["video"] == {"width": 40 * pw, "height": 40 * ph, "patches_h": ph, "patches_w": pw,
                                      "frames": 2 * k}
        assert d["video_KPFHWC"].std() > 10  # a moving test picture, not blank frames
    by_window = {}
    for d in decoded:
        by_window.setdefault(d["meta"]["window"], []).append(d["video_KPFHWC"])
    for clips in by_window.values():  # both role assignments of a window share one clip
        assert np.array_equal(clips[0], clips[1])
    rejects = read_table(str(out), "rejects").to_pylist()
    assert [(r["input"], r["error_type"]) for r in rejects] == [("s-00000000000000e2", "video_decode")]
    assert all(s["has_video"] for s in read_table(str(out), "samples").to_pylist())
