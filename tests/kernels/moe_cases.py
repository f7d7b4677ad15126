"""Random MoE inputs shared by the kernel tests (numpy generator, fp32 tensors)."""

from __future__ import annotations

import numpy as np
import torch

NUM_EXPERTS = 4


def make_case(num_tokens: int, model_dim: int, hidden: int, top_k: int, seed: int, ids_TK=None):
    """``(x_TD, topk_ids_TK, topk_weights_TK, w_gate_EFD, w_up_EFD, w_down_EDF)`` with distinct
    random experts per token and weights summing to 1; ``ids_TK`` (numpy) overrides the routing."""
    rng = np.random.default_rng(seed)
    x_TD = rng.standard_normal((num_tokens, model_dim))
    w_gate_EFD = rng.standard_normal((NUM_EXPERTS, hidden, model_dim)) / np.sqrt(model_dim)
    w_up_EFD = rng.standard_normal((NUM_EXPERTS, hidden, model_dim)) / np.sqrt(model_dim)
    w_down_EDF = rng.standard_normal((NUM_EXPERTS, model_dim, hidden)) / np.sqrt(hidden)
    if ids_TK is None:
        ids_TK = np.argsort(rng.random((num_tokens, NUM_EXPERTS)), axis=1)[:, :top_k]
    weights_TK = rng.random((num_tokens, ids_TK.shape[1])) + 0.1
    weights_TK /= weights_TK.sum(axis=1, keepdims=True)

    def f32(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return (f32(x_TD), torch.from_numpy(np.ascontiguousarray(ids_TK, dtype=np.int64)), f32(weights_TK),
            f32(w_gate_EFD), f32(w_up_EFD), f32(w_down_EDF))


def rel_error(y_TD: torch.Tensor, ref_TD: torch.Tensor) -> float:
    return float((y_TD - ref_TD).norm() / ref_TD.norm())
