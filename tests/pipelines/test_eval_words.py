"""Tests of the word-timing evaluation."""

from __future__ import annotations

import json

import pytest

from microturn.pipelines.backends.base import Word
from microturn.pipelines.eval_words import (
    WordReport,
    WordTimingFigures,
    evaluate_words,
    normalise_word,
    read_stm,
)

STM = """;; two recordings
rec1 1 A 1.0 2.0 Yeah, I know.
rec1 1 B 2.5 4.0 Yeah right
rec1 1 A 4.0 4.5 ignore_time_segment_in_scoring
rec2 1 C 0.0 1.0 Hello world
"""


@pytest.fixture()
def stm_path(tmp_path):
    path = tmp_path / "ref.stm"
    path.write_text(STM)
    return str(path)


def test_normalise_word():
    assert normalise_word("Didn’t,") == "didn't"
    assert normalise_word("'Hello?'") == "hello"
    assert normalise_word("—") == ""
    assert normalise_word("U.S.") == "us"


def test_inside_share_matches_words_to_their_own_segment(stm_path):
    hyp = {
        "rec1": [
            ("Yeah,", 1000, 1300),
            ("I", 1300, 1400),
            ("know.", 1400, 2050),  # 50 ms past its segment end
            # The second "yeah" belongs to B's segment (2.5-4.0); placing it inside A's
            # segment must not count as inside, although A's text contains "yeah" too.
            ("Yeah", 1900, 1990),
            ("right", 2600, 3000),
        ],
        "rec2": [("hello", 100, 400), ("there", 400, 600), ("world", 600, 900)],
    }
    report = evaluate_words(stm_path, hyp)
    assert isinstance(report, WordReport) and report.collar_ms == 0
    rec1 = report.files["rec1"]
    assert (rec1.n_hypothesis, rec1.n_reference, rec1.n_matched, rec1.n_inside) == (5, 5, 5, 3)
    assert rec1.inside_share == pytest.approx(3 / 5) and rec1.coverage == 1.0
    rec2 = report.files["rec2"]
    # "there" is not in the reference: counted, never inside.
    assert (rec2.n_hypothesis, rec2.n_reference, rec2.n_matched, rec2.n_inside) == (3, 2, 2, 2)
    assert report.total.n_hypothesis == 8 and report.total.n_inside == 5
    assert report.total.inside_share == pytest.approx(5 / 8)
    assert report.total.median_abs_boundary_ms is None
    # A collar widens the segments: "know." (50 ms late) becomes inside.
    wide = evaluate_words(stm_path, hyp, collar_ms=50)
    assert wide.files["rec1"].n_inside == 4


def test_missing_files_are_reported(stm_path):
    with pytest.warns(UserWarning) as record:
        report = evaluate_words(stm_path, {"rec2": [("hello", 0, 500)], "rec9": [("x", 0, 10)]})
    messages = " ".join(str(r.message) for r in record)
    assert "rec9" in messages and "rec1" in messages
    assert report.missing_reference == ["rec9"] and report.missing_hypothesis == ["rec1"]
    assert report.files["rec9"] == WordTimingFigures(
        n_hypothesis=1, n_reference=0, n_matched=0, n_inside=0, inside_share=0.0, coverage=None
    )
    assert report.total.inside_share == pytest.approx(1 / 2)


def test_boundary_errors_from_word_references(stm_path, tmp_path):
    hyp = {
        "rec1": [("yeah", 1010, 1290), ("i", 1300, 1420), ("know", 1460, 1900)],
        "rec2": [("hello", 100, 400), ("world", 600, 900)],
    }
    ref_json = tmp_path / "rec1.json"
    ref_json.write_text(
        json.dumps(
            {
                "segments": [
                    {
                        "start": 1.0, "end": 2.0, "text": "Yeah, I know.",
                        "words": [
                            {"word": "Yeah,", "start": 1.0, "end": 1.3},
                            {"word": "I", "start": 1.3, "end": 1.4},
                            {"word": "know.", "start": 1.4, "end": 1.95},
                        ],
                    }
                ]
            }
        )
    )
    word_ref = {
        "rec1": str(ref_json),
        "rec2": [Word("Hello", 120, 420), ("world", 600, 1000)],
    }
    report = evaluate_words(stm_path, hyp, word_ref)
    rec1 = report.files["rec1"]
    # start errors 10, 0, 60; end errors 10, 20, 50
    assert rec1.n_boundary_pairs == 3
    assert rec1.median_abs_start_ms == 10 and rec1.median_abs_end_ms == 20
    assert rec1.median_abs_boundary_ms == 15
    rec2 = report.files["rec2"]
    assert (rec2.median_abs_start_ms, rec2.median_abs_end_ms) == (10, 60)
    # Totals pool all pairs (not a median of medians): starts 10, 0, 60, 20, 0 -> 10;
    # ends 10, 20, 50, 20, 100 -> 20; both -> 20.
    assert report.total.n_boundary_pairs == 5
    assert report.total.median_abs_start_ms == 10 and report.total.median_abs_end_ms == 20
    assert report.total.median_abs_boundary_ms == 20


def test_directory_of_stm_files_and_errors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.stm").write_text("rec1 1 A 0 1 hi there\n")
    (tmp_path / "two.stm").write_text("rec2 1 B 0 1 bye\n")
    segments = read_stm(str(tmp_path))
    assert sorted(segments) == ["rec1", "rec2"]
    report = evaluate_words(
        tmp_path, {"rec1": [("hi", 0, 500), ("there", 500, 1000)], "rec2": [("bye", 0, 1000)]}
    )
    assert report.total.inside_share == 1.0 and report.total.coverage == 1.0
    with pytest.raises(ValueError, match="collar_ms"):
        evaluate_words(tmp_path, {}, collar_ms=-1)
    with pytest.raises(TypeError, match="hypothesis_words"):
        evaluate_words(tmp_path, [("hi", 0, 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"\(text, start_ms, end_ms\)"):
        evaluate_words(tmp_path, {"rec2": [("bye", 0)]})  # pyright: ignore[reportArgumentType]  # deliberately malformed
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .stm file"):
        evaluate_words(empty, {})
    with pytest.raises(FileNotFoundError):
        evaluate_words(tmp_path / "nope.stm", {})
