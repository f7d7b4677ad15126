"""Plain PyTorch MoE feed-forward (the ground truth for the Triton kernels) and the input
contract every MoE kernel entry point checks.

Shape legend:
- T: tokens in the batch (decode: one new token per sequence, so T is small, 1..64)
- K: experts chosen per token (top-k)
- E: experts in the layer
- D: model dimension
- F: hidden dimension of one expert

Each expert is a SwiGLU MLP: ``y = W_down @ (silu(W_gate @ x) * (W_up @ x))``, and a token's
output is the routing-weighted sum over its K chosen experts. Weights are stored the way
``torch.nn.Linear`` stores them (out_features, in_features): gate/up are (E, F, D), down is (E, D, F).
"""

from __future__ import annotations

import torch

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ID_DTYPES = (torch.int32, torch.int64)


def check_moe_inputs(
    x_TD: torch.Tensor,
    topk_ids_TK: torch.Tensor,
    topk_weights_TK: torch.Tensor,
    w_gate_EFD: torch.Tensor,
    w_up_EFD: torch.Tensor,
    w_down_EDF: torch.Tensor,
) -> None:
    """Raise ``TypeError``/``ValueError`` unless the arguments form a valid MoE call.

    Checks tensor types, dtypes (activations and expert weights share one of fp32/bf16/fp16; ids
    are int32/int64; routing weights are floating), shapes, one common device, contiguous expert
    weights, and that every id lies in 0..E-1. The id check reads the ids on the host (one
    device-to-host copy of T*K integers).
    """
    named = {
        "x_TD": x_TD,
        "topk_ids_TK": topk_ids_TK,
        "topk_weights_TK": topk_weights_TK,
        "w_gate_EFD": w_gate_EFD,
        "w_up_EFD": w_up_EFD,
        "w_down_EDF": w_down_EDF,
    }
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if x_TD.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x_TD dtype {x_TD.dtype} is not supported; use one of {SUPPORTED_DTYPES}")
    for name in ("w_gate_EFD", "w_up_EFD", "w_down_EDF"):
        if named[name].dtype != x_TD.dtype:
            raise TypeError(f"{name} dtype {named[name].dtype} differs from x_TD dtype {x_TD.dtype}; cast one of them")
    if topk_ids_TK.dtype not in _ID_DTYPES:
        raise TypeError(f"topk_ids_TK dtype {topk_ids_TK.dtype} must be int32 or int64")
    if not topk_weights_TK.is_floating_point():
        raise TypeError(f"topk_weights_TK dtype {topk_weights_TK.dtype} must be floating point")

    devices = {value.device for value in named.values()}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(str(d) for d in devices)}")

    if x_TD.dim() != 2:
        raise ValueError(f"x_TD must be 2-D (T, D), got shape {tuple(x_TD.shape)}")
    if w_gate_EFD.dim() != 3:
        raise ValueError(f"w_gate_EFD must be 3-D (E, F, D), got shape {tuple(w_gate_EFD.shape)}")
    num_experts, hidden, model_dim = w_gate_EFD.shape
    if w_up_EFD.shape != w_gate_EFD.shape:
        raise ValueError(f"w_up_EFD shape {tuple(w_up_EFD.shape)} must equal w_gate_EFD shape {tuple(w_gate_EFD.shape)}")
    if tuple(w_down_EDF.shape) != (num_experts, model_dim, hidden):
        raise ValueError(
            f"w_down_EDF shape {tuple(w_down_EDF.shape)} must be (E, D, F) = {(num_experts, model_dim, hidden)}"
        )
    if num_experts == 0 or hidden == 0 or model_dim == 0:
        raise ValueError(f"expert weights must be non-empty, got (E, F, D) = {(num_experts, hidden, model_dim)}")
    if x_TD.shape[1] != model_dim:
        raise ValueError(f"x_TD has D = {x_TD.shape[1]} but the expert weights have D = {model_dim}")
    if topk_ids_TK.dim() != 2 or topk_ids_TK.shape[0] != x_TD.shape[0]:
        raise ValueError(f"topk_ids_TK must be (T, K) with T = {x_TD.shape[0]}, got shape {tuple(topk_ids_TK.shape)}")
    if topk_ids_TK.shape[1] == 0:
        raise ValueError("topk_ids_TK must choose at least one expert per token (K >= 1)")
    if topk_weights_TK.shape != topk_ids_TK.shape:
        raise ValueError(
            f"topk_weights_TK shape {tuple(topk_weights_TK.shape)} must equal topk_ids_TK shape {tuple(topk_ids_TK.shape)}"
        )
    for name in ("w_gate_EFD", "w_up_EFD", "w_down_EDF"):
        if not named[name].is_contiguous():
            raise ValueError(f"{name} must be contiguous; call .contiguous() once when loading the weights")
    if topk_ids_TK.numel() > 0:
        lowest, highest = int(topk_ids_TK.min()), int(topk_ids_TK.max())
        if lowest < 0 or highest >= num_experts:
            raise ValueError(f"topk_ids_TK must lie in 0..{num_experts - 1}, got values in {lowest}..{highest}")


def check_kernel_device(x_TD: torch.Tensor, name: str) -> None:
    """Triton kernels run on CUDA tensors, or on CPU tensors under the interpreter only."""
    import triton

    if not x_TD.is_cuda and not triton.knobs.runtime.interpret:
        raise ValueError(f"{name} needs CUDA tensors (got {x_TD.device}); set TRITON_INTERPRET=1 to run on CPU")


def moe_reference(
    x_TD: torch.Tensor,
    topk_ids_TK: torch.Tensor,
    topk_weights_TK: torch.Tensor,
    w_gate_EFD: torch.Tensor,
    w_up_EFD: torch.Tensor,
    w_down_EDF: torch.Tensor,
) -> torch.Tensor:
    """Routed SwiGLU MoE in plain PyTorch, looping over experts with fp32 accumulation.

    ``y[t] = sum_j topk_weights[t, j] * W_down[e] @ (silu(W_gate[e] @ x[t]) * (W_up[e] @ x[t]))``
    with ``e = topk_ids[t, j]``. Returns (T, D) in the dtype of ``x_TD``.
    """
    check_moe_inputs(x_TD, topk_ids_TK, topk_weights_TK, w_gate_EFD, w_up_EFD, w_down_EDF)
    x32_TD = x_TD.float()
    y32_TD = torch.zeros(x_TD.shape, dtype=torch.float32, device=x_TD.device)
    for expert in range(w_gate_EFD.shape[0]):
        token_N, slot_N = torch.nonzero(topk_ids_TK == expert, as_tuple=True)
        if token_N.numel() == 0:
            continue
        xe_ND = x32_TD[token_N]
        gate_NF = xe_ND @ w_gate_EFD[expert].float().T
        up_NF = xe_ND @ w_up_EFD[expert].float().T
        h_NF = torch.nn.functional.silu(gate_NF) * up_NF
        out_ND = h_NF @ w_down_EDF[expert].float().T
        weight_N1 = topk_weights_TK[token_N, slot_N].float().unsqueeze(1)
        y32_TD.index_add_(0, token_N, weight_N1 * out_ND)
    return y32_TD.to(x_TD.dtype)
