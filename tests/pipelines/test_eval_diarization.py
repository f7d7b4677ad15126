"""DER / JER scoring and RTTM reading on tiny hand-built references with known answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyannote.core import Annotation, Segment

from microturn.pipelines.eval_diarization import (
    DiarizationReport,
    annotation_from_rows,
    evaluate_diarization,
    overlap_share,
    read_rttm,
    read_uem,
)
from microturn.testing.sample_call import sample_path

# Two speakers, 10 s each, back to back: 20 s of reference speech.
TINY_RTTM = """\
;; a comment line
SPKR-INFO call1 1 <NA> <NA> <NA> unknown alice <NA> <NA>
SPEAKER call1 1 0.000 10.000 <NA> <NA> alice <NA> <NA>
SPEAKER call1 1 10.000 10.000 <NA> <NA> bob <NA> <NA>

"""


@pytest.fixture
def tiny_rttm(tmp_path: Path) -> Path:
    path = tmp_path / "call1.rttm"
    path.write_text(TINY_RTTM, encoding="utf-8")
    return path


def test_read_rttm_keeps_speaker_lines_only(tiny_rttm: Path) -> None:
    refs = read_rttm(tiny_rttm)
    assert list(refs) == ["call1"]
    ann = refs["call1"]
    assert sorted(ann.labels(), key=str) == ["alice", "bob"]
    assert ann.label_duration("alice") == pytest.approx(10.0)
    assert ann.get_timeline().extent() == Segment(0.0, 20.0)


def test_read_rttm_directory_merges_files(tmp_path: Path, tiny_rttm: Path) -> None:
    (tmp_path / "call2.rttm").write_text(
        "SPEAKER call2 1 1.5 2.5 <NA> <NA> carol <NA> <NA>\n", encoding="utf-8"
    )
    (tmp_path / "notes.txt").write_text("not an rttm", encoding="utf-8")
    refs = read_rttm(tmp_path)
    assert sorted(refs) == ["call1", "call2"]
    assert refs["call2"].get_timeline().extent() == Segment(1.5, 4.0)


def test_read_rttm_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_rttm(tmp_path / "missing.rttm")
    with pytest.raises(FileNotFoundError, match="no .rttm"):
        read_rttm(tmp_path)  # empty directory
    bad = tmp_path / "bad.rttm"
    bad.write_text("SPEAKER x 1 zero 1.0 <NA> <NA> a <NA> <NA>\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.rttm:1"):
        read_rttm(bad)
    short = tmp_path / "short.rttm"
    short.write_text("SPEAKER x 1 0.0 1.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at least 8 fields"):
        read_rttm(short)


def test_annotation_from_rows_keeps_overlap_and_skips_empty_rows() -> None:
    with pytest.warns(UserWarning, match="1 empty or reversed"):
        ann = annotation_from_rows(
            [("A", 0, 2000), ("B", 1500, 3000), ("A", 1000, 2500), ("C", 500, 500)], uri="u"
        )
    assert ann.uri == "u"
    assert sorted(ann.labels(), key=str) == ["A", "B"]
    assert len(list(ann.itertracks())) == 3  # overlapping rows of one speaker are both kept
    assert ann.label_timeline("A").support().duration() == pytest.approx(2.5)


def test_identical_hypothesis_scores_zero(tiny_rttm: Path) -> None:
    report = evaluate_diarization(
        tiny_rttm, {"call1": [("S0", 0, 10_000), ("S1", 10_000, 20_000)]}
    )
    assert isinstance(report, DiarizationReport)
    (f,) = report.files
    assert f.uri == "call1"
    assert f.der == pytest.approx(0.0) and f.jer == pytest.approx(0.0)
    assert f.reference_s == pytest.approx(20.0)
    assert report.total.der == pytest.approx(0.0)


def test_one_label_for_both_speakers_has_known_errors(tiny_rttm: Path) -> None:
    # All 20 s given to one hypothesis speaker: it maps to alice, so bob's 10 s are confusion.
    # DER = 10 / 20. JER: alice 1 - 10/20 = 0.5, bob unmatched = 1, mean 0.75.
    report = evaluate_diarization(tiny_rttm, {"call1": [("X", 0, 20_000)]})
    (f,) = report.files
    assert f.der == pytest.approx(0.5)
    assert f.confusion_s == pytest.approx(10.0)
    assert f.missed_s == pytest.approx(0.0) and f.false_alarm_s == pytest.approx(0.0)
    assert f.jer == pytest.approx(0.75)


def test_swapped_names_and_half_swapped_turns(tiny_rttm: Path) -> None:
    # Names never matter: the optimal mapping renames them.
    swapped = evaluate_diarization(tiny_rttm, {"call1": [("bob", 0, 10_000), ("alice", 10_000, 20_000)]})
    assert swapped.total.der == pytest.approx(0.0)
    # The second half of alice's turn labelled as bob: 5 s of confusion out of 20 s.
    half = evaluate_diarization(
        tiny_rttm, {"call1": [("A", 0, 5_000), ("B", 5_000, 20_000)]}
    )
    assert half.total.der == pytest.approx(5.0 / 20.0)
    assert half.files[0].confusion_s == pytest.approx(5.0)


def test_missed_false_alarm_and_collar(tiny_rttm: Path) -> None:
    # Hypothesis 0.2 s late at the start and 0.2 s long at the end: 0.2 s missed + 0.2 s FA.
    rows = [("A", 200, 10_000), ("B", 10_000, 20_200)]
    plain = evaluate_diarization(tiny_rttm, {"call1": rows})
    assert plain.files[0].missed_s == pytest.approx(0.2)
    assert plain.files[0].false_alarm_s == pytest.approx(0.2)
    assert plain.total.der == pytest.approx(0.4 / 20.0)
    # A 0.5 s collar (0.25 s each side of every reference boundary) forgives both.
    forgiving = evaluate_diarization(tiny_rttm, {"call1": rows}, collar_s=0.5)
    assert forgiving.total.der == pytest.approx(0.0)
    assert forgiving.collar_s == 0.5
    with pytest.raises(ValueError, match="collar"):
        evaluate_diarization(tiny_rttm, {"call1": rows}, collar_s=-1.0)


def test_missing_and_extra_hypotheses_and_weighted_total(tmp_path: Path, tiny_rttm: Path) -> None:
    (tmp_path / "call2.rttm").write_text(
        "SPEAKER call2 1 0.0 5.0 <NA> <NA> carol <NA> <NA>\n", encoding="utf-8"
    )
    hyp = {"call1": [("A", 0, 10_000), ("B", 10_000, 20_000)], "stray": [("Z", 0, 1000)]}
    with pytest.warns(UserWarning) as caught:
        report = evaluate_diarization(tmp_path, hyp)
    messages = " ".join(str(w.message) for w in caught)
    assert "without reference" in messages and "no hypothesis for uri 'call2'" in messages
    by_uri = {f.uri: f for f in report.files}
    assert set(by_uri) == {"call1", "call2"}
    assert by_uri["call2"].der == pytest.approx(1.0)  # all 5 s missed
    # Corpus DER weights files by reference speech: 5 s of errors over 25 s.
    assert report.total.der == pytest.approx(5.0 / 25.0)
    assert report.total.reference_s == pytest.approx(25.0)


def test_annotations_accepted_on_both_sides() -> None:
    ref = Annotation(uri="u")
    ref[Segment(0, 4)] = "a"
    hyp = Annotation(uri="u")
    hyp[Segment(0, 4)] = "h"
    assert evaluate_diarization({"u": ref}, {"u": hyp}).total.der == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no file"):
        evaluate_diarization({}, {"u": hyp})


def test_pyannote_sample_reference_reads() -> None:
    path = sample_path("rttm")
    refs = read_rttm(path)
    ann = refs["sample"]
    assert len(ann.labels()) == 2
    assert 20.0 < ann.get_timeline().support().duration() < 30.0


def test_uem_limits_the_scored_region(tmp_path: Path, tiny_rttm: Path) -> None:
    # Scored 5-15 s only: the hypothesis misses alice's 0-5 s, which no longer counts.
    (tmp_path / "call1.uem").write_text("call1 NA 5.000 15.000\n;; comment\n", encoding="utf-8")
    hyp = {"call1": [("S0", 5_000, 10_000), ("S1", 10_000, 20_000)]}
    report = evaluate_diarization(tiny_rttm, hyp, uem=tmp_path / "call1.uem")
    assert report.files[0].reference_s == pytest.approx(10.0)
    assert report.total.der == pytest.approx(0.0)
    # Without it the scored region runs over both sides' turns: alice's first 5 s are missed.
    assert evaluate_diarization(tiny_rttm, hyp).total.der == pytest.approx(0.25)
    # A UEM that extends past every turn counts the hypothesis' speech there as false alarm.
    (tmp_path / "call1.uem").write_text("call1 NA 0 30\n", encoding="utf-8")
    late = {"call1": [("S0", 0, 10_000), ("S1", 10_000, 20_000), ("S1", 25_000, 30_000)]}
    assert evaluate_diarization(tiny_rttm, late, uem=tmp_path).files[0].false_alarm_s == pytest.approx(5.0)


def test_uem_errors(tmp_path: Path, tiny_rttm: Path) -> None:
    bad = tmp_path / "bad.uem"
    for text, match in [("call1 NA 5\n", "4 fields"), ("call1 NA a b\n", "numbers of seconds"),
                        ("call1 NA 9 3\n", "onset < offset")]:
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=match):
            read_uem(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_uem(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .uem file"):
        read_uem(tmp_path / "empty")
    bad.write_text("other NA 0 5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="without a UEM region: \\['call1'\\]"):
        evaluate_diarization(tiny_rttm, {"call1": []}, uem=bad)


def test_speaker_counts_and_overlap_shares() -> None:
    ref = Annotation(uri="m")
    ref[Segment(0, 10)] = "a"
    ref[Segment(8, 12)] = "b"  # 2 s of overlap in 12 s of speech
    ref[Segment(14, 16)] = "c"
    assert overlap_share(ref) == pytest.approx(2 / 14)
    hyp = {"m": [("X", 0, 12_000), ("Y", 14_000, 16_000)]}  # no overlap, 2 speakers
    (f,) = evaluate_diarization({"m": ref}, hyp).files
    assert (f.reference_speakers, f.hypothesis_speakers) == (3, 2)
    assert f.reference_overlap == pytest.approx(2 / 14) and f.hypothesis_overlap == 0.0


@pytest.mark.parametrize("reader,name", [(read_rttm, "bin.rttm"), (read_uem, "bin.uem")])
def test_a_binary_reference_is_an_error_naming_the_file(tmp_path: Path, reader, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"SPEAKER \x00\xff\xfe garbage")
    with pytest.raises(ValueError, match=rf"{name}: not a UTF-8 text file"):
        reader(path)
