"""Two runs of a stage into one output at the same time.

The first run is held half-way through its output (``MICROTURN_FAULT=wait_after_writes:1:GO``:
after its first file it waits for the file GO), so the second one certainly starts while the
first holds the output. The second is refused before any work with one line naming the first
run's pid; the first then finishes with the same bytes as a clean run and leaves no lock.
"""

from __future__ import annotations

import os
import time

import pytest

from microturn.pipelines.outputs import LOCK
from microturn.testing.files import tree
from stage_runs import SHARD_ARGS, error_lines, leftovers, make_records, run_stage, start_stage

pytestmark = pytest.mark.slow


def wait_for_lock(path, proc, guard_s: float = 600) -> str:
    """The pid written in the lock file once the held run wrote it (guards only against a hang)."""
    deadline = time.monotonic() + guard_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if os.path.exists(path):
            pid = open(path).read().strip()
            if pid:
                return pid
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


@pytest.mark.parametrize("stage", ["shard", "synthesize", "ingest"])
def test_a_second_run_on_a_busy_output_is_refused_and_the_first_is_clean(tmp_path, stage, speech_dir,
                                                                        scripts_file):
    args = {"shard": lambda: ["--input", make_records(tmp_path / "rec"), *SHARD_ARGS],
            "synthesize": lambda: ["--scripts", scripts_file, "--seed", "3"],
            "ingest": lambda: ["--input", speech_dir / "*.wav"]}[stage]()
    out, go = tmp_path / "out", tmp_path / "go"
    first = start_stage(stage, *args, "--output", out, env={"MICROTURN_FAULT": f"wait_after_writes:1:{go}"})
    try:
        pid = wait_for_lock(out / LOCK, first)
        assert pid == str(first.pid)
        second = run_stage(stage, *args, "--output", out)
        assert second.returncode not in (0, None)
        assert error_lines(second)[-1:] == [
            f"microturn {stage}: error: --output {out}: another run (pid {pid}) is writing it; "
            f"wait for it to finish (lock {out / LOCK})"], second.stderr[-3000:]
        go.touch()
        _, err = first.communicate(timeout=600)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    clean = tmp_path / "clean"
    assert run_stage(stage, *args, "--output", clean).returncode == 0
    assert tree(out) == tree(clean)
    assert leftovers(out) == []
