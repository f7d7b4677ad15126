"""Video clips of micro-turn samples (microturn.pipelines.shard.video), end to end through the loader's decoder.

The source is ffmpeg's testsrc2 pattern at an odd size and rate (322x181, 25 fps, 7 s),
normalised to 10 fps by the ingest code; clips are compared with the normalised video's own
frames, decoded and scaled the same way.
"""

import dataclasses
import os
import subprocess

import numpy as np
import pytest

from microturn.pipelines import media
from microturn.pipelines.shard.video import VideoSpec, cut_clip, probe_video
from microturn.schemas.sample import SampleError
from microturn.schemas.video import decode_patches, patch_grid, unpatchify

# Mean absolute error (0..255) of one decoded clip frame against the same frame decoded from the
# normalised video: measured at most 3.3 (2.3-3.1 on average per clip) with the default crf 23;
# a frame one step (100 ms) away differs by at least 8.6, so the bound also checks the timing.
MAX_FRAME_MAE = 5.0


def _ffmpeg(*args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """The normalised video, its patch grid and its frames as the reference, RGB [F, H, W, C]."""
    root = tmp_path_factory.mktemp("video")
    src, norm = str(root / "src.mp4"), str(root / "video.mp4")
    # yuv444p lets x264 keep the odd height
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "7", "-vf", "scale=322:181",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p", src)
    stream = media.probe(src).video
    assert stream is not None
    media.normalise_video(src, norm, stream=stream)
    width, height, duration_ms, frames = probe_video(norm)
    ph, pw = patch_grid(width, height, patch_budget=VideoSpec().patch_budget)
    raw = _ffmpeg("-i", norm, "-vf", f"scale={40 * pw}:{40 * ph}:flags=bicubic", "-pix_fmt", "rgb24",
                  "-f", "rawvideo", "-")
    frames_FHWC = np.frombuffer(raw, np.uint8).reshape(-1, 40 * ph, 40 * pw, 3)
    return {"path": norm, "root": root, "size": (width, height), "duration_ms": duration_ms, "frames": frames,
            "grid": (ph, pw), "frames_FHWC": frames_FHWC}


def test_probe_video_reads_the_normalised_video(video):
    width, height = video["size"]
    assert width == 322 and height in (180, 182)  # normalisation makes the sides even
    assert video["duration_ms"] == 7000 and video["frames"] == 70 == len(video["frames_FHWC"])
    assert video["grid"] == (4, 8)


@pytest.mark.parametrize("start_ms, chunks", [(0, 1), (0, 3), (1400, 3), (3000, 17), (0, 37), (6800, 3), (7400, 3)])
def test_clips_hold_the_frames_of_their_window(video, start_ms, chunks):
    ph, pw = video["grid"]
    clip = cut_clip(video["path"], start_ms=start_ms, chunks=chunks, patches_h=ph, patches_w=pw)
    patches_KPFHWC = decode_patches(clip, patches_h=ph, patches_w=pw, chunks=chunks)
    assert patches_KPFHWC.shape == (chunks, ph * pw, 2, 40, 40, 3)
    got_FHWC = unpatchify(patches_KPFHWC, ph, pw).astype(np.int16)
    # Frame i of the clip is the video's frame at start_ms + 100 i, the last one past the end.
    index = np.minimum(start_ms // 100 + np.arange(2 * chunks), video["frames"] - 1)
    ref_FHWC = video["frames_FHWC"].astype(np.int16)
    mae_F = np.abs(got_FHWC - ref_FHWC[index]).mean(axis=(1, 2, 3))
    assert mae_F.max() < MAX_FRAME_MAE, mae_F
    # Repeats of the last frame stay still: x264 only refines them (measured MAE under 0.2
    # between repeats, against 8.6 or more between neighbouring frames of the video).
    repeats = np.flatnonzero(index == video["frames"] - 1)
    for i in repeats[1:]:
        assert np.abs(got_FHWC[i] - got_FHWC[repeats[0]]).mean() < 0.5


def test_clips_are_byte_identical_fragmented_mp4_without_version_strings(video):
    ph, pw = video["grid"]
    clips = [cut_clip(video["path"], start_ms=1000, chunks=5, patches_h=ph, patches_w=pw) for _ in range(3)]
    assert clips[0] == clips[1] == clips[2]
    clip = clips[0]
    assert clip[4:8] == b"ftyp" and b"moof" in clip  # fragmented: written without seeking
    assert b"x264 - core" not in clip and b"Lavf" not in clip  # x264's SEI and the muxer version are gone
    other = cut_clip(video["path"], start_ms=1000, chunks=5, patches_h=ph, patches_w=pw, crf=30)
    assert other != clip and len(other) < len(clip)


def test_a_clip_can_use_any_grid(video):
    clip = cut_clip(video["path"], start_ms=2000, chunks=2, patches_h=1, patches_w=3)
    assert decode_patches(clip, patches_h=1, patches_w=3, chunks=2).shape == (2, 3, 2, 40, 40, 3)


def test_a_clip_must_not_end_more_than_a_second_after_the_video(video):
    ph, pw = video["grid"]
    cut_clip(video["path"], start_ms=6000, chunks=10, patches_h=ph, patches_w=pw)  # ends 1000 ms late: padded
    with pytest.raises(media.MediaError, match="holds 7000 ms .* at least 7200 ms"):
        cut_clip(video["path"], start_ms=6000, chunks=11, patches_h=ph, patches_w=pw)
    with pytest.raises(media.MediaError, match="video"):
        cut_clip(video["path"], start_ms=3000, chunks=37, patches_h=ph, patches_w=pw)


def test_decode_patches_rejects_a_clip_cut_for_another_sample(video):
    ph, pw = video["grid"]
    clip = cut_clip(video["path"], start_ms=0, chunks=3, patches_h=ph, patches_w=pw)
    with pytest.raises(SampleError, match="has 6 frames"):
        decode_patches(clip, patches_h=ph, patches_w=pw, chunks=2)
    with pytest.raises(SampleError, match="320x160 px"):
        decode_patches(clip, patches_h=ph, patches_w=pw - 1, chunks=3)


def test_broken_inputs_raise_media_errors(video):
    root = video["root"]
    text = root / "notes.mp4"
    text.write_text("not a video\n" * 50)
    with pytest.raises(media.MediaError, match="cannot read"):
        cut_clip(str(text), start_ms=0, chunks=1, patches_h=1, patches_w=1)
    audio = str(root / "tone.m4a")
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "aac", audio)
    with pytest.raises(media.MediaError, match="no video stream"):
        probe_video(audio)
    with pytest.raises(media.MediaError, match="cannot open"):
        probe_video(str(root / "missing.mp4"))
    data = open(video["path"], "rb").read()
    # Cut in half: the index at the front still promises 7 s, but only the readable frames count.
    truncated = root / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    _, _, _, frames = probe_video(str(truncated))
    assert 0 < frames < 70
    with pytest.raises(media.MediaError, match="holds"):
        cut_clip(str(truncated), start_ms=0, chunks=35, patches_h=4, patches_w=8)
    # Noise over the coded frames: the decoder's error stops the cut.
    rng = np.random.default_rng(3)
    garbled = bytearray(data)
    at = len(data) // 3
    garbled[at:at + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    (root / "garbled.mp4").write_bytes(bytes(garbled))
    with pytest.raises(media.MediaError, match="cannot cut a video clip"):
        cut_clip(str(root / "garbled.mp4"), start_ms=0, chunks=35, patches_h=4, patches_w=8)


@pytest.mark.parametrize("kwargs, error", [
    (dict(start_ms=-200), ValueError), (dict(chunks=0), ValueError), (dict(patches_w=0), ValueError),
    (dict(crf=52), ValueError), (dict(start_ms=0.5), TypeError),
])
def test_cut_clip_checks_its_arguments(video, kwargs, error):
    args = dict(start_ms=0, chunks=1, patches_h=4, patches_w=8) | kwargs
    with pytest.raises(error):
        cut_clip(video["path"], **args)


def test_video_spec_defaults_and_validation():
    spec = VideoSpec()
    assert (spec.patch_budget, spec.crf) == (48, 23)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.crf = 20  # pyright: ignore[reportAttributeAccessIssue]  # the write a frozen spec refuses
    with pytest.raises(TypeError):
        VideoSpec(48)  # pyright: ignore[reportCallIssue]  # keyword-only
    with pytest.raises(ValueError, match="patch_budget"):
        VideoSpec(patch_budget=0)
    with pytest.raises(ValueError, match="crf"):
        VideoSpec(crf=-1)
    with pytest.raises(TypeError, match="integer"):
        VideoSpec(crf=23.0)  # pyright: ignore[reportArgumentType]  # the float it refuses


@pytest.mark.parametrize("folder, name", [("concat:x", "video.mp4"), ("-report", "video.mp4"),
                                          ("10:30", "-y.mp4"), ("pipe:1", "video.mp4")])
def test_video_paths_are_data_for_ffmpeg(video, tmp_path, monkeypatch, folder, name):
    # A record folder (an output of ingest) may have any name; ffmpeg and ffprobe must read it
    # as the file it is, never as a protocol ("concat:", "pipe:") or an option ("-report").
    import shutil

    monkeypatch.chdir(tmp_path)
    os.makedirs(folder)
    path = os.path.join(folder, name)
    shutil.copy(video["path"], path)
    ph, pw = video["grid"]
    assert probe_video(path)[:3] == (*video["size"], video["duration_ms"])
    clip = cut_clip(path, start_ms=1000, chunks=2, patches_h=ph, patches_w=pw)
    assert clip == cut_clip(video["path"], start_ms=1000, chunks=2, patches_h=ph, patches_w=pw)
    assert sorted(os.listdir(tmp_path)) == [folder]  # no ffmpeg report or stray output beside it
