"""``microturn session``: a recording streamed into a trained run, end to end with real files.

* On 3 s of the pyannote sample call (with a video and a words JSON transcript, settings from a
  TOML file and flags), the command writes a mono model.wav, a stereo conversation.wav whose
  left channel is the user's recording and whose right channel is the session's streamed audio
  moved back by the vocoder's delay, one timeline line per chunk and the settings it ran with.
* Inputs reach ffmpeg as files whatever their names; video comes as 10 fps frames on the shard
  stage's patch grid, padded by its last frame for 1 s.
* Every bad input is exit status 2 with one line naming the problem, before anything is written.

Shape suffixes follow microturn.schemas.legend: N audio samples, C channels, F frames, H, W pixels.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from microturn.testing.sample_call import sample_wave
from microturn.trainer import session_media as media
from microturn.trainer.session import Session, SessionConfig
from microturn.trainer.session_cli import main, session_config
from session_runs import one_thread, trained_run_dir

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SECONDS = 3
CHUNKS = SECONDS * 5


@pytest.fixture(scope="module")
def run_dir() -> str:
    return trained_run_dir()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A 3 s wav of the sample call, a 2 s 320x240 video, a words JSON and a session TOML."""
    root = tmp_path_factory.mktemp("session-inputs")
    wav = str(root / "user.wav")
    sf.write(wav, sample_wave()[:SECONDS * 16_000], 16_000, subtype="PCM_16")
    video = str(root / "video.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-t", "2", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", video], check=True)
    words = str(root / "words.json")
    with open(words, "w") as f:
        json.dump([{"text": "hello", "start_ms": 250, "end_ms": 600}, {"text": "there", "start_ms": 1210}], f)
    config = str(root / "session.toml")
    with open(config, "w") as f:
        f.write("seed = 3\nmoe_kernel = \"deepspeed\"\n[text]\ngreedy = false\ntemperature = 0.8\n")
    return {"wav": wav, "video": video, "words": words, "config": config, "root": str(root)}


def _latest(run_dir: str) -> str:
    return open(os.path.join(run_dir, "checkpoints", "latest")).read().strip()


def _session(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["--no-progress", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_writes_the_conversation_the_timeline_and_the_latency(run_dir, files, tmp_path, capsys):
    out = str(tmp_path / "session")
    code, printed, err = _session(["--checkpoint", run_dir, "--user-audio", files["wav"], "--video", files["video"],
                                   "--user-text", files["words"], "--output", out, "--config", files["config"],
                                   "--seed", "7", "--tag", _latest(run_dir)], capsys)
    assert code == 0, err
    assert "p50" in printed and "p95" in printed and "max" in printed and "200 ms budget" in printed
    assert f"of {CHUNKS} chunk(s) over budget" in printed

    model_N, rate = sf.read(os.path.join(out, "model.wav"), dtype="float32")
    assert rate == 16_000 and model_N.shape == (CHUNKS * 3200,)
    conversation_NC, rate = sf.read(os.path.join(out, "conversation.wav"), dtype="float32")
    assert rate == 16_000 and conversation_NC.shape == (CHUNKS * 3200, 2)
    user_N = sample_wave()[:SECONDS * 16_000]
    assert np.abs(conversation_NC[:, 0] - user_N).max() <= 1 / 32768 + 1e-6  # the user, left, at their times
    np.testing.assert_array_equal(conversation_NC[:, 1], model_N)

    rows = [json.loads(line) for line in open(os.path.join(out, "timeline.jsonl"))]
    assert [r["chunk"] for r in rows] == list(range(CHUNKS))
    assert [r["start_ms"] for r in rows] == [200 * k for k in range(CHUNKS)]
    assert all(set(r) == {"chunk", "start_ms", "compute_ms", "text", "p_speak", "voiced", "text_forced_end",
                          "positions"} for r in rows)
    assert all(0.0 <= r["p_speak"] <= 1.0 for r in rows)
    # 6x8 = 48 patches per chunk on 320x240 video, for 2 s plus the 1 s pad of its last frame.
    assert all(r["positions"] >= 48 + 6 for r in rows)

    record = json.load(open(os.path.join(out, "session.json")))
    assert record["config"]["seed"] == 7  # the flag over the file's 3
    assert record["config"]["text"] == {"greedy": False, "temperature": 0.8, "top_p": 1.0}
    assert record["chunks"] == CHUNKS and record["vocoder_delay_samples_removed"] == 800
    assert record["tag"] == _latest(run_dir) and 0 <= record["model_clipped"] <= 1


def test_the_model_channel_is_the_streamed_audio_less_the_vocoder_delay(run_dir, files, tmp_path, capsys):
    out = str(tmp_path / "session")
    code, _, err = _session(["--checkpoint", run_dir, "--user-audio", files["wav"], "--output", out], capsys)
    assert code == 0, err
    model_N, _ = sf.read(os.path.join(out, "model.wav"), dtype="float32")
    user_N = sample_wave()[:SECONDS * 16_000]
    with contextlib.contextmanager(one_thread)():  # as the command runs it
        session = Session(run_dir, SessionConfig())
        streamed_N = np.concatenate([session.step(user_N[k * 3200:(k + 1) * 3200]).audio_N for k in range(CHUNKS)])
    delay = session.vocoder.delay_samples
    expected_N = np.clip(np.concatenate([streamed_N[delay:], np.zeros(delay, np.float32)]), -1, 1)
    assert np.abs(expected_N).max() > 1e-3  # the model made sound to compare
    np.testing.assert_allclose(model_N, expected_N, atol=2 / 32768 + 1e-4)
    # A rerun into the session's own folder replaces its files.
    code, _, err = _session(["--checkpoint", run_dir, "--user-audio", files["wav"], "--output", out, "--seed", "1"],
                            capsys)
    assert code == 0, err
    assert json.load(open(os.path.join(out, "session.json")))["config"]["seed"] == 1


def test_flags_override_the_config_file(files):
    cfg = session_config(files["config"], moe_kernel="gemv", seed=11, device="cpu")
    assert (cfg.moe_kernel, cfg.seed, cfg.device, cfg.text.greedy, cfg.text.temperature) == ("gemv", 11, "cpu",
                                                                                              False, 0.8)
    cfg = session_config(files["config"])
    assert (cfg.moe_kernel, cfg.seed) == ("deepspeed", 3)
    assert session_config() == SessionConfig()


@pytest.mark.parametrize("name", ["-x.wav", "concat:user.wav|user.wav", "pipe:1.wav"])
def test_names_that_look_like_options_or_protocols_are_read_as_files(files, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(files["wav"], tmp_path / "user.wav")
    shutil.copyfile(files["wav"], tmp_path / name)
    wave_N = media.read_audio(name)
    np.testing.assert_allclose(wave_N, sample_wave()[:SECONDS * 16_000], atol=1 / 32768 + 1e-6)


def test_video_comes_on_the_shard_grid_padded_by_its_last_frame_for_a_second(tmp_path):
    from microturn.pipelines.shard.video import VideoSpec

    assert media.PATCH_BUDGET == VideoSpec().patch_budget
    assert media.video_grid(320, 240) == (6, 8) and media.video_grid(1920, 1080) == (5, 9)
    video = str(tmp_path / "v.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=red:size=160x120:rate=30", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", video],
                   check=True)
    with media.VideoFrames(video) as frames:
        assert (frames.info.patches_h, frames.info.patches_w) == (3, 4)
        chunks = []
        while (chunk_FHWC := frames.next_chunk()) is not None:
            chunks.append(chunk_FHWC)
    assert len(chunks) == 10  # 1 s of 10 fps frames, then 1 s of the last one
    assert all(c.shape == (2, 120, 160, 3) and c.dtype == np.uint8 for c in chunks)
    red = chunks[-1].reshape(-1, 3).mean(0)
    assert red[0] > 200 and red[1] < 40 and red[2] < 40


def test_words_json(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"user": [{"text": "b", "start_ms": 450}, {"text": "a", "start_ms": 410, "chunk": 2},
                                         {"text": "c", "start_ms": 10}], "model": []}))
    assert media.words_by_chunk(media.read_words(str(path))) == {0: "c", 2: "a b"}
    path.write_text(json.dumps([{"text": "a", "start_ms": 1.5}]))
    with pytest.raises(ValueError, match="start_ms"):
        media.read_words(str(path))


def _copy_run(run_dir: str, dest: str, edit) -> str:
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("*optim_states.pt"))
    ckpt = os.path.join(dest, "checkpoints")
    path = os.path.join(ckpt, _latest(dest), "run_config.json")
    saved = json.load(open(path))
    edit(saved)
    with open(path, "w") as f:
        json.dump(saved, f)
    return dest


def _bad_inputs(run_dir: str, files: dict[str, str], tmp: str) -> dict[str, tuple[list[str], str]]:
    """Case -> (arguments replacing the good ones, a phrase the error names)."""
    text = os.path.join(tmp, "not-media.wav")
    with open(text, "w") as f:
        f.write("this is not audio\n" * 20)
    marked = os.path.join(tmp, "shards")
    os.makedirs(marked)
    with open(os.path.join(marked, "_microturn_stage.json"), "w") as f:
        json.dump({"stage": "shard", "layout_version": 1}, f)
    toml = os.path.join(tmp, "bad.toml")
    with open(toml, "w") as f:
        f.write("seed = 1\n[audio]\ngredy = true\n")
    return {
        "missing file": (["--user-audio", os.path.join(tmp, "nope.wav")], "no such file"),
        "unreadable file": (["--user-audio", text], "not a media file"),
        "no audio stream": (["--user-audio", files["video"]], "no audio stream"),
        "no video stream": (["--video", files["wav"]], "no video stream"),
        "not a run": (["--checkpoint", files["root"]], "no complete checkpoint"),
        "another layout": (["--checkpoint", _copy_run(run_dir, os.path.join(tmp, "old"),
                                                      lambda c: c.update(layout=1))], "sequence layout 1"),
        "weights that do not fit": (["--checkpoint", _copy_run(run_dir, os.path.join(tmp, "wide"),
                                                               lambda c: c["model"].update(ffn_dim=96))],
                                    "weights do not fit"),
        "unknown config key": (["--config", toml], "gredy"),
        "bad flag value": (["--seed", "-1"], "seed"),
        "another stage's output": (["--output", marked], "holds the output of shard"),
        "a run as output": (["--output", run_dir], "holds files no session wrote"),
        "missing tag": (["--tag", "step999"], "step999"),
        "no such device": (["--device", "nodevice"], "nodevice"),
    }


def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(run_dir, files, tmp_path, capsys):
    out = str(tmp_path / "out")
    good = {"--checkpoint": run_dir, "--user-audio": files["wav"], "--output": out}
    for case, (args, phrase) in _bad_inputs(run_dir, files, str(tmp_path)).items():
        argv = dict(good)
        extra = []
        for flag, value in zip(args[::2], args[1::2], strict=True):
            if flag in argv:
                argv[flag] = value
            else:
                extra += [flag, value]
        code, printed, err = _session([*[x for kv in argv.items() for x in kv], *extra], capsys)
        assert code == 2, (case, err)
        assert phrase in err and err.count("\n") == 1 and "Traceback" not in err, (case, err)
        assert not os.path.exists(out), case
        assert not printed, case
    # Nothing of the refused outputs was touched.
    assert os.listdir(tmp_path / "shards") == ["_microturn_stage.json"]


def test_a_loaded_session_streams_many_recordings_as_fresh_sessions_do(run_dir, files, tmp_path):
    """One loaded session, reset per recording, gives each recording what a fresh session gives:
    sampling draws included (the config samples text at temperature 0.8)."""
    from microturn.trainer.session_cli import run_session

    config = session_config(files["config"])
    fresh = str(tmp_path / "fresh")
    run_session(run_dir, files["wav"], fresh, config=config, progress=False)
    shared = Session(run_dir, config)
    for name in ("first", "second"):
        run_session(run_dir, files["wav"], str(tmp_path / name), session=shared, progress=False)
    expected, _ = sf.read(os.path.join(fresh, "model.wav"), dtype="float32")
    for name in ("first", "second"):
        got, _ = sf.read(str(tmp_path / name / "model.wav"), dtype="float32")
        np.testing.assert_allclose(got, expected, atol=1e-6)
        with open(tmp_path / name / "timeline.jsonl") as a, open(os.path.join(fresh, "timeline.jsonl")) as b:
            assert [json.loads(x)["text"] for x in a] == [json.loads(x)["text"] for x in b]
    with pytest.raises(ValueError, match="not both"):
        run_session(run_dir, files["wav"], str(tmp_path / "both"), session=shared, config=config)
