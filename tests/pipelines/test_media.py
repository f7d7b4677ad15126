import os

import numpy as np
import pytest
import soundfile as sf

from microturn.pipelines import media
from media_corpus import SAMPLE_WAV, ffmpeg, speech, video_with_audio


def test_probe_and_decode_resample_to_16k(tmp_path):
    path = speech(str(tmp_path / "x.mp3"), ar=44100, ac=2, dur=3, codec=["-c:a", "libmp3lame"])
    info = media.probe(path)
    assert info.audio.sample_rate == 44100 and info.audio.channels == 2 and info.video is None
    wave_CN = media.decode_audio(path, stream=info.audio)
    assert wave_CN.shape[0] == 2 and wave_CN.dtype == np.float32
    assert abs(wave_CN.shape[1] - 3 * 16000) < 1600  # mp3 priming/padding is under 100 ms
    mono = media.decode_audio(path, stream=info.audio, keep_channels=False)
    assert mono.shape[0] == 1


def test_decode_matches_the_source_samples():
    info = media.probe(SAMPLE_WAV)
    wave = media.decode_audio(SAMPLE_WAV, stream=info.audio)[0]
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
    assert info.video.variable_frame_rate and (info.video.width, info.video.height) == (330, 250)
    out = str(tmp_path / "v10.mp4")
    media.normalise_video(src, out, stream=info.video)
    norm = media.probe(out).video
    assert norm.fps == 10.0 and not norm.variable_frame_rate
    assert (norm.width, norm.height) == (330, 250)
    first = open(out, "rb").read()
    media.normalise_video(src, out, stream=info.video)
    assert open(out, "rb").read() == first  # byte-identical reruns


def test_large_video_is_scaled_down_keeping_aspect(tmp_path):
    src = video_with_audio(str(tmp_path / "big.mp4"), dur=1, rate="10")
    info = media.probe(src)
    out = str(tmp_path / "small.mp4")
    media.normalise_video(src, out, stream=info.video, max_side=160)
    v = media.probe(out).video
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
