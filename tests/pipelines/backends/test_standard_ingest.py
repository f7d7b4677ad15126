"""The ingest job end to end through the standard backends (pyannote.audio pipeline, whisperx),
with tiny random models in the --model-dir layout, offline."""

import importlib.util
import os
import shutil
import subprocess

import pytest

from microturn.pipelines.ingest.run import run
from microturn.pipelines.tables import read_table

pytestmark = pytest.mark.slow


def _pyannote_sample_dir() -> str:
    """The sample recording shipped inside the installed pyannote.audio package."""
    spec = importlib.util.find_spec("pyannote.audio")
    assert spec is not None and spec.origin is not None, "pyannote.audio is not installed"
    return os.path.join(os.path.dirname(spec.origin), "sample")


SAMPLE = _pyannote_sample_dir()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("std-in")
    # with a sidecar: whisperx aligns the transcript; without: whisperx transcribes
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", f"{SAMPLE}/sample.wav",
                    "-c:a", "flac", str(root / "sample.flac")], check=True)
    shutil.copyfile(f"{SAMPLE}/sample.stm", root / "sample.stm")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-ss", "6", "-t", "12", "-i",
                    f"{SAMPLE}/sample.wav", str(root / "untranscribed.wav")], check=True)
    return root


def test_ingest_through_pyannote_and_whisperx(inputs, tiny_model_dir, tmp_path, offline, one_thread):
    out = str(tmp_path / "out")
    summary = run(["--input", f"{inputs}/*", "--output", out, "--diarizer", "pyannote",
                   "--transcriber", "whisperx", "--model-dir", str(tiny_model_dir),
                   "--max-speakers", "3"], print_summary=False)
    assert summary.conversations == 2, read_table(out, "rejects").to_pylist()
    convs = {os.path.basename(c["source_uri"]): c for c in read_table(out, "conversations").to_pylist()}
    for conv in convs.values():
        backends = dict(conv["backends"])
        assert backends["diarizer"] == "pyannote" and backends["transcriber"] == "whisperx"
        assert conv["num_speakers"] <= 3
    words = read_table(out, "words").to_pylist()
    sidecar_words = [w for w in words if w["conversation_id"] == convs["sample.flac"]["conversation_id"]]
    # every transcript word is placed (random weights place them arbitrarily, but inside the media)
    stm_words = sum(len(line.split()[5:]) for line in open(f"{SAMPLE}/sample.stm") if line.strip())
    assert len(sidecar_words) == stm_words
    for w in words:
        assert 0 <= w["start_ms"] <= w["end_ms"] <= convs_duration(convs, w["conversation_id"])


def convs_duration(convs, cid):
    return next(c["duration_ms"] for c in convs.values() if c["conversation_id"] == cid)


def test_missing_model_dir_is_an_actionable_error(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF")  # an input that exists: the model dir is the fault
    with pytest.raises(ValueError, match="model-dir|missing"):
        run(["--input", str(tmp_path / "x.wav"), "--output", str(tmp_path / "out"),
             "--diarizer", "pyannote", "--model-dir", str(tmp_path / "nowhere")],
            print_summary=False)
