"""A corpus of good, odd and broken media made with ffmpeg, for the ingest tests.

Every file is built from the real phone call shipped with pyannote.audio (or from ffmpeg's test
sources), so the good ones carry real speech. ``build_corpus`` returns what each file must give.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

from microturn.testing.sample_call import SAMPLE_DIR as SAMPLE

SAMPLE_WAV = str(SAMPLE / "sample.wav")
SAMPLE_STM = str(SAMPLE / "sample.stm")
SAMPLE_RTTM = str(SAMPLE / "sample.rttm")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)


def speech(out: str, *, start: float = 6.5, dur: float = 8.0, ar: int = 16000, ac: int = 1,
           codec: list[str] | None = None) -> str:
    """A clip of the real call, resampled / upmixed as asked."""
    ffmpeg("-ss", str(start), "-t", str(dur), "-i", SAMPLE_WAV, "-ar", str(ar), "-ac", str(ac),
           *(codec or []), out)
    return out


def video_with_audio(out: str, *, dur: float = 6.0, rate: str = "25", extra: list[str] | None = None) -> str:
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={rate}", "-ss", "6.5", "-t", str(dur),
           "-i", SAMPLE_WAV, "-t", str(dur), "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", *(extra or []), out)
    return out


def build_corpus(root: str) -> dict[str, dict]:
    """Write the corpus under ``root``; return {file name: expectation}.

    An expectation has ``stage`` (where it is rejected) or ``has_video``/``channels``.
    """
    os.makedirs(root, exist_ok=True)
    p = lambda name: os.path.join(root, name)  # noqa: E731
    expect: dict[str, dict] = {}

    open(p("empty.mp4"), "wb").close()
    expect["empty.mp4"] = {"stage": "probe", "error": "empty"}

    with open(p("notes.mp4"), "w") as f:
        f.write("this is a text file, not a video\n" * 20)
    expect["notes.mp4"] = {"stage": "probe", "error": "ffprobe cannot read"}

    video_with_audio(p("whole.mp4"))
    with open(p("whole.mp4"), "rb") as f:
        data = f.read()
    os.remove(p("whole.mp4"))
    with open(p("truncated.mp4"), "wb") as f:
        f.write(data[: len(data) * 2 // 5])
    expect["truncated.mp4"] = {"stage": ("probe", "normalise")}

    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "2", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", p("no_audio.mp4"))
    expect["no_audio.mp4"] = {"stage": "probe", "error": "no audio stream"}

    speech(p("unknown_codec.wav"), dur=3)
    with open(p("unknown_codec.wav"), "r+b") as f:
        head = f.read(64)
        f.seek(head.find(b"fmt ") + 8)
        f.write(struct.pack("<H", 0x2222))  # a WAVE format tag no decoder knows
    expect["unknown_codec.wav"] = {"stage": "probe", "error": "unsupported audio codec"}

    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=75:c=pink:r=16000:a=0.05", p("too_long.flac"))
    expect["too_long.flac"] = {"stage": "probe", "error": "over the limit"}

    # Audio-only inputs at sample rates from 8 to 48 kHz and 1 to 8 channels.
    speech(p("call_8k.wav"), ar=8000)
    speech(p("call_22k.flac"), ar=22050, start=12)
    speech(p("call_44k.mp3"), ar=44100, ac=2, start=16, codec=["-c:a", "libmp3lame"])
    speech(p("call_48k_8ch.wav"), ar=48000, ac=8, start=20)
    for name, ch in (("call_8k.wav", 1), ("call_22k.flac", 1), ("call_44k.mp3", 1), ("call_48k_8ch.wav", 1)):
        # upmixed copies carry the same mixture on every channel: one mixed stream
        expect[name] = {"has_video": False, "channels": ch}

    # One speaker per channel: the call's two halves on the left and right of a stereo file.
    speech(p("left.wav"), start=6.5, dur=6)
    speech(p("right.wav"), start=16.0, dur=6)
    ffmpeg("-i", p("left.wav"), "-i", p("right.wav"), "-filter_complex",
           "[0:a]aformat=sample_fmts=fltp:channel_layouts=mono,apad=whole_dur=12[a];"
           "[1:a]aformat=sample_fmts=fltp:channel_layouts=mono,adelay=6000:all=1[b];"
           "[a][b]amerge=inputs=2[m]", "-map", "[m]",
           "-t", "12", p("two_line_call.wav"))
    os.remove(p("left.wav"))
    os.remove(p("right.wav"))
    expect["two_line_call.wav"] = {"has_video": False, "channels": 2}

    # Variable frame rate video (frames dropped unevenly, timestamps kept) and a plain one.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-ss", "6.5", "-t", "6",
           "-i", SAMPLE_WAV, "-t", "6", "-map", "0:v", "-map", "1:a",
           "-vf", "select='not(mod(n\\,3))+not(mod(n\\,7))',setpts=PTS", "-fps_mode", "vfr",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
           p("vfr.mp4"))
    expect["vfr.mp4"] = {"has_video": True, "channels": 1}
    video_with_audio(p("talk.mp4"), dur=8)
    expect["talk.mp4"] = {"has_video": True, "channels": 1}

    # Sidecars: one that is not valid UTF-8, one whose lines run past the media.
    with open(p("talk.srt"), "wb") as f:
        f.write(b"1\n00:00:00,200 --> 00:00:01,000\nHello?\n\n2\n00:00:01,100 --> 00:00:02,000\n"
                b"caf\xe9 \xff\xfe broken\n")
    expect["talk.srt"] = {"stage": "sidecar", "sidecar_of": "talk.mp4"}
    with open(p("vfr.vtt"), "w") as f:
        f.write("WEBVTT\n\n00:00.200 --> 00:01.000\nHello?\n\n00:05.500 --> 00:09.000\nrunning past the end\n\n"
                "00:20.000 --> 00:21.000\nafter the end\n")
    expect["vfr.vtt"] = {"stage": "sidecar", "sidecar_of": "vfr.mp4", "error": "dropped"}
    return expect


def copy_sample_as_video(root: str, name: str = "phone_call") -> str:
    """The full 30 s call as a video with its STM transcript beside it."""
    os.makedirs(root, exist_ok=True)
    out = os.path.join(root, f"{name}.mp4")
    video_with_audio(out, dur=30)
    # video_with_audio starts the audio at 6.5 s; the full call must start at 0 for the STM.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-i", SAMPLE_WAV, "-map", "0:v",
           "-map", "1:a", "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
           "yuv420p", "-c:a", "aac", out)
    shutil.copyfile(SAMPLE_STM, os.path.join(root, f"{name}.stm"))
    return out


def ffmpeg_stdout(*args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *args],
                          check=True, capture_output=True).stdout


def streaming_wav(out: str, *, start: float = 7.0, dur: float = 1.3) -> str:
    """A WAV as ``ffmpeg -f wav pipe:1`` writes it: RIFF and data sizes 0xFFFFFFFF (unknown)."""
    data = ffmpeg_stdout("-ss", str(start), "-t", str(dur), "-i", SAMPLE_WAV, "-f", "wav", "pipe:1")
    assert data[4:8] == b"\xff\xff\xff\xff"
    with open(out, "wb") as f:
        f.write(data)
    return out


def lying_mp3(out: str, *, says_s: float, holds_s: float) -> str:
    """An MP3 whose Xing header counts the frames of ``says_s`` seconds while its body holds
    ``holds_s`` more: the frames of a second encode appended, and the header's byte count
    patched to the file's size so that ffprobe believes the frame count."""
    # Written to a file: ffmpeg fills in the Xing header by seeking back, which a pipe cannot.
    ffmpeg("-t", str(says_s), "-i", SAMPLE_WAV, "-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3",
           "file:" + os.path.abspath(out))
    with open(out, "rb") as f:
        head = f.read()
    body = ffmpeg_stdout("-ss", "2", "-t", str(holds_s), "-i", SAMPLE_WAV, "-c:a", "libmp3lame",
                         "-b:a", "32k", "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3",
                         "pipe:1")
    data = bytearray(head + body)
    at = max(data.find(b"Info"), data.find(b"Xing"))
    assert at > 0 and data[at + 7] & 0x2  # the header carries a byte count
    data[at + 12:at + 16] = len(data).to_bytes(4, "big")
    with open(out, "wb") as f:
        f.write(bytes(data))
    return out
