"""Compile the MoE kernels ahead of time for an NVIDIA GPU, on any machine, and read their resources.

Triton lowers a kernel to PTX and assembles it with the ``ptxas`` bundled in its package, so a
machine without a GPU can still prove that every kernel compiles for a real target with the
launch constants the wrappers use (``while`` loops, tensor-core dots on bf16, int64 indexing),
which the interpreter cannot, and read what ``ptxas`` allotted: registers per thread and spills to
local memory (``cuobjdump``, also bundled, reads them from the cubin), plus the dynamic shared
memory the launch requests (software-pipelined loads show up there).

A development tool, not part of the runtime package: ``bench/moe_kernel.py`` prints its report and
tests/kernels/test_compile_report.py checks the kernels against it. Letters follow
:mod:`microturn.schemas.legend`: J experts chosen per token, D model width, I expert hidden width.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

# The wrappers' modules (not the functions of the same name re-exported by the package).
_GEMV = importlib.import_module("microturn.kernels.moe_gemv")
_GROUPED = importlib.import_module("microturn.kernels.moe_grouped")

_TRITON_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class KernelResources:
    """What one compiled kernel needs: per-thread registers, spill (local) and stack bytes from
    ``ptxas``, and the dynamic shared memory Triton requests at launch."""

    name: str
    registers: int
    local_bytes: int
    stack_bytes: int
    shared_bytes: int


def _specs(dtype: str, model_dim: int, hidden: int, top_k: int, ids_dtype: str) -> list[tuple]:
    """(kernel, signature, constexprs, options) exactly as ``moe_gemv`` and ``moe_grouped`` launch them."""
    w = _TRITON_DTYPES[dtype]
    gemv_options = {}  # Triton's defaults: 4 warps, 3 stages
    grouped_options = _GROUPED.launch_options(getattr(torch, dtype))
    shape = {"D": model_dim, "HIDDEN": hidden}
    precision = "ieee" if dtype == "float32" else "tf32"
    return [
        (_GEMV._gate_up_kernel,
         {"x_ptr": f"*{w}", "ids_ptr": f"*{ids_dtype}", "w_gate_ptr": f"*{w}", "w_up_ptr": f"*{w}", "h_ptr": "*fp32"},
         {**shape, "J": top_k, "BLOCK_I": _GEMV._GATE_UP_BLOCK_I, "BLOCK_D": _GEMV._GATE_UP_BLOCK_D}, gemv_options),
        (_GEMV._down_kernel,
         {"h_ptr": "*fp32", "ids_ptr": f"*{ids_dtype}", "weights_ptr": f"*{w}", "w_down_ptr": f"*{w}",
          "y_ptr": f"*{w}"},
         {**shape, "J": top_k, "BLOCK_D": _GEMV._DOWN_BLOCK_D, "BLOCK_I": _GEMV._DOWN_BLOCK_I}, gemv_options),
        # The grouped wrapper sorts the ids: pairs are int64 indices, offsets int64 bounds.
        (_GROUPED._grouped_gate_up_kernel,
         {"x_ptr": f"*{w}", "pairs_ptr": "*i64", "offsets_ptr": "*i64", "w_gate_ptr": f"*{w}", "w_up_ptr": f"*{w}",
          "h_ptr": "*fp32"},
         {**shape, "J": top_k, "BLOCK_R": _GROUPED._BLOCK_R, "BLOCK_I": _GROUPED._GATE_UP_BLOCK_I,
          "BLOCK_D": _GROUPED._GATE_UP_BLOCK_D, "DOT_PRECISION": precision}, grouped_options),
        (_GROUPED._grouped_down_kernel,
         {"h_ptr": "*fp32", "pairs_ptr": "*i64", "offsets_ptr": "*i64", "weights_ptr": f"*{w}",
          "w_down_ptr": f"*{w}", "out_ptr": "*fp32"},
         {**shape, "BLOCK_R": _GROUPED._BLOCK_R, "BLOCK_D": _GROUPED._DOWN_BLOCK_D,
          "BLOCK_I": _GROUPED._DOWN_BLOCK_I, "DOT_PRECISION": precision}, grouped_options),
    ]


def _cuobjdump() -> Path:
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not path.is_file():
        raise ValueError(f"Triton's bundled cuobjdump is missing ({path}); reinstall triton")
    return path


def _resources(name: str, cubin: bytes, shared_bytes: int) -> KernelResources:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run([str(_cuobjdump()), "--dump-resource-usage", path],
                             capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"\b(REG|STACK|LOCAL):(\d+)", out))
    assert {"REG", "STACK", "LOCAL"} <= fields.keys(), out
    return KernelResources(name=name, registers=int(fields["REG"]), local_bytes=int(fields["LOCAL"]),
                           stack_bytes=int(fields["STACK"]), shared_bytes=shared_bytes)


def compile_moe_kernels(
    *,
    capability: int = 90,
    dtype: str = "bfloat16",
    model_dim: int = 2048,
    hidden: int = 1024,
    top_k: int = 8,
    ids_dtype: str = "i64",
) -> list[KernelResources]:
    """Compile the four MoE kernels for compute capability ``capability`` (90: H100/H200).

    ``dtype`` is the activation and weight dtype (float32, bfloat16, float16); ``ids_dtype`` the
    routed ids' (i32 or i64). Uses the wrappers' block sizes and launch options (warps, stages),
    as a real launch does. Raises ``ValueError`` for an unknown dtype and
    Triton's ``CompilationError`` if a kernel does not compile for the target.
    """
    if dtype not in _TRITON_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_TRITON_DTYPES)}, got {dtype!r}")
    if ids_dtype not in ("i32", "i64"):
        raise ValueError(f"ids_dtype must be 'i32' or 'i64', got {ids_dtype!r}")
    target = GPUTarget("cuda", capability, 32)
    report = []
    for fn, signature, constexprs, options in _specs(dtype, model_dim, hidden, top_k, ids_dtype):
        full_signature = {**signature, **{name: "constexpr" for name in constexprs}}
        source = ASTSource(fn=fn, signature=full_signature, constexprs=constexprs)
        compiled = triton.compile(source, target=target, options=options)
        report.append(_resources(fn.__name__, compiled.asm["cubin"], compiled.metadata.shared))
    return report


def main(argv: list[str] | None = None) -> None:
    """``python bench/compile_report.py CASES_JSON``: print, as one JSON line, the report of every
    case (a list of ``compile_moe_kernels`` keyword dicts). Run it without TRITON_INTERPRET."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python bench/compile_report.py '[{\"capability\": 90, ...}, ...]'")
    cases = json.loads(args[0])
    print(json.dumps([[dataclasses.asdict(k) for k in compile_moe_kernels(**case)] for case in cases]))


if __name__ == "__main__":
    main()
