"""Helpers for the stage-level fault tests (outputs, kills, full disks, concurrent runs).

Inputs are tiny so the tests stay fast: 2 s of the real call shipped with pyannote.audio for
ingest, two short dialogues for synthesize, and two short two-speaker records for shard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))  # media and shard corpora
from media_corpus import speech  # noqa: E402
from shard_corpus import two_streams, write_records  # noqa: E402

# Only a hang reaches this: a run over these inputs takes seconds.
HANG_GUARD_S = 600
MODULES = {"ingest": "microturn.pipelines.ingest", "synthesize": "microturn.pipelines.synthesize",
           "shard": "microturn.pipelines.shard"}


def run_stage(stage: str, *args: str, env: dict | None = None, **popen) -> subprocess.CompletedProcess:
    """``python -m microturn.pipelines.<stage> ARGS`` to the end; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", MODULES[stage], *map(str, args)],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=HANG_GUARD_S, **popen)


def start_stage(stage: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", MODULES[stage], *map(str, args)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def tree(root) -> dict[str, bytes]:
    """Every file under ``root`` (dot files too) by relative path, with its bytes."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def leftovers(root) -> list[str]:
    """Lock, temporary and pending files under ``root``: none may survive a finished run."""
    return sorted(p for p in tree(root) if p.endswith((".tmp", ".pending", ".lock")))


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr that are not log records (Beam and our warnings)."""
    return [ln for ln in proc.stderr.splitlines()
            if ln.strip() and not ln.startswith(("WARNING", "INFO", "DEBUG"))]


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    """A folder holding one 2 s clip of real speech."""
    root = tmp_path_factory.mktemp("speech")
    speech(str(root / "call.wav"), start=6.5, dur=2.0)
    return root


@pytest.fixture(scope="session")
def scripts_file(tmp_path_factory) -> Path:
    """Two short dialogues in one JSONL file."""
    path = tmp_path_factory.mktemp("scripts") / "two.jsonl"
    rows = [{"id": "d1", "speakers": {"A": {}, "B": {}}, "turns": [{"speaker": "A", "text": "hello there"},
                                                                  {"speaker": "B", "text": "hi"}]},
            {"id": "d2", "speakers": {"A": {}, "B": {}}, "turns": [{"speaker": "A", "text": "yes"},
                                                                  {"speaker": "B", "text": "good"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_records(root) -> str:
    """Two short two-speaker conversation records (12 s and 13 s) at ``root``."""
    return write_records(str(root), [two_streams("s-00000000000000e1", seconds=12.0),
                                     two_streams("s-00000000000000e2", seconds=13.0, seed=3)])


@pytest.fixture(scope="session")
def records(tmp_path_factory) -> str:
    return make_records(tmp_path_factory.mktemp("records") / "rec")


SHARD_ARGS = ("--window-chunks", "25", "--splits", "train=1", "--shard-bytes", "64KiB")
