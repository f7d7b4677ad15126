"""How one Lhotse cut maps to streams, times and rows (no pipeline: the mapping alone)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from lhotse import Recording, SupervisionSegment
from lhotse.cut import MixedCut, MultiCut
from lhotse.supervision import AlignmentItem

from microturn.pipelines.interop.cut_records import CutError, load_cut, parse_cut, record_rows


@pytest.fixture
def stereo(tmp_path) -> Recording:
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "two.wav", (0.1 * rng.standard_normal((16000 * 3, 2))).astype(np.float32), 16000)
    return Recording.from_file(tmp_path / "two.wav", recording_id="two")


def seg(i: int, speaker, start: float, end: float, channel, rec: str = "two", words=None) -> SupervisionSegment:
    return SupervisionSegment(id=f"s{i}", recording_id=rec, start=start, duration=end - start, channel=channel,
                              speaker=speaker, alignment={"word": words} if words else None)


def multi(rec: Recording, sups) -> MultiCut:
    cut = rec.to_cut()
    assert isinstance(cut, MultiCut)
    cut.supervisions = sups
    return cut


def test_a_microphone_array_or_a_shared_channel_is_mixed_down(stereo):
    for sups in ([seg(0, "A", 0.1, 1.0, [0, 1]), seg(1, "B", 1.2, 2.0, [0, 1])],   # every mic hears everyone
                 [seg(0, "A", 0.1, 1.0, 0), seg(1, "B", 1.2, 2.0, 0)]):           # two speakers on one channel
        loaded = load_cut(multi(stereo, sups))
        assert loaded.plan.layout == "mixed" and loaded.wave_CN.shape == (1, 48000) and loaded.source_channels == 2
        np.testing.assert_allclose(loaded.wave_CN[0], stereo.load_audio().mean(axis=0), atol=1e-6)
    per = load_cut(multi(stereo, [seg(0, "B", 0.1, 1.0, 1), seg(1, "A", 1.2, 2.0, 0)]))
    assert per.plan.layout == "per_speaker" and per.plan.speaker_stream == {"A": 0, "B": 1}
    assert per.plan.audio_files == ["ch0.flac", "ch1.flac"]


@pytest.mark.parametrize("sups, reason", [
    ([seg(0, "A", 0.1, 1.0, 5)], "bad_channel"),
    ([seg(0, None, 0.1, 1.0, 0)], "no_speaker"),
    ([seg(0, "A", 0.1, 1.0, 0, words=[AlignmentItem("late", 2.9, 0.5)])], "word_outside_cut"),
    ([seg(0, "A", -0.5, 1.0, 0)], "supervision_outside_cut"),
    ([], "no_supervisions"),
])
def test_cuts_that_cannot_be_records_name_their_reason(stereo, sups, reason):
    with pytest.raises(CutError) as exc:
        load_cut(multi(stereo, sups))
    assert exc.value.reason == reason


def test_lines_that_are_not_cuts_name_what_they_are(stereo):
    import json

    for line, reason in (("{broken", "invalid_json"), (json.dumps(stereo.to_dict()), "not_a_cut"),
                         (json.dumps({"type": "MonoCut", "id": "x"}), "bad_cut")):
        with pytest.raises(CutError) as exc:
            parse_cut(line)
        assert exc.value.reason == reason


def test_a_mixed_cut_shifts_each_tracks_turns_and_words(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32), 16000)
    a = Recording.from_file(tmp_path / "a.wav", recording_id="a").to_cut()
    a.supervisions = [seg(0, "A", 0.5, 1.5, 0, rec="a", words=[AlignmentItem("hi", 0.6, 0.3, 0.7)])]
    b = Recording.from_file(tmp_path / "b.wav", recording_id="b").to_cut().truncate(offset=1.0, duration=3.0)
    # b's turn at 2.0-3.0 s of its recording: 1.0-2.0 s of the truncated cut; its word keeps recording time
    b.supervisions = [seg(1, "B", 1.0, 2.0, 0, rec="b", words=[AlignmentItem("yes", 2.1, 0.4, -3.2),
                                                                AlignmentItem(" ", 2.5, 0.1)])]
    mixed = a.mix(b, offset_other_by=2.5)
    assert isinstance(mixed, MixedCut)
    loaded = load_cut(mixed)
    assert loaded.plan.layout == "mixed" and loaded.wave_CN.shape == (1, round(5.5 * 16000))
    rows = record_rows(mixed, loaded, uri="cuts.jsonl#m", license="CC0-1.0", lhotse_version="x")
    assert [(r["speaker"], r["start_ms"], r["end_ms"]) for r in rows["segments"]] == [("A", 500, 1500),
                                                                                      ("B", 3500, 4500)]
    # the blank item is a pause, not a word; a log-probability is no confidence: score left empty
    assert [(w["text"], w["start_ms"], w["end_ms"], w["score"]) for w in rows["words"]] == [
        ("hi", 600, 900, pytest.approx(0.7)), ("yes", 3600, 4000, None)]
    conv = rows["conversation"]
    assert conv["origin"] == "real" and conv["license"] == "CC0-1.0" and conv["conversation_id"].startswith("c-")
    assert rows["source"]["container"] == "lhotse MixedCut"
