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


def replace(case, index, value):
    """``case`` with item ``index`` replaced."""
    return tuple(value if i == index else item for i, item in enumerate(case))


def bad_inputs():
    """(label, args, expected exception) for invalid calls; each fails before any kernel runs."""
    case = make_case(3, 37, 53, 2, seed=6)
    x_TD, ids_TK, weights_TK, w_gate_EFD, w_up_EFD, w_down_EDF = case
    return [
        ("x not 2-D", replace(case, 0, x_TD[0]), ValueError),
        ("x wrong D", replace(case, 0, x_TD[:, :36]), ValueError),
        ("w_up shape", replace(case, 4, w_up_EFD[:, :50]), ValueError),
        ("w_down shape", replace(case, 5, w_down_EDF.transpose(1, 2).contiguous()), ValueError),
        ("w_gate not 3-D", replace(case, 3, w_gate_EFD[0]), ValueError),
        ("id too large", replace(case, 1, torch.full_like(ids_TK, NUM_EXPERTS)), ValueError),
        ("id negative", replace(case, 1, torch.full_like(ids_TK, -1)), ValueError),
        ("ids wrong T", replace(case, 1, ids_TK[:2]), ValueError),
        ("weights vs ids", replace(case, 2, weights_TK[:, :1]), ValueError),
        ("zero top-k", replace(replace(case, 1, ids_TK[:, :0]), 2, weights_TK[:, :0]), ValueError),
        ("non-contiguous w_gate", replace(case, 3, w_gate_EFD.transpose(1, 2).contiguous().transpose(1, 2)), ValueError),
        ("non-contiguous w_down", replace(case, 5, w_down_EDF.transpose(1, 2).contiguous().mT), ValueError),
        ("float64", tuple(t.double() if t.is_floating_point() else t for t in case), TypeError),
        ("weights dtype", replace(case, 5, w_down_EDF.half()), TypeError),
        ("float ids", replace(case, 1, ids_TK.float()), TypeError),
        ("integer routing weights", replace(case, 2, ids_TK.clone()), TypeError),
        ("not a tensor", replace(case, 0, x_TD.numpy()), TypeError),
    ]
