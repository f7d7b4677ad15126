"""Choose the MoE kernel for a batch: gather-GEMV for small T, expert-grouped for larger T.

Shape legend:
- T: tokens in the batch
- K: experts chosen per token (top-k)
- E: experts in the layer
- D: model dimension
- F: hidden dimension of one expert
"""

from __future__ import annotations

import torch

from microturn.kernels.moe_gemv import moe_gemv
from microturn.kernels.moe_grouped import moe_grouped
from microturn.kernels.threshold import measured_threshold

DEFAULT_THRESHOLD = 16
"""Largest T that ``moe_decode`` sends to ``moe_gemv`` where no threshold is measured (off CUDA).

On CUDA, ``moe_decode`` measures the threshold itself (``kernels/threshold.py``). This fallback
is reasoned, not measured: with the default top-k of 2, T = 16 gives 32 routes, and for 8 to 64
experts the expected number of distinct experts among 32 uniform routes is 7.9 to 25.3, so
gather-GEMV reads expert weights 1.3x (E = 64) to 4x (E = 8) more often than needed, which should
outweigh the grouped path's host-side sort and extra launches. Up to it, gather-GEMV also keeps
its bitwise batch invariance.
"""


def moe_decode(
    x_TD: torch.Tensor,
    topk_ids_TK: torch.Tensor,
    topk_weights_TK: torch.Tensor,
    w_gate_EFD: torch.Tensor,
    w_up_EFD: torch.Tensor,
    w_down_EDF: torch.Tensor,
    *,
    threshold: int | None = None,
) -> torch.Tensor:
    """Routed SwiGLU MoE (same contract as ``moe_reference``) by ``moe_gemv`` when T <= ``threshold``,
    else by ``moe_grouped``.

    ``threshold=None`` takes, on CUDA, the crossover measured on this device for this E, K, D, F
    and dtype (timed on the first call, then kept for the process; see ``measure_threshold``),
    and ``DEFAULT_THRESHOLD`` elsewhere. Both kernels validate their inputs with
    ``check_moe_inputs`` and raise the same ``TypeError``/``ValueError``. Raises ``TypeError`` for
    a threshold that is not an int and ``ValueError`` for a negative one.
    """
    if threshold is None:
        if isinstance(w_gate_EFD, torch.Tensor) and w_gate_EFD.is_cuda:
            threshold = measured_threshold(x_TD, topk_ids_TK, topk_weights_TK, w_gate_EFD, w_up_EFD, w_down_EDF)
        else:
            threshold = DEFAULT_THRESHOLD
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError(f"threshold must be an int (largest T for moe_gemv) or None, got {type(threshold).__name__}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 (0 sends every batch to moe_grouped), got {threshold}")
    num_tokens = x_TD.shape[0] if isinstance(x_TD, torch.Tensor) and x_TD.dim() >= 1 else 0
    kernel = moe_gemv if num_tokens <= threshold else moe_grouped
    return kernel(x_TD, topk_ids_TK, topk_weights_TK, w_gate_EFD, w_up_EFD, w_down_EDF)
