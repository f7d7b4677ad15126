"""Plain PyTorch MoE feed-forward (the ground truth for the Triton kernels) and the input
contract every MoE kernel entry point checks.

Shape suffixes follow :mod:`microturn.schemas.legend`: U tokens (decode: one new token per
sequence, so U is small, 1..64), J experts chosen per token, E experts, D model width, I expert
hidden width, R routes (here: the routes of one expert).

Each expert is a SwiGLU MLP: ``y = W_down @ (silu(W_gate @ x) * (W_up @ x))``, and a token's
output is the routing-weighted sum over its J chosen experts. Weights are stored the way
``torch.nn.Linear`` stores them (out_features, in_features): gate/up are (E, I, D), down is (E, D, I).
"""

from __future__ import annotations

import torch

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ID_DTYPES = (torch.int32, torch.int64)


def check_moe_inputs(
    x_UD: torch.Tensor,
    topk_ids_UJ: torch.Tensor,
    topk_weights_UJ: torch.Tensor,
    w_gate_EID: torch.Tensor,
    w_up_EID: torch.Tensor,
    w_down_EDI: torch.Tensor,
    *,
    validate: bool = False,
) -> None:
    """Raise ``TypeError``/``ValueError`` unless the arguments form a valid MoE call.

    Always checks, from tensor metadata only (no tensor value is read, so nothing waits for the
    device): tensor types, dtypes (activations and expert weights share one of fp32/bf16/fp16;
    ids are int32/int64; routing weights are floating), shapes, one common device and contiguous
    expert weights.

    Whether every id lies in 0..E-1 is a question about values, checked one of two ways:

    - ``validate=True``: the ids are read on the host and an id out of range is a ``ValueError``
      naming the range found. That read is a device-to-host copy and a synchronisation: on CUDA
      the host waits for everything queued before it, once per call (per MoE layer per decode
      step), and a CUDA graph cannot capture it. Ask for it when the ids come from outside a
      router (user input, a file, a test).
    - ``validate=False`` (the default): a device-side assert (``torch._assert_async``) on
      ``all(0 <= ids < E)``, queued like any kernel (five small launches over the U*J ids), with
      no host read, so a CUDA graph can capture it. On CPU it raises a
      ``RuntimeError`` at once. On CUDA it fires asynchronously: the error surfaces at a later
      synchronisation as a generic "device-side assert triggered", the kernel may already have
      read out of bounds, and the CUDA context is poisoned for the rest of the process (every
      later CUDA call fails). Top-k over a router's E logits cannot produce such an id, which is
      why the router-fed decode path can take this default.
    """
    if not isinstance(validate, bool):
        raise TypeError(f"validate must be a bool, got {type(validate).__name__}")
    named = {
        "x_UD": x_UD,
        "topk_ids_UJ": topk_ids_UJ,
        "topk_weights_UJ": topk_weights_UJ,
        "w_gate_EID": w_gate_EID,
        "w_up_EID": w_up_EID,
        "w_down_EDI": w_down_EDI,
    }
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if x_UD.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x_UD dtype {x_UD.dtype} is not supported; use one of {SUPPORTED_DTYPES}")
    for name in ("w_gate_EID", "w_up_EID", "w_down_EDI"):
        if named[name].dtype != x_UD.dtype:
            raise TypeError(f"{name} dtype {named[name].dtype} differs from x_UD dtype {x_UD.dtype}; cast one of them")
    if topk_ids_UJ.dtype not in _ID_DTYPES:
        raise TypeError(f"topk_ids_UJ dtype {topk_ids_UJ.dtype} must be int32 or int64")
    if not topk_weights_UJ.is_floating_point():
        raise TypeError(f"topk_weights_UJ dtype {topk_weights_UJ.dtype} must be floating point")

    devices = {value.device for value in named.values()}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(str(d) for d in devices)}")

    if x_UD.dim() != 2:
        raise ValueError(f"x_UD must be 2-D (U, D), got shape {tuple(x_UD.shape)}")
    if w_gate_EID.dim() != 3:
        raise ValueError(f"w_gate_EID must be 3-D (E, I, D), got shape {tuple(w_gate_EID.shape)}")
    num_experts, hidden, model_dim = w_gate_EID.shape
    if w_up_EID.shape != w_gate_EID.shape:
        raise ValueError(
            f"w_up_EID shape {tuple(w_up_EID.shape)} must equal w_gate_EID shape {tuple(w_gate_EID.shape)}"
        )
    if tuple(w_down_EDI.shape) != (num_experts, model_dim, hidden):
        raise ValueError(
            f"w_down_EDI shape {tuple(w_down_EDI.shape)} must be (E, D, I) = {(num_experts, model_dim, hidden)}"
        )
    if num_experts == 0 or hidden == 0 or model_dim == 0:
        raise ValueError(f"expert weights must be non-empty, got (E, I, D) = {(num_experts, hidden, model_dim)}")
    if x_UD.shape[1] != model_dim:
        raise ValueError(f"x_UD has D = {x_UD.shape[1]} but the expert weights have D = {model_dim}")
    if topk_ids_UJ.dim() != 2 or topk_ids_UJ.shape[0] != x_UD.shape[0]:
        raise ValueError(f"topk_ids_UJ must be (U, J) with U = {x_UD.shape[0]}, got shape {tuple(topk_ids_UJ.shape)}")
    if topk_ids_UJ.shape[1] == 0:
        raise ValueError("topk_ids_UJ must choose at least one expert per token (J >= 1)")
    if topk_weights_UJ.shape != topk_ids_UJ.shape:
        raise ValueError(
            f"topk_weights_UJ shape {tuple(topk_weights_UJ.shape)} must equal "
            f"topk_ids_UJ shape {tuple(topk_ids_UJ.shape)}"
        )
    for name in ("w_gate_EID", "w_up_EID", "w_down_EDI"):
        if not named[name].is_contiguous():
            raise ValueError(f"{name} must be contiguous; call .contiguous() once when loading the weights")
    if validate:
        if topk_ids_UJ.numel() > 0:
            lowest, highest = int(topk_ids_UJ.min()), int(topk_ids_UJ.max())
            if lowest < 0 or highest >= num_experts:
                raise ValueError(f"topk_ids_UJ must lie in 0..{num_experts - 1}, got values in {lowest}..{highest}")
    else:
        # all() of an empty batch is True, so U = 0 passes without a special case.
        in_range = ((topk_ids_UJ >= 0) & (topk_ids_UJ < num_experts)).all()
        # torch exports no public device-side assert; _assert_async is the op torch.compile emits
        # for its own runtime asserts, there since torch 1.11.
        torch._assert_async(  # pyright: ignore[reportPrivateImportUsage]
            in_range, f"topk_ids_UJ holds an expert id outside 0..{num_experts - 1}; validate=True names the values"
        )


def moe_reference(
    x_UD: torch.Tensor,
    topk_ids_UJ: torch.Tensor,
    topk_weights_UJ: torch.Tensor,
    w_gate_EID: torch.Tensor,
    w_up_EID: torch.Tensor,
    w_down_EDI: torch.Tensor,
    *,
    validate: bool = False,
) -> torch.Tensor:
    """Routed SwiGLU MoE in plain PyTorch, looping over experts with fp32 accumulation.

    ``y[t] = sum_j topk_weights[t, j] * W_down[e] @ (silu(W_gate[e] @ x[t]) * (W_up[e] @ x[t]))``
    with ``e = topk_ids[t, j]``. Returns (U, D) in the dtype of ``x_UD``. Inputs are checked by
    ``check_moe_inputs`` with ``validate`` (see there). This is the ground truth, not a decode
    path: its per-expert ``nonzero`` sizes a tensor from values, a host synchronisation per expert.
    """
    check_moe_inputs(x_UD, topk_ids_UJ, topk_weights_UJ, w_gate_EID, w_up_EID, w_down_EDI, validate=validate)
    x32_UD = x_UD.float()
    y32_UD = torch.zeros(x_UD.shape, dtype=torch.float32, device=x_UD.device)
    for expert in range(w_gate_EID.shape[0]):
        token_R, slot_R = torch.nonzero(topk_ids_UJ == expert, as_tuple=True)
        if token_R.numel() == 0:
            continue
        xe_RD = x32_UD[token_R]
        gate_RI = xe_RD @ w_gate_EID[expert].float().T
        up_RI = xe_RD @ w_up_EID[expert].float().T
        h_RI = torch.nn.functional.silu(gate_RI) * up_RI
        out_RD = h_RI @ w_down_EDI[expert].float().T
        weight_R1 = topk_weights_UJ[token_R, slot_R].float().unsqueeze(1)
        y32_UD.index_add_(0, token_R, weight_R1 * out_RD)
    return y32_UD.to(x_UD.dtype)
