import os

import numpy as np
import pytest
import soundfile as sf

from media_corpus import SAMPLE_WAV, ffmpeg, ffmpeg_stdout, lying_mp3, speech, video_with_audio
from microturn.pipelines import media


def _audio(info: media.ProbeInfo) -> media.StreamInfo:
    assert info.audio is not None, "the test media here all have audio"
    return info.audio


def _video(info: media.ProbeInfo) -> media.StreamInfo:
    assert info.video is not None, "the test media here all have video"
    return info.video


def test_probe_and_decode_resample_to_16k(tmp_path):
    path = speech(str(tmp_path / "x.mp3"), ar=44100, ac=2, dur=3, codec=["-c:a", "libmp3lame"])
    info = media.probe(path)
    assert _audio(info).sample_rate == 44100 and _audio(info).channels == 2 and info.video is None
    wave_CN = media.decode_audio(path, stream=_audio(info))
    assert wave_CN.shape[0] == 2 and wave_CN.dtype == np.float32
    assert abs(wave_CN.shape[1] - 3 * 16000) < 1600  # mp3 priming/padding is under 100 ms
    mono = media.decode_audio(path, stream=_audio(info), keep_channels=False)
    assert mono.shape[0] == 1


def test_decode_matches_the_source_samples():
    info = media.probe(SAMPLE_WAV)
    wave = media.decode_audio(SAMPLE_WAV, stream=_audio(info))[0]
    ref, sr = sf.read(SAMPLE_WAV, dtype="float32")
    assert sr == 16000 and wave.shape == ref.shape
    assert np.max(np.abs(wave - ref)) < 1e-6  # 16 kHz in, 16 kHz out: no resampling


def test_flac_round_trip_is_lossless_at_16_bit(tmp_path):
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(16000) * 0.1).astype(np.float32)
    out = tmp_path / "a.flac"
    media.write_bytes(str(out), media.encode_flac(wave))
    back = media.read_flac(str(out))
    assert np.max(np.abs(back - wave)) <= 1 / 32768 + 1e-7
    assert media.encode_flac(wave) == media.encode_flac(wave)  # deterministic bytes


def test_vfr_video_is_normalised_to_10fps_and_recorded(tmp_path):
    src = str(tmp_path / "vfr.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=330x250:rate=30", "-t", "4",
           "-vf", "select='not(mod(n\\,3))+not(mod(n\\,7))',setpts=PTS", "-fps_mode", "vfr",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", src)
    info = media.probe(src)
    assert _video(info).variable_frame_rate and (_video(info).width, _video(info).height) == (330, 250)
    out = str(tmp_path / "v10.mp4")
    media.normalise_video(src, out, stream=_video(info))
    norm = _video(media.probe(out))
    assert norm.fps == 10.0 and not norm.variable_frame_rate
    assert (norm.width, norm.height) == (330, 250)
    first = open(out, "rb").read()
    media.normalise_video(src, out, stream=_video(info))
    assert open(out, "rb").read() == first  # byte-identical reruns


def test_large_video_is_scaled_down_keeping_aspect(tmp_path):
    src = video_with_audio(str(tmp_path / "big.mp4"), dur=1, rate="10")
    info = media.probe(src)
    out = str(tmp_path / "small.mp4")
    media.normalise_video(src, out, stream=_video(info), max_side=160)
    v = _video(media.probe(out))
    assert (v.width, v.height) == (160, 120)


@pytest.mark.parametrize("content, match", [(b"", "empty"), (b"hello" * 100, "cannot read")])
def test_probe_errors_are_actionable(tmp_path, content, match):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(media.MediaError, match=match):
        media.probe(str(path))


def test_local_copy_hashes_local_and_remote_alike(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc" * 1000)
    with media.local_copy(str(path)) as (local, sha, size):
        assert local == str(path) and size == 3000
    with media.local_copy(f"file://{path}") as (_, sha2, _):
        assert sha2 == sha
    assert os.path.exists(path)


# ---------------------------------------------------------------- names are data

# (name, slice of the sample call in seconds): every file holds different audio, so a file
# decoded from another one's bytes shows in its samples.
TRICKY_NAMES = [
    ("other.wav", 7.0), ("concat:other.wav", 8.0), ("-report", 9.0), ("10:30.wav", 10.0),
    ("pipe:1", 11.0), ("file:x.wav", 12.0), ("has space.wav", 13.0), ("new\nline.wav", 14.0),
    ("a|b.wav", 15.0), ("a;b.wav", 16.0), ("-y.wav", 17.0), ("http:x.wav", 18.0),
]


def _write_clip(name: str, start: float) -> None:
    # Written through a file: URL so that the name cannot steer this ffmpeg either.
    ffmpeg("-ss", str(start), "-t", "0.5", "-i", SAMPLE_WAV, "-f", "wav",
           media.file_url(name))


def test_names_never_select_a_protocol_or_an_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative names, as a glob in the working folder gives them
    for name, start in TRICKY_NAMES:
        _write_clip(name, start)
    for name, _ in TRICKY_NAMES:
        info = media.probe(name)
        assert info.container == "wav" and info.duration_ms == 500, name
        wave = media.decode_audio(name, stream=_audio(info))[0]
        own, _ = sf.read(name, dtype="float32")  # the file's own bytes
        assert wave.shape == own.shape and np.max(np.abs(wave - own)) < 1e-6, name
    # -report, read as an option, wrote ffmpeg-YYYYMMDD-HHMMSS.log into the working folder.
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, _ in TRICKY_NAMES)


def test_the_normalised_video_goes_to_its_own_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = video_with_audio("src.mp4", dur=1, rate="10")
    media.normalise_video(src, "-out.mp4", stream=_video(media.probe(src)))
    assert _video(media.probe("-out.mp4")).fps == 10.0
    assert sorted(os.listdir(tmp_path)) == ["-out.mp4", "src.mp4"]


def test_file_url_is_absolute_and_unescaped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert media.file_url("concat:a%20b.wav") == f"file:{tmp_path}/concat:a%20b.wav"
    assert media.file_url("/abs/-x") == "file:/abs/-x"


@pytest.mark.parametrize("name, content", [
    ("list.wav", "ffconcat version 1.0\nfile other.wav\n"),
    ("list.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nother.wav\n#EXT-X-ENDLIST\n"),
    ("remote.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:9/a.wav\n"
                    "#EXT-X-ENDLIST\n"),
])
def test_files_that_list_other_files_are_refused(tmp_path, monkeypatch, name, content):
    """A file's content may not make ffmpeg read another file (or any other protocol)."""
    monkeypatch.chdir(tmp_path)
    _write_clip("other.wav", 7.0)
    (tmp_path / name).write_text(content)
    with pytest.raises(media.MediaError):
        info = media.probe(name)
        media.decode_audio(name, stream=info.audio)  # pyright: ignore[reportArgumentType]  # probe raises first


# ---------------------------------------------------------------- what is decoded is what counts


@pytest.mark.parametrize("size_field", [None, 0], ids=["ffmpeg-pipe", "zero-sizes"])
def test_streaming_wav_decodes_whole(tmp_path, size_field):
    """A WAV written to a pipe has no length in its header (RIFF and data sizes 0xFFFFFFFF);
    some writers put 0 there instead. Both decode to every sample, with the right duration."""
    data = bytearray(ffmpeg_stdout("-ss", "7", "-t", "1.3", "-i", SAMPLE_WAV, "-f", "wav",
                                       "pipe:1"))
    assert data[4:8] == b"\xff\xff\xff\xff"
    if size_field is not None:
        data[4:8] = size_field.to_bytes(4, "little")
        at = data.find(b"data")
        data[at + 4:at + 8] = size_field.to_bytes(4, "little")
    path = tmp_path / "stream.wav"
    path.write_bytes(bytes(data))
    info = media.probe(str(path))
    assert info.duration_ms == 1300
    wave = media.decode_audio(str(path), stream=_audio(info), max_ms=1300)[0]
    ref, _ = sf.read(SAMPLE_WAV, dtype="float32", start=7 * 16000, frames=int(1.3 * 16000))
    assert wave.shape == ref.shape and np.max(np.abs(wave - ref)) < 1e-6


@pytest.mark.parametrize("codec, ext", [(["-c:a", "flac"], "flac"), (["-c:a", "aac"], "m4a")])
def test_a_frame_that_does_not_decode_still_fails(tmp_path, codec, ext):
    """Accepting streaming WAVs must not let broken frames through."""
    path = tmp_path / f"cut.{ext}"
    speech(str(path), dur=3, codec=[*codec, *(["-movflags", "+faststart"] if ext == "m4a" else [])])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(media.MediaError, match="cannot decode"):
        media.decode_audio(str(path), stream=_audio(media.probe(str(path))))


def test_the_duration_limit_holds_on_the_decoded_audio(tmp_path):
    path = lying_mp3(str(tmp_path / "liar.mp3"), says_s=1, holds_s=9)
    info = media.probe(path)
    assert info.duration_ms < 1500  # what the header claims
    with pytest.raises(media.TooLongError, match="more than 4 s"):
        media.decode_audio(path, stream=_audio(info), max_ms=4000)
    whole = media.decode_audio(path, stream=_audio(info), max_ms=12_000)
    assert 9.5 * 16000 < whole.shape[1] < 10.5 * 16000  # all of it, under a limit it fits
    # A file that fits exactly passes: the limit counts samples, not the 100 ms looked past it.
    exact = speech(str(tmp_path / "exact.wav"), dur=2)
    assert media.decode_audio(exact, stream=_audio(media.probe(exact)), max_ms=2000).shape[1] == 32000


# ---------------------------------------------------------------- only regular files are read


def test_only_regular_files_are_opened(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    (tmp_path / "zero.wav").symlink_to("/dev/zero")  # reading it would never end
    (tmp_path / "dir.wav").mkdir()
    for name, kind in (("pipe.wav", "FIFO"), ("zero.wav", "character device"), ("dir.wav", "directory")):
        with pytest.raises(media.NotARegularFile, match=kind):
            with media.local_copy(str(tmp_path / name)):
                pass
    (tmp_path / "real.bin").write_bytes(b"abc")
    (tmp_path / "link.bin").symlink_to(tmp_path / "real.bin")
    with media.local_copy(str(tmp_path / "link.bin")) as (_, _, size):
        assert size == 3
    if os.path.exists("/proc/self/status"):
        # A kernel file is regular with size 0 whatever it holds (/proc/kmsg blocks on read):
        # reading stops at the size the file had when it was opened.
        (tmp_path / "proc.wav").symlink_to("/proc/self/status")
        with media.local_copy(str(tmp_path / "proc.wav")) as (_, _, size):
            assert size == 0
