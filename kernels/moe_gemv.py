"""Gather-GEMV MoE feed-forward for decode: two Triton kernels that read each token's routed
experts straight from the stacked expert weights.

Shape legend:
- T: tokens in the batch (decode: one new token per sequence, so T is small, 1..64)
- K: experts chosen per token (top-k)
- E: experts in the layer
- D: model dimension
- F: hidden dimension of one expert

Why gather-GEMV rather than grouped GEMM: one token times one expert is a matrix-vector product
doing 2 FLOP per weight element, i.e. 1 FLOP per byte of bf16 weights per token. An H200 moves
about 4.8 TB/s of HBM against about 990 TFLOP/s of dense bf16, a ridge point near 200 FLOP/byte,
so at T <= 64 the layer is bound by reading expert weights, not by arithmetic. Grouped GEMM sorts
the T*K (token, expert) pairs by expert and pads every group to its row tile (16..128 rows), which
at decode sizes costs a sort/scatter pass and mostly-empty tiles without saving any weight
traffic. Here each program gathers the rows of the expert ``topk_ids[t, j]`` directly: no
permutation, no padding. The price is that two tokens routed to one expert read its weights twice
(the L2 cache absorbs part of that); the grouped-GEMM path wins once T*K per expert grows.

Batch invariance: kernel 1 runs one program per (pair t*K+j, F tile) and kernel 2 one program per
(token t, D tile). Every program reduces over D (kernel 1) or over j then F (kernel 2) in a fixed
order of fixed-size tiles, with fp32 accumulators and no atomics or split reductions across
programs. T is not a kernel argument (it only sets the grid), so the compiled code and each
token's sequence of floating-point operations are the same whether it is decoded alone or in any
batch: its output is bitwise identical.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from microturn.kernels.reference import check_kernel_device, check_moe_inputs

# Tile sizes are fixed constants (never derived from T) because the reduction order, and with it
# batch invariance, depends on them. A 32 x 128 fp32 accumulator tile is 32 registers per thread
# for 4 warps (128 threads), 64 for the gate and up pair; the 128-wide contiguous axis gives
# 256-byte bf16 row segments, two full 128-byte memory transactions per row. Not yet tuned on
# hardware.
# D, F and K are compile-time constants in the kernels: they are fixed per model, so this costs
# one compile per layer shape and gives constant loop trip counts (T stays a grid size only).
# It is also required by the Triton 3.4 interpreter under numpy 2.4, which fails on
# ``range(0, D, BLOCK_D)`` when D is a runtime integer argument.
_GATE_UP_BLOCK_F = 32
_GATE_UP_BLOCK_D = 128
_DOWN_BLOCK_D = 32
_DOWN_BLOCK_F = 128


@triton.jit
def _gate_up_kernel(
    x_ptr,
    ids_ptr,
    w_gate_ptr,
    w_up_ptr,
    h_ptr,
    D: tl.constexpr,
    F: tl.constexpr,
    K: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """h[pair, f_tile] = silu(W_gate[e] x[t]) * (W_up[e] x[t]) for pair = t*K + j, e = ids[pair]."""
    pair = tl.program_id(0).to(tl.int64)
    f_block = tl.program_id(1)
    token = pair // K
    expert = tl.load(ids_ptr + pair).to(tl.int64)

    offs_f = f_block * BLOCK_F + tl.arange(0, BLOCK_F)
    mask_f = offs_f < F
    # int64 row index: E*F*D exceeds 2**31 for large layers (e.g. 64 x 14336 x 4096).
    rows_f = expert * F + offs_f.to(tl.int64)

    # Products accumulate per lane in a (BLOCK_F, BLOCK_D) tile and are reduced across D once after
    # the loop: one cross-lane reduction per program instead of one per D tile.
    gate_acc = tl.zeros([BLOCK_F, BLOCK_D], dtype=tl.float32)
    up_acc = tl.zeros([BLOCK_F, BLOCK_D], dtype=tl.float32)
    for d_start in range(0, D, BLOCK_D):
        offs_d = d_start + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        x = tl.load(x_ptr + token * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        tile_mask = mask_f[:, None] & mask_d[None, :]
        tile_offs = rows_f[:, None] * D + offs_d[None, :]
        w_gate = tl.load(w_gate_ptr + tile_offs, mask=tile_mask, other=0.0).to(tl.float32)
        gate_acc += w_gate * x[None, :]
        w_up = tl.load(w_up_ptr + tile_offs, mask=tile_mask, other=0.0).to(tl.float32)
        up_acc += w_up * x[None, :]
    gate = tl.sum(gate_acc, axis=1)
    up = tl.sum(up_acc, axis=1)

    h = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(h_ptr + pair * F + offs_f, h, mask=mask_f)


@triton.jit
def _down_kernel(
    h_ptr,
    ids_ptr,
    weights_ptr,
    w_down_ptr,
    y_ptr,
    D: tl.constexpr,
    F: tl.constexpr,
    K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """y[t, d_tile] = sum_j weights[t, j] * W_down[e] h[t*K + j], j in order, F tiles in order."""
    token = tl.program_id(0).to(tl.int64)
    d_block = tl.program_id(1)

    offs_d = d_block * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D

    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for j in range(0, K):
        pair = token * K + j
        expert = tl.load(ids_ptr + pair).to(tl.int64)
        weight = tl.load(weights_ptr + pair).to(tl.float32)
        rows_d = expert * D + offs_d.to(tl.int64)
        part_acc = tl.zeros([BLOCK_D, BLOCK_F], dtype=tl.float32)
        for f_start in range(0, F, BLOCK_F):
            offs_f = f_start + tl.arange(0, BLOCK_F)
            mask_f = offs_f < F
            h = tl.load(h_ptr + pair * F + offs_f, mask=mask_f, other=0.0)
            tile_mask = mask_d[:, None] & mask_f[None, :]
            w_down = tl.load(w_down_ptr + rows_d[:, None] * F + offs_f[None, :], mask=tile_mask, other=0.0)
            part_acc += w_down.to(tl.float32) * h[None, :]
        acc += weight * tl.sum(part_acc, axis=1)

    tl.store(y_ptr + token * D + offs_d, acc.to(y_ptr.dtype.element_ty), mask=mask_d)


def moe_gemv(
    x_TD: torch.Tensor,
    topk_ids_TK: torch.Tensor,
    topk_weights_TK: torch.Tensor,
    w_gate_EFD: torch.Tensor,
    w_up_EFD: torch.Tensor,
    w_down_EDF: torch.Tensor,
) -> torch.Tensor:
    """Routed SwiGLU MoE for small T with gather-GEMV Triton kernels; same contract as ``moe_reference``.

    ``y[t] = sum_j topk_weights[t, j] * W_down[e] @ (silu(W_gate[e] @ x[t]) * (W_up[e] @ x[t]))``
    with ``e = topk_ids[t, j]``, accumulated in fp32 and returned as (T, D) in the dtype of
    ``x_TD`` (fp32, bf16 or fp16). The intermediate (T*K, F) activation is kept in fp32. Each
    token's output is bitwise independent of the other tokens in the batch.

    Raises ``TypeError``/``ValueError`` for invalid inputs (see ``check_moe_inputs``), and
    ``ValueError`` for non-CUDA tensors unless Triton runs its interpreter (TRITON_INTERPRET=1).
    """
    check_moe_inputs(x_TD, topk_ids_TK, topk_weights_TK, w_gate_EFD, w_up_EFD, w_down_EDF)
    check_kernel_device(x_TD, "moe_gemv")

    num_tokens, model_dim = x_TD.shape
    top_k = topk_ids_TK.shape[1]
    hidden = w_gate_EFD.shape[1]
    y_TD = torch.empty((num_tokens, model_dim), dtype=x_TD.dtype, device=x_TD.device)
    if num_tokens == 0:
        return y_TD

    x_TD = x_TD.contiguous()
    ids_TK = topk_ids_TK.contiguous()
    weights_TK = topk_weights_TK.contiguous()
    h_PF = torch.empty((num_tokens * top_k, hidden), dtype=torch.float32, device=x_TD.device)

    gate_up_grid = (num_tokens * top_k, triton.cdiv(hidden, _GATE_UP_BLOCK_F))
    _gate_up_kernel[gate_up_grid](
        x_TD,
        ids_TK,
        w_gate_EFD,
        w_up_EFD,
        h_PF,
        model_dim,
        hidden,
        top_k,
        BLOCK_F=_GATE_UP_BLOCK_F,
        BLOCK_D=_GATE_UP_BLOCK_D,
    )
    down_grid = (num_tokens, triton.cdiv(model_dim, _DOWN_BLOCK_D))
    _down_kernel[down_grid](
        h_PF,
        ids_TK,
        weights_TK,
        w_down_EDF,
        y_TD,
        model_dim,
        hidden,
        top_k,
        BLOCK_D=_DOWN_BLOCK_D,
        BLOCK_F=_DOWN_BLOCK_F,
    )
    return y_TD
