"""Helpers for the stage-level fault tests (outputs, kills, full disks, concurrent runs): running a
stage as its own process, what a finished run may not leave behind, and the shard inputs.

A module of its own, not ``conftest``: several test folders have a ``conftest.py``, and a test
module that imported ``conftest`` by name got whichever was loaded first.
"""

from __future__ import annotations

import os
import subprocess
import sys

from microturn.testing.files import tree
from microturn.testing.records import two_streams, write_records

# Only a hang reaches this: a run over these inputs takes seconds.
HANG_GUARD_S = 600
MODULES = {"ingest": "microturn.pipelines.ingest", "synthesize": "microturn.pipelines.synthesize",
           "shard": "microturn.pipelines.shard"}
SHARD_ARGS = ("--window-chunks", "25", "--splits", "train=1", "--shard-bytes", "64KiB")


def run_stage(stage: str, *args: str, env: dict | None = None, **popen) -> subprocess.CompletedProcess:
    """``python -m microturn.pipelines.<stage> ARGS`` to the end; stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", MODULES[stage], *map(str, args)],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=HANG_GUARD_S, **popen)


def start_stage(stage: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", MODULES[stage], *map(str, args)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def leftovers(root) -> list[str]:
    """Lock, temporary, pending and spooled files under ``root``: none may survive a finished run."""
    return sorted(p for p in tree(root) if p.endswith((".tmp", ".pending", ".lock")) or p.startswith(".spool"))


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr that are not log records (Beam and our warnings)."""
    return [ln for ln in proc.stderr.splitlines()
            if ln.strip() and not ln.startswith(("WARNING", "INFO", "DEBUG"))]


def make_records(root) -> str:
    """Two short two-speaker conversation records (12 s and 13 s) at ``root``."""
    return write_records(str(root), [two_streams("s-00000000000000e1", seconds=12.0),
                                     two_streams("s-00000000000000e2", seconds=13.0, seed=3)])
