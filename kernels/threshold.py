"""Measure on the device the largest batch for which gather-GEMV beats the expert-grouped kernel.

Where the two kernels cross depends on the device (memory bandwidth against launch and sort
overhead), on the layer's E, J, D, I and on the dtype, so no constant fits every case.
``moe_decode`` therefore measures it once per (device, E, J, D, I, dtype) on its first CUDA call,
the way Triton's autotuner benchmarks its configs on first use, and keeps the result for the
process. ``measure_threshold`` is public so that a server can measure at start-up (before it
captures CUDA graphs, which forbid the synchronisations timing needs) and pass ``threshold=``.

Shape suffixes follow :mod:`microturn.schemas.legend`: U tokens, J experts chosen per token,
E experts, D model width, I expert hidden width.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from microturn.kernels.moe_gemv import moe_gemv
from microturn.kernels.moe_grouped import moe_grouped
from microturn.kernels.reference import check_moe_inputs

GRID = (1, 2, 4, 8, 16, 32, 64)
"""Batch sizes timed: decode batches are small, and above 64 the grouped kernel always wins
(every expert of an E <= 64 layer is then used by several tokens on average)."""

# Decode reads each layer's experts once per step while the other layers' weights pass through
# the L2 cache (50 MiB on an H100/H200), so the weights are cold: timings write 256 MiB between
# calls to evict them, as triton.testing.do_bench does.
_FLUSH_BYTES = 256 << 20

_MEASURED: dict[tuple, int] = {}


def crossover(grid: Sequence[int], gemv_s: Sequence[float], grouped_s: Sequence[float]) -> int:
    """The threshold for ``moe_decode`` from times measured at the batch sizes ``grid``.

    It is the last U of ``grid`` before the first one where the grouped kernel is faster (0 when
    it is already faster at the first U; the last U of ``grid`` when it never is). Stopping at
    the first crossing, instead of looking for a later one, keeps a noisy late measurement from
    sending mid-sized batches to the slower kernel.
    """
    if not (len(grid) == len(gemv_s) == len(grouped_s)) or not grid:
        raise ValueError(f"grid and both time lists need the same non-zero length, got "
                         f"{len(grid)}, {len(gemv_s)}, {len(grouped_s)}")
    if any(b <= a for a, b in zip(grid, grid[1:], strict=False)) or grid[0] < 1:
        raise ValueError(f"grid must be increasing batch sizes >= 1, got {list(grid)}")
    previous = 0
    for U, t_gemv, t_grouped in zip(grid, gemv_s, grouped_s, strict=True):
        if t_grouped < t_gemv:
            return previous
        previous = U
    return previous


def _timer(device: torch.device, repeats: int) -> Callable[[Callable[[], object]], float]:
    """Median seconds of ``repeats`` calls after one warm-up call (which also compiles)."""
    if device.type == "cuda":
        flush = torch.empty(_FLUSH_BYTES, dtype=torch.uint8, device=device)

        def run(fn: Callable[[], object]) -> float:
            fn()
            times = []
            for _ in range(repeats):
                flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(device)
                times.append(start.elapsed_time(end) * 1e-3)
            return statistics.median(times)

        return run

    def run_host(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return run_host


def measure_threshold(
    w_gate_EID: torch.Tensor,
    w_up_EID: torch.Tensor,
    w_down_EDI: torch.Tensor,
    top_k: int,
    *,
    grid: Sequence[int] = GRID,
    repeats: int = 10,
    seed: int = 0,
) -> int:
    """Time ``moe_gemv`` and ``moe_grouped`` on these expert weights for every U in ``grid``.

    Tokens are random and routed to ``top_k`` distinct uniformly drawn experts each (a balanced
    router). The ids are in range by construction, so the kernels are timed with their default
    device-side id check, as a decode step runs them. Returns :func:`crossover` of the medians.
    Raises ``ValueError`` for a ``top_k`` outside 1..E or a bad ``grid``, and whatever
    ``check_moe_inputs`` raises for bad weights.
    """
    E, _, D = w_gate_EID.shape
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= E:
        raise ValueError(f"top_k must be an int in 1..{E} (the layer's experts), got {top_k!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device, dtype = w_gate_EID.device, w_gate_EID.dtype
    g = torch.Generator(device="cpu").manual_seed(seed)
    timer = _timer(device, repeats)
    gemv_s, grouped_s = [], []
    for U in grid:
        x_UD = torch.randn(U, D, generator=g).to(device, dtype)
        ids_UJ = torch.stack([torch.randperm(E, generator=g)[:top_k] for _ in range(U)]).to(device)
        w_UJ = torch.rand(U, top_k, generator=g).softmax(-1).to(device, dtype)
        args = (x_UD, ids_UJ, w_UJ, w_gate_EID, w_up_EID, w_down_EDI)
        gemv_s.append(timer(functools.partial(moe_gemv, *args)))
        grouped_s.append(timer(functools.partial(moe_grouped, *args)))
    return crossover(list(grid), gemv_s, grouped_s)


def measured_threshold(*moe_args: torch.Tensor, validate: bool = False) -> int:
    """``measure_threshold`` for the device, shape and dtype of an MoE call (its six arguments, in
    ``check_moe_inputs``' order), measured once per process. The inputs are checked (with
    ``validate``, see ``check_moe_inputs``) before a measurement only: the kernel that then runs
    checks them on every call."""
    _, topk_ids_UJ, _, w_gate_EID, w_up_EID, w_down_EDI = moe_args
    key = None
    if isinstance(w_gate_EID, torch.Tensor) and w_gate_EID.dim() == 3 and isinstance(topk_ids_UJ, torch.Tensor) \
            and topk_ids_UJ.dim() == 2:
        device = w_gate_EID.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        E, hidden, D = w_gate_EID.shape
        key = (name, str(device), E, hidden, D, topk_ids_UJ.shape[1], w_gate_EID.dtype)
    if key not in _MEASURED:
        check_moe_inputs(*moe_args, validate=validate)
        assert key is not None
        _MEASURED[key] = measure_threshold(w_gate_EID, w_up_EID, w_down_EDI, topk_ids_UJ.shape[1])
    return _MEASURED[key]


def forget_measured() -> None:
    """Drop every threshold measured so far (after a clock or driver change, or in tests)."""
    _MEASURED.clear()
