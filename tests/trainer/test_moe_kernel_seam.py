"""The decode seam of the trainer's MoE layer: in eval mode the layer can run through the Triton
kernels (here under the interpreter, fp32), chosen per call, and gives the outputs of DeepSpeed's
path on the same weights; training mode refuses any kernel but DeepSpeed's."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before anything imports microturn.kernels' jitted functions

import pytest  # noqa: E402
import torch  # noqa: E402

from microturn.trainer.config import ModelConfig  # noqa: E402
from microturn.trainer.model import init_parameters  # noqa: E402
from microturn.trainer.transformer import MoEFeedForward  # noqa: E402

# Eval capacity high enough that DeepSpeed drops no token: the kernel never drops, so the two
# paths only agree where DeepSpeed keeps every route.
CFG = dict(dim=32, layers=2, heads=4, kv_heads=2, head_dim=8, ffn_dim=48, n_experts=4, moe_every=1,
           vocab_size=40, flow_hidden=32, flow_depth=1, min_capacity=1, eval_capacity_factor=16.0)


def _layer(top_k: int) -> MoEFeedForward:
    cfg = ModelConfig(**{**CFG, "top_k": top_k})
    moe = MoEFeedForward(cfg, layer=1)
    init_parameters(moe, cfg=cfg, seed=0)
    return moe.eval()


@pytest.mark.parametrize("kernel", ["gemv", "grouped", "auto"])
@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_kernel_path_matches_deepspeed_in_eval(top_k, kernel):
    moe = _layer(top_k)
    x_BLD = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(top_k))
    real_BL = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        ref = moe(x_BLD, real_BL).y_BLD
        out = moe(x_BLD, real_BL, kernel=kernel)
        quiet = moe(x_BLD, real_BL, stats=False)  # DeepSpeed's path without the statistics
    assert out.stats["kernel"] == kernel
    torch.testing.assert_close(out.y_BLD, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(quiet.y_BLD, ref, rtol=0, atol=0)


def test_training_mode_refuses_kernels_and_bad_names_are_refused():
    moe = _layer(2)
    moe.train()
    x_BLD, real_BL = torch.randn(1, 4, 32), torch.ones(1, 4, dtype=torch.bool)
    out = moe(x_BLD, real_BL)
    assert "kernel" not in out.stats and out.aux_loss.requires_grad
    with pytest.raises(ValueError, match="eval mode only"):
        moe(x_BLD, real_BL, kernel="gemv")
    with pytest.raises(ValueError, match="unknown MoE kernel"):
        moe.eval()(x_BLD, real_BL, kernel="cutlass")


def test_dropless_layer_keeps_every_route_where_capacity_drops():
    """Eval capacity 1 x the even share: DeepSpeed's layer drops routes when all tokens pick one
    expert; built dropless it keeps them all and equals the kernels, which never drop."""
    cfg = ModelConfig(**{**CFG, "eval_capacity_factor": 1.0, "min_capacity": 1})
    x_BLD = torch.randn(1, 1, 32).expand(1, 8, 32).contiguous()  # 8 identical tokens: one expert pair
    real_BL = torch.ones(1, 8, dtype=torch.bool)
    outs = {}
    for dropless in (False, True):
        moe = MoEFeedForward(cfg, layer=1, dropless=dropless)
        init_parameters(moe, cfg=cfg, seed=0)
        with torch.no_grad():
            outs[dropless] = moe.eval()(x_BLD, real_BL).y_BLD
            kernel = moe(x_BLD, real_BL, kernel="gemv").y_BLD
    assert not torch.allclose(outs[False], kernel, atol=1e-4)  # routes were dropped
    torch.testing.assert_close(outs[True], kernel, rtol=1e-5, atol=1e-6)


def test_stacked_expert_weights_follow_weight_updates():
    moe = _layer(2)
    x_BLD = torch.randn(1, 3, 32, generator=torch.Generator().manual_seed(7))
    real_BL = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        first = moe(x_BLD, real_BL, kernel="gemv").y_BLD
        assert moe.expert_weights()[0] is moe.expert_weights()[0]  # kept between calls
        for expert in moe.local_experts():
            expert.w2.weight.mul_(2.0)  # in place, as an optimizer step or load_state_dict
        second = moe(x_BLD, real_BL, kernel="gemv").y_BLD
    torch.testing.assert_close(second, 2.0 * first)
