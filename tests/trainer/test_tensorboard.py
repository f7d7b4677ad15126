"""TensorBoard event files and the warnings summary of real training runs (DeepSpeed on CPU,
the tiny-cpu config, the real shards of trainer_shards.py).

The event files are read back with TensorBoard's own reader (EventAccumulator) and compared with
``metrics.jsonl`` step by step; a run over a corpus with a broken shard and undecodable samples
is run through the command line, whose terminal must show the progress bar and one summary line
rather than a warning per sample.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from microturn.trainer.loop import train
from microturn.trainer.plot import plot_run, read_metrics
from microturn.trainer.tensorboard_log import TB_DIR, scalars, tensorboard_available
from microturn.trainer.train_config import as_dict, load_named
from trainer_shards import train_shards

# Launcher variables a DeepSpeed run in this process leaves set (engine.init_distributed): a
# child run must not inherit them, or it would join this process's group on its port.
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def shards():
    return list(train_shards())


def events(run_dir) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in ``RUN/tensorboard`` (all event files)."""
    acc = EventAccumulator(os.path.join(run_dir, TB_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    out: dict[str, dict[int, float]] = {}
    for tag in acc.Tags()["scalars"]:
        for event in acc.Scalars(tag):
            assert event.step not in out.setdefault(tag, {}), f"{tag} logged twice at step {event.step}"
            out[tag][event.step] = event.value
    return out


def float32_close(stored: float, value: float) -> bool:
    """TensorBoard keeps float32: equal to ``value`` within one float32 rounding (2**-24 relative)."""
    return math.isclose(stored, value, rel_tol=2.0 ** -23, abs_tol=1e-30)


def test_event_files_hold_the_metrics_jsonl_values_at_their_steps_across_a_resume(shards, tmp_path):
    cfg = load_named("tiny-cpu", ["train.steps=4", "train.log_every=2"])  # log steps 1, 2, 4
    assert cfg.train.tensorboard is True  # the package is installed here: on by default
    run = str(tmp_path / "run")
    first = train(cfg, shards=shards, output=run, progress=False, stop_after=2)
    rest = train(cfg, shards=shards, output=run, progress=False)
    assert first.step == 2 and rest.start == 2 and rest.step == 4
    rows = read_metrics(run)  # what `microturn train plot` reads
    assert [r["step"] for r in rows] == [1, 2, 4]
    got = events(run)
    expected = {tag: {} for r in rows for tag, _ in scalars(r)}
    for r in rows:
        for tag, value in scalars(r):
            expected[tag][r["step"]] = value
    assert set(got) == set(expected)
    for tag, by_step in expected.items():
        assert set(got[tag]) == set(by_step), tag
        for step, value in by_step.items():
            assert float32_close(got[tag][step], value), (tag, step, got[tag][step], value)
    # The same scalars as metrics.jsonl: losses per head, schedule, throughput, MoE, loader.
    assert {"loss", "loss/text", "loss/dmel", "loss/flow", "lr", "tokens_per_s", "loader/samples"} <= set(got)
    layer = next(k.split("/")[1] for k in got if k.startswith("moe/"))
    assert {f"moe/{layer}/load/0", f"moe/{layer}/router_entropy", f"moe/{layer}/text/load/0"} <= set(got)
    assert [got["loss"][s] for s in (1, 2, 4)] == pytest.approx([r["loss"] for r in rows], rel=1e-6)
    # Two invocations, two closed event files; nothing else in the folder.
    files = sorted(os.listdir(os.path.join(run, TB_DIR)))
    assert len(files) == 2 and all(f.startswith("events.out.tfevents.") for f in files)
    # A rerun of the finished run (a retried orchestrator task) has no step to log: no new file.
    again = train(cfg, shards=shards, output=run, progress=False)
    assert again.step == 4 and sorted(os.listdir(os.path.join(run, TB_DIR))) == files
    assert not os.path.exists(os.path.join(run, "warnings.log"))  # good shards: nothing to warn about
    png = plot_run(run, str(tmp_path / "curves.png"))  # `microturn train plot` is unchanged
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_false_writes_no_event_files(shards, tmp_path):
    cfg = load_named("tiny-cpu", ["train.steps=1", "train.tensorboard=false"])
    run = tmp_path / "run"
    train(cfg, shards=shards, output=str(run), progress=False)
    assert (run / "metrics.jsonl").exists() and not (run / TB_DIR).exists()
    assert json.loads((run / "config.json").read_text())["train"]["tensorboard"] is False


def test_the_setting_defaults_to_the_package_being_installed_and_refuses_true_without_it(monkeypatch):
    assert tensorboard_available()
    assert load_named("tiny-cpu").train.tensorboard is True
    assert as_dict(load_named("tiny-cpu", ["train.tensorboard=false"]))["train"]["tensorboard"] is False
    with pytest.raises(ValueError, match="tensorbord"):  # unknown keys are still refused
        load_named("tiny-cpu", ["train.tensorbord=true"])
    with pytest.raises(ValueError, match="tensorboard"):
        load_named("tiny-cpu", ["train.tensorboard=2"])
    # As if the package were not installed: the default turns off, and asking for it is an error
    # that says what to install.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert not tensorboard_available()
    assert load_named("tiny-cpu").train.tensorboard is False
    with pytest.raises(ValueError, match=r"not installed; pip install 'microturn\[tensorboard\]'.*tensorboard=false"):
        load_named("tiny-cpu", ["train.tensorboard=true"])


def _bad_corpus(shards: list[str], folder) -> str:
    """Two good tars, a tar whose samples' JSON does not parse, and a file that is not a tar."""
    os.makedirs(folder)
    for path in shards[:2]:
        shutil.copy(path, folder)
    with tarfile.open(shards[2]) as src, tarfile.open(os.path.join(folder, "undecodable.tar"), "w") as dst:
        for member in src.getmembers():
            reader = src.extractfile(member)
            assert reader is not None  # a shard holds regular files only
            data = reader.read()
            if member.name.endswith(".json"):
                data = b"{not json"
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    with open(os.path.join(folder, "broken.tar"), "wb") as f:
        f.write(b"this is not a tar file\n" * 64)
    return str(folder)


def test_per_sample_warnings_leave_the_progress_bar_whole_and_end_as_one_summary_line(shards, tmp_path):
    corpus = _bad_corpus(shards, tmp_path / "shards")
    run = str(tmp_path / "run")
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    done = subprocess.run([sys.executable, "-m", "microturn.trainer", "--config", "tiny-cpu", "--shards", corpus,
                           "--output", run, "train.steps=3", "train.log_every=1"],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    last = read_metrics(run)[-1]
    skipped, shard_errors = last["loader/skipped"], last["loader/shard_errors"]
    assert skipped > 0 and shard_errors > 0  # the corpus did make the loader warn, of both kinds
    # No warning reached the terminal one by one: the bar's updates are not broken up.
    assert "UserWarning" not in done.stderr and "undecodable.tar" not in done.stderr
    summary = [line for line in done.stderr.splitlines() if "warning(s) while training" in line]
    assert len(summary) == 1, done.stderr[-3000:]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"(skipped a \w+) x(\d+)", summary[0])}
    assert counts == {"skipped a sample": skipped, "skipped a shard": shard_errors}
    assert f"{skipped + shard_errors} warning(s)" in summary[0] and os.path.join(run, "warnings.log") in summary[0]
    # The details: one line per warning, with its step, in RUN/warnings.log.
    with open(os.path.join(run, "warnings.log")) as f:
        lines = f.read().splitlines()
    assert len(lines) == skipped + shard_errors
    assert sum("skipped a sample: " in line and "undecodable.tar" in line for line in lines) == skipped
    assert sum("skipped a shard: " in line and "broken.tar" in line for line in lines) == shard_errors
    assert all(re.match(r"step [1-3]: UserWarning: skipped a (sample|shard): ", line) for line in lines)
    assert sorted(os.listdir(os.path.join(run, TB_DIR)))  # on by default from the command line too
