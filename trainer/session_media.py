"""Files around a live session: the user's recording, video and transcript in; wavs, timeline out.

Reading. ffmpeg and ffprobe run as subprocesses with argument lists (never a shell), and every
input reaches them as ``file:`` + its absolute path with only the ``file`` protocol allowed, so
a name like ``-x.wav`` is not read as an option nor ``concat:a|b`` as a protocol (the rule of
:mod:`microturn.pipelines.media`, which the trainer may not import). Only regular files (or links
to them) are read: a FIFO would block ffmpeg for ever.

- Audio: the first audio stream, downmixed to mono and resampled to 16 kHz with soxr, as ingest
  does (:func:`read_audio`).
- Video: the first video stream at 10 fps, scaled (bicubic, as the shard stage's clips) to the
  patch grid that the shard stage gives a video of that size (:func:`video_grid`), streamed two
  frames per chunk so a long video is never held whole (:class:`VideoFrames`).
- Transcript and background results: the project's words JSON (:func:`read_words`).

Writing. An output folder is claimed with the marker the pipeline stages use,
``_microturn_stage.json`` (here ``{"stage": "session", ...}``), and a folder holding anything
else (another stage's marker or tables, a run, any file without the session's marker) is refused,
so a session never overwrites output it did not write (:func:`claim_output`). Files are written
under a temporary name and renamed.

Shape suffixes follow :mod:`microturn.schemas.legend`: N samples (16 kHz), C channels, F frames,
H, W pixels.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from microturn.schemas.sample import CHUNK_MS, PATCH_PX, SAMPLE_RATE, VIDEO_FPS
from microturn.schemas.stage_marker import MARKER, read_marker
from microturn.schemas.video import DEFAULT_PATCH_BUDGET, patch_grid

__all__ = ["MARKER", "PATCH_BUDGET", "VideoFrames", "atomic_path", "check_output", "claim_output",
           "read_audio", "read_words", "video_grid", "words_by_chunk", "write_wav"]

# The shard stage's default patch budget: the grid the model saw in training for video of a given size.
PATCH_BUDGET = DEFAULT_PATCH_BUDGET
# ingest's normalise_video scales a side over 1280 px down before the shard stage sizes the grid.
_NORMALISED_MAX_SIDE = 1280
# Past the video's last frame, the last frame is repeated for up to 1 s (the shard stage's pad for
# a video that ends a little before its audio); later chunks get no video.
_MAX_PAD_FRAMES = VIDEO_FPS
STAGE = "session"
_FFMPEG_QUIET = ("-nostdin", "-hide_banner", "-loglevel", "error")


def file_url(path: str) -> str:
    """``file:`` + the absolute path: ffmpeg reads it as that file, never an option or protocol."""
    return "file:" + os.path.abspath(path)


def check_input(path: str, what: str) -> str:
    """``path`` if it is a readable regular file (after links); a ``ValueError`` naming it otherwise."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{what} {path!r}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{what} {path!r}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{what} {path!r}: not a regular file (only files or links to them are read)")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{what} {path!r}: cannot read it (permission denied)")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{what} {path!r}: the file is empty")
    return path


def _ffmpeg_error(stderr: bytes, path: str) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    text = " | ".join(lines[-2:]) or "ffmpeg failed without a message"
    return text.replace(file_url(path), "the file")


def probe(path: str, what: str) -> dict[str, Any]:
    """ffprobe's ``streams`` and ``format`` of a media file; ``ValueError`` when it is not media."""
    check_input(path, what)
    cmd = ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-of", "json", "-show_streams",
           "-show_format", file_url(path)]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise ValueError(f"{what} {path!r}: not a media file ffmpeg can read ({_ffmpeg_error(proc.stderr, path)})")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise ValueError(f"{what} {path!r}: ffprobe gave no readable description of it") from None


def _streams(info: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [s for s in info.get("streams", []) if s.get("codec_type") == kind
            and not (s.get("disposition") or {}).get("attached_pic")]  # cover art is not video


def read_audio(path: str) -> np.ndarray:
    """float32 [N]: the first audio stream of ``path`` as 16 kHz mono in [-1, 1].

    ``ValueError`` naming the file when it is missing, not media, has no audio stream or
    decodes to nothing."""
    info = probe(path, "--user-audio")
    streams = _streams(info, "audio")
    if not streams:
        kinds = ", ".join(sorted({str(s.get("codec_type")) for s in info.get("streams", [])})) or "none"
        raise ValueError(f"--user-audio {path!r}: the file has no audio stream (streams: {kinds})")
    cmd = ["ffmpeg", *_FFMPEG_QUIET, "-protocol_whitelist", "file", "-i", file_url(path),
           "-map", f"0:{streams[0]['index']}", "-ac", "1", "-ar", str(SAMPLE_RATE),
           "-af", "aresample=resampler=soxr", "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise ValueError(f"--user-audio {path!r}: its audio does not decode ({_ffmpeg_error(proc.stderr, path)})")
    wave_N = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if wave_N.size == 0:
        raise ValueError(f"--user-audio {path!r}: its audio stream decodes to no samples")
    if not np.isfinite(wave_N).all():
        raise ValueError(f"--user-audio {path!r}: its audio decodes to NaN or infinite samples")
    return np.clip(wave_N, -1.0, 1.0)


def _even(x: int) -> int:
    return max(2, x - x % 2)


def _normalised_size(width: int, height: int) -> tuple[int, int]:
    """The size ingest's ``normalise_video`` gives a ``width`` x ``height`` video: the long side at
    most 1280 px, the other scaled to keep the aspect and rounded to an even number, both even."""
    if width > height:
        w = min(width, _NORMALISED_MAX_SIDE)
        return _even(w), _even(2 * round(w * height / (2 * width)))
    h = min(height, _NORMALISED_MAX_SIDE)
    return _even(2 * round(h * width / (2 * height))), _even(h)


def video_grid(width: int, height: int, *, patch_budget: int = PATCH_BUDGET) -> tuple[int, int]:
    """``(patches_h, patches_w)`` the shard stage gives a ``width`` x ``height`` source video."""
    w, h = _normalised_size(width, height)
    return patch_grid(w, h, patch_budget=patch_budget)


@dataclass(frozen=True, kw_only=True)
class VideoInfo:
    """A video input: its source size and the patch grid its frames are scaled to."""

    width: int
    height: int
    patches_h: int
    patches_w: int


class VideoFrames:
    """The two 10 fps frames of each chunk of a video file, uint8 [2, H, W, 3] on the patch grid.

    ffmpeg decodes the first video stream (``fps=10``, then a bicubic scale to 40 ``patches_w``
    x 40 ``patches_h`` px, RGB) into a pipe that :meth:`next_chunk` reads two frames at a time,
    so memory holds one chunk whatever the video's length. Use as a context manager (the ffmpeg
    process is stopped on exit). ``ValueError`` when the file is not media or has no video.
    """

    def __init__(self, path: str, *, patch_budget: int = PATCH_BUDGET) -> None:
        info = probe(path, "--video")
        streams = _streams(info, "video")
        if not streams or not streams[0].get("width") or not streams[0].get("height"):
            raise ValueError(f"--video {path!r}: the file has no video stream")
        width, height = int(streams[0]["width"]), int(streams[0]["height"])
        ph, pw = video_grid(width, height, patch_budget=patch_budget)
        self.info = VideoInfo(width=width, height=height, patches_h=ph, patches_w=pw)
        self.path = path
        self._frame_bytes = ph * PATCH_PX * pw * PATCH_PX * 3
        self._last_HWC: np.ndarray | None = None
        self._padded = 0
        self._ended = False
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # a file, so ffmpeg never blocks on a full pipe
        cmd = ["ffmpeg", *_FFMPEG_QUIET, "-protocol_whitelist", "file", "-i", file_url(path),
               "-map", f"0:{streams[0]['index']}", "-an",
               "-vf", f"fps={VIDEO_FPS},scale={pw * PATCH_PX}:{ph * PATCH_PX}:flags=bicubic",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr)

    def _frame(self) -> np.ndarray | None:
        stdout = self._proc.stdout
        assert stdout is not None  # Popen was given stdout=PIPE
        data = b"" if self._ended else stdout.read(self._frame_bytes)
        if len(data) == self._frame_bytes:
            frame_HWC = np.frombuffer(data, np.uint8).reshape(self.info.patches_h * PATCH_PX,
                                                              self.info.patches_w * PATCH_PX, 3)
            self._last_HWC = frame_HWC
            return frame_HWC
        if not self._ended:
            self._ended = True
            if self._proc.wait() != 0:
                self._stderr.seek(0)
                raise ValueError(f"--video {self.path!r}: its video does not decode "
                                 f"({_ffmpeg_error(self._stderr.read(), self.path)})")
            if self._last_HWC is None:
                raise ValueError(f"--video {self.path!r}: its video stream decodes to no frames")
        if self._padded < _MAX_PAD_FRAMES:
            self._padded += 1
            return self._last_HWC
        return None

    def next_chunk(self) -> np.ndarray | None:
        """uint8 [2, H, W, 3]: the next chunk's frames, or None once the video has ended (1 s after
        its last frame, which is repeated until then)."""
        first, second = self._frame(), self._frame()
        if first is None or second is None:
            return None
        return np.stack([first, second])

    def close(self) -> None:
        """Stop ffmpeg (it may still be decoding a video longer than the audio)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_WORDS_FLAGS = {"user": "--user-text", "background": "--background-text"}


def read_words(path: str, *, stream: str = "user") -> list[tuple[int, str]]:
    """``(start_ms, text)`` of each word (or background result) of a words JSON file, in time order.

    The project's words JSON: a list of objects with ``text`` and integer ``start_ms`` (other
    keys, e.g. ``end_ms``, ``chunk``, ``speaker``, are ignored), as the rows of the ``words``
    table and each list of a sample's ``words.json``; an object with a ``stream`` list (a
    sample's ``words.json``: ``user``, or ``background`` for the results a background model
    delivered, whose ``start_ms`` is the arrival) gives that list. Times are ms from the start
    of the recording. ``ValueError`` naming the file and the entry for anything else."""
    if stream not in _WORDS_FLAGS:
        raise ValueError(f"stream must be one of {sorted(_WORDS_FLAGS)}, got {stream!r}")
    flag = _WORDS_FLAGS[stream]
    check_input(path, flag)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{flag} {path!r}: not a words JSON file ({exc})") from None
    if isinstance(data, dict) and stream in data:
        data = data[stream]
    if not isinstance(data, list):
        raise ValueError(f"{flag} {path!r}: expected a list of words ({{\"text\", \"start_ms\"}} objects) "
                         f"or a sample's words.json object with a \"{stream}\" list")
    words = []
    for i, w in enumerate(data):
        if not isinstance(w, dict) or not isinstance(w.get("text"), str):
            raise ValueError(f"{flag} {path!r}: word {i} is not an object with a \"text\" string")
        start = w.get("start_ms")
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise ValueError(f"{flag} {path!r}: word {i} ({w['text']!r}) has no whole non-negative "
                             f"\"start_ms\" (got {start!r})")
        words.append((start, w["text"]))
    return sorted(words, key=lambda sw: sw[0])


def words_by_chunk(words: list[tuple[int, str]]) -> dict[int, str]:
    """Chunk index -> the words starting in it, joined with spaces (chunk = start_ms // 200): for
    background results, the string ``Session.step`` takes as the chunk's ``background_text``."""
    out: dict[int, list[str]] = {}
    for start, text in words:
        if text.strip():
            out.setdefault(start // CHUNK_MS, []).append(text.strip())
    return {k: " ".join(v) for k, v in out.items()}


# ----------------------------------------------------------------- the output folder
def check_output(output: str) -> None:
    """Refuse (``ValueError``) an ``output`` a session must not write into.

    Accepted: a missing or empty folder, or one that a session marked. Refused: a file, a folder
    another stage marked (ingest, synthesize, shard write the same marker), and a folder holding
    anything without the session's marker (a run, tables, someone's files): nothing there is
    overwritten or removed."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output!r}: is a file, not a folder")
    if not os.path.isdir(output):
        return
    mark = read_marker(output)
    if mark is not None and mark.get("stage") != STAGE:
        who = mark.get("stage") if isinstance(mark.get("stage"), str) else "an unknown writer"
        raise ValueError(f"--output {output!r}: holds the output of {who}; a session would overwrite it. "
                         "Give the session a folder of its own")
    if mark is None and os.listdir(output):
        raise ValueError(f"--output {output!r}: holds files no session wrote ({sorted(os.listdir(output))[:3]}); "
                         "give the session an empty or new folder")


def claim_output(output: str) -> None:
    """:func:`check_output`, then create ``output`` and mark it as a session's."""
    check_output(output)
    os.makedirs(output, exist_ok=True)
    if read_marker(output) is None:
        with atomic_path(os.path.join(output, MARKER)) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({"stage": STAGE, "layout_version": 1}, f, sort_keys=True)
            f.write("\n")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` to write; renamed onto ``path`` when the block succeeds,
    removed when it fails (a rerun never leaves half a file in place of a complete one)."""
    head, tail = os.path.split(path)
    tmp = os.path.join(head, f".{tail}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_wav(path: str, wave_NC: np.ndarray) -> None:
    """16 kHz 16-bit PCM wav of float samples ``[N]`` (mono) or ``[N, C]``, clipped to [-1, 1]."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(wave_NC, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
