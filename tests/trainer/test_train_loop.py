"""The DeepSpeed training loop on CPU: the loss falls, a killed run resumes to the same losses,
metrics and plots are written, configs and overrides are checked."""

from __future__ import annotations

import json
import math

import pytest

from microturn.trainer.evaluate import evaluate
from microturn.trainer.loop import train
from microturn.trainer.plot import plot_run
from microturn.trainer.train_config import load_named
from trainer_shards import train_shards

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def shards():
    return list(train_shards())


def _losses(records):
    return [r["loss"] for r in records]


def test_tiny_cpu_loss_falls_by_a_third(shards, tmp_path):
    cfg = load_named("tiny-cpu")
    records = train(cfg, shards=shards, output=str(tmp_path / "run"), progress=False)
    assert len(records) == cfg.train.steps
    first = sum(_losses(records[:3])) / 3
    last = sum(_losses(records[-3:])) / 3
    assert last <= 0.7 * first, (first, last)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert {"loss/text", "loss/dmel", "loss/flow", "loss/aux", "loss/z", "tokens_per_s"} <= set(rows[-1])
    moe = [k for k in rows[-1] if k.startswith("moe/")]
    assert any(k.endswith("/load") for k in moe) and any(k.endswith("/router_entropy") for k in moe)
    for modality in ("text", "audio"):  # per layer and modality: load, drops, entropy
        layer = next(k.split("/")[1] for k in moe)
        assert {f"moe/{layer}/{modality}/{s}" for s in ("load", "drop_fraction", "router_entropy")} <= set(moe)
        assert abs(sum(rows[-1][f"moe/{layer}/{modality}/load"]) - 1) < 1e-5
    png = plot_run(str(tmp_path / "run"), str(tmp_path / "curves.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    held_out = evaluate(str(tmp_path / "run"), shards[:2], max_batches=4)
    assert held_out["step"] == cfg.train.steps and held_out["text_targets"] > 0 and held_out["audio_targets"] > 0
    assert held_out["text"] < math.log(256)  # better than a uniform guess over the bytes


def test_a_killed_run_resumes_to_the_same_losses(shards, tmp_path):
    cfg = load_named("tiny-cpu", ["train.steps=8", "train.zero_stage=2"])
    whole = train(cfg, shards=shards, output=str(tmp_path / "whole"), progress=False)
    first = train(cfg, shards=shards, output=str(tmp_path / "cut"), progress=False, stop_after=4)
    assert [r["step"] for r in first] == [1, 2, 3, 4]
    rest = train(cfg, shards=shards, output=str(tmp_path / "cut"), progress=False)
    assert [r["step"] for r in rest] == [5, 6, 7, 8]
    assert _losses(first + rest) == _losses(whole)  # fp32 on CPU: identical


def test_named_configs_and_overrides():
    cfg = load_named("small-gpu", ["train.lr=1e-4", "model.layers=2"])
    assert cfg.train.precision == "bf16" and cfg.train.lr == 1e-4 and cfg.model.layers == 2
    with pytest.raises(ValueError, match="unknown config"):
        load_named("huge")
    with pytest.raises(ValueError, match="unknown key"):
        load_named("tiny-cpu", ["train.lr_typo=1"])
    with pytest.raises(ValueError, match="look like"):
        load_named("tiny-cpu", ["lr=1"])
    with pytest.raises(ValueError, match="zero_stage"):
        load_named("tiny-cpu", ["train.zero_stage=3"])


def test_zero_stage_0_with_gradient_accumulation(shards, tmp_path):
    cfg = load_named("tiny-cpu", ["train.steps=3", "train.zero_stage=0", "train.grad_accum=2"])
    records = train(cfg, shards=shards, output=str(tmp_path / "run"), progress=False)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert records[0]["tokens"] > 0
