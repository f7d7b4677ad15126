"""Tests of the DeepSpeed MoE feed-forward (``microturn.trainer.transformer.MoEFeedForward``) on
CPU in fp32: gradients, the router z-loss against logits hooked independently, routing
statistics against a manual recount, and expert parallelism over two gloo processes.

Shape suffixes follow microturn.schemas.legend: B batch rows, L positions, D model width,
U = B L routed tokens, E experts, J experts chosen per token.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from microturn.trainer.config import ModelConfig
from microturn.trainer.model import init_parameters
from microturn.trainer.transformer import MoEFeedForward

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = dict(dim=32, layers=2, heads=4, kv_heads=2, head_dim=8, ffn_dim=64, n_experts=4, top_k=2,
           moe_every=1, vocab_size=40, flow_hidden=32, flow_depth=1, min_capacity=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def distributed():
    """A one-process gloo group, as the trainer has under DeepSpeed (the MoE layer itself runs
    without one when ep_size is 1). Left up for the rest of the session: DeepSpeed's comm layer
    keeps its own handle on it."""
    if not torch.distributed.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False,
                                   init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield


def layer(**over) -> MoEFeedForward:
    cfg = ModelConfig(**{**CFG, **over})
    moe = MoEFeedForward(cfg, layer=5)
    init_parameters(moe, cfg=cfg, seed=0)
    return moe


class GateTap:
    """An independent hook on the DeepSpeed gate: records what the gate was given."""

    def __init__(self, moe: MoEFeedForward) -> None:
        self.inputs: list[torch.Tensor] = []
        moe.gate.register_forward_hook(lambda mod, args, out: self.inputs.append(args[0].detach()))


def test_router_linear_hook_never_fires(distributed):
    """Why the z-loss hooks the gate: DeepSpeed's gate applies ``wg.weight`` through
    ``F.linear`` and never calls the ``wg`` module."""
    moe = layer()
    fired = []
    moe.gate.wg.register_forward_hook(lambda *a: fired.append(1))
    moe(torch.randn(2, 8, 32), torch.ones(2, 8, dtype=torch.bool))
    assert not fired


def test_forward_backward_reaches_experts_and_router(distributed):
    moe = layer()
    x_BLD = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = moe(x_BLD, torch.ones(2, 16, dtype=torch.bool))
    assert out.y_BLD.shape == x_BLD.shape and out.y_BLD.dtype == torch.float32
    assert out.aux_loss.requires_grad and out.z_loss.requires_grad
    (out.y_BLD.square().mean() + 0.01 * out.aux_loss + 0.001 * out.z_loss).backward()
    assert out.stats["load"].min() > 0  # every expert got tokens ...
    for e, expert in enumerate(moe.local_experts()):
        for name, p in expert.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (e, name)  # ... and gradients
    assert moe.gate.wg.weight.grad.abs().sum() > 0
    assert x_BLD.grad is not None
    assert x_BLD.grad.abs().sum() > 0
    # The output alone (no router losses) still trains the router through the gate values.
    moe.zero_grad()
    moe(x_BLD.detach(), torch.ones(2, 16, dtype=torch.bool)).y_BLD.sum().backward()
    assert moe.gate.wg.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("top_k, factor", [(2, 0.5), (2, 4.0), (1, 0.5), (3, 1.0)])
def test_z_loss_and_stats_match_a_manual_recount(distributed, top_k, factor):
    moe = layer(top_k=top_k, capacity_factor=factor)
    tap = GateTap(moe)
    x_BLD = torch.randn(3, 20, 32, generator=torch.Generator().manual_seed(1)) * 3
    real_BL = torch.ones(3, 20, dtype=torch.bool)
    real_BL[2, 12:] = False  # PAD tail: routed, but not in the z-loss or the entropy
    out = moe(x_BLD, real_BL)
    (tokens_UD,) = tap.inputs
    logits_UE = tokens_UD.float() @ moe.gate.wg.weight.float().T
    real_U = real_BL.reshape(-1)
    z = torch.logsumexp(logits_UE[real_U], dim=-1).square().mean()
    torch.testing.assert_close(out.z_loss, z, rtol=1e-5, atol=1e-6)
    p_UE = logits_UE[real_U].softmax(-1)
    entropy = -(p_UE * p_UE.log()).sum(-1).mean()
    torch.testing.assert_close(out.stats["router_entropy"], entropy, rtol=1e-5, atol=1e-6)
    # Routes: the top-k experts of every token (no second-expert sampling), capacity
    # max(ceil(U / E * factor * k), min_capacity) per expert.
    t, e = logits_UE.shape
    chosen_UJ = logits_UE.topk(top_k, dim=-1).indices
    counts_E = torch.bincount(chosen_UJ.reshape(-1), minlength=e)
    torch.testing.assert_close(out.stats["load"], counts_E.float() / (t * top_k))
    capacity = max(math.ceil(t / e * factor * top_k), 1)
    assert int(out.stats["capacity"]) == capacity
    kept = counts_E.clamp(max=capacity).sum().item()
    assert out.stats["drop_fraction"].item() == pytest.approx(1 - kept / (t * top_k), abs=1e-6)
    if factor < 1:
        assert out.stats["drop_fraction"].item() > 0
    assert out.stats["layer"] == 5
    assert out.stats["z_loss"].item() == pytest.approx(out.z_loss.item())
    assert not out.stats["load"].requires_grad


def test_eval_mode_uses_the_eval_capacity(distributed):
    moe = layer(capacity_factor=0.5, eval_capacity_factor=8.0)
    x_BLD = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(2))
    real_BL = torch.ones(2, 16, dtype=torch.bool)
    train = moe(x_BLD, real_BL).stats
    moe.eval()
    with torch.no_grad():
        first, again = moe(x_BLD, real_BL), moe(x_BLD, real_BL)
    # ceil(U / E * factor * k): 32 / 4 * 0.5 * 2 = 8 and 32 / 4 * 8 * 2 = 128 (not capped at U)
    assert int(train["capacity"]) == 8 and int(first.stats["capacity"]) == 128
    assert first.stats["drop_fraction"].item() == 0.0
    torch.testing.assert_close(first.y_BLD, again.y_BLD, rtol=0, atol=0)  # no sampling in eval


WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    import deepspeed
    from microturn.trainer.config import ModelConfig
    from microturn.trainer.model import InteractionModel, init_parameters
    from microturn.trainer.transformer import MoEFeedForward

    rank = int(os.environ["RANK"])
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
    cfg = ModelConfig(**json.loads(sys.argv[1]))
    whole = MoEFeedForward(cfg, ep_size=1)
    init_parameters(whole, cfg=cfg, seed=0, ep_rank=0)
    part = MoEFeedForward(cfg, ep_size=2)
    init_parameters(part, cfg=cfg, seed=0, ep_rank=rank)
    part.moe.set_deepspeed_parallelism()  # what deepspeed.initialize does for every MoE module
    all_experts = whole.moe.deepspeed_moe.experts.deepspeed_experts
    mine = part.moe.deepspeed_moe.experts.deepspeed_experts
    same_weights = all(torch.equal(a.w1.weight, all_experts[2 * rank + j].w1.weight)
                       for j, a in enumerate(mine))
    g = torch.Generator().manual_seed(10 + rank)  # each rank routes its own tokens
    x = torch.randn(2, 12, cfg.dim, generator=g, requires_grad=True)
    real = torch.ones(2, 12, dtype=torch.bool)
    ref = whole(x, real)
    out = part(x, real)
    out.y_BLD.square().sum().backward()
    grads = all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    model = InteractionModel(cfg, ep_size=2, seed=3)  # ep_rank from torch.distributed
    full = InteractionModel(cfg, seed=3)
    local = model.blocks[0].ffn.moe.deepspeed_moe.experts.deepspeed_experts
    every = full.blocks[0].ffn.moe.deepspeed_moe.experts.deepspeed_experts
    model_weights = all(torch.equal(a.w2.weight, every[2 * rank + j].w2.weight) for j, a in enumerate(local))
    result = {"diff": (out.y_BLD - ref.y_BLD).abs().max().item(), "same_weights": same_weights,
              "grads": grads, "model_weights": model_weights, "local": len(mine),
              "drop": out.stats["drop_fraction"].item(), "ref_drop": ref.stats["drop_fraction"].item()}
    with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
""")


def test_expert_parallel_over_two_gloo_processes(tmp_path):
    """ep_size 2 over two CPU processes gives the outputs of the unsharded layer, each rank
    holding its half of the globally named experts."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cfg = json.dumps({**CFG, "moe_every": 1, "layers": 1})
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), cfg, str(tmp_path)], env=env,
                                      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        logs.append(out.decode(errors="replace")[-3000:])
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["local"] == 2
        assert result["same_weights"] and result["model_weights"], result
        assert result["grads"], result
        assert result["diff"] < 1e-5, result
        assert result["drop"] == pytest.approx(result["ref_drop"])
