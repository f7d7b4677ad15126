"""`microturn eval words | diarization` on the command line: every path is checked before any
work (a one-line error with status 2, nothing created), unknown flags and stray values exit 2
naming them, and names read from references or tables are printed escaped."""

from __future__ import annotations

import os

import pytest

from catalog_fixtures import conversation, segment, write_table
from microturn.cli.evaluate import main

RTTM = "SPEAKER call1 1 0.000 2.000 <NA> <NA> alice <NA> <NA>\nSPEAKER call1 1 2.000 2.000 <NA> <NA> bob <NA> <NA>\n"
STM = "call1 1 alice 0.00 2.00 <O> hello there\ncall1 1 bob 2.00 4.00 <O> fine thanks\n"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "ref.rttm").write_text(RTTM)
    (tmp_path / "ref.stm").write_text(STM)
    out = tmp_path / "out"
    write_table(str(out), "conversations", [conversation("c-1", "real", 4_000, "MIT", "train", None)])
    write_table(str(out), "segments", [segment("c-1", "A", 0, 2_000), segment("c-1", "B", 2_000, 4_000)])
    write_table(str(out), "words", [
        {"conversation_id": "c-1", "speaker": "A", "text": "hello", "start_ms": 100, "end_ms": 500, "score": 0.9}])
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    return tmp_path


def run_eval(capsys, *argv) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse
        assert isinstance(exc.code, int), exc.code
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("what,ref", [("words", "ref.stm"), ("diarization", "ref.rttm")])
def test_both_commands_score_a_real_output(files, capsys, what, ref):
    status, out, _ = run_eval(capsys, what, "--reference", str(files / ref), "--hypothesis", str(files / "out"))
    assert status == 0 and "TOTAL" in out


BAD_PATHS = [
    (["--reference", "{t}/missing.ref", "--hypothesis", "{t}/out"], "--reference {t}/missing.ref does not exist"),
    (["--reference", "{ref}", "--hypothesis", "{t}/missing"], "--hypothesis {t}/missing does not exist"),
    (["--reference", "{ref}", "--hypothesis", "{t}/missing/deeper"], "--hypothesis {t}/missing/deeper does not"),
    (["--reference", "{ref}", "--hypothesis", "{t}/afile"], "--hypothesis {t}/afile is not a directory"),
    (["--reference", "{ref}", "--hypothesis", "{t}/empty"], "--hypothesis {t}/empty holds no conversations"),
]


@pytest.mark.parametrize("what,ref", [("words", "ref.stm"), ("diarization", "ref.rttm")])
@pytest.mark.parametrize("argv,message", BAD_PATHS)
def test_missing_or_wrong_paths_are_one_line_errors_that_create_nothing(files, capsys, what, ref, argv, message):
    before = sorted(os.listdir(files))
    fill = {"t": str(files), "ref": str(files / ref)}
    status, out, err = run_eval(capsys, what, *[a.format(**fill) for a in argv])
    assert status == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()] and message.format(**fill) in err, err
    assert sorted(os.listdir(files)) == before


def test_missing_word_reference_is_an_error(files, capsys):
    status, _, err = run_eval(capsys, "words", "--reference", str(files / "ref.stm"), "--hypothesis",
                              str(files / "out"), "--word-reference", str(files / "words"))
    assert status == 2 and "--word-reference" in err and "does not exist" in err
    assert not (files / "words").exists()


@pytest.mark.parametrize("extra,named", [(["--bogus"], "--bogus"), (["--collar", "1", "stray"], "stray"),
                                         (["--num_speakers", "3"], "--num_speakers"), (["--hyp", "x"], "--hyp")])
@pytest.mark.parametrize("what,ref", [("words", "ref.stm"), ("diarization", "ref.rttm")])
def test_unknown_flags_and_stray_values_exit_2_naming_them(files, capsys, what, ref, extra, named):
    if what == "words" and extra[0] == "--collar":
        extra = ["--collar-ms", "1", "stray"]
    status, out, err = run_eval(capsys, what, "--reference", str(files / ref), "--hypothesis", str(files / "out"),
                                *extra)
    assert status == 2 and out == "" and named in err


def test_names_from_references_are_printed_escaped(files, capsys):
    (files / "evil.rttm").write_text(RTTM.replace("call1", "x\x1b[2Jy\u202e"))
    status, out, _ = run_eval(capsys, "diarization", "--reference", str(files / "evil.rttm"),
                              "--hypothesis", str(files / "out"))
    assert status == 0 and "\x1b" not in out and "\u202e" not in out
    assert "x\\x1b[2Jy\\u202e" in out


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "two"])
def test_collar_must_be_a_finite_number(files, capsys, value):
    status, _, err = run_eval(capsys, "diarization", "--reference", str(files / "ref.rttm"), "--hypothesis",
                              str(files / "out"), "--collar", value)
    assert status == 2 and "--collar" in err


def test_diarization_prints_counts_overlap_and_takes_a_uem(files, capsys):
    (files / "ref.uem").write_text("call1 NA 0 4\n")
    status, out, _ = run_eval(capsys, "diarization", "--reference", str(files / "ref.rttm"), "--hypothesis",
                              str(files / "out"), "--uem", str(files / "ref.uem"))
    assert status == 0, out
    assert "scored: UEM" in out and "spk ref" in out and "overlap ref" in out
    call = next(line.split() for line in out.splitlines() if line.startswith("call1"))
    assert call[6:8] == ["2", "2"]  # reference and hypothesis speakers
    assert "speaker count right on 1 of 1 file(s)" in out
    status, _, err = run_eval(capsys, "diarization", "--reference", str(files / "ref.rttm"), "--hypothesis",
                              str(files / "out"), "--uem", str(files / "missing.uem"))
    assert status == 2 and "--uem" in err and "does not exist" in err
