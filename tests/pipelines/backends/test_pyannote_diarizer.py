"""The pyannote diarizer on real speech, with a tiny random pipeline loaded like real weights."""

from __future__ import annotations

import re
import shutil
import socket

import numpy as np
import pytest

from microturn.pipelines.backends.base import Diarizer, Region, SpeakerCount, Turn
from microturn.pipelines.backends.model_dir import pyannote_config, pyannote_pipeline_dir
from microturn.pipelines.backends.pyannote_diarizer import (
    PyannoteDiarizer,
    PyannoteDiarizerConfig,
    annotation_to_turns,
)

if __package__:
    from .tiny_models import build_tiny_pyannote_pipeline
else:  # rootdir-relative collection puts this folder on sys.path
    from tiny_models import build_tiny_pyannote_pipeline

SAMPLE_MS = 30_000  # pyannote's sample.wav: 30 s at 16 kHz


@pytest.fixture(scope="module")
def diarizer(tiny_pyannote_pipeline_dir, offline_module, one_thread) -> PyannoteDiarizer:
    return PyannoteDiarizer(PyannoteDiarizerConfig(pipeline=str(tiny_pyannote_pipeline_dir)))


def check_turns(turns: list[Turn], duration_ms: int) -> None:
    assert isinstance(turns, list)
    first_seen: list[str] = []
    for t in turns:
        assert isinstance(t, Turn)
        assert type(t.start_ms) is int and type(t.end_ms) is int
        assert 0 <= t.start_ms < t.end_ms <= duration_ms, t
        assert t.channel == 0
        assert re.fullmatch(r"SPEAKER_\d{2}", t.speaker), t.speaker
        if t.speaker not in first_seen:
            first_seen.append(t.speaker)
    assert [t.start_ms for t in turns] == sorted(t.start_ms for t in turns)
    assert first_seen == [f"SPEAKER_{k:02d}" for k in range(len(first_seen))]


@pytest.mark.slow
def test_turns_on_real_speech_are_valid(diarizer, sample_wave, offline):
    assert isinstance(diarizer, Diarizer) and diarizer.name == "pyannote"
    turns = diarizer(sample_wave, speech=[Region(0, SAMPLE_MS)], count=SpeakerCount())
    check_turns(turns, SAMPLE_MS)
    assert turns, "the seeded tiny pipeline finds speech in the sample"


@pytest.mark.slow
@pytest.mark.parametrize(
    "count, most",
    [
        (SpeakerCount(max_speakers=1), 1),
        (SpeakerCount(num_speakers=2), 2),
        (SpeakerCount(min_speakers=1, max_speakers=2), 2),
    ],
)
def test_speaker_count_is_honoured(diarizer, sample_wave, offline, count, most):
    turns = diarizer(sample_wave, speech=[Region(0, SAMPLE_MS)], count=count)
    check_turns(turns, SAMPLE_MS)
    assert 1 <= len({t.speaker for t in turns}) <= most


def test_pipeline_from_model_dir_is_the_pipeline_folder(tiny_model_dir, tiny_pyannote_pipeline_dir):
    assert pyannote_pipeline_dir(tiny_model_dir) == str(tiny_pyannote_pipeline_dir)
    config = pyannote_config(tiny_model_dir, device="cpu")
    assert config.pipeline == str(tiny_pyannote_pipeline_dir) and not config.telemetry


def test_bad_input_is_refused(diarizer, offline):
    with pytest.raises(TypeError, match="numpy array"):
        diarizer([0.0] * 16000, speech=[], count=SpeakerCount())
    with pytest.raises(ValueError, match="mono"):
        diarizer(np.zeros((2, 16000), np.float32), speech=[], count=SpeakerCount())
    with pytest.warns(UserWarning, match="empty audio"):
        assert diarizer(np.zeros(0, np.float32), speech=[], count=SpeakerCount()) == []


def test_annotation_and_diarize_output_become_relabelled_overlapping_turns():
    from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    ann[Segment(1.0, 2.0), "a"] = "spk_b"
    ann[Segment(0.5, 1.5), "b"] = "spk_a"  # overlaps spk_b, starts first
    ann[Segment(3.0, 3.0004), "c"] = "spk_c"  # 0.4 ms: empty once in whole ms
    ann[Segment(2.5, 9.0), "d"] = "spk_b"  # runs past a 4 s file
    with pytest.warns(UserWarning, match="dropped 1 turn"):
        turns = annotation_to_turns(ann, duration_ms=4000)
    assert turns == [
        Turn("SPEAKER_00", 500, 1500),
        Turn("SPEAKER_01", 1000, 2000),
        Turn("SPEAKER_01", 2500, 4000),
    ]
    with pytest.warns(UserWarning):
        wrapped = annotation_to_turns(
            DiarizeOutput(speaker_diarization=ann, exclusive_speaker_diarization=ann), duration_ms=4000
        )
    assert wrapped == turns
    with pytest.raises(TypeError, match="DiarizeOutput or Annotation"):
        annotation_to_turns([(0.0, 1.0, "x")])


def test_unusable_pipelines_give_actionable_errors(tmp_path, tiny_pyannote_pipeline_dir, offline):
    with pytest.raises(ValueError, match="--model-dir"):
        PyannoteDiarizer(PyannoteDiarizerConfig(pipeline=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="config.yaml"):
        PyannoteDiarizer(PyannoteDiarizerConfig(pipeline=str(tmp_path)))
    # A hub id cannot be fetched here: the error says to use --model-dir, and no socket opens.
    with pytest.raises(ValueError, match="--model-dir") as info:
        PyannoteDiarizer(PyannoteDiarizerConfig(pipeline="pyannote/speaker-diarization-community-1"))
    assert type(info.value.__cause__).__name__ != "NetworkAccessError"
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pyannote_pipeline_dir, broken)
    shutil.rmtree(broken / "embedding")
    with pytest.raises(ValueError, match="cannot load the pyannote pipeline"):
        PyannoteDiarizer(PyannoteDiarizerConfig(pipeline=str(broken)))
    with pytest.raises(ValueError, match="device"):
        PyannoteDiarizerConfig(pipeline=str(broken), device="gpu0")


def test_bad_model_dir_lists_what_is_missing(tmp_path, tiny_pyannote_pipeline_dir):
    with pytest.raises(ValueError, match="--model-dir"):
        pyannote_pipeline_dir(None)
    with pytest.raises(ValueError, match="does not exist"):
        pyannote_pipeline_dir(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="local directory"):
        pyannote_pipeline_dir("gs://bucket/models")
    with pytest.raises(ValueError, match=r"pyannote-diarization/config\.yaml"):
        pyannote_pipeline_dir(tmp_path)
    shutil.copytree(tiny_pyannote_pipeline_dir, tmp_path / "pyannote-diarization")
    (tmp_path / "pyannote-diarization" / "plda" / "plda.npz").unlink()
    (tmp_path / "pyannote-diarization" / "embedding" / "pytorch_model.bin").unlink()
    with pytest.raises(ValueError) as info:
        pyannote_pipeline_dir(tmp_path)
    message = str(info.value)
    assert "plda/plda.npz" in message and "embedding/pytorch_model.bin" in message
    assert "segmentation" not in message


def test_tiny_pipeline_weights_follow_the_seed(tmp_path, offline):
    import torch
    from pyannote.audio import Model

    dirs = [build_tiny_pyannote_pipeline(tmp_path / name, seed=seed)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    models = [Model.from_pretrained(d / "segmentation") for d in dirs]
    states = [model.state_dict() for model in models if model is not None]
    assert len(states) == len(dirs)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_offline_guard_refuses_internet_sockets(offline):
    with pytest.raises(RuntimeError, match="network access attempted"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
