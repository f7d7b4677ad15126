"""The DeepSpeed training loop on CPU: the loss falls, a killed run resumes to the same losses
without reading its data again, the logged loss is the mean over micro-batches, metrics and
plots are written, configs and overrides are checked."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest
import torch

from microturn.trainer.data import make_loader
from microturn.trainer.evaluate import evaluate
from microturn.trainer.loop import flow_seed, train
from microturn.trainer.model import InteractionModel
from microturn.trainer.plot import plot_run
from microturn.trainer.tokenizer import get_tokenizer
from microturn.trainer.train_config import load_named
from trainer_shards import train_shards

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def shards():
    return list(train_shards())


def _losses(records):
    return [r["loss"] for r in records]


def test_tiny_cpu_loss_falls_by_a_third(shards, tmp_path):
    cfg = load_named("tiny-cpu", ["train.log_every=1"])
    records = train(cfg, shards=shards, output=str(tmp_path / "run"), progress=False).records
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


def test_a_killed_run_resumes_to_the_same_losses_decoding_only_what_it_trains_on(shards, tmp_path, caplog):
    cfg = load_named("tiny-cpu", ["train.steps=8", "train.zero_stage=2", "train.log_every=1"])
    per_step = cfg.train.micro_batch * cfg.train.grad_accum  # samples a step takes from the loader
    whole = train(cfg, shards=shards, output=str(tmp_path / "whole"), progress=False).records
    first = train(cfg, shards=shards, output=str(tmp_path / "cut"), progress=False, stop_after=4).records
    assert [r["step"] for r in first] == [1, 2, 3, 4]
    saved = json.loads((tmp_path / "cut" / "checkpoints" / "step4" / "loader-rank0.json").read_text())
    refs = saved["stream"]["buffer"]["samples"]  # (shard, byte) of each buffered sample
    assert 0 < len(refs) <= cfg.train.shuffle_buffer
    buffered = len({tuple(ref) for ref in refs})  # resampling can buffer one sample twice: read once
    rest = train(cfg, shards=shards, output=str(tmp_path / "cut"), progress=False)
    assert rest.start == 4 and rest.step == 8
    assert [r["step"] for r in rest.records] == [5, 6, 7, 8]
    assert _losses(first + rest.records) == _losses(whole)  # fp32 on CPU: identical
    # No replay: the resumed process decodes exactly the samples of the steps it trains (the
    # shards hold no bad sample), and reads from the tars those plus the distinct samples of
    # the shuffle buffer it refills from the saved references.
    for n, rec in enumerate(rest.records, start=1):
        assert rec["loader/decoded"] == n * per_step
        assert rec["loader/reread"] == buffered
        assert rec["loader/read"] == buffered + n * per_step
    # The loader's counts (samples, losses) carry on from the checkpoint.
    assert rest.records[-1]["loader/samples"] == whole[-1]["loader/samples"]

    # A checkpoint without loader state (as written before loaders kept one) still resumes
    # exactly, by reading the earlier batches again, and says so.
    os.remove(tmp_path / "cut" / "checkpoints" / "step4" / "loader-rank0.json")
    (tmp_path / "cut" / "checkpoints" / "latest").write_text("step4")
    with caplog.at_level(logging.WARNING, logger="microturn.trainer.loop"):
        again = train(cfg, shards=shards, output=str(tmp_path / "cut"), progress=False, stop_after=1).records
    assert "holds no loader state" in caplog.text and "reading the 4 batch(es) of steps 1-4 again" in caplog.text
    assert _losses(again) == _losses(whole[4:5])
    assert again[0]["loader/decoded"] == 5 * per_step

    # Another shuffle buffer: the saved place in the data does not apply, so the run goes on
    # from its weights on a stream of its own, and says so.
    caplog.clear()
    other = load_named("tiny-cpu", ["train.steps=8", "train.zero_stage=2", "train.log_every=1",
                                    "train.shuffle_buffer=16"])
    with caplog.at_level(logging.WARNING, logger="microturn.trainer.loop"):
        moved = train(other, shards=shards, output=str(tmp_path / "cut"), progress=False, stop_after=1).records
    assert "saved with other settings (buffer: 64 -> 16)" in caplog.text and "starts a new stream" in caplog.text
    assert [r["step"] for r in moved] == [6] and math.isfinite(moved[0]["loss"])
    assert moved[0]["loader/decoded"] == per_step


def test_the_logged_loss_is_the_mean_over_micro_batches_and_only_log_steps_are_logged(shards, tmp_path):
    # No token dropped at the expert capacity, so routing does not depend on DeepSpeed's random
    # tie-breaking and a plain forward pass repeats the engine's.
    cfg = load_named("tiny-cpu", ["train.steps=5", "train.grad_accum=3", "train.log_every=2",
                                  "model.capacity_factor=16.0"])
    t = cfg.train
    result = train(cfg, shards=shards, output=str(tmp_path / "run"), progress=False)
    assert [r["step"] for r in result.records] == [1, 2, 4, 5]  # step 1, every 2nd, the last
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert rows == json.loads(json.dumps(result.records))
    # Step 1's micro-batches all see the initial weights: compute their losses apart.
    loader = make_loader(shards, tokenizer=get_tokenizer(t.tokenizer), batch_size=t.micro_batch, max_len=t.max_len,
                         pack=t.pack, buffer=t.shuffle_buffer, resampled=True, seed=t.seed)
    model = InteractionModel(cfg.model, ep_size=1, seed=t.seed).train()
    batches = iter(loader)
    outs, tokens = [], 0
    with torch.no_grad():
        for micro in range(t.grad_accum):
            batch = next(batches)
            tokens += int((batch["segment_BL"] > 0).sum())
            outs.append(model(batch, generator=torch.Generator().manual_seed(flow_seed(t.seed, 0, micro, 0))))
    first = result.records[0]
    assert len({round(float(o.loss), 6) for o in outs}) == t.grad_accum  # three different losses
    assert first["loss"] == pytest.approx(sum(float(o.loss) for o in outs) / t.grad_accum, rel=1e-6)
    for head in ("text", "dmel", "flow", "aux", "z"):
        assert first[f"loss/{head}"] == pytest.approx(sum(float(o.losses[head]) for o in outs) / t.grad_accum,
                                                      rel=1e-5, abs=1e-9)
    assert first["tokens"] == tokens
    assert first["loader/decoded"] == t.micro_batch * t.grad_accum


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
    cfg = load_named("tiny-cpu", ["train.steps=3", "train.zero_stage=0", "train.grad_accum=2", "train.log_every=1"])
    records = train(cfg, shards=shards, output=str(tmp_path / "run"), progress=False).records
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert records[0]["tokens"] > 0
