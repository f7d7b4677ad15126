"""Benchmark of the MoE decode kernels (gather-GEMV, expert-grouped) against PyTorch baselines.

    python bench/moe_kernel.py [--repeats 20]

On a GPU (CUDA): for U (tokens) in 1, 2, 4, 8, 16, 32, 64 on a small shape (E=8, J=2, D=512, I=1024)
and an OLMoE-like one (E=64, J=8, D=2048, I=1024) (letters of ``microturn.schemas.legend``),
microseconds per call with the L2 cache flushed
between calls (a 512 MiB write), GB/s of expert weights actually read, the share of the
device's copy bandwidth measured in the same run (a device-to-device copy of 1 GiB), against
the naive per-expert loop (``moe_reference``) and a grouped PyTorch implementation (sort by
expert, one GEMM per expert); and the crossover U*, the largest U before the grouped kernel
overtakes gather-GEMV (the rule ``moe_decode`` applies to its own measurement on the device).
Goals: >= 50% of copy bandwidth at U=1 on the OLMoE-like shape; >= 2x the naive loop for U <= 8.

On any machine it first compiles the four kernels for sm_90 in bf16 with Triton's bundled ptxas
and prints their registers, spills and shared memory. Without a GPU it then checks the kernels under
the Triton interpreter (fp32, small shape; ``--interpreter-check`` in a child process) against the
reference, times the two PyTorch baselines on CPU as ratios, and says that the GPU figures are
missing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

SHAPES = {"small": dict(E=8, J=2, D=512, I=1024), "olmoe-like": dict(E=64, J=8, D=2048, I=1024)}
TS = (1, 2, 4, 8, 16, 32, 64)


def make_inputs(tokens: int, experts: int, top_k: int, dim: int, hidden: int, *, device: str, dtype: torch.dtype,
                seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(tokens, dim, generator=g).to(device, dtype)
    ids = torch.stack([torch.randperm(experts, generator=g)[:top_k] for _ in range(tokens)]).to(device)
    w = torch.rand(tokens, top_k, generator=g).softmax(-1).to(device, dtype)
    scale = dim ** -0.5
    wg = (torch.randn(experts, hidden, dim, generator=g) * scale).to(device, dtype)
    wu = (torch.randn(experts, hidden, dim, generator=g) * scale).to(device, dtype)
    wd = (torch.randn(experts, dim, hidden, generator=g) * hidden ** -0.5).to(device, dtype)
    return x, ids, w, wg, wu, wd


def grouped_torch(x_UD, ids_UJ, w_UJ, wg_EID, wu_EID, wd_EDI):
    """Grouped PyTorch baseline: routes sorted by expert, one GEMM chain per used expert."""
    tokens, top_k = ids_UJ.shape
    flat = ids_UJ.reshape(-1)
    order = torch.argsort(flat, stable=True)
    tok = order // top_k
    y = torch.zeros(tokens, x_UD.shape[1], dtype=torch.float32, device=x_UD.device)
    experts, counts = torch.unique_consecutive(flat[order], return_counts=True)
    start = 0
    for e, n in zip(experts.tolist(), counts.tolist(), strict=True):
        rows = order[start:start + n]
        xs = x_UD[tok[start:start + n]].float()
        h = torch.nn.functional.silu(xs @ wg_EID[e].float().T) * (xs @ wu_EID[e].float().T)
        y.index_add_(0, tok[start:start + n], (h @ wd_EDI[e].float().T) * w_UJ.reshape(-1)[rows, None].float())
        start += n
    return y.to(x_UD.dtype)


def compile_section() -> None:
    """What ptxas allots each kernel for sm_90 (H100/H200) in bf16: compiled here, no GPU needed."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("sm_90 compile report skipped: TRITON_INTERPRET=1 is set")
        return
    from compile_report import compile_moe_kernels  # bench/compile_report.py, beside this script

    print("sm_90 compile (bf16, Triton's ptxas; registers per thread, spill bytes, shared bytes):")
    for name, s in SHAPES.items():
        report = compile_moe_kernels(capability=90, dtype="bfloat16", model_dim=s["D"], hidden=s["I"], top_k=s["J"])
        cells = [f"{k.name.strip('_')}: {k.registers} reg, {k.local_bytes + k.stack_bytes} B spill, "
                 f"{k.shared_bytes} B smem"
                 for k in report]
        print(f"  {name:<11} " + "; ".join(cells))


def cpu_report(repeats: int) -> None:
    from microturn.kernels.reference import moe_reference

    print("no GPU: GPU figures (us per call, GB/s, share of copy bandwidth, U*) are missing; run this on a GPU")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--interpreter-check"], env=env,
                         capture_output=True, text=True, check=True)
    print(f"interpreter check (fp32, U=7, E=4, J=2, D=37, I=53): max relative error {float(out.stdout):.1e} "
          "(gemv and grouped against the reference)")
    print("\nCPU baselines (fp32), median of", repeats, "calls, as ratios (naive loop / grouped PyTorch):")
    for name, s in SHAPES.items():
        cells = []
        for tokens in TS:
            args = make_inputs(tokens, s["E"], s["J"], s["D"], s["I"], device="cpu", dtype=torch.float32)
            times = {}
            for label, fn in (("naive", moe_reference), ("grouped", grouped_torch)):
                fn(*args)
                runs = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    fn(*args)
                    runs.append(time.perf_counter() - t)
                times[label] = statistics.median(runs)
            cells.append(f"U={tokens}: {times['naive'] / times['grouped']:.2f}")
        print(f"  {name:<11} " + "  ".join(cells))


def gpu_report(repeats: int) -> None:
    from microturn.kernels import crossover, moe_gemv, moe_grouped
    from microturn.kernels.reference import moe_reference

    dev = torch.device("cuda")
    flush = torch.empty(512 << 20, dtype=torch.uint8, device=dev)
    src = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)

    def timed(fn, *args) -> float:
        fn(*args)
        times = []
        for _ in range(repeats):
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        return statistics.median(times)

    copy_us = timed(dst.copy_, src)
    copy_gbs = 2 * src.numel() / (copy_us * 1e-6) / 1e9
    print(f"device: {torch.cuda.get_device_name()}; measured copy bandwidth {copy_gbs:.0f} GB/s")
    for name, s in SHAPES.items():
        print(f"\n{name}: E={s['E']} J={s['J']} D={s['D']} I={s['I']} (bf16)")
        gemv_us, grouped_us = [], []
        for tokens in TS:
            args = make_inputs(tokens, s["E"], s["J"], s["D"], s["I"], device="cuda", dtype=torch.bfloat16)
            used = int(torch.unique(args[1]).numel())
            bytes_read = used * 3 * s["D"] * s["I"] * 2
            t = {label: timed(fn, *args) for label, fn in (("gemv", moe_gemv), ("grouped", moe_grouped),
                                                           ("naive", moe_reference), ("torch", grouped_torch))}
            gbs = bytes_read / (t["gemv"] * 1e-6) / 1e9
            gemv_us.append(t["gemv"])
            grouped_us.append(t["grouped"])
            print(f"  U={tokens:>2}: gemv {t['gemv']:8.1f} us ({gbs:6.0f} GB/s, {gbs / copy_gbs:5.1%} of copy) "
                  f"grouped {t['grouped']:8.1f} us  naive {t['naive']:8.1f} us ({t['naive'] / t['gemv']:.1f}x)  "
                  f"torch-grouped {t['torch']:8.1f} us")
        # The same rule moe_decode applies to its own on-device measurement (kernels/threshold.py).
        print(f"  crossover: gemv up to U*={crossover(TS, gemv_us, grouped_us)} (0: grouped always faster; "
              f"{TS[-1]}: gemv never slower on this grid)")


def interpreter_check() -> None:
    """Print the largest relative error of both kernels against the reference on one small fp32
    case; run with TRITON_INTERPRET=1 (``cpu_report`` starts it so)."""
    from microturn.kernels import moe_gemv, moe_grouped, moe_reference

    args = make_inputs(7, 4, 2, 37, 53, device="cpu", dtype=torch.float32)
    ref = moe_reference(*args)
    print(max(float((kernel(*args) - ref).norm() / ref.norm()) for kernel in (moe_gemv, moe_grouped)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--interpreter-check", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.interpreter_check:
        interpreter_check()
        return 0
    compile_section()
    if torch.cuda.is_available():
        gpu_report(args.repeats)
    else:
        cpu_report(args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
