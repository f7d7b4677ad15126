"""Media I/O through ffmpeg: probing, audio decoding to 16 kHz, video normalisation to 10 fps.

Every call runs ffmpeg/ffprobe as a subprocess with an argument list (ffmpeg-python builds the
list; no shell is involved). Remote inputs (``gs://``, ``s3://``, ...) are first copied to a
local temporary file through Beam's FileSystems by :func:`local_copy`.

A file name is data: every path reaches ffmpeg/ffprobe as ``file:`` + its absolute path
(:func:`file_url`), so no name is read as an option (``-report``) or selects a protocol
(``concat:other.wav``, ``pipe:1``, ``10:30.wav``), and every run carries
``-protocol_whitelist file``, so nothing a file holds (an HLS playlist, an SDP description)
opens another protocol either. Containers that are lists of other files (the concat demuxer's
``ffconcat`` scripts, HLS/DASH playlists) are refused by :func:`probe`: their audio would come
from files other than the one hashed.

Shape suffixes follow :mod:`microturn.schemas.legend`: C audio channels, N samples at 16 kHz.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, BinaryIO

import ffmpeg
import numpy as np
import soundfile as sf
from apache_beam.io.filesystems import FileSystems

from microturn.schemas.sample import SAMPLE_RATE, VIDEO_FPS  # media.VIDEO_FPS stays importable

_COPY_CHUNK = 8 << 20  # 8 MiB reads keep remote copies fast without holding big files in memory
# The only protocol ffmpeg/ffprobe may open, for the input and for anything it refers to.
_PROTOCOLS = "file"
# Demuxers whose input names other files to read (ffprobe's format_name of each). The image2
# demuxer also reads a sequence of files named by a pattern in the file name, but it gives video
# only, so such an input is rejected for having no audio.
_REFERENCE_CONTAINERS = frozenset({"concat", "hls", "dash"})
# Decoding stops this far past --max-duration-s: enough to tell "over the limit" from encoder
# padding at the end (an MP3 frame is 26 ms), and it bounds the work on a file whose header
# claims a short duration and holds hours.
_OVER_LIMIT_MS = 100


class MediaError(ValueError):
    """A media file that ffmpeg cannot use; the message says what is wrong with it."""


class NotARegularFile(ValueError):
    """A path that is a FIFO, a device, a socket or a directory (after symlinks): reading it
    could block forever (a FIFO without a writer) or never end (``/dev/zero``)."""


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a directory"))


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words ("a regular file", "a FIFO (named pipe)", ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str) -> BinaryIO:
    """Open a local path for binary reading, only if it is a regular file after symlinks.

    The file is opened without blocking and checked on the open descriptor, so a FIFO cannot
    hang the open and nothing swapped in after a check is read. Raises
    :class:`NotARegularFile` for anything else (and ``OSError`` when it cannot be opened).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"{file_kind(mode)}, not a regular file: only regular files "
                                  "(or symbolic links to them) are read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True, kw_only=True)
class StreamInfo:
    index: int
    codec_type: str
    codec_name: str | None
    sample_rate: int | None = None
    channels: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    variable_frame_rate: bool | None = None

    def as_row(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, kw_only=True)
class ProbeInfo:
    container: str
    duration_ms: int
    streams: tuple[StreamInfo, ...] = field(default_factory=tuple)

    @property
    def audio(self) -> StreamInfo | None:
        return next((s for s in self.streams if s.codec_type == "audio"), None)

    @property
    def video(self) -> StreamInfo | None:
        # Cover art in audio files shows up as a one-frame video stream flagged attached_pic;
        # _parse_stream drops those, so any video stream here is real motion video.
        return next((s for s in self.streams if s.codec_type == "video"), None)


def _rate(text: str | None) -> float | None:
    if not text or text in ("0/0", "0"):
        return None
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _parse_stream(s: dict) -> StreamInfo | None:
    kind = s.get("codec_type", "unknown")
    if kind == "video" and s.get("disposition", {}).get("attached_pic"):
        return None
    info: dict[str, Any] = dict(index=int(s.get("index", 0)), codec_type=kind, codec_name=s.get("codec_name"))
    if kind == "audio":
        info.update(sample_rate=int(s.get("sample_rate") or 0) or None, channels=s.get("channels"))
    elif kind == "video":
        avg, real = _rate(s.get("avg_frame_rate")), _rate(s.get("r_frame_rate"))
        fps = avg or real
        vfr = bool(avg and real and abs(avg - real) > 0.01 * real)
        info.update(width=s.get("width"), height=s.get("height"), fps=fps, variable_frame_rate=vfr)
    return StreamInfo(**info)


# ffmpeg prefixes messages with "[demuxer @ 0x55d0c1a2b180] ": a heap address that changes on
# every run and would make reject rows differ between reruns.
_CONTEXT_RE = re.compile(r"\[[^\]]* @ 0x[0-9a-f]+\]\s*")


def file_url(path: str) -> str:
    """The ``file:`` URL of a local path, for ffmpeg and ffprobe.

    ffmpeg reads an argument beginning ``-`` as an option and a name with a colon after letters
    (``concat:``, ``pipe:``, ``10:30.wav``) as a protocol; ``file:`` + an absolute path is always
    the file itself (ffmpeg's file protocol does no unescaping).
    """
    return "file:" + os.path.abspath(path)


def _ffmpeg_message(exc: ffmpeg.Error, url: str = "") -> str:
    err = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
    # The last lines carry ffmpeg's reason ("Invalid data found when processing input", ...).
    lines = [_CONTEXT_RE.sub("", line).strip() for line in err[-3:]]
    # ffmpeg names the input by its URL: a local path, or the random name of a temporary copy of
    # a remote file, which would make the rejects of two identical runs differ.
    lines = [line.replace(url, "input") if url else line for line in lines]
    return " | ".join(line for line in lines if line) or "ffmpeg failed without a message"


def probe(path: str) -> ProbeInfo:
    """Probe a local media file with ffprobe. Raises :class:`MediaError` when it is not media."""
    if os.path.getsize(path) == 0:
        raise MediaError("file is empty (0 bytes)")
    url = file_url(path)
    try:
        # no banner: the error lines are the message
        data = ffmpeg.probe(url, v="error", protocol_whitelist=_PROTOCOLS)
    except ffmpeg.Error as exc:
        raise MediaError(f"ffprobe cannot read it: {_ffmpeg_message(exc, url)}") from None
    fmt = data.get("format", {})
    if fmt.get("format_name") in _REFERENCE_CONTAINERS:
        raise MediaError(
            f"the file is a {fmt['format_name']} list of other files, not media; give the media "
            "files themselves")
    streams = tuple(s for s in (_parse_stream(x) for x in data.get("streams", [])) if s)
    duration = float(fmt.get("duration") or 0.0)
    if duration <= 0:
        duration = max((float(x.get("duration") or 0.0) for x in data.get("streams", [])), default=0.0)
    return ProbeInfo(
        container=fmt.get("format_name", "unknown"),
        duration_ms=int(round(duration * 1000)),
        streams=streams,
    )


class TooLongError(MediaError):
    """Audio that decodes to more than the duration limit, whatever its header says."""


def _limit_args(max_ms: int | None) -> dict:
    return {} if max_ms is None else {"t": f"{(max_ms + _OVER_LIMIT_MS) / 1000:.3f}"}


def decode_audio(path: str, *, stream: StreamInfo, keep_channels: bool = True,
                 max_ms: int | None = None) -> np.ndarray:
    """Decode one audio stream to float32 at 16 kHz, shape ``[C, N]``.

    ``keep_channels`` keeps the source's channels apart (so a file with one channel per speaker
    stays separable); otherwise the stream is downmixed to one channel. With ``max_ms``,
    decoding stops 100 ms past it and :class:`TooLongError` is raised when more than ``max_ms``
    of audio came out: the limit holds on the samples, not on what the container's header
    claims, and a file that lies about its length costs no more than the limit to find out.
    Raises :class:`MediaError` when the stream cannot be decoded (unsupported codec, a frame
    that does not decode).
    """
    channels = stream.channels or 1
    out_ch = channels if keep_channels else 1
    url = file_url(path)
    try:
        raw, _ = (
            ffmpeg.input(url, protocol_whitelist=_PROTOCOLS)
            .output(
                "pipe:", format="f32le", acodec="pcm_f32le", ac=out_ch, ar=SAMPLE_RATE,
                map=f"0:{stream.index}",
                # soxr is ffmpeg's high-quality resampler; it is deterministic across machines.
                af="aresample=resampler=soxr",
                **_limit_args(max_ms),
            )
            # -max_error_rate 0: any frame that fails to decode fails the run (exit 69), as a
            # truncated FLAC or a corrupt MP3 frame does. -xerror did that too, but it also
            # failed on the short last packet of a WAV whose header gives no length (RIFF size
            # 0xFFFFFFFF, as `ffmpeg -f wav -` writes to a pipe), audio ffmpeg decodes whole.
            .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-max_error_rate", "0")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        raise MediaError(
            f"cannot decode audio stream {stream.index} ({stream.codec_name}): "
            f"{_ffmpeg_message(exc, url)}"
        ) from None
    wave = np.frombuffer(raw, dtype="<f4")
    if wave.size == 0:
        raise MediaError(f"audio stream {stream.index} ({stream.codec_name}) decodes to no samples")
    n = wave.size // out_ch
    if max_ms is not None and n * 1000 > max_ms * SAMPLE_RATE:
        raise TooLongError(
            f"audio stream {stream.index} decodes to more than {max_ms / 1000:g} s, the limit "
            "(decoding stopped there); raise --max-duration-s or split the file")
    wave_CN = wave[: n * out_ch].reshape(n, out_ch).T.copy()
    np.clip(wave_CN, -1.0, 1.0, out=wave_CN)
    return wave_CN


def normalise_video(path: str, out_path: str, *, stream: StreamInfo, fps: int = VIDEO_FPS,
                    max_side: int = 1280, max_ms: int | None = None) -> None:
    """Re-encode a video stream at a constant ``fps`` (H.264, no audio) into ``out_path``.

    Frames are resampled in time by ffmpeg's fps filter (which also turns variable frame rate
    into constant), and scaled down only when a side exceeds ``max_side``, keeping the aspect
    ratio with even sides (required by yuv420p). Patch sizing happens in the shard stage.
    ``max_ms`` stops encoding 100 ms past it, so the work is bounded whatever the header says.
    """
    scale = (
        f"scale='if(gt(iw,ih),min(iw,{max_side}),-2)':'if(gt(iw,ih),-2,min(ih,{max_side}))',"
        "scale=trunc(iw/2)*2:trunc(ih/2)*2"
    )
    url = file_url(path)
    try:
        (
            ffmpeg.input(url, protocol_whitelist=_PROTOCOLS)
            .output(
                # The format is named: the caller may write under a temporary name.
                file_url(out_path), format="mp4", map=f"0:{stream.index}", vf=f"fps={fps},{scale}", vcodec="libx264",
                # ultrafast: 2.2x the speed of veryfast on one thread (120 s of 640x360 at 10 fps:
                # 2.75 s against 6.1 s) for about 2x the bytes; the shard stage re-cuts these
                # frames into 40x40 patches, so decode speed matters more than size here.
                preset="ultrafast", crf=23, pix_fmt="yuv420p", an=None, movflags="+faststart",
                # bitexact + no metadata + one thread: byte-identical files on every rerun.
                fflags="+bitexact", map_metadata=-1, threads=1, **{"x264-params": "threads=1"},
                **_limit_args(max_ms),
            )
            .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        _raise_if_output_fault(exc, out_path)
        raise MediaError(f"cannot decode video stream {stream.index} ({stream.codec_name}): "
                         f"{_ffmpeg_message(exc, url)}") from None


# strerror texts ffmpeg prints when the file it writes cannot take the bytes. The input was hashed
# and probed before, so these are never its fault; "Permission denied" only when ffmpeg names the
# output file.
_DISK_FAULTS = ("No space left on device", "Disk quota exceeded", "Read-only file system", "File too large")


def _raise_if_output_fault(exc: ffmpeg.Error, out_path: str) -> None:
    """Raise an ``OutputError`` about ``out_path`` when ffmpeg failed writing it, not reading."""
    from microturn.pipelines.outputs import OutputError

    err = (exc.stderr or b"").decode("utf-8", "replace")
    for reason in _DISK_FAULTS:
        if reason in err:
            raise OutputError(out_path, reason) from None
    if "Permission denied" in err and file_url(out_path) in err:
        raise OutputError(out_path, "Permission denied") from None


def encode_flac(wave_N: np.ndarray) -> bytes:
    """16 kHz mono float32 → 16-bit FLAC bytes (lossless at the precision stored)."""
    buf = io.BytesIO()
    sf.write(buf, wave_N, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def read_flac(path: str) -> np.ndarray:
    """Read a media FLAC (any Beam filesystem path) as float32 ``[N]``."""
    with FileSystems.open(path) as f:
        data, sr = sf.read(io.BytesIO(f.read()), dtype="float32", always_2d=False)
    if sr != SAMPLE_RATE:
        raise MediaError(f"{path}: expected {SAMPLE_RATE} Hz, found {sr} Hz")
    return data if data.ndim == 1 else data.mean(axis=1).astype(np.float32)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to any Beam filesystem path, creating parent folders on local disk.

    Written to a temporary name and renamed, so a full disk never leaves half a file in place
    of a rerun's earlier one; a failed write is an ``OutputError`` (:mod:`microturn.pipelines.outputs`)."""
    from microturn.pipelines.outputs import publish

    publish(data, path)


def copy_file_to(local_path: str, dest: str) -> None:
    """Copy a local file to any Beam filesystem path."""
    if "://" not in dest:
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        shutil.copyfile(local_path, dest)
        return
    with open(local_path, "rb") as src, FileSystems.create(dest) as dst:
        shutil.copyfileobj(src, dst, _COPY_CHUNK)


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[tuple[str, str, int]]:
    """Yield ``(local_path, sha256_hex, size_bytes)`` for any Beam filesystem URI.

    Local files are hashed in place (only regular files: :func:`open_regular`); remote ones are
    streamed to a temporary file that is removed afterwards.
    """
    digest = hashlib.sha256()
    if "://" not in uri or uri.startswith("file://"):
        local = uri[len("file://"):] if uri.startswith("file://") else uri
        size = 0
        with open_regular(local) as f:
            # No further than the size the file has now: a regular file of the kernel's
            # (/proc/kmsg: size 0, reads block) or one still being written is not read forever.
            left = os.fstat(f.fileno()).st_size
            while left > 0 and (chunk := f.read(min(_COPY_CHUNK, left))):
                digest.update(chunk)
                size += len(chunk)
                left -= len(chunk)
        yield local, digest.hexdigest(), size
        return
    suffix = os.path.splitext(uri)[1][:16]
    fd, tmp = tempfile.mkstemp(prefix="microturn-", suffix=suffix)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out, FileSystems.open(uri) as src:
            while chunk := src.read(_COPY_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        yield tmp, digest.hexdigest(), size
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
