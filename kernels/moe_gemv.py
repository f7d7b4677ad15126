"""Gather-GEMV MoE feed-forward for decode: two Triton kernels that read each token's routed
experts straight from the stacked expert weights.

Shape suffixes and the letters below follow :mod:`microturn.schemas.legend`: U tokens (decode: one
new token per sequence, so U is small, 1..64), J experts chosen per token, E experts, D model
width, I expert hidden width, R routes (one per token and chosen expert, R = U J).

Why gather-GEMV rather than grouped GEMM: one token times one expert is a matrix-vector product
doing 2 FLOP per weight element, i.e. 1 FLOP per byte of bf16 weights per token. An H200 moves
about 4.8 TB/s of HBM against about 990 TFLOP/s of dense bf16, a ridge point near 200 FLOP/byte,
so at U <= 64 the layer is bound by reading expert weights, not by arithmetic. Grouped GEMM sorts
the U*J (token, expert) pairs by expert and pads every group to its row tile (16..128 rows), which
at decode sizes costs a sort/scatter pass and mostly-empty tiles without saving any weight
traffic. Here each program gathers the rows of the expert ``topk_ids[t, j]`` directly: no
permutation, no padding. The price is that two tokens routed to one expert read its weights twice
(the L2 cache absorbs part of that); the grouped-GEMM path wins once U*J per expert grows.

Batch invariance: kernel 1 runs one program per (pair t*J+j, I tile) and kernel 2 one program per
(token t, D tile). Every program reduces over D (kernel 1) or over j then I (kernel 2) in a fixed
order of fixed-size tiles, with fp32 accumulators and no atomics or split reductions across
programs. U is not a kernel argument (it only sets the grid), so the compiled code and each
token's sequence of floating-point operations are the same whether it is decoded alone or in any
batch: its output is bitwise identical.
"""

# pyright: reportArgumentType=false
# (Launches pass Python ints and strings for the kernels' ``tl.constexpr`` parameters, which
# Triton converts at launch; pyright sees only the annotation and reports every one of them.)

from __future__ import annotations

import torch
import triton
import triton.language as tl

from microturn.kernels.launch import checked_sizes, silu_times

# Tile sizes are fixed constants (never derived from U) because the reduction order, and with it
# batch invariance, depends on them. A 32 x 128 fp32 accumulator tile is 32 registers per thread
# for 4 warps (128 threads), 64 for the gate and up pair; the 128-wide contiguous axis gives
# 256-byte bf16 row segments, two full 128-byte memory transactions per row.
# Not tuned on hardware: these sizes and Triton's default launch options (4 warps, 3 stages)
# follow from the arithmetic above, and no GPU timing has chosen them. The grouped kernels' warps
# and stages, by contrast, were chosen from ptxas' register and spill counts (see
# ``moe_grouped.launch_options``); ``bench/compile_report.py`` prints those counts for these too.
# D, HIDDEN (= I) and J are compile-time constants in the kernels: they are fixed per model, so this costs
# one compile per layer shape and gives constant loop trip counts (U stays a grid size only).
# It is also required by the Triton 3.4 interpreter under numpy 2.4, which fails on
# ``range(0, D, BLOCK_D)`` when D is a runtime integer argument.
_GATE_UP_BLOCK_I = 32
_GATE_UP_BLOCK_D = 128
_DOWN_BLOCK_D = 32
_DOWN_BLOCK_I = 128


@triton.jit
def _gate_up_kernel(
    x_ptr,
    ids_ptr,
    w_gate_ptr,
    w_up_ptr,
    h_ptr,
    D: tl.constexpr,
    HIDDEN: tl.constexpr,
    J: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """h[pair, i_tile] = silu(W_gate[e] x[t]) * (W_up[e] x[t]) for pair = t*J + j, e = ids[pair]."""
    pair = tl.program_id(0).to(tl.int64)
    i_block = tl.program_id(1)
    token = pair // J
    expert = tl.load(ids_ptr + pair).to(tl.int64)

    offs_i = i_block * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_i = offs_i < HIDDEN
    # int64 row index: E*I*D exceeds 2**31 for large layers (e.g. 64 x 14336 x 4096).
    rows_i = expert * HIDDEN + offs_i.to(tl.int64)

    # Products accumulate per lane in a (BLOCK_I, BLOCK_D) tile and are reduced across D once after
    # the loop: one cross-lane reduction per program instead of one per D tile.
    gate_acc = tl.zeros([BLOCK_I, BLOCK_D], dtype=tl.float32)
    up_acc = tl.zeros([BLOCK_I, BLOCK_D], dtype=tl.float32)
    for d_start in range(0, D, BLOCK_D):
        offs_d = d_start + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        x = tl.load(x_ptr + token * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        tile_mask = mask_i[:, None] & mask_d[None, :]
        tile_offs = rows_i[:, None] * D + offs_d[None, :]
        w_gate = tl.load(w_gate_ptr + tile_offs, mask=tile_mask, other=0.0).to(tl.float32)
        gate_acc += w_gate * x[None, :]
        w_up = tl.load(w_up_ptr + tile_offs, mask=tile_mask, other=0.0).to(tl.float32)
        up_acc += w_up * x[None, :]
    gate = tl.sum(gate_acc, axis=1)
    up = tl.sum(up_acc, axis=1)

    h = silu_times(gate, up)
    tl.store(h_ptr + pair * HIDDEN + offs_i, h, mask=mask_i)


@triton.jit
def _down_kernel(
    h_ptr,
    ids_ptr,
    weights_ptr,
    w_down_ptr,
    y_ptr,
    D: tl.constexpr,
    HIDDEN: tl.constexpr,
    J: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_I: tl.constexpr,
):
    """y[t, d_tile] = sum_j weights[t, j] * W_down[e] h[t*J + j], j in order, I tiles in order."""
    token = tl.program_id(0).to(tl.int64)
    d_block = tl.program_id(1)

    offs_d = d_block * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D

    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for j in range(0, J):
        pair = token * J + j
        expert = tl.load(ids_ptr + pair).to(tl.int64)
        weight = tl.load(weights_ptr + pair).to(tl.float32)
        rows_d = expert * D + offs_d.to(tl.int64)
        part_acc = tl.zeros([BLOCK_D, BLOCK_I], dtype=tl.float32)
        for i_start in range(0, HIDDEN, BLOCK_I):
            offs_i = i_start + tl.arange(0, BLOCK_I)
            mask_i = offs_i < HIDDEN
            h = tl.load(h_ptr + pair * HIDDEN + offs_i, mask=mask_i, other=0.0)
            tile_mask = mask_d[:, None] & mask_i[None, :]
            w_down = tl.load(w_down_ptr + rows_d[:, None] * HIDDEN + offs_i[None, :], mask=tile_mask, other=0.0)
            part_acc += w_down.to(tl.float32) * h[None, :]
        acc += weight * tl.sum(part_acc, axis=1)

    tl.store(y_ptr + token * D + offs_d, acc.to(y_ptr.dtype.element_ty), mask=mask_d)


def moe_gemv(
    x_UD: torch.Tensor,
    topk_ids_UJ: torch.Tensor,
    topk_weights_UJ: torch.Tensor,
    w_gate_EID: torch.Tensor,
    w_up_EID: torch.Tensor,
    w_down_EDI: torch.Tensor,
    *,
    validate: bool = False,
) -> torch.Tensor:
    """Routed SwiGLU MoE for small U with gather-GEMV Triton kernels; same contract as ``moe_reference``.

    ``y[t] = sum_j topk_weights[t, j] * W_down[e] @ (silu(W_gate[e] @ x[t]) * (W_up[e] @ x[t]))``
    with ``e = topk_ids[t, j]``, accumulated in fp32 and returned as (U, D) in the dtype of
    ``x_UD`` (fp32, bf16 or fp16). The intermediate (U*J, I) activation is kept in fp32. Each
    token's output is bitwise independent of the other tokens in the batch.

    Raises ``TypeError``/``ValueError`` for invalid inputs (see ``check_moe_inputs``), and
    ``ValueError`` for non-CUDA tensors unless Triton runs its interpreter (TRITON_INTERPRET=1).
    Expert ids out of 0..E-1 are a ``ValueError`` with ``validate=True`` (a host read of the ids,
    one synchronisation per call); by default a device-side assert refuses them without a host
    read (a ``RuntimeError`` on CPU; on CUDA an asynchronous assert that poisons the context).
    Nothing else reads a tensor value on the host (the grid comes from shapes), so with the
    default a call queues its launches without waiting for the device and can be captured in a
    CUDA graph.
    """
    sizes = checked_sizes("moe_gemv", x_UD, topk_ids_UJ, topk_weights_UJ, w_gate_EID, w_up_EID, w_down_EDI,
                          validate=validate)
    num_tokens, top_k, hidden, model_dim = sizes.tokens, sizes.top_k, sizes.hidden, sizes.model_dim
    y_UD = torch.empty((num_tokens, model_dim), dtype=x_UD.dtype, device=x_UD.device)
    if num_tokens == 0:
        return y_UD

    x_UD = x_UD.contiguous()
    ids_UJ = topk_ids_UJ.contiguous()
    weights_UJ = topk_weights_UJ.contiguous()
    h_RI = torch.empty((num_tokens * top_k, hidden), dtype=torch.float32, device=x_UD.device)

    gate_up_grid = (num_tokens * top_k, triton.cdiv(hidden, _GATE_UP_BLOCK_I))
    _gate_up_kernel[gate_up_grid](
        x_UD,
        ids_UJ,
        w_gate_EID,
        w_up_EID,
        h_RI,
        model_dim,
        hidden,
        top_k,
        BLOCK_I=_GATE_UP_BLOCK_I,
        BLOCK_D=_GATE_UP_BLOCK_D,
    )
    down_grid = (num_tokens, triton.cdiv(model_dim, _DOWN_BLOCK_D))
    _down_kernel[down_grid](
        h_RI,
        ids_UJ,
        weights_UJ,
        w_down_EDI,
        y_UD,
        model_dim,
        hidden,
        top_k,
        BLOCK_D=_DOWN_BLOCK_D,
        BLOCK_I=_DOWN_BLOCK_I,
    )
    return y_UD
