"""Triton kernels with their PyTorch references (see DESIGN.md): the MoE decode path.

- ``moe_gemv``: gather-GEMV routed SwiGLU MoE for small batches (decode), batch invariant.
- ``moe_reference``: the plain PyTorch ground truth with the same signature.
- ``check_moe_inputs``: the input contract both enforce.
"""

from microturn.kernels.moe_gemv import moe_gemv
from microturn.kernels.reference import check_moe_inputs, moe_reference

__all__ = ["check_moe_inputs", "moe_gemv", "moe_reference"]
