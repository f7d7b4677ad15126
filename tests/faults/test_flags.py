"""Every command-line mistake in ingest, synthesize and shard is an error before any work.

Beam drops flags it does not know with a log warning, so before these checks a misspelt flag,
the underscore spelling of a stage flag, or a stray value left the run on its defaults with
exit 0. Each class is tried on each command; the error is argparse's (exit status 2) and names
the argument.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from microturn.pipelines.ingest import run as ingest
from microturn.pipelines.shard import run as shard
from microturn.pipelines.synthesize import run as synthesize

# A valid minimal command line per stage; each test adds one mistake to it.
COMMANDS = {
    "ingest": (ingest, ["--input", "in/*.wav", "--output", "out"]),
    "synthesize": (synthesize, ["--generate", "1", "--output", "out"]),
    "shard": (shard, ["--input", "records", "--output", "shards"]),
}
# A flag of each stage taking one value (for stray values after it) and a misspelling of one.
ONE_VALUE = {"ingest": "--input", "synthesize": "--scripts", "shard": "--input"}
MISSPELT = {"ingest": ("--max-duraton-s", "--max-duration-s"), "synthesize": ("--noise-snr", "--noise-snr-db"),
            "shard": ("--windows-chunks", "--window-chunks")}


def refused(capsys, command: str, extra: list[str], *, first: bool = False) -> str:
    """Parse the command line with ``extra`` added; assert exit status 2 and return stderr."""
    module, base = COMMANDS[command]
    argv = extra + base if first else base + extra
    with pytest.raises(SystemExit) as exc:
        module.parse_args(argv)
    assert exc.value.code == 2, exc.value.code
    err = capsys.readouterr().err
    assert f"microturn {command}: error:" in err
    return err


@pytest.mark.parametrize("command", COMMANDS)
def test_beam_flags_pass_through_in_both_forms(command):
    module, base = COMMANDS[command]
    beam = ["--runner", "DirectRunner", "--direct_num_workers=2", "--direct_running_mode", "multi_processing",
            "--temp_location", "/tmp/x", "--experiments=a", "--experiments", "b", "--save_main_session"]
    _, beam_args = module.parse_args(base + beam)
    assert beam_args == beam
    _, beam_args = module.parse_args(beam[:2] + base + beam[2:])  # anywhere on the line
    assert beam_args == beam


@pytest.mark.parametrize("command", COMMANDS)
def test_misspelt_flag_is_named_with_a_suggestion(capsys, command):
    wrong, right = MISSPELT[command]
    err = refused(capsys, command, [wrong, "1"])
    assert wrong in err and f"did you mean {right}" in err
    err = refused(capsys, command, [f"{wrong}=1"])  # the = form too
    assert f"{wrong} (did you mean {right}" in err
    err = refused(capsys, command, ["--frobnicate"])  # nothing close: named without a guess
    assert "--frobnicate" in err and "did you mean" not in err


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_flag_is_refused_before_a_missing_required_flag(capsys, command):
    err = refused(capsys, command, ["--out", "o"], first=True)
    assert "--out (did you mean --output?)" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_no_flag_is_abbreviated(capsys, command):
    """``--out`` is not ``--output`` and ``--conf`` is not ``--config``, even when unambiguous."""
    for short in ("--out=o", "--conf"):
        err = refused(capsys, command, [short, "x"])
        assert short.split("=")[0] in err


@pytest.mark.parametrize("command", COMMANDS)
def test_underscore_spelling_of_every_stage_flag_is_refused(capsys, command):
    module, _ = COMMANDS[command]
    flags = [o for a in module.build_parser()._actions for o in a.option_strings if "-" in o[2:]]
    assert len(flags) >= 3
    for flag in flags:
        underscored = "--" + flag[2:].replace("-", "_")
        err = refused(capsys, command, [underscored, "1"])
        assert f"did you mean {flag}?" in err, (underscored, err)


@pytest.mark.parametrize("command", COMMANDS)
def test_dash_spelling_of_a_beam_flag_is_refused(capsys, command):
    err = refused(capsys, command, ["--direct-num-workers", "2"])
    assert "did you mean --direct_num_workers?" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_stray_values_after_a_one_value_flag_are_refused(capsys, command):
    flag = ONE_VALUE[command]
    err = refused(capsys, command, [flag, "a", "b", "c"])
    assert "'b' 'c'" in err and f"after {flag}" in err
    err = refused(capsys, command, ["--runner", "DirectRunner", "stray"])  # after a Beam flag
    assert "'stray'" in err and "after --runner" in err
    err = refused(capsys, command, ["stray"], first=True)  # before any flag
    assert "'stray'" in err
    err = refused(capsys, command, ["--", "--input", "x"])  # nothing hides behind --
    assert "'--input'" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_a_one_value_flag_given_twice_is_refused(capsys, command):
    """argparse keeps the last of `--output a --output b`; which one was meant is not known."""
    err = refused(capsys, command, ["--output", "elsewhere"])
    assert "--output given more than once" in err
    err = refused(capsys, command, ["--config=a.toml", "--config", "b.toml"])
    assert "--config given more than once" in err
    module, base = COMMANDS[command]
    flag = ONE_VALUE[command]  # the repeatable one still repeats
    cfg, _ = module.parse_args(base + [flag, "more"])
    assert "more" in (cfg.scripts if command == "synthesize" else cfg.inputs)


def test_stray_value_after_a_flag_without_a_value_is_refused(capsys):
    err = refused(capsys, "shard", ["--no-video", "yes"])
    assert "'yes'" in err and "after --no-video" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_beam_value_is_a_usage_error(capsys, command):
    err = refused(capsys, command, ["--direct_num_workers=two"])
    assert "--direct_num_workers" in err and "'two'" in err
    err = refused(capsys, command, ["--direct_running_mode", "many"])
    assert "--direct_running_mode" in err


def test_a_misspelt_flag_stops_ingest_before_it_touches_the_output(tmp_path):
    """The real command, as a user runs it: without the check this ingests the file into OUT."""
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "a.wav", np.zeros(16_000, dtype=np.float32), 16_000, subtype="PCM_16")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "microturn.cli.main", "ingest", "--input", str(folder / "*.wav"),
                           "--output", str(out), "--transcriber", "none", "--max-duraton-s", "1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "--max-duraton-s (did you mean --max-duration-s?)" in proc.stderr
    assert not os.path.exists(out) and sorted(os.listdir(tmp_path)) == ["in"]
