"""What the two Triton MoE wrappers share: the checks before a launch, the sizes of a call, and the
device function both kernels' programs end their gate/up step with.

Shape suffixes follow :mod:`microturn.schemas.legend` (U tokens, J experts chosen per token,
E experts, I expert hidden width, D model width).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.knobs
import triton.language as tl

from microturn.kernels.reference import check_moe_inputs


@dataclass(frozen=True, kw_only=True)
class MoeSizes:
    """The sizes of one routed MoE call: U tokens, J experts per token, E experts, I, D."""

    tokens: int
    top_k: int
    experts: int
    hidden: int
    model_dim: int


def check_kernel_device(x_UD: torch.Tensor, name: str) -> None:
    """Triton kernels run on CUDA tensors, or on CPU tensors under the interpreter only."""
    if not x_UD.is_cuda and not triton.knobs.runtime.interpret:
        raise ValueError(f"{name} needs CUDA tensors (got {x_UD.device}); set TRITON_INTERPRET=1 to run on CPU")


def checked_sizes(name: str, *moe_args: torch.Tensor, validate: bool = False) -> MoeSizes:
    """Validate the six arguments of a call of the kernel wrapper ``name`` (``check_moe_inputs``,
    in its order, with ``validate``, and the device) and return its sizes; raises what
    ``check_moe_inputs`` documents. The sizes come from shapes only: no device-to-host copy."""
    check_moe_inputs(*moe_args, validate=validate)
    x_UD, topk_ids_UJ, _, w_gate_EID, _, _ = moe_args
    check_kernel_device(x_UD, name)
    experts, hidden, model_dim = w_gate_EID.shape
    return MoeSizes(tokens=x_UD.shape[0], top_k=topk_ids_UJ.shape[1], experts=experts, hidden=hidden,
                    model_dim=model_dim)


@triton.jit
def silu_times(gate, up):
    """SwiGLU's product ``silu(gate) * up``, elementwise on fp32 tiles."""
    return gate / (1.0 + tl.exp(-gate)) * up
