"""Video clips of micro-turn samples: cut a window out of a conversation's 10 fps video.

The ingest stage leaves one normalised video per conversation (10 fps H.264, see
:func:`microturn.pipelines.media.normalise_video`). For each sample window this module cuts
``2 K`` frames starting at the window, scales them to the sample's patch grid (sides multiples
of 40 px, :func:`microturn.schemas.video.patch_grid`) and encodes them as a small fragmented
MP4, the ``video.mp4`` field that the loader turns into patches with
:func:`microturn.schemas.video.decode_patches`.

Every call runs ffmpeg/ffprobe as a subprocess with an argument list (ffmpeg-python builds
it; no shell). The same video and arguments give byte-identical clips.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import ffmpeg
import numpy as np

from microturn.pipelines.media import _PROTOCOLS, MediaError, _ffmpeg_message, file_url, probe
from microturn.schemas.sample import CHUNK_MS, FRAMES_PER_PATCH, PATCH_PX, VIDEO_FPS
from microturn.schemas.video import DEFAULT_PATCH_BUDGET

__all__ = ["VideoSpec", "cut_clip", "probe_video"]

_FRAME_MS = 1000 // VIDEO_FPS  # 100 ms
# The 10 fps normalisation ends the video at the last whole frame, so a window that runs up to
# 1 s past the end is ordinary; it is padded by repeating the last frame. Longer gaps mean the
# record and its video disagree.
_MAX_PAD_MS = 1000
# Encoder settings, chosen for the loader's decode speed (the shard stage encodes a clip once;
# the trainer decodes it every epoch). Measured on one core of a loaded 2-core machine (CPU
# time, best of 4), 30 s clips of 12x8 patches (480x320) at crf 23 cut from a panned, noisy
# photograph; decode = decode_patches (PyAV 18), encode = the ffmpeg 5.1 / x264 call:
#   preset + tune          MB per hour   PSNR     decode frames/s   encode CPU s per clip
#   ultrafast              688           36.1 dB  1030              1.2
#   veryfast               120           34.2 dB   700              1.7
#   veryfast, fastdecode   131           34.2 dB  1330-1620         1.7
#   medium, fastdecode     157           35.5 dB  1420              4.3
# tune=fastdecode (CAVLC, no deblocking or weighted prediction) doubles the H.264 decode speed
# (2500 against 1270 frames/s before RGB conversion) for 9 % more bytes at the same PSNR.
# ultrafast is 5x the bytes (tars are read from object storage every epoch); medium at the
# same PSNR (crf 25) saves about 15 % of the bytes for 2.5x the encode time.
_PRESET = "veryfast"
_TUNE = "fastdecode"
_SWS_FLAGS = "bicubic"  # ffmpeg's default scaler, named so that a changed default cannot shift clips


@dataclass(frozen=True, kw_only=True)
class VideoSpec:
    """How samples carry video.

    Attributes:
        patch_budget: at most this many 40x40 patches per frame (per 200 ms chunk). 48 gives
            8x6 patches (320x240 px, QVGA) for 4:3 video and 9x5 (360x200 px) for 16:9, the
            scale of a video-call thumbnail, where a face and hands are still many patches;
            video then costs at most 48 x 5 = 240 patch tokens per second (225 for 16:9).
        crf: x264 constant rate factor (0-51, lower is better). 23 is x264's default; at
            40-px patch sizes it keeps the decoded pixels within a mean absolute error of
            about 3.4 of 255 (34 dB PSNR) of the uncompressed frames on a noisy natural scene,
            and clips at the default budget cost about 90-100 MB per hour of video (65 MB on
            synthetic test patterns; measurements beside ``_PRESET``).
    """

    patch_budget: int = DEFAULT_PATCH_BUDGET
    crf: int = 23

    def __post_init__(self) -> None:
        for name in ("patch_budget", "crf"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"VideoSpec.{name} must be an integer, got {type(value).__name__}")
        if self.patch_budget < 1:
            raise ValueError(f"VideoSpec.patch_budget must be >= 1 patch per chunk, got {self.patch_budget}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"VideoSpec.crf must be in 0..51 (x264's range), got {self.crf}")


@functools.lru_cache(maxsize=32)
def _probe_cached(path: str, size: int, mtime_ns: int) -> tuple[int, int, int, int]:
    info = probe(path)
    stream = info.video
    if stream is None:
        kinds = ", ".join(s.codec_type for s in info.streams) or "none"
        raise MediaError(f"{path} has no video stream (streams: {kinds})")
    try:
        # The path is data: as a file: URL with only the file protocol allowed, no name (an
        # output folder called "concat:x" or "-x") is read as a protocol or an option.
        data = ffmpeg.probe(file_url(path), v="error", protocol_whitelist=_PROTOCOLS,
                            select_streams=f"{stream.index}", count_packets=None)
    except ffmpeg.Error as exc:
        raise MediaError(f"ffprobe cannot read the video of {path}: {_ffmpeg_message(exc)}") from None
    streams = data.get("streams") or [{}]
    # Packets actually read, not the header's frame count: a truncated file keeps its full
    # header but holds fewer frames.
    frames = int(streams[0].get("nb_read_packets") or 0)
    if not stream.width or not stream.height or frames == 0:
        raise MediaError(f"the video stream of {path} has no frames ({stream.width}x{stream.height}, "
                         f"{frames} packets)")
    return int(stream.width), int(stream.height), info.duration_ms, frames


def probe_video(video_path: str) -> tuple[int, int, int, int]:
    """``(width, height, duration_ms, frames)`` of a local video file's first video stream.

    ``frames`` counts the packets that can be read. Results are cached per path, size and
    modification time, because every window of a conversation probes the same file. Raises
    :class:`MediaError` when the file is not media, has no video stream or no frames.
    """
    try:
        st = os.stat(video_path)
    except OSError as exc:
        raise MediaError(f"cannot open video {video_path}: {exc.strerror}") from None
    return _probe_cached(video_path, st.st_size, st.st_mtime_ns)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be in {low}..{'' if high is None else high}, got {value}")
    return int(value)


def cut_clip(video_path: str, *, start_ms: int, chunks: int, patches_h: int, patches_w: int,
             crf: int = 23) -> bytes:
    """Encode ``2 * chunks`` frames of a normalised 10 fps video from ``start_ms`` as MP4 bytes.

    The frames are the video's frames nearest to ``start_ms + 100 i`` (i = 0 .. 2 K - 1),
    scaled to exactly ``40 patches_w`` x ``40 patches_h`` px and encoded as H.264 (yuv420p,
    one keyframe) in a fragmented MP4. Where the video ends before the window does, the last
    frame is repeated, up to 1 s; a video that ends more than 1 s early, or that cannot be
    decoded, raises :class:`MediaError`. Byte-identical output for identical inputs.
    """
    start_ms = _check_int("start_ms", start_ms, 0)
    chunks = _check_int("chunks", chunks, 1)
    patches_h = _check_int("patches_h", patches_h, 1)
    patches_w = _check_int("patches_w", patches_w, 1)
    crf = _check_int("crf", crf, 0, 51)
    _, _, duration_ms, frames = probe_video(video_path)
    end_ms = start_ms + chunks * CHUNK_MS
    have_ms = min(duration_ms, frames * _FRAME_MS)
    if end_ms - have_ms > _MAX_PAD_MS:
        raise MediaError(f"video {video_path} holds {have_ms} ms ({frames} frames) but the clip "
                         f"[{start_ms}, {end_ms}) ms needs it to run to at least {end_ms - _MAX_PAD_MS} ms")
    n_frames = chunks * FRAMES_PER_PATCH
    # Past the last frame every clip frame is that frame, so start there and repeat it.
    first_ms = min(start_ms, (frames - 1) * _FRAME_MS)
    # Seek half a frame early: ffmpeg's accurate seek keeps frames stamped at or after the
    # seek time, so this keeps the frame nearest to first_ms even if stamps are a little off.
    seek = {"ss": f"{(first_ms - _FRAME_MS // 2) / 1000:.3f}"} if first_ms >= _FRAME_MS // 2 else {}
    width, height = patches_w * PATCH_PX, patches_h * PATCH_PX
    vf = (f"scale={width}:{height}:flags={_SWS_FLAGS},"
          # clone the last frame for ever; -frames:v stops the output at exactly n_frames
          "tpad=stop_mode=clone:stop=-1,"
          f"setpts=N/{VIDEO_FPS}/TB")
    try:
        clip, _ = (
            ffmpeg.input(file_url(video_path), protocol_whitelist=_PROTOCOLS, threads=1, **seek)
            .output(
                "pipe:", format="mp4", map="0:v:0", vf=vf, r=VIDEO_FPS,
                vcodec="libx264", preset=_PRESET, tune=_TUNE, crf=crf, pix_fmt="yuv420p",
                # One keyframe per clip: a sample is always decoded from its first frame to its
                # last, so more keyframes (scene cuts included: sc_threshold 0) only cost bytes.
                g=n_frames, keyint_min=n_frames, sc_threshold=0,
                # x264 writes its version and options into an SEI NAL unit (type 6); dropping
                # it keeps version strings out of the clips (with bitexact the only name left
                # is the version-free compressor name "Lavc libx264").
                **{"frames:v": n_frames, "bsf:v": "filter_units=remove_types=6",
                   "x264-params": "threads=1", "flags:v": "+bitexact"},
                # A fragmented MP4 with its (empty) index first needs no seekable output.
                movflags="frag_keyframe+empty_moov+default_base_moof",
                # bitexact + no metadata + one thread: byte-identical clips on every call.
                fflags="+bitexact", map_metadata=-1, threads=1,
            )
            .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-xerror", "-filter_threads", "1")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        raise MediaError(f"cannot cut a video clip from {video_path} at {start_ms} ms: "
                         f"{_ffmpeg_message(exc)}") from None
    if not clip:
        raise MediaError(f"cutting a video clip from {video_path} at {start_ms} ms gave no bytes")
    return clip
