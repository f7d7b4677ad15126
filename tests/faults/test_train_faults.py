"""Training under faults: killed while writing a checkpoint, and fed corrupt or truncated shards.

(a) A run killed with SIGKILL half-way through writing a checkpoint (the trainer's fault hook,
``MICROTURN_FAULT_KILL_IN_CHECKPOINT``, truncates a file DeepSpeed wrote and kills its own
process) resumes from the last complete checkpoint, never the half-written one, and ends with
the losses of an uninterrupted run: bitwise, since both runs use one process (the same layout).

(b) Corrupt, truncated, compressed and garbage shards among good ones: training goes on, counts
and warns, and exits 0 with a summary. When every shard is bad the run stops with an error
instead of drawing shards forever.

Runs are ``python -m microturn.trainer`` on tiny-cpu for a few steps.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from microturn.trainer.checkpoint import FAULT_ENV  # noqa: E402
from trainer_shards import train_shards  # noqa: E402

# Only a hang reaches this: each run here takes well under a minute.
HANG_GUARD_S = 600
STEPS = ["train.steps=4", "train.ckpt_every=2", "train.log_every=1", "train.shuffle_buffer=16"]


def _train(shards: str, output: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT",
                                                              FAULT_ENV)}
    return subprocess.run([sys.executable, "-m", "microturn.trainer", "--config", "tiny-cpu", "--shards", shards,
                           "--output", str(output), "--no-progress", *overrides],
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=HANG_GUARD_S)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


@pytest.fixture(scope="module")
def shard_glob() -> str:
    return os.path.join(os.path.dirname(train_shards()[0]), "*.tar")


@pytest.fixture(scope="module")
def clean_run(shard_glob, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "run"
    _ok(_train(shard_glob, out, *STEPS))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("killed_at, resumes_from", [("step2", None), ("step4", "step2")])
def test_a_run_killed_while_writing_a_checkpoint_resumes_to_the_clean_losses(shard_glob, clean_run, tmp_path,
                                                                            killed_at, resumes_from):
    out = tmp_path / "run"
    ckpt = out / "checkpoints"
    killed = _train(shard_glob, out, *STEPS, env={FAULT_ENV: killed_at})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # The half-written checkpoint is there, but nothing names it.
    assert (ckpt / f"{killed_at}.partial").is_dir() and not (ckpt / killed_at).exists()
    if resumes_from is None:
        assert not (ckpt / "latest").exists()
    else:
        assert (ckpt / "latest").read_text() == resumes_from and (ckpt / resumes_from / "run_config.json").is_file()
    resumed = _ok(_train(shard_glob, out, *STEPS))
    if resumes_from is not None:
        assert f"resumed from {ckpt / resumes_from} at step {resumes_from[4:]}" in resumed.stderr
    assert f"{killed_at}.partial" in resumed.stderr  # removed, and said so
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == ["step2", "step4"]
    assert (ckpt / "latest").read_text() == "step4"
    # Each step once, with the clean run's loss (one process in both runs: bitwise).
    assert _losses(out) == _losses(clean_run) and [s for s, _ in _losses(out)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_resuming_with_another_model_shape_is_refused_and_changed_settings_are_reported(shard_glob, clean_run,
                                                                                      tmp_path):
    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    before = sorted(os.listdir(out / "checkpoints"))
    refused = _train(shard_glob, out, *STEPS, "model.dim=128", "model.layers=2")
    assert refused.returncode == 1
    assert "model.dim: checkpoint has 64, config has 128" in refused.stderr
    assert "model.layers: checkpoint has 4, config has 2" in refused.stderr
    assert "Traceback" not in refused.stderr and sorted(os.listdir(out / "checkpoints")) == before
    more = _ok(_train(shard_glob, out, "train.steps=5", "train.ckpt_every=2", "train.log_every=1",
                      "train.shuffle_buffer=16", "train.lr=0.001"))
    assert "changed training settings" in more.stderr
    assert "train.lr: 0.003 -> 0.001" in more.stderr and "train.steps: 4 -> 5" in more.stderr
    assert [s for s, _ in _losses(out)] == [1, 2, 3, 4, 5]


def _garble_samples(src: str, dst: Path, *, every: bool = True) -> None:
    """``src`` with the model dMel of every sample (or only the first) replaced by random bytes:
    a valid tar holding samples that do not decode."""
    rng = np.random.default_rng(0)
    garbled = 0
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tout:
        for info in tin.getmembers():
            member = tin.extractfile(info)
            assert member is not None, info.name  # a shard holds regular files only
            data = member.read()
            if info.name.endswith(".model.dmel.npy") and (every or not garbled):
                data = rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
                garbled += 1
            tout.addfile(info, io.BytesIO(data))


def _bad_shards(folder: Path, good: tuple[str, ...], *, half: bool) -> None:
    """Shards that give no sample (and, with ``half``, one cut in the middle, whose first samples
    still arrive)."""
    data = Path(good[0]).read_bytes()
    (folder / "bad-truncated.tar").write_bytes(data[:700])  # inside the first member
    if half:
        (folder / "bad-half.tar").write_bytes(Path(good[1]).read_bytes()[: os.path.getsize(good[1]) // 2])
    (folder / "bad-garbage.tar").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes())
    (folder / "bad-gzip.tar").write_bytes(gzip.compress(data))
    (folder / "bad-empty.tar").write_bytes(b"")
    _garble_samples(good[0], folder / "bad-samples.tar")


@pytest.mark.slow
def test_bad_shards_among_good_ones_are_counted_and_training_finishes(tmp_path):
    good = train_shards()
    folder = tmp_path / "shards"
    folder.mkdir()
    for i, path in enumerate(good[2:4]):  # good shards, each with one sample that does not decode
        _garble_samples(path, folder / f"good-{i}.tar", every=False)
    _bad_shards(folder, good, half=True)
    proc = _ok(_train(str(folder / "*.tar"), tmp_path / "run", "train.steps=3", "train.shuffle_buffer=16"))
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["loader/shard_errors"] > 0 and last["loader/skipped"] > 0 and last["loader/samples"] > 0
    # Each warning is one line of run/warnings.log; stderr has one line of counts by reason.
    logged = (tmp_path / "run" / "warnings.log").read_text().splitlines()
    shard_lines = [line for line in logged if "skipped a shard" in line]
    assert shard_lines and any("skipped a sample" in line for line in logged)
    assert all("bad-" in line for line in shard_lines)
    assert "UserWarning" not in proc.stderr
    tally = [ln for ln in proc.stderr.splitlines() if "warning(s) while training" in ln]
    assert len(tally) == 1 and "skipped a shard x" in tally[0] and "skipped a sample x" in tally[0], tally
    summary = [ln for ln in proc.stderr.splitlines() if "loader:" in ln]
    assert len(summary) == 1, summary
    assert f"{last['loader/skipped']} skipped, {last['loader/shard_errors']} shard error(s)" in summary[0]
    assert "train: 3 step(s) to step 3" in proc.stdout and "lost: {'skipped'" in proc.stdout


@pytest.mark.slow
def test_a_run_where_every_shard_is_bad_stops_with_an_error(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    _bad_shards(folder, train_shards(), half=False)
    proc = _train(str(folder / "*.tar"), tmp_path / "run", "train.steps=3", "train.shuffle_buffer=16")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "microturn train: error:" in proc.stderr and "failures in a row from all 5 shard(s)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "latest").exists()
