"""Random MoE inputs shared by the kernel tests (numpy generator, fp32 tensors)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import torch

NUM_EXPERTS = 4


def make_case(num_tokens: int, model_dim: int, hidden: int, top_k: int, seed: int, ids_UJ=None):
    """``(x_UD, topk_ids_UJ, topk_weights_UJ, w_gate_EID, w_up_EID, w_down_EDI)`` with distinct
    random experts per token and weights summing to 1; ``ids_UJ`` (numpy) overrides the routing."""
    rng = np.random.default_rng(seed)
    x_UD = rng.standard_normal((num_tokens, model_dim))
    w_gate_EID = rng.standard_normal((NUM_EXPERTS, hidden, model_dim)) / np.sqrt(model_dim)
    w_up_EID = rng.standard_normal((NUM_EXPERTS, hidden, model_dim)) / np.sqrt(model_dim)
    w_down_EDI = rng.standard_normal((NUM_EXPERTS, model_dim, hidden)) / np.sqrt(hidden)
    if ids_UJ is None:
        ids_UJ = np.argsort(rng.random((num_tokens, NUM_EXPERTS)), axis=1)[:, :top_k]
    weights_UJ = rng.random((num_tokens, ids_UJ.shape[1])) + 0.1
    weights_UJ /= weights_UJ.sum(axis=1, keepdims=True)

    def f32(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return (f32(x_UD), torch.from_numpy(np.ascontiguousarray(ids_UJ, dtype=np.int64)), f32(weights_UJ),
            f32(w_gate_EID), f32(w_up_EID), f32(w_down_EDI))


def rel_error(y_UD: torch.Tensor, ref_UD: torch.Tensor) -> float:
    return float((y_UD - ref_UD).norm() / ref_UD.norm())


def replace(case, index, value):
    """``case`` with item ``index`` replaced."""
    return tuple(value if i == index else item for i, item in enumerate(case))


def bad_inputs():
    """(label, args, expected exception) for calls with invalid metadata (types, dtypes, shapes,
    contiguity); each fails before any kernel runs, with or without ``validate``. Ids out of range
    are in ``bad_ids``."""
    case = make_case(3, 37, 53, 2, seed=6)
    x_UD, ids_UJ, weights_UJ, w_gate_EID, w_up_EID, w_down_EDI = case
    return [
        ("x not 2-D", replace(case, 0, x_UD[0]), ValueError),
        ("x wrong D", replace(case, 0, x_UD[:, :36]), ValueError),
        ("w_up shape", replace(case, 4, w_up_EID[:, :50]), ValueError),
        ("w_down shape", replace(case, 5, w_down_EDI.transpose(1, 2).contiguous()), ValueError),
        ("w_gate not 3-D", replace(case, 3, w_gate_EID[0]), ValueError),
        ("ids wrong U", replace(case, 1, ids_UJ[:2]), ValueError),
        ("weights vs ids", replace(case, 2, weights_UJ[:, :1]), ValueError),
        ("zero top-k", replace(replace(case, 1, ids_UJ[:, :0]), 2, weights_UJ[:, :0]), ValueError),
        ("non-contiguous w_gate", replace(case, 3, w_gate_EID.transpose(1, 2).contiguous().transpose(1, 2)),
         ValueError),
        ("non-contiguous w_down", replace(case, 5, w_down_EDI.transpose(1, 2).contiguous().mT), ValueError),
        ("float64", tuple(t.double() if t.is_floating_point() else t for t in case), TypeError),
        ("weights dtype", replace(case, 5, w_down_EDI.half()), TypeError),
        ("float ids", replace(case, 1, ids_UJ.float()), TypeError),
        ("integer routing weights", replace(case, 2, ids_UJ.clone()), TypeError),
        ("not a tensor", replace(case, 0, x_UD.numpy()), TypeError),
    ]


def bad_ids():
    """(label, args, (lowest, highest) id) for calls whose only fault is an expert id outside
    0..E-1 (E = NUM_EXPERTS): a ValueError with ``validate=True``, the device-side assert without."""
    case = make_case(3, 37, 53, 2, seed=6)
    ids_UJ = case[1]
    one_bad_UJ = ids_UJ.clone()
    one_bad_UJ[1, 1] = NUM_EXPERTS + 3
    cases = [
        ("id too large", torch.full_like(ids_UJ, NUM_EXPERTS)),
        ("id negative", torch.full_like(ids_UJ, -1)),
        ("one id of six", one_bad_UJ),
        ("int32, shifted down", (ids_UJ - 2).to(torch.int32)),
    ]
    return [(label, replace(case, 1, bad_UJ), (int(bad_UJ.numpy().min()), int(bad_UJ.numpy().max())))
            for label, bad_UJ in cases]


BENCH = Path(__file__).resolve().parents[2] / "bench"


def compiled_env() -> dict[str, str]:
    """This process's environment without TRITON_INTERPRET, for a subprocess that compiles the
    kernels (tests/conftest.py turns the interpreter on for the test process itself)."""
    return {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}


def compile_report_module():
    """``bench/compile_report.py`` (a development tool outside the package), imported by path."""
    spec = importlib.util.spec_from_file_location("compile_report", BENCH / "compile_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module
