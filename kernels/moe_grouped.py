"""Expert-grouped MoE feed-forward for larger batches: routes are sorted by expert on the host and
each Triton program applies one expert weight tile to a run of that expert's routed tokens.

Shape legend:
- T: tokens in the batch
- K: experts chosen per token (top-k)
- E: experts in the layer
- D: model dimension
- F: hidden dimension of one expert
- P: routes, one per (token, j) pair, P = T*K; route p = t*K + j
- S: routes in expert-sorted order (S = P); position s holds route ``pairs_S[s]``

Why a grouped variant next to ``moe_gemv``: gather-GEMV reads an expert's weights once per route,
so when T*K grows and several tokens share an expert the same weights cross HBM several times.
Here a program owns one (expert, F tile) or (expert, D tile) and multiplies that tile against
BLOCK_T of the expert's routes at once (a tensor-core ``tl.dot`` on GPU), so each weight tile is
read once per BLOCK_T routes of its expert instead of once per route. The price is a host-side
sort of the T*K route ids, one idle program per unused expert, and a separate per-route output
that is summed over j afterwards.

Determinism: the sort is stable, so within an expert the routes stay in (token, j) order; each
program reduces over D (gate/up) or F (down) in fixed-size tiles in a fixed order with fp32
accumulators; no atomics. Each route's weighted output is written to its own row of a (P, D)
buffer and the K rows of a token are summed in j order, so the same inputs give bitwise the same
output. Unlike ``moe_gemv`` this path does not promise batch invariance: a route's tile partners
depend on the other tokens in the batch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from microturn.kernels.reference import check_kernel_device, check_moe_inputs

# Fixed tile sizes, not yet tuned on hardware. BLOCK_T = 32 routes per tile: tl.dot needs every
# block dimension >= 16, and 32 halves the weight re-reads of 16 for experts with more routes while
# keeping the two (32, 64) fp32 gate/up accumulators at 16 registers per thread each for 4 warps.
# The 64-wide contiguous weight axis gives 128-byte bf16 row segments, one full memory transaction.
# D, F and K are compile-time constants for the same reasons as in moe_gemv: fixed per model, and
# the Triton 3.4 interpreter under numpy 2.4 cannot run ``range`` over runtime integer bounds.
# For the same reason the loop over an expert's routes, whose bounds are loaded from memory, is a
# ``while`` loop: the interpreter evaluates it with tensor comparisons, while ``range`` would need
# the loaded bound as a Python int and fails.
_BLOCK_T = 32
_GATE_UP_BLOCK_F = 64
_GATE_UP_BLOCK_D = 64
_DOWN_BLOCK_D = 64
_DOWN_BLOCK_F = 64


def launch_options(dtype: torch.dtype) -> dict[str, int]:
    """Warps and pipeline stages for both grouped kernels with operands of ``dtype``.

    Compiled for sm_90 (``kernels/compile_report.py``) with Triton's default 4 warps, ptxas gives
    both kernels 255 registers per thread and spills 270 to 330 bytes (bf16); with 8 warps each
    thread holds half the tiles: 182 to 188 registers and no spill. fp32 dots run without tensor
    cores ("ieee") and hold far more per thread: 16 warps and 2 stages give 128 registers and no
    spill at D = 512 and 2048 (8 warps still spill 24 bytes at D = 512).
    """
    if dtype == torch.float32:
        return {"num_warps": 16, "num_stages": 2}
    return {"num_warps": 8, "num_stages": 3}


@triton.jit
def _grouped_gate_up_kernel(
    x_ptr,
    pairs_ptr,
    offsets_ptr,
    w_gate_ptr,
    w_up_ptr,
    h_ptr,
    D: tl.constexpr,
    F: tl.constexpr,
    K: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """h[s, f_tile] = silu(x[t] W_gate[e]^T) * (x[t] W_up[e]^T) for the sorted routes s of expert e."""
    expert = tl.program_id(0).to(tl.int64)
    f_block = tl.program_id(1)
    route_end = tl.load(offsets_ptr + expert + 1).to(tl.int64)
    tile_start = tl.load(offsets_ptr + expert).to(tl.int64)

    offs_f = f_block * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_f = offs_f < F
    # The expert's base is a scalar int64 offset (E*F*D passes 2**31 in large layers, e.g.
    # 64 x 14336 x 4096); offsets inside one expert's matrix and the batch are int32 (the wrapper
    # checks they fit): int64 tiles of pointers cost twice the registers and made ptxas spill.
    w_gate_e = w_gate_ptr + expert * F * D
    w_up_e = w_up_ptr + expert * F * D

    while tile_start < route_end:
        offs_s = tile_start + tl.arange(0, BLOCK_T)
        mask_s = offs_s < route_end
        tokens = (tl.load(pairs_ptr + offs_s, mask=mask_s, other=0) // K).to(tl.int32)
        rows_s = offs_s.to(tl.int32)

        gate_acc = tl.zeros([BLOCK_T, BLOCK_F], dtype=tl.float32)
        up_acc = tl.zeros([BLOCK_T, BLOCK_F], dtype=tl.float32)
        for d_start in range(0, D, BLOCK_D):
            offs_d = d_start + tl.arange(0, BLOCK_D)
            mask_d = offs_d < D
            x = tl.load(x_ptr + tokens[:, None] * D + offs_d[None, :], mask=mask_s[:, None] & mask_d[None, :], other=0.0)
            # The weight tile is read transposed, (BLOCK_D, BLOCK_F), so that x @ tile is x W^T.
            tile_offs = offs_f[None, :] * D + offs_d[:, None]
            tile_mask = mask_d[:, None] & mask_f[None, :]
            w_gate = tl.load(w_gate_e + tile_offs, mask=tile_mask, other=0.0)
            gate_acc = tl.dot(x, w_gate, gate_acc, input_precision=DOT_PRECISION)
            w_up = tl.load(w_up_e + tile_offs, mask=tile_mask, other=0.0)
            up_acc = tl.dot(x, w_up, up_acc, input_precision=DOT_PRECISION)

        h = gate_acc / (1.0 + tl.exp(-gate_acc)) * up_acc
        tl.store(h_ptr + rows_s[:, None] * F + offs_f[None, :], h, mask=mask_s[:, None] & mask_f[None, :])
        tile_start += BLOCK_T


@triton.jit
def _grouped_down_kernel(
    h_ptr,
    pairs_ptr,
    offsets_ptr,
    weights_ptr,
    w_down_ptr,
    out_ptr,
    D: tl.constexpr,
    F: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_F: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """out[p, d_tile] = weights[p] * h[s] W_down[e]^T for the sorted routes s (route p) of expert e."""
    expert = tl.program_id(0).to(tl.int64)
    d_block = tl.program_id(1)
    route_end = tl.load(offsets_ptr + expert + 1).to(tl.int64)
    tile_start = tl.load(offsets_ptr + expert).to(tl.int64)

    offs_d = d_block * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    # Scalar int64 expert base, int32 offsets within (see _grouped_gate_up_kernel).
    w_down_e = w_down_ptr + expert * D * F

    while tile_start < route_end:
        offs_s = tile_start + tl.arange(0, BLOCK_T)
        mask_s = offs_s < route_end
        pairs = tl.load(pairs_ptr + offs_s, mask=mask_s, other=0).to(tl.int32)
        rows_s = offs_s.to(tl.int32)
        route_weights = tl.load(weights_ptr + pairs, mask=mask_s, other=0.0).to(tl.float32)

        acc = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
        for f_start in range(0, F, BLOCK_F):
            offs_f = f_start + tl.arange(0, BLOCK_F)
            mask_f = offs_f < F
            h = tl.load(h_ptr + rows_s[:, None] * F + offs_f[None, :], mask=mask_s[:, None] & mask_f[None, :], other=0.0)
            w_down = tl.load(
                w_down_e + offs_d[None, :] * F + offs_f[:, None], mask=mask_f[:, None] & mask_d[None, :], other=0.0
            )
            # tl.dot needs one operand dtype: the fp32 activation is rounded to the weight dtype
            # (a no-op for fp32; for bf16 one rounding of at most 2**-9 relative per element).
            acc = tl.dot(h.to(w_down_ptr.dtype.element_ty), w_down, acc, input_precision=DOT_PRECISION)

        out = acc * route_weights[:, None]
        tl.store(out_ptr + pairs[:, None] * D + offs_d[None, :], out, mask=mask_s[:, None] & mask_d[None, :])
        tile_start += BLOCK_T


def moe_grouped(
    x_TD: torch.Tensor,
    topk_ids_TK: torch.Tensor,
    topk_weights_TK: torch.Tensor,
    w_gate_EFD: torch.Tensor,
    w_up_EFD: torch.Tensor,
    w_down_EDF: torch.Tensor,
) -> torch.Tensor:
    """Routed SwiGLU MoE with expert-grouped Triton kernels; same contract as ``moe_reference``.

    ``y[t] = sum_j topk_weights[t, j] * W_down[e] @ (silu(W_gate[e] @ x[t]) * (W_up[e] @ x[t]))``
    with ``e = topk_ids[t, j]``, accumulated in fp32 and returned as (T, D) in the dtype of
    ``x_TD``. Meant for batches where several tokens share an expert (see ``moe_decode`` for the
    choice against ``moe_gemv``). fp32 inputs use IEEE fp32 dot products; bf16/fp16 inputs use
    tensor-core dots and round the fp32 (T*K, F) activation to the weight dtype before the down
    projection. Deterministic, but not batch invariant.

    Raises ``TypeError``/``ValueError`` for invalid inputs (see ``check_moe_inputs``), and
    ``ValueError`` for non-CUDA tensors unless Triton runs its interpreter (TRITON_INTERPRET=1).
    """
    check_moe_inputs(x_TD, topk_ids_TK, topk_weights_TK, w_gate_EFD, w_up_EFD, w_down_EDF)
    check_kernel_device(x_TD, "moe_grouped")

    num_tokens, model_dim = x_TD.shape
    top_k = topk_ids_TK.shape[1]
    num_experts, hidden, _ = w_gate_EFD.shape
    if num_tokens == 0:
        return torch.empty((0, model_dim), dtype=x_TD.dtype, device=x_TD.device)

    # The kernels offset inside one expert's matrix and inside the batch in int32 (see them).
    if hidden * model_dim >= 2**31 or num_tokens * top_k * max(hidden, model_dim) >= 2**31:
        raise ValueError(
            f"moe_grouped indexes with 32-bit offsets: F*D = {hidden * model_dim} and "
            f"T*K*max(D, F) = {num_tokens * top_k * max(hidden, model_dim)} must stay below 2**31; "
            "split the batch"
        )
    x_TD = x_TD.contiguous()
    weights_P = topk_weights_TK.contiguous().reshape(-1)
    ids_P = topk_ids_TK.reshape(-1)
    # Stable sort: within one expert the routes keep their flat order p = t*K + j.
    sorted_ids_S, pairs_S = torch.sort(ids_P, stable=True)
    # offsets[e]..offsets[e+1] is expert e's run in sorted order; searchsorted avoids the atomics
    # of a histogram, so this step is deterministic on every device too.
    bounds_E1 = torch.arange(num_experts + 1, dtype=sorted_ids_S.dtype, device=x_TD.device)
    offsets_E1 = torch.searchsorted(sorted_ids_S, bounds_E1)
    # fp32 operands default to TF32 in tl.dot (10 mantissa bits); ask for full fp32 products.
    precision = "ieee" if x_TD.dtype == torch.float32 else "tf32"
    options = launch_options(x_TD.dtype)

    h_SF = torch.empty((num_tokens * top_k, hidden), dtype=torch.float32, device=x_TD.device)
    _grouped_gate_up_kernel[(num_experts, triton.cdiv(hidden, _GATE_UP_BLOCK_F))](
        x_TD,
        pairs_S,
        offsets_E1,
        w_gate_EFD,
        w_up_EFD,
        h_SF,
        model_dim,
        hidden,
        top_k,
        BLOCK_T=_BLOCK_T,
        BLOCK_F=_GATE_UP_BLOCK_F,
        BLOCK_D=_GATE_UP_BLOCK_D,
        DOT_PRECISION=precision,
        **options,
    )
    out_PD = torch.empty((num_tokens * top_k, model_dim), dtype=torch.float32, device=x_TD.device)
    _grouped_down_kernel[(num_experts, triton.cdiv(model_dim, _DOWN_BLOCK_D))](
        h_SF,
        pairs_S,
        offsets_E1,
        weights_P,
        w_down_EDF,
        out_PD,
        model_dim,
        hidden,
        BLOCK_T=_BLOCK_T,
        BLOCK_D=_DOWN_BLOCK_D,
        BLOCK_F=_DOWN_BLOCK_F,
        DOT_PRECISION=precision,
        **options,
    )

    # Sum each token's K route outputs in j order, one explicit add per slot, so the order is fixed.
    out_TKD = out_PD.view(num_tokens, top_k, model_dim)
    y32_TD = out_TKD[:, 0].clone()
    for slot in range(1, top_k):
        y32_TD += out_TKD[:, slot]
    return y32_TD.to(x_TD.dtype)
