"""The `microturn export` / `microturn import` command lines: formats, help, and mistakes refused
before any work (nothing of anyone else's is touched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from microturn.cli.main import main
from microturn.schemas.stage_marker import MARKER


@pytest.mark.parametrize("command", ["export", "import"])
def test_an_unknown_format_is_a_usage_error_naming_the_known_ones(command, capsys, tmp_path):
    assert main([command, "kaldi", str(tmp_path), "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown format 'kaldi'" in err and "known formats: lhotse" in err
    assert main([command]) == 2
    assert main([command, "--help"]) == 0 and "lhotse" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("argv", [["export", "lhotse", "--help"], ["import", "lhotse", "--help"], ["export", "-h"]])
def test_help_imports_neither_lhotse_nor_beam_nor_torch(argv):
    code = ("import sys\n"
            "from microturn.cli.main import main\n"
            f"try:\n    status = main({argv!r})\nexcept SystemExit as exc:\n    status = exc.code\n"
            "heavy = sorted(m for m in ('lhotse', 'apache_beam', 'torch') if m in sys.modules)\n"
            "print(status, heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.splitlines()[-1] == "0 []", out
    assert "--output" in out


def test_usage_errors_exit_2(tmp_path):
    with pytest.raises(SystemExit) as exc:  # argparse: a misspelt flag
        main(["export", "lhotse", str(tmp_path), "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:  # the stage's own flag checks: a misspelt flag, "did you mean"
        main(["import", "lhotse", str(tmp_path / "c.jsonl"), "--outptu", str(tmp_path / "x")])
    assert exc.value.code == 2


def test_missing_or_wrong_inputs_are_errors(tmp_path, capsys):
    # the checks of OUT, DIR and CUTS come before any work: usage errors, status 2
    assert main(["export", "lhotse", str(tmp_path / "nowhere"), "--output", str(tmp_path / "lh")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", "lhotse", str(tmp_path / "empty"), "--output", str(tmp_path / "lh")]) == 2
    assert "no conversations records there" in capsys.readouterr().err
    assert main(["import", "lhotse", str(tmp_path / "missing_cuts.jsonl.gz"), "--output", str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["import", "lhotse", str(tmp_path / "cuts.json"), "--output", str(tmp_path / "out")]) == 2
    assert "JSON lines" in capsys.readouterr().err
    (tmp_path / "empty_cuts.jsonl").write_text("\n")
    assert main(["import", "lhotse", str(tmp_path / "empty_cuts.jsonl"), "--output", str(tmp_path / "out")]) == 2
    assert "holds no cuts" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "lh") and not os.path.exists(tmp_path / "out")


def test_a_recordings_manifest_given_as_cuts_is_named(exported, tmp_path, capsys):
    assert main(["import", "lhotse", os.path.join(exported, "microturn_recordings.jsonl.gz"), "--output",
              str(tmp_path / "out")]) == 2
    assert "is a recordings manifest; give the cuts manifest" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def test_export_never_writes_into_a_folder_holding_others_files(records, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["export", "lhotse", records, "--output", str(foreign)]) == 2
    assert "is not empty and was not written by `microturn export lhotse`" in capsys.readouterr().err
    assert sorted(os.listdir(foreign)) == ["notes.txt"] and (foreign / "notes.txt").read_text() == "mine"

    ours = tmp_path / "ours"
    assert main(["export", "lhotse", records, "--output", str(ours)]) == 0
    (ours / "notes.txt").write_text("mine")
    before = {n: (ours / n).read_bytes() for n in os.listdir(ours)}
    assert main(["export", "lhotse", records, "--output", str(ours), "--prefix", "other"]) == 2
    assert "holds files that no export wrote (notes.txt)" in capsys.readouterr().err
    assert {n: (ours / n).read_bytes() for n in os.listdir(ours)} == before

    # a marker that lists a path outside the folder makes no rerun remove it
    (ours / "notes.txt").unlink()
    marker = json.loads((ours / MARKER).read_text())
    marker["files"].append("../victim.txt")
    (ours / MARKER).write_text(json.dumps(marker))
    (tmp_path / "victim.txt").write_text("keep")
    assert main(["export", "lhotse", records, "--output", str(ours), "--prefix", "other"]) == 0
    assert (tmp_path / "victim.txt").read_text() == "keep"
    assert sorted(os.listdir(ours)) == sorted([MARKER, "other_cuts.jsonl.gz", "other_recordings.jsonl.gz",
                                               "other_supervisions.jsonl.gz"])

    assert main(["export", "lhotse", records, "--output", records]) == 2  # DIR = the records
    assert "not written by `microturn export lhotse`" in capsys.readouterr().err


def test_a_bad_prefix_is_refused(records, tmp_path, capsys):
    assert main(["export", "lhotse", records, "--output", str(tmp_path / "x"), "--prefix", "../up"]) == 2
    assert "--prefix '../up'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_import_refuses_an_output_of_another_stage(exported, records, tmp_path, capsys):
    shard_like = tmp_path / "shards"
    (shard_like / "samples").mkdir(parents=True)
    (shard_like / "samples" / "part-00000-of-00001.parquet").write_bytes(b"x")
    cuts = os.path.join(exported, "microturn_cuts.jsonl.gz")
    assert main(["import", "lhotse", cuts, "--output", str(shard_like)]) == 2
    assert "holds the output of shard" in capsys.readouterr().err
