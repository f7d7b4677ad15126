"""The embedded diarizer on real meetings (the vendored ami-dev clips) and on constructed overlap:
gain does not decide what is speech, requested counts are honoured, overlap gets two speakers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf

from microturn.pipelines.backends.base import SAMPLE_RATE, Region, SpeakerCount, Turn
from microturn.pipelines.backends.diarize_segments import hysteresis
from microturn.pipelines.backends.embedded_diarizer import EmbeddedDiarizer
from microturn.pipelines.eval_diarization import evaluate_diarization, read_rttm, read_uem
from microturn.testing.ami import AMI_DIR, ami_uris
from microturn.testing.sample_call import sample_path

REFS = read_rttm(AMI_DIR)


@pytest.fixture(scope="module")
def diarizer() -> EmbeddedDiarizer:
    return EmbeddedDiarizer()


def clip(uri: str) -> np.ndarray:
    wave_N, rate = sf.read(AMI_DIR / f"{uri}.flac", dtype="float32")
    assert rate == SAMPLE_RATE
    return wave_N


def rows(turns: list[Turn]) -> list[tuple[str, int, int]]:
    return [(t.speaker, t.start_ms, t.end_ms) for t in turns]


def quiet(diarizer, wave_N, count: SpeakerCount) -> list[Turn]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return diarizer(wave_N, speech=[], count=count)


def test_hysteresis_extends_runs_that_reach_onset() -> None:
    act = np.array([0.1, 0.4, 0.6, 0.45, 0.3, 0.45, 0.2, 0.42, 0.41, 0.1], dtype=np.float32)
    on = hysteresis(act[None, :, None], onset=0.5, offset=0.4)[0, :, 0]
    # 0.4-0.6-0.45 reaches the onset; 0.45 after a dip below offset and 0.42-0.41 do not.
    assert on.tolist() == [False, True, True, True, False, False, False, False, False, False]
    assert (hysteresis(act[None, :, None], onset=0.5, offset=0.5)[0, :, 0] == (act >= 0.5)).all()


def test_speech_found_whatever_the_gain(diarizer) -> None:
    """The same meeting 30 dB quieter gets the same turns (to a few frames)."""
    wave_N = clip("trn06")
    loud = quiet(diarizer, wave_N, SpeakerCount())
    soft = quiet(diarizer, (wave_N * 10 ** (-30 / 20)).astype(np.float32), SpeakerCount())
    assert loud, "trn06 has 27 s of speech"
    score = evaluate_diarization({"trn06": REFS["trn06"]}, {"trn06": rows(loud)}).total
    versus = evaluate_diarization(
        {"trn06": REFS["trn06"]}, {"trn06": rows(soft)}).total
    assert abs(score.der - versus.der) <= 0.02
    assert {t.speaker for t in loud} == {t.speaker for t in soft}


@pytest.mark.parametrize(("uri", "voices"), [("trn02", 1), ("trn03", 2), ("trn00", 3), ("trn07", 4)])
def test_requested_count_is_honoured(diarizer, uri: str, voices: int) -> None:
    assert len(REFS[uri].labels()) == voices
    turns = quiet(diarizer, clip(uri), SpeakerCount(num_speakers=voices))
    assert len({t.speaker for t in turns}) == voices


def test_min_and_max_bound_the_estimate(diarizer) -> None:
    estimated = {t.speaker for t in quiet(diarizer, clip("trn06"), SpeakerCount())}
    at_least = {t.speaker for t in quiet(diarizer, clip("trn06"), SpeakerCount(min_speakers=3))}
    at_most = {t.speaker for t in quiet(diarizer, clip("trn00"), SpeakerCount(max_speakers=1))}
    assert len(estimated) < 3 <= len(at_least)  # trn06 holds 3 voices; the estimate says fewer
    assert len(at_most) == 1


def test_constructed_overlap_gets_both_speakers(diarizer) -> None:
    """Two voices of the sample call talk over each other for 5 s: both are heard there."""
    wave_N, _ = sf.read(sample_path("wav"), dtype="float32")
    ref = read_rttm(sample_path("rttm"))["sample"]
    voices = []
    for label in sorted(map(str, ref.labels()))[:2]:
        parts = [wave_N[int(s.start * SAMPLE_RATE) : int(s.end * SAMPLE_RATE)]
                 for s in ref.label_timeline(label).support() if s.duration >= 1.0]
        voices.append(np.concatenate(parts)[: 10 * SAMPLE_RATE])
    assert all(len(v) == 10 * SAMPLE_RATE for v in voices)
    mix_N = np.zeros(15 * SAMPLE_RATE, dtype=np.float32)
    mix_N[: 10 * SAMPLE_RATE] += voices[0]  # 0-10 s
    mix_N[5 * SAMPLE_RATE :] += voices[1]  # 5-15 s: 5-10 s overlapped
    turns = quiet(diarizer, mix_N, SpeakerCount())
    inside = {}
    for t in turns:
        inside[t.speaker] = inside.get(t.speaker, 0) + max(0, min(t.end_ms, 10_000) - max(t.start_ms, 5_000))
    both = sorted(inside.values())[-2:]
    assert len(both) == 2 and both[0] >= 2_500, inside  # each voice for half the overlap or more


def test_ami_overlap_is_reported(diarizer) -> None:
    """Over all ami-dev clips, a real share of the reference overlap is diarized as overlap."""
    hyp = {uri: rows(quiet(diarizer, clip(uri), SpeakerCount())) for uri in ami_uris()}
    report = evaluate_diarization(REFS, hyp, uem=read_uem(AMI_DIR))
    assert report.total.reference_overlap > 0.1
    assert report.total.hypothesis_overlap >= 0.3 * report.total.reference_overlap
    assert report.total.false_alarm_s <= 0.03 * report.total.reference_s  # noise is not speech


def test_vad_regions_do_not_gate_the_default(diarizer) -> None:
    """trn01: silero-vad finds no speech in this far-field clip; the segmentation model does."""
    turns = diarizer(clip("trn01"), speech=[Region(0, 0)], count=SpeakerCount())
    assert turns
