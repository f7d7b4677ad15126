"""``kill -9`` of each pipeline stage half-way through its output, then a rerun.

The kill is injected at a chosen point (``MICROTURN_FAULT=kill_after_writes:N``: the process
SIGKILLs itself after its N-th output file), so the test does not race a timer. After the kill
no reader sees any of the killed run's files (they have pending names) and an earlier output
is intact; the rerun gives the same bytes as a clean run and leaves no lock, temporary or
pending file.
"""

from __future__ import annotations

import pytest

from microturn.testing.files import tree
from stage_runs import SHARD_ARGS, leftovers, make_records, run_stage

pytestmark = pytest.mark.slow


def visible(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if not k.endswith((".pending", ".tmp", ".lock"))
            and not k.startswith(".spool/")}


def killed_then_rerun(stage: str, args: list, tmp_path, *, kill_after: int):
    clean = tmp_path / "clean"
    proc = run_stage(stage, *args, "--output", clean)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    proc = run_stage(stage, *args, "--output", out, env={"MICROTURN_FAULT": f"kill_after_writes:{kill_after}"})
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL, mid-output
    left = tree(out)
    assert any(k.endswith(".pending") for k in left)
    assert not any(k.rpartition("/")[2].startswith("part-") for k in left)  # no reader sees a table part
    proc = run_stage(stage, *args, "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree(out) == tree(clean)
    assert leftovers(out) == []
    return out


def test_ingest_killed_mid_output(tmp_path, speech_dir):
    # 1 media file, then 6 tables of 1 part each: killed after the 2nd table.
    killed_then_rerun("ingest", ["--input", speech_dir / "*.wav"], tmp_path, kill_after=3)


def test_synthesize_killed_mid_output(tmp_path, scripts_file):
    # 2 stems for each of 2 dialogues, then 5 tables: killed after the 2nd table.
    killed_then_rerun("synthesize", ["--scripts", scripts_file, "--seed", "3"], tmp_path, kill_after=6)


def test_shard_killed_mid_output_over_an_earlier_output(tmp_path):
    records = make_records(tmp_path / "rec")
    args = ["--input", records, *SHARD_ARGS]
    out = tmp_path / "out"
    proc = run_stage("shard", "--input", records, "--output", out, "--window-chunks", "50")  # other settings
    assert proc.returncode == 0, proc.stderr[-3000:]
    earlier = tree(out)
    proc = run_stage("shard", *args, "--output", out, env={"MICROTURN_FAULT": "kill_after_writes:3"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert visible(tree(out)) == earlier  # the earlier output, untouched and still all there
    proc = run_stage("shard", *args, "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean = tmp_path / "clean"
    assert run_stage("shard", *args, "--output", clean).returncode == 0
    assert tree(out) == tree(clean)
    assert leftovers(out) == []
