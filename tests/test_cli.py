"""The ``microturn`` command line: help for every command without the heavy libraries, ``--version``,
``--log-level`` anywhere, "did you mean" for a misspelt command or subcommand, usage errors with
exit status 2, and no third-party notice before the project's own output.

Speed itself is measured in ``bench/cli.py``; here the cause of a slow ``--help`` is checked: a
parser that imports Beam, torch or DuckDB (1-4 s each on the reference machine).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from importlib.metadata import version

import pytest

from microturn.cli import logs
from microturn.cli.main import main

# Every command and subcommand, as typed after `microturn`.
COMMANDS = [
    [], ["ingest"], ["synthesize"], ["synthesize", "stats"], ["synthesize", "fit"], ["shard"], ["catalog"],
    ["catalog", "build"], ["audit"], ["audit", "report"], ["train"], ["train", "plot"], ["eval"],
    ["eval", "diarization"], ["eval", "words"], ["eval", "model"], ["eval", "duplex"], ["eval", "interaction"],
    ["eval", "items"], ["export"], ["export", "lhotse"], ["import"], ["import", "lhotse"], ["session"], ["demo"],
]
# Imported by a stage's work only: none may load for --help.
HEAVY = ("apache_beam", "torch", "duckdb", "scipy", "matplotlib", "deepspeed", "lhotse")
# Commands whose help does not list --log-level (the flag works for every command all the same:
# `microturn` reads it before dispatching); none today.
LEVEL_NOT_LISTED: set[tuple[str, ...]] = set()
HANG_GUARD_S = 600  # only a hang reaches this


def microturn(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """``microturn ARGS`` as a real process, the console script's code path."""
    return subprocess.run([sys.executable, "-m", "microturn.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=HANG_GUARD_S)


@pytest.fixture
def restore_logging():
    """Put the logging setup back as it was after a test that calls ``main`` in process."""
    root, project = logging.getLogger(), logging.getLogger("microturn")
    handlers, filters, levels = list(root.handlers), list(root.filters), (root.level, project.level)
    yield
    # Only what the project added goes: pytest swaps its own capture handlers between phases.
    for h in [h for h in root.handlers if isinstance(h, logs._Handler) and h not in handlers]:
        root.removeHandler(h)
    for f in [f for f in root.filters if isinstance(f, logs.DropBeamNotices) and f not in filters]:
        root.removeFilter(f)
    root.setLevel(levels[0])
    project.setLevel(levels[1])


# --- help without the heavy libraries ---------------------------------------------------------

_HELP_PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from microturn.cli.main import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            status = main(sys.argv[1:])
        except SystemExit as exc:
            status = exc.code
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy})
    print(json.dumps({{"status": status, "out": out.getvalue(), "heavy": heavy}}))
""")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "microturn")
def test_every_help_prints_usage_without_loading_beam_torch_or_duckdb(command):
    probe = _HELP_PROBE.format(heavy=set(HEAVY))
    proc = subprocess.run([sys.executable, "-c", probe, *command, "--help"], capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["status"] in (0, None), result
    assert "usage:" in result["out"], result["out"]
    assert result["heavy"] == [], f"{' '.join(command)} --help imported {result['heavy'][:5]}"
    if tuple(command) not in LEVEL_NOT_LISTED:
        assert "--log-level" in result["out"], result["out"]
    assert proc.stderr == "", proc.stderr[-3000:]


# --- --version, --log-level -------------------------------------------------------------------

def test_version_prints_the_installed_version():
    proc = microturn("--version")
    assert proc.returncode == 0 and proc.stdout == f"microturn {version('microturn')}\n", proc
    assert proc.stderr == ""


@pytest.mark.parametrize("argv", [["--log-level", "error", "catalog", "--help"],
                                  ["catalog", "--log-level=error", "--help"],
                                  ["catalog", "--help", "--log-level", "ERROR"]])
def test_log_level_is_read_anywhere_and_sets_the_project_level(restore_logging, capsys, argv):
    assert main(argv) == 0
    assert logging.getLogger("microturn").level == logging.ERROR
    assert logging.getLogger().level == logging.ERROR  # other libraries: errors only, as asked
    assert "usage: microturn catalog" in capsys.readouterr().out


def test_debug_keeps_other_libraries_at_warnings(restore_logging):
    logs.setup("debug")
    assert logging.getLogger("microturn").level == logging.DEBUG
    assert logging.getLogger().level == logging.WARNING  # Beam logs every bundle at info


@pytest.mark.parametrize("argv, message", [
    (["--log-level", "loud", "shard"], "--log-level 'loud': choose from debug, info, warning, error"),
    (["shard", "--log-level"], "--log-level needs a value"),
])
def test_a_bad_log_level_is_a_usage_error(restore_logging, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_project_handler_is_installed_once_and_drops_beams_notices(restore_logging, capsys):
    logs.setup()
    logs.setup("warning")
    ours = [h for h in logging.getLogger().handlers if isinstance(h, logs._Handler)]
    assert len(ours) == 1
    logging.warning("apitools not found, and bigquery client libraries are not available despite the import")
    logging.getLogger("apache_beam.runners.portability.local_job_service").warning(
        "Worker: severity: WARN message: \"Discarding unparseable args: [\\'--direct_runner_use_stacked_bundle\\', "
        "\\'--pipeline_type_check\\']\"")
    logging.getLogger("microturn.test").warning("kept")
    err = capsys.readouterr().err
    assert err == "WARNING microturn.test: kept\n", err


# --- did you mean -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["shrad"], "microturn: unknown command 'shrad' (did you mean 'shard'?)"),
    (["--verison"], "microturn: unknown option '--verison' (did you mean '--version'?)"),
    (["audit", "reprot", "--catalog", "c"], "microturn audit: unknown subcommand 'reprot' (did you mean 'report'?)"),
    (["train", "plto", "run"], "microturn train: unknown subcommand 'plto' (did you mean 'plot'?)"),
    (["eval", "diarizaton"], "microturn eval: unknown subcommand 'diarizaton' (did you mean 'diarization'?)"),
    (["synthesize", "stast", "out"], "microturn synthesize: unknown subcommand 'stast' (did you mean 'stats'?)"),
    (["catalog", "bild", "out"], "microturn catalog: unknown subcommand 'bild' (did you mean 'build'?)"),
])
def test_a_misspelt_command_or_subcommand_names_the_closest_one(restore_logging, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_word_like_no_command_lists_them(restore_logging, capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate' (choose from ingest, synthesize, shard" in capsys.readouterr().err


# --- usage errors: status 2, one line, the project's own output first --------------------------

def test_stage_errors_before_any_work_exit_2_with_one_line_and_no_beam_notice(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (["synthesize", "--generate", "2", "--kinds", "visaul", "--output", str(tmp_path / "s")],
         "microturn synthesize: error: --kinds: unknown kind 'visaul'"),
        (["shard", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "sh")],
         "microturn shard: error: --input"),
        (["ingest", "--input", str(tmp_path / "empty" / "*.wav"), "--output", str(tmp_path / "i")],
         "microturn ingest: error: --input"),
        (["train", "--config", "tiny-cpu", "--shards", str(tmp_path / "none.tar"), "--output", str(tmp_path / "t")],
         "microturn train: error: --shards: 1 of 1 local shard(s) do not exist"),
    ]
    for argv, first in cases:
        proc = microturn(*argv)
        assert proc.returncode == 2, (argv, proc.stderr[-2000:])
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(first), (argv, proc.stderr[-2000:])
        assert "apitools" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing was written


def test_the_module_entry_points_exit_2_on_usage_errors(tmp_path):
    for module in ("microturn.pipelines.shard", "microturn.pipelines.synthesize"):
        proc = subprocess.run([sys.executable, "-m", module, "--input" if module.endswith("shard") else "--scripts",
                               str(tmp_path / "missing"), "--output", str(tmp_path / "o")],
                              capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.startswith(f"microturn {module.rsplit('.', 1)[1]}: error:"), proc.stderr[-2000:]


# --- the names the light parsers offer are the ones the stages accept -------------------------

def test_the_parsers_names_are_the_stages_names():
    """Parsers read their choices from modules without imports; the stages keep their own copies
    (or import the same names), which must not drift apart."""
    from microturn.pipelines.catalog import build, licenses
    from microturn.pipelines.duplex import items_behaviours, layout, tasks

    assert build.DEFAULT_ALLOWED_LICENSES is licenses.DEFAULT_ALLOWED_LICENSES
    assert tasks.TASKS == layout.TASKS == items_behaviours.TASKS
    assert tasks.BEHAVIOUR_TASKS is items_behaviours.BEHAVIOUR_TASKS
