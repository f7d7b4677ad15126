"""Encoding synthetic scenes (:mod:`microturn.synth.scene`) to H.264 MP4 with ffmpeg.

Shape suffixes follow :mod:`microturn.schemas.legend`: H pixel rows, W pixel columns, C colours.

Frames go to ffmpeg's stdin as raw rgb24, one at a time (a 60 s scene at 320 x 240 is 138 MB of
raw frames, never held at once), and come out as yuv420p H.264 in MP4, with no audio, under the
settings of ``microturn.pipelines.media.normalise_video``: bitexact muxing, no metadata, one
encoder thread and one filter thread, so the same frames give byte-identical files on every run.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable

import numpy as np

from microturn.synth.scene import SceneSpec, render_frames


class SceneVideoError(RuntimeError):
    """ffmpeg could not encode the frames (its stderr is in the message)."""


def _file_url(path: str) -> str:
    """``file:`` + the absolute path: ffmpeg reads a leading ``-`` as an option and ``name:`` as a
    protocol; its file protocol takes the rest literally. (``synth`` does not import ``pipelines``,
    whose ``media.file_url`` is the same.)"""
    return "file:" + os.path.abspath(path)


def _ffmpeg_args(width: int, height: int, fps: int, path: str) -> list[str]:
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        # The colour conversion to yuv420p runs in a filter graph: one thread keeps it bit-exact.
        "-filter_threads", "1",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
        # ultrafast / crf 23 as normalise_video: the shard stage re-cuts the frames into patches, so
        # decode speed matters more than size.
        "-an", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p",
        "-fflags", "+bitexact", "-map_metadata", "-1", "-threads", "1", "-x264-params", "threads=1",
        "-movflags", "+faststart", "-f", "mp4", _file_url(path),
    ]


def encode_frames(frames: Iterable[np.ndarray], *, width: int, height: int, fps: int, path: str) -> int:
    """Encode uint8 [height, width, 3] RGB frames to an H.264 MP4 at ``path``; return its size in bytes.

    Frames are streamed to ffmpeg as they come. A frame of another shape or dtype raises
    ValueError; no frames at all raises ValueError; an ffmpeg failure raises
    :class:`SceneVideoError` with ffmpeg's message. On any failure the partial file is removed.
    """
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"frame size must be positive and even for yuv420p, got {width}x{height}")
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError("no frames to encode")
    with tempfile.TemporaryFile() as stderr:
        # stderr to a file, not a pipe: ffmpeg can never block on a full pipe while we write stdin.
        try:
            proc = subprocess.Popen(_ffmpeg_args(width, height, fps, path), stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=stderr)
        except FileNotFoundError:
            raise SceneVideoError("ffmpeg is not installed (not found on PATH)") from None
        assert proc.stdin is not None
        broken = False
        try:
            for i, frame_HWC in enumerate(_chain(first, iterator)):
                if frame_HWC.shape != (height, width, 3) or frame_HWC.dtype != np.uint8:
                    raise ValueError(f"frame {i} is {frame_HWC.dtype} {frame_HWC.shape}; "
                                     f"expected uint8 {(height, width, 3)}")
                try:
                    proc.stdin.write(np.ascontiguousarray(frame_HWC).data)
                except BrokenPipeError:  # ffmpeg stopped; its stderr says why
                    broken = True
                    break
            if not broken:
                proc.stdin.close()
        except BaseException:
            proc.kill()
            proc.wait()
            _remove(path)
            raise
        finally:
            if not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        rc = proc.wait()
        if rc != 0 or broken:
            stderr.seek(0)
            message = stderr.read().decode("utf-8", "replace").strip()
            _remove(path)
            raise SceneVideoError(f"ffmpeg failed (exit {rc}) writing {path}: {message or 'no message'}")
    return os.path.getsize(path)


def _chain(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    yield first
    yield from rest


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_scene_video(spec: SceneSpec, path: str) -> int:
    """Render ``spec`` and write it as H.264 MP4 (``spec.fps``, yuv420p, no audio) to ``path``.

    Same spec, same bytes. Returns the number of bytes written.
    """
    return encode_frames(render_frames(spec), width=spec.width, height=spec.height, fps=spec.fps, path=path)


__all__ = ["SceneVideoError", "encode_frames", "write_scene_video"]
