"""Synthetic scenes encoded to H.264 MP4: decodable, byte-identical on reruns, colours kept."""

import math
import os
from pathlib import Path

import av
import numpy as np
import pytest

from microturn.schemas.visual import COLOURS, SHAPES
from microturn.synth.scene import (
    FRAME_MS,
    RGB,
    SceneCue,
    SceneSpec,
    cue_times,
    frame_count,
    render_frames,
    scene_objects,
    shape_mask,
)
from microturn.synth.scene_video import SceneVideoError, encode_frames, write_scene_video

# One object of each colour (shapes in turn), all on screen from 100 ms; one of them changes colour.
EVERY_COLOUR = SceneSpec(
    duration_ms=600, seed=5, distractors=0,
    cues=(
        *(SceneCue(kind="appear", t_ms=100, shape=SHAPES[i % len(SHAPES)], colour=c) for i, c in enumerate(COLOURS)),
        SceneCue(kind="colour", t_ms=300, shape="square", colour="red", to_colour="cyan"),
    ),
)


def decode(path: Path) -> tuple[np.ndarray, av.VideoStream]:
    with av.open(str(path)) as container:
        assert not container.streams.audio
        stream = container.streams.video[0]
        frames_FHWC = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    return frames_FHWC, stream


def erode(mask_HW: np.ndarray, px: int) -> np.ndarray:
    """The mask less a ``px`` border: away from the edges H.264 and 4:2:0 chroma blur."""
    out = mask_HW.copy()
    for _ in range(px):
        inner = out.copy()
        inner[1:] &= out[:-1]
        inner[:-1] &= out[1:]
        inner[:, 1:] &= out[:, :-1]
        inner[:, :-1] &= out[:, 1:]
        inner[[0, -1]] = False
        inner[:, [0, -1]] = False
        out = inner
    return out


def nearest(rgb: np.ndarray) -> str:
    return min(RGB, key=lambda name: math.dist(RGB[name], rgb.tolist()))


@pytest.fixture(scope="module")
def every_colour_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "every_colour.mp4"
    assert write_scene_video(EVERY_COLOUR, str(path)) == path.stat().st_size > 0
    return path


def test_video_decodes_to_the_frames_size_and_rate(every_colour_video):
    frames_FHWC, stream = decode(every_colour_video)
    assert frames_FHWC.shape == (frame_count(EVERY_COLOUR), 240, 320, 3) == (6, 240, 320, 3)
    assert stream.codec_context.name == "h264" and stream.average_rate == 10
    assert stream.codec_context.pix_fmt == "yuv420p"


def test_each_colour_stays_nearest_its_name_after_encoding(every_colour_video):
    frames_FHWC, _ = decode(every_colour_video)
    (change,) = cue_times(EVERY_COLOUR, len(COLOURS))
    for obj in scene_objects(EVERY_COLOUR):
        inner_HW = erode(shape_mask(obj.shape, obj.size), 3)
        assert inner_HW.sum() > 100
        for i in range(1, len(frames_FHWC)):
            _, colour, x, y = obj.state(i)
            mean = frames_FHWC[i, y:y + obj.size, x:x + obj.size][inner_HW].mean(axis=0)
            assert nearest(mean) == colour, (obj.name, i, mean)
        if obj.kind == "colour":
            assert obj.state(change // FRAME_MS - 1)[1] == "red" and obj.state(change // FRAME_MS)[1] == "cyan"


def test_same_spec_gives_identical_bytes(tmp_path, every_colour_video):
    again = tmp_path / "again.mp4"
    write_scene_video(EVERY_COLOUR, str(again))
    assert again.read_bytes() == every_colour_video.read_bytes()


def test_every_cue_kind_encodes_and_decodes(tmp_path):
    spec = SceneSpec(duration_ms=2500, seed=9, cues=(
        SceneCue(kind="repeat", t_ms=200, count=2, period_ms=400),
        SceneCue(kind="move", t_ms=300, shape="diamond", colour="yellow"),
        SceneCue(kind="text", t_ms=500, text="READY? 3, 2, 1 - GO!"),
        SceneCue(kind="disappear", t_ms=700, shape="triangle", colour="purple"),
    ))
    path = tmp_path / "kinds.mp4"
    write_scene_video(spec, str(path))
    frames_FHWC, _ = decode(path)
    assert frames_FHWC.shape == (25, 240, 320, 3)
    # Lossy but close: the mean absolute error against the rendered frames stays small.
    rendered_FHWC = np.stack(list(render_frames(spec)))
    assert np.abs(frames_FHWC.astype(int) - rendered_FHWC).mean() < 4


def test_odd_output_names_are_files_not_options_or_protocols(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frames = [np.full((80, 80, 3), 90, np.uint8)] * 3
    for name in ("-y.mp4", "pipe:1.mp4", "concat:x.mp4"):
        size = encode_frames(frames, width=80, height=80, fps=10, path=name)
        assert (tmp_path / name).stat().st_size == size > 0


def test_bad_frames_and_ffmpeg_failures_raise_and_leave_no_file(tmp_path):
    path = tmp_path / "bad.mp4"
    good = np.zeros((80, 80, 3), np.uint8)
    with pytest.raises(ValueError, match="no frames"):
        encode_frames([], width=80, height=80, fps=10, path=str(path))
    with pytest.raises(ValueError, match=r"frame 1 is uint8 \(80, 40, 3\)"):
        encode_frames([good, good[:, :40]], width=80, height=80, fps=10, path=str(path))
    with pytest.raises(ValueError, match="frame 0 is float32"):
        encode_frames([good.astype(np.float32)], width=80, height=80, fps=10, path=str(path))
    with pytest.raises(ValueError, match="even"):
        encode_frames([good[:, :79]], width=79, height=80, fps=10, path=str(path))
    assert not path.exists()
    with pytest.raises(SceneVideoError, match="ffmpeg failed .*No such file or directory"):
        encode_frames([good] * 2, width=80, height=80, fps=10, path=str(tmp_path / "missing" / "x.mp4"))
    assert os.listdir(tmp_path) == []
