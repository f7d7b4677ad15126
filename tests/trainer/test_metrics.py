"""Training metrics: means over micro-batches and processes, sums of tokens, token-weighted
routing statistics per modality, a nan on any process stops every process, and a step that is
not logged never copies a tensor to the host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from microturn.trainer.metrics import TrainMetrics

sys.path.insert(0, os.path.dirname(__file__))
from metrics_worker import micro_output  # noqa: E402  (beside this file, not a package)

WORKER = os.path.join(os.path.dirname(__file__), "metrics_worker.py")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_log_the_mean_of_their_micro_batches_and_the_sum_of_their_tokens(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(_port()), WORKER, str(tmp_path / "out.json")], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    rec = out["record"]
    assert out["world"] == 2
    # Losses 1, 2 (rank 0) and 11, 12 (rank 1): every micro-batch weighs the same.
    assert rec["loss"] == pytest.approx(26 / 4) and rec["loss/text"] == pytest.approx(52 / 4)
    assert rec["tokens"] == 100 + 101 + 200 + 201
    assert rec["moe/1/load"] == pytest.approx([0.25, 0.75]) and rec["moe/1/drop_fraction"] == pytest.approx(0.05)
    assert rec["moe/1/capacity"] == pytest.approx(8)
    # Text: 10 tokens with entropy 0.5 twice (rank 0), 11 with 1.5 twice (rank 1).
    assert rec["moe/1/text/tokens"] == 42
    assert rec["moe/1/text/router_entropy"] == pytest.approx((20 * 0.5 + 22 * 1.5) / 42)
    # Video: only rank 1's second micro-batch saw it; its figures are that micro-batch's own.
    assert rec["moe/1/video/tokens"] == 30 and rec["moe/1/video/load"] == pytest.approx([1.0, 0.0])
    assert rec["moe/1/video/drop_fraction"] == pytest.approx(0.5)
    assert not any(k.startswith(("moe/1/audio/", "moe/1/marker/")) for k in rec)  # no process saw them
    assert rec["loader/samples"] == 3 + 4
    assert rec["tokens_per_s"] > 0 and rec["step_s"] > 0
    assert out["error"] == "the loss is not finite (nan or inf) at step 2; lower train.lr or check the data"


def test_steps_that_are_not_logged_never_copy_a_tensor_to_the_host(monkeypatch):
    metrics = TrainMetrics("cpu")

    def host_copy(*args, **kwargs):
        raise AssertionError("a tensor was copied to the host")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy"):
            m.setattr(torch.Tensor, name, host_copy)
        for step in (1, 2):
            for micro in range(2):
                # Log steps only sum on the device too; the copy waits for record().
                metrics.add(micro_output(0, micro), step=step, detail=step == 2)
            metrics.end_step()
    rec = metrics.record(2, lr=0.1, loader_stats={}, flops_per_token=0.0, peak_tflops=0.0)
    assert rec["loss"] == pytest.approx(1.5) and rec["tokens"] == 201
    assert rec["step_s"] > 0 and rec["tokens_per_s"] > 0  # over both steps of the window


def test_a_nan_loss_is_reported_with_the_first_step_it_appeared():
    metrics = TrainMetrics("cpu")
    for step, loss in ((1, 1.0), (2, float("inf")), (3, float("nan"))):
        metrics.add(micro_output(0, 0, loss=loss), step=step, detail=False)
        metrics.end_step()
    with pytest.raises(FloatingPointError, match="at step 2;"):
        metrics.check_finite()
