"""Choose the MoE kernel for a batch: gather-GEMV for small U, expert-grouped for larger U.

Shape suffixes follow :mod:`microturn.schemas.legend`: U tokens, J experts chosen per token,
E experts, D model width, I expert hidden width.
"""

from __future__ import annotations

import torch

from microturn.kernels.moe_gemv import moe_gemv
from microturn.kernels.moe_grouped import moe_grouped
from microturn.kernels.threshold import measured_threshold

DEFAULT_THRESHOLD = 16
"""Largest U that ``moe_decode`` sends to ``moe_gemv`` where no threshold is measured (off CUDA).

On CUDA, ``moe_decode`` measures the threshold itself (``kernels/threshold.py``). This fallback
is reasoned, not measured: with the default top-k of 2, U = 16 gives 32 routes, and for 8 to 64
experts the expected number of distinct experts among 32 uniform routes is 7.9 to 25.3, so
gather-GEMV reads expert weights 1.3x (E = 64) to 4x (E = 8) more often than needed, which should
outweigh the grouped path's sort and extra launches. Up to it, gather-GEMV also keeps
its bitwise batch invariance.
"""


def moe_decode(
    x_UD: torch.Tensor,
    topk_ids_UJ: torch.Tensor,
    topk_weights_UJ: torch.Tensor,
    w_gate_EID: torch.Tensor,
    w_up_EID: torch.Tensor,
    w_down_EDI: torch.Tensor,
    *,
    threshold: int | None = None,
    validate: bool = False,
) -> torch.Tensor:
    """Routed SwiGLU MoE (same contract as ``moe_reference``) by ``moe_gemv`` when U <= ``threshold``,
    else by ``moe_grouped``.

    ``threshold=None`` takes, on CUDA, the crossover measured on this device for this E, J, D, I
    and dtype (timed on the first call, then kept for the process; see ``measure_threshold``),
    and ``DEFAULT_THRESHOLD`` elsewhere. That first CUDA call synchronises (timing needs it): a
    server that captures CUDA graphs measures first and passes ``threshold=``. Both kernels check
    their inputs with ``check_moe_inputs`` and ``validate`` (out-of-range ids: a ``ValueError``
    with ``validate=True``, a device-side assert by default; see there) and raise the same
    ``TypeError``/``ValueError``. Raises ``TypeError`` for a threshold that is not an int and
    ``ValueError`` for a negative one.
    """
    if threshold is None:
        if isinstance(w_gate_EID, torch.Tensor) and w_gate_EID.is_cuda:
            threshold = measured_threshold(x_UD, topk_ids_UJ, topk_weights_UJ, w_gate_EID, w_up_EID, w_down_EDI,
                                           validate=validate)
        else:
            threshold = DEFAULT_THRESHOLD
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError(f"threshold must be an int (largest U for moe_gemv) or None, got {type(threshold).__name__}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 (0 sends every batch to moe_grouped), got {threshold}")
    num_tokens = x_UD.shape[0] if isinstance(x_UD, torch.Tensor) and x_UD.dim() >= 1 else 0
    kernel = moe_gemv if num_tokens <= threshold else moe_grouped
    return kernel(x_UD, topk_ids_UJ, topk_weights_UJ, w_gate_EID, w_up_EID, w_down_EDI, validate=validate)
