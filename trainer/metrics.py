"""What a training step logs: sums kept on the device, reduced over processes on log steps only.

Every micro-batch of a log step adds its loss, per-head losses, token count and MoE routing
statistics to device tensors (no host sync). On a log step all of them travel in one float64
vector through one ``all_reduce`` (sum) and one copy to the host, and the record holds:

- ``loss`` and ``loss/*``: the mean over the step's micro-batches and processes of each
  micro-batch's value. That is the objective the optimiser step followed: DeepSpeed scales each
  micro-batch's loss by 1/grad_accum and averages gradients over the data-parallel processes, so
  every micro-batch weighs the same whatever its token count. (Each head's loss is already a
  mean over its own targets inside a micro-batch.)
- ``tokens``: non-PAD positions of the step, summed over micro-batches and processes.
- ``tokens_per_s`` and ``step_s``: over the window since the previous log line, tokens of every
  process over the wall time between two host syncs. A step's own time is not measured: without
  a sync it would time the launch of GPU work, not the work.
- ``moe/{layer}/*``: load, drop fraction, router entropy, capacity, aux and z losses, means over
  micro-batches and processes; per modality (``moe/{layer}/{modality}/*``) the means weighted by
  the modality's tokens, so a micro-batch with three video tokens does not weigh as much as one
  with three thousand; a modality no process saw is left out.
- ``loader/*``: the loader's counts summed over processes.

Steps that are not logged add only their token count and a non-finite-loss flag on the device;
:meth:`TrainMetrics.check_finite` (on log and checkpoint steps) reduces the flag, so a nan or inf
loss on any process stops every process at the same step, naming the first step it appeared.
"""

from __future__ import annotations

import time

import torch

from microturn.trainer.transformer import MODALITIES

__all__ = ["TrainMetrics"]

_MOE_SKIP = ("layer", "by_modality", "kernel")
_MODALITY_STATS = ("load", "router_entropy", "drop_fraction")


def _world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce(x: torch.Tensor, *, maximum: bool = False) -> torch.Tensor:
    if _world() > 1:
        op = torch.distributed.ReduceOp
        torch.distributed.all_reduce(x, op=op.MAX if maximum else op.SUM)
    return x


class TrainMetrics:
    """Metric sums of a training run on one process (see the module docstring).

    Per micro-batch call :meth:`add`; after each optimiser step :meth:`end_step`; on log steps
    :meth:`record` (every process: it is a collective) and on log and checkpoint steps
    :meth:`check_finite`.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._sums: dict[str, torch.Tensor] = {}
        self._micro = 0
        self._first_bad = torch.zeros((), dtype=torch.int64, device=self.device)  # 0: every loss finite
        self._window_tokens = torch.zeros((), dtype=torch.int64, device=self.device)
        self._window_steps = 0
        self._window_began = time.perf_counter()

    def add(self, out, *, step: int, detail: bool) -> None:
        """Count one micro-batch's ``ModelOutput`` of optimiser step ``step`` (1-based).

        ``detail`` (the step will be logged) also sums its losses and MoE statistics."""
        loss = out.loss.detach()
        bad = ~torch.isfinite(loss)
        self._first_bad = torch.where(bad & (self._first_bad == 0), torch.full_like(self._first_bad, step),
                                      self._first_bad)
        self._window_tokens = self._window_tokens + out.tokens["positions"]
        if not detail:
            return
        for name, value in self._terms(out).items():
            value = value.detach().to(self.device, torch.float64)
            self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._micro += 1

    @staticmethod
    def _terms(out) -> dict[str, torch.Tensor]:
        """The additive terms of one micro-batch, the same names and shapes on every process."""
        terms = {"loss": out.loss, "tokens": out.tokens["positions"],
                 **{f"loss/{k}": v for k, v in sorted(out.losses.items())}}
        for n, st in enumerate(out.moe_stats or []):
            layer = int(st.get("layer", n))  # the block's depth, so the keys name the real layer
            for k, v in st.items():
                if k not in _MOE_SKIP and isinstance(v, torch.Tensor | int | float):
                    terms[f"moe/{layer}/{k}"] = torch.as_tensor(v)
            n_experts = int(st["load"].numel())
            by_modality = st.get("by_modality") or {}
            for modality in MODALITIES[1:]:
                entry = by_modality.get(modality)
                base = f"moe/{layer}/{modality}"
                if entry is None:  # absent here, maybe present on another process: zeros keep the layout
                    zero = torch.zeros((), dtype=torch.float64)
                    terms.update({f"{base}/tokens": zero, f"{base}/load": torch.zeros(n_experts, dtype=torch.float64),
                                  f"{base}/router_entropy": zero, f"{base}/drop_fraction": zero,
                                  f"{base}/drop_tokens": zero})
                    continue
                tokens = torch.as_tensor(entry["tokens"]).double()
                terms[f"{base}/tokens"] = tokens
                terms[f"{base}/load"] = entry["load"].double() * tokens
                terms[f"{base}/router_entropy"] = entry["router_entropy"].double() * tokens
                has_drop = "drop_fraction" in entry
                terms[f"{base}/drop_fraction"] = (torch.as_tensor(entry["drop_fraction"]).double() * tokens
                                                  if has_drop else torch.zeros((), dtype=torch.float64))
                terms[f"{base}/drop_tokens"] = tokens if has_drop else torch.zeros((), dtype=torch.float64)
        return terms

    def end_step(self) -> None:
        """One optimiser step is done (its tokens are in the throughput window)."""
        self._window_steps += 1

    def check_finite(self) -> None:
        """Raise ``FloatingPointError`` on every process when any process has seen a loss that is
        nan or inf. A collective: call it on every process at the same steps."""
        first = _all_reduce(self._first_bad.clone(), maximum=True)
        step = int(first.item())
        if step:
            raise FloatingPointError(f"the loss is not finite (nan or inf) at step {step}; lower train.lr or check "
                                     "the data")

    def record(self, step: int, *, lr: float, loader_stats: dict[str, int], flops_per_token: float,
               peak_tflops: float) -> dict:
        """The metrics line of log step ``step``, reduced over processes; resets the sums and the
        throughput window. A collective: every process calls it at the same steps."""
        assert self._micro, "record() of a step whose micro-batches were added without detail"
        names = sorted(self._sums)
        loader_names = list(loader_stats)  # in the loader's own order, the same on every process
        parts = [self._sums[n].reshape(-1) for n in names]
        host = torch.tensor([float(self._micro), *(float(loader_stats[n]) for n in loader_names)],
                            dtype=torch.float64, device=self.device)
        flat = torch.cat([*parts, self._window_tokens.double().reshape(1), host])
        values = _all_reduce(flat).tolist()  # the one host sync of a log step
        seconds = time.perf_counter() - self._window_began
        at, sums = 0, {}
        for name, part in zip(names, parts, strict=True):
            n = part.numel()
            sums[name] = values[at] if self._sums[name].ndim == 0 else values[at:at + n]
            at += n
        window_tokens, micro = values[at], values[at + 1]
        loader = dict(zip(loader_names, values[at + 2:], strict=True))
        rec: dict = {"step": step, "lr": lr, "tokens": int(sums.pop("tokens"))}
        for name in [n for n in sums if n == "loss" or n.startswith("loss/")]:
            rec[name] = sums.pop(name) / micro
        rec["tokens_per_s"] = window_tokens / max(seconds, 1e-9)
        rec["step_s"] = seconds / max(self._window_steps, 1)
        if peak_tflops > 0:
            rec["mfu"] = rec["tokens_per_s"] * flops_per_token / (peak_tflops * 1e12)
        rec.update(self._moe(sums, micro))
        rec.update({f"loader/{k}": int(v) for k, v in loader.items()})
        self._sums, self._micro = {}, 0
        self._window_tokens = torch.zeros_like(self._window_tokens)
        self._window_steps, self._window_began = 0, time.perf_counter()
        return rec

    @staticmethod
    def _moe(sums: dict, micro: float) -> dict:
        out: dict = {}
        modal = {n.rsplit("/", 1)[0] for n in sums if n.count("/") == 3}
        for name, value in sums.items():
            if name.count("/") == 2:  # moe/{layer}/{stat}: a mean over micro-batches and processes
                out[name] = [v / micro for v in value] if isinstance(value, list) else value / micro
        for base in sorted(modal):
            tokens = sums[f"{base}/tokens"]
            if not tokens:
                continue
            out[f"{base}/tokens"] = int(tokens)
            out[f"{base}/load"] = [v / tokens for v in sums[f"{base}/load"]]
            out[f"{base}/router_entropy"] = sums[f"{base}/router_entropy"] / tokens
            if sums[f"{base}/drop_tokens"]:
                out[f"{base}/drop_fraction"] = sums[f"{base}/drop_fraction"] / sums[f"{base}/drop_tokens"]
        return out
