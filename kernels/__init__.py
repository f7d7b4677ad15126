"""Triton kernels with their PyTorch references (see DESIGN.md): the MoE decode path.

- ``moe_gemv``: gather-GEMV routed SwiGLU MoE for small batches (decode), batch invariant.
- ``moe_grouped``: expert-grouped routed SwiGLU MoE for larger batches, deterministic.
- ``moe_decode``: picks ``moe_gemv`` for U (tokens) up to a threshold measured on the device (CUDA) or
  ``DEFAULT_THRESHOLD`` (elsewhere), else ``moe_grouped``.
- ``measure_threshold``: times both kernels on a layer's weights and returns that crossover.
- ``moe_reference``: the plain PyTorch ground truth with the same signature.
- ``check_moe_inputs``: the input contract both enforce.

Every entry point given routed ids (all but ``measure_threshold``, which draws its own) takes a
keyword-only ``validate: bool = False``. Metadata (types, dtypes, shapes,
device, contiguity) is always checked from the tensors' metadata, without reading a value. Expert
ids outside 0..E-1 are a ``ValueError`` naming them only with ``validate=True``, which reads the
ids on the host: a device-to-host copy and a synchronisation per call, which also rules out CUDA
graphs. By default a device-side assert refuses them instead, with no host read: a ``RuntimeError``
at once on CPU; on CUDA an asynchronous "device-side assert triggered" at a later synchronisation,
after which the CUDA context is unusable. The default suits ids from a router's top-k (always in
range); pass ``validate=True`` for ids from anywhere else.

Shape suffixes follow :mod:`microturn.schemas.legend`. ``bench/compile_report.py`` (a development
tool, outside this package) compiles the kernels for NVIDIA targets and reads ptxas' resources.
"""

from microturn.kernels.dispatch import DEFAULT_THRESHOLD, moe_decode
from microturn.kernels.moe_gemv import moe_gemv
from microturn.kernels.moe_grouped import moe_grouped
from microturn.kernels.reference import check_moe_inputs, moe_reference
from microturn.kernels.threshold import crossover, measure_threshold

__all__ = [
    "DEFAULT_THRESHOLD", "check_moe_inputs", "crossover", "measure_threshold", "moe_decode", "moe_gemv",
    "moe_grouped", "moe_reference",
]
