"""Expert-grouped MoE feed-forward for larger batches: routes are sorted by expert (on their device)
and each Triton program applies one expert weight tile to a run of that expert's routed tokens.

Shape suffixes and the letters below follow :mod:`microturn.schemas.legend`: U tokens, J experts
chosen per token, E experts, D model width, I expert hidden width, R routes (one per (token, j)
pair, R = U J; route p = t*J + j). Arrays over routes are in route order unless named ``sorted``
or ``pairs``: those are in expert-sorted order, where position s holds route ``pairs_R[s]``.

Why a grouped variant next to ``moe_gemv``: gather-GEMV reads an expert's weights once per route,
so when U*J grows and several tokens share an expert the same weights cross HBM several times.
Here a program owns one (expert, I tile) or (expert, D tile) and multiplies that tile against
BLOCK_R of the expert's routes at once (a tensor-core ``tl.dot`` on GPU), so each weight tile is
read once per BLOCK_R routes of its expert instead of once per route. The price is a sort of the
U*J route ids (launched on the device; nothing is read back on the host), one idle program per
unused expert, and a separate per-route output that is summed over j afterwards.

Determinism: the sort is stable, so within an expert the routes stay in (token, j) order; each
program reduces over D (gate/up) or I (down) in fixed-size tiles in a fixed order with fp32
accumulators; no atomics. Each route's weighted output is written to its own row of an (R, D)
buffer and the J rows of a token are summed in j order, so the same inputs give bitwise the same
output. Unlike ``moe_gemv`` this path does not promise batch invariance: a route's tile partners
depend on the other tokens in the batch.
"""

# pyright: reportArgumentType=false
# (Launches pass Python ints and strings for the kernels' ``tl.constexpr`` parameters, which
# Triton converts at launch; pyright sees only the annotation and reports every one of them.)

from __future__ import annotations

import torch
import triton
import triton.language as tl

from microturn.kernels.launch import checked_sizes, silu_times

# Fixed tile sizes, not timed on hardware (the launch options below were chosen from ptxas
# output). BLOCK_R = 32 routes per tile: tl.dot needs every block dimension >= 16, and 32 halves
# the weight re-reads of 16 for experts with more routes while keeping the two (32, 64) fp32
# gate/up accumulators at 16 registers per thread each for 4 warps. The 64-wide contiguous
# weight axis gives 128-byte bf16 row segments, one full memory transaction.
# D, HIDDEN (= I) and J are compile-time constants for the same reasons as in moe_gemv: fixed
# per model, and the Triton 3.4 interpreter under numpy 2.4 cannot run ``range`` over runtime
# integer bounds.
# For the same reason the loop over an expert's routes, whose bounds are loaded from memory, is a
# ``while`` loop: the interpreter evaluates it with tensor comparisons, while ``range`` would need
# the loaded bound as a Python int and fails.
_BLOCK_R = 32
_GATE_UP_BLOCK_I = 64
_GATE_UP_BLOCK_D = 64
_DOWN_BLOCK_D = 64
_DOWN_BLOCK_I = 64


def launch_options(dtype: torch.dtype) -> dict[str, int]:
    """Warps and pipeline stages for both grouped kernels with operands of ``dtype``.

    Compiled for sm_90 (``bench/compile_report.py``) with Triton's default 4 warps, ptxas gives
    both kernels 255 registers per thread and spills 270 to 330 bytes (bf16); with 8 warps each
    thread holds half the tiles: 182 to 188 registers and no spill. fp32 dots run without tensor
    cores ("ieee") and hold far more per thread: 16 warps and 2 stages give 128 registers and no
    spill at D = 512 and 2048 (8 warps still spill 24 bytes at D = 512).
    """
    if dtype == torch.float32:
        return {"num_warps": 16, "num_stages": 2}
    return {"num_warps": 8, "num_stages": 3}


@triton.jit
def _expert_run(offsets_ptr):
    """This program's expert (grid axis 0) and the [start, end) of its run of sorted routes, int64."""
    expert = tl.program_id(0).to(tl.int64)
    return expert, tl.load(offsets_ptr + expert).to(tl.int64), tl.load(offsets_ptr + expert + 1).to(tl.int64)


@triton.jit
def _route_tile(pairs_ptr, tile_start, route_end, BLOCK_R: tl.constexpr):
    """BLOCK_R of an expert's sorted routes from ``tile_start``: (mask, route p of each as loaded
    (int64), sorted position s of each as int32)."""
    offs_s = tile_start + tl.arange(0, BLOCK_R)
    mask_s = offs_s < route_end
    return mask_s, tl.load(pairs_ptr + offs_s, mask=mask_s, other=0), offs_s.to(tl.int32)


@triton.jit
def _grouped_gate_up_kernel(
    x_ptr,
    pairs_ptr,
    offsets_ptr,
    w_gate_ptr,
    w_up_ptr,
    h_ptr,
    D: tl.constexpr,
    HIDDEN: tl.constexpr,
    J: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """h[s, i_tile] = silu(x[t] W_gate[e]^T) * (x[t] W_up[e]^T) for the sorted routes s of expert e."""
    # Calling a jitted function outside a kernel raises, so pyright types the helpers' results
    # NoReturn and reports unpacking them.
    expert, tile_start, route_end = _expert_run(offsets_ptr)  # pyright: ignore[reportGeneralTypeIssues]
    i_block = tl.program_id(1)

    offs_i = i_block * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_i = offs_i < HIDDEN
    # The expert's base is a scalar int64 offset (E*I*D passes 2**31 in large layers, e.g.
    # 64 x 14336 x 4096); offsets inside one expert's matrix and the batch are int32 (the wrapper
    # checks they fit): int64 tiles of pointers cost twice the registers and made ptxas spill.
    w_gate_e = w_gate_ptr + expert * HIDDEN * D
    w_up_e = w_up_ptr + expert * HIDDEN * D

    while tile_start < route_end:
        mask_s, pairs, rows_s = _route_tile(pairs_ptr, tile_start, route_end, BLOCK_R)  # pyright: ignore[reportGeneralTypeIssues]
        tokens = (pairs // J).to(tl.int32)

        gate_acc = tl.zeros([BLOCK_R, BLOCK_I], dtype=tl.float32)
        up_acc = tl.zeros([BLOCK_R, BLOCK_I], dtype=tl.float32)
        for d_start in range(0, D, BLOCK_D):
            offs_d = d_start + tl.arange(0, BLOCK_D)
            mask_d = offs_d < D
            x_mask = mask_s[:, None] & mask_d[None, :]
            x = tl.load(x_ptr + tokens[:, None] * D + offs_d[None, :], mask=x_mask, other=0.0)
            # The weight tile is read transposed, (BLOCK_D, BLOCK_I), so that x @ tile is x W^T.
            tile_offs = offs_i[None, :] * D + offs_d[:, None]
            tile_mask = mask_d[:, None] & mask_i[None, :]
            w_gate = tl.load(w_gate_e + tile_offs, mask=tile_mask, other=0.0)
            gate_acc = tl.dot(x, w_gate, gate_acc, input_precision=DOT_PRECISION)
            w_up = tl.load(w_up_e + tile_offs, mask=tile_mask, other=0.0)
            up_acc = tl.dot(x, w_up, up_acc, input_precision=DOT_PRECISION)

        h = silu_times(gate_acc, up_acc)
        tl.store(h_ptr + rows_s[:, None] * HIDDEN + offs_i[None, :], h, mask=mask_s[:, None] & mask_i[None, :])
        tile_start += BLOCK_R


@triton.jit
def _grouped_down_kernel(
    h_ptr,
    pairs_ptr,
    offsets_ptr,
    weights_ptr,
    w_down_ptr,
    out_ptr,
    D: tl.constexpr,
    HIDDEN: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_I: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """out[p, d_tile] = weights[p] * h[s] W_down[e]^T for the sorted routes s (route p) of expert e."""
    # (pyright: see _grouped_gate_up_kernel.)
    expert, tile_start, route_end = _expert_run(offsets_ptr)  # pyright: ignore[reportGeneralTypeIssues]
    d_block = tl.program_id(1)

    offs_d = d_block * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    # Scalar int64 expert base, int32 offsets within (see _grouped_gate_up_kernel).
    w_down_e = w_down_ptr + expert * D * HIDDEN

    while tile_start < route_end:
        mask_s, pairs, rows_s = _route_tile(pairs_ptr, tile_start, route_end, BLOCK_R)  # pyright: ignore[reportGeneralTypeIssues]
        pairs = pairs.to(tl.int32)
        route_weights = tl.load(weights_ptr + pairs, mask=mask_s, other=0.0).to(tl.float32)

        acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
        for i_start in range(0, HIDDEN, BLOCK_I):
            offs_i = i_start + tl.arange(0, BLOCK_I)
            mask_i = offs_i < HIDDEN
            h_mask = mask_s[:, None] & mask_i[None, :]
            h = tl.load(h_ptr + rows_s[:, None] * HIDDEN + offs_i[None, :], mask=h_mask, other=0.0)
            w_down = tl.load(
                w_down_e + offs_d[None, :] * HIDDEN + offs_i[:, None], mask=mask_i[:, None] & mask_d[None, :], other=0.0
            )
            # tl.dot needs one operand dtype: the fp32 activation is rounded to the weight dtype
            # (a no-op for fp32; for bf16 one rounding of at most 2**-9 relative per element).
            acc = tl.dot(h.to(w_down_ptr.dtype.element_ty), w_down, acc, input_precision=DOT_PRECISION)

        out = acc * route_weights[:, None]
        tl.store(out_ptr + pairs[:, None] * D + offs_d[None, :], out, mask=mask_s[:, None] & mask_d[None, :])
        tile_start += BLOCK_R


def moe_grouped(
    x_UD: torch.Tensor,
    topk_ids_UJ: torch.Tensor,
    topk_weights_UJ: torch.Tensor,
    w_gate_EID: torch.Tensor,
    w_up_EID: torch.Tensor,
    w_down_EDI: torch.Tensor,
    *,
    validate: bool = False,
) -> torch.Tensor:
    """Routed SwiGLU MoE with expert-grouped Triton kernels; same contract as ``moe_reference``.

    ``y[t] = sum_j topk_weights[t, j] * W_down[e] @ (silu(W_gate[e] @ x[t]) * (W_up[e] @ x[t]))``
    with ``e = topk_ids[t, j]``, accumulated in fp32 and returned as (U, D) in the dtype of
    ``x_UD``. Meant for batches where several tokens share an expert (see ``moe_decode`` for the
    choice against ``moe_gemv``). fp32 inputs use IEEE fp32 dot products; bf16/fp16 inputs use
    tensor-core dots and round the fp32 (U*J, I) activation to the weight dtype before the down
    projection. Deterministic, but not batch invariant.

    Raises ``TypeError``/``ValueError`` for invalid inputs (see ``check_moe_inputs``), and
    ``ValueError`` for non-CUDA tensors unless Triton runs its interpreter (TRITON_INTERPRET=1).
    Expert ids out of 0..E-1 are a ``ValueError`` with ``validate=True`` (a host read of the ids,
    one synchronisation per call); by default a device-side assert refuses them without a host
    read (a ``RuntimeError`` on CPU; on CUDA an asynchronous assert that poisons the context).
    Nothing else reads a tensor value on the host either: the routes are sorted and each expert's
    run of them found (``torch.sort``, ``torch.searchsorted``) on the tensors' device, and the
    grid is (E, tiles), sized from shapes rather than from how many routes each expert got. That
    costs one program per expert even when an expert has no route (it exits at once: its run is
    empty), and is what lets the call skip reading per-expert counts on the host, which would be
    a synchronisation per call and would rule out CUDA graphs.
    """
    sizes = checked_sizes("moe_grouped", x_UD, topk_ids_UJ, topk_weights_UJ, w_gate_EID, w_up_EID, w_down_EDI,
                          validate=validate)
    num_tokens, top_k, num_experts = sizes.tokens, sizes.top_k, sizes.experts
    hidden, model_dim = sizes.hidden, sizes.model_dim
    if num_tokens == 0:
        return torch.empty((0, model_dim), dtype=x_UD.dtype, device=x_UD.device)

    # The kernels offset inside one expert's matrix and inside the batch in int32 (see them).
    if hidden * model_dim >= 2**31 or num_tokens * top_k * max(hidden, model_dim) >= 2**31:
        raise ValueError(
            f"moe_grouped indexes with 32-bit offsets: I*D = {hidden * model_dim} and "
            f"U*J*max(D, I) = {num_tokens * top_k * max(hidden, model_dim)} must stay below 2**31; "
            "split the batch"
        )
    x_UD = x_UD.contiguous()
    weights_R = topk_weights_UJ.contiguous().reshape(-1)
    ids_R = topk_ids_UJ.reshape(-1)
    # Stable sort: within one expert the routes keep their flat order p = t*J + j.
    sorted_ids_R, pairs_R = torch.sort(ids_R, stable=True)
    # run_offsets[e]..run_offsets[e+1] (E + 1 entries) is expert e's run in sorted order;
    # searchsorted avoids the atomics of a histogram, so this step is deterministic on every device.
    expert_ids = torch.arange(num_experts + 1, dtype=sorted_ids_R.dtype, device=x_UD.device)
    run_offsets = torch.searchsorted(sorted_ids_R, expert_ids)
    # fp32 operands default to TF32 in tl.dot (10 mantissa bits); ask for full fp32 products.
    precision = "ieee" if x_UD.dtype == torch.float32 else "tf32"
    options = launch_options(x_UD.dtype)

    sorted_h_RI = torch.empty((num_tokens * top_k, hidden), dtype=torch.float32, device=x_UD.device)
    _grouped_gate_up_kernel[(num_experts, triton.cdiv(hidden, _GATE_UP_BLOCK_I))](
        x_UD,
        pairs_R,
        run_offsets,
        w_gate_EID,
        w_up_EID,
        sorted_h_RI,
        model_dim,
        hidden,
        top_k,
        BLOCK_R=_BLOCK_R,
        BLOCK_I=_GATE_UP_BLOCK_I,
        BLOCK_D=_GATE_UP_BLOCK_D,
        DOT_PRECISION=precision,
        **options,
    )
    out_RD = torch.empty((num_tokens * top_k, model_dim), dtype=torch.float32, device=x_UD.device)
    _grouped_down_kernel[(num_experts, triton.cdiv(model_dim, _DOWN_BLOCK_D))](
        sorted_h_RI,
        pairs_R,
        run_offsets,
        weights_R,
        w_down_EDI,
        out_RD,
        model_dim,
        hidden,
        BLOCK_R=_BLOCK_R,
        BLOCK_D=_DOWN_BLOCK_D,
        BLOCK_I=_DOWN_BLOCK_I,
        DOT_PRECISION=precision,
        **options,
    )

    # Sum each token's J route outputs in j order, one explicit add per slot, so the order is fixed.
    out_UJD = out_RD.view(num_tokens, top_k, model_dim)
    y32_UD = out_UJD[:, 0].clone()
    for slot in range(1, top_k):
        y32_UD += out_UJD[:, slot]
    return y32_UD.to(x_UD.dtype)
