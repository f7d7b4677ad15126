"""One process of the metrics reduction check (run by torchrun with 2 processes, gloo).

Each rank adds two micro-batches whose losses, token counts and routing statistics depend on
the rank, then takes the record of the step; rank 1 alone has a nan loss in a later step, which
``check_finite`` must report on both ranks. Writes what rank 0 saw as JSON.

    python -m torch.distributed.run --nproc_per_node 2 metrics_worker.py OUT.json
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import torch


def micro_output(rank: int, micro: int, *, loss: float | None = None) -> SimpleNamespace:
    """A ModelOutput's metric fields for (rank, micro); rank 1's second micro-batch has video."""
    value = 1.0 + 10 * rank + micro if loss is None else loss
    by_modality = {"text": {"tokens": torch.tensor(10 + rank), "load": torch.tensor([0.25, 0.75]),
                            "router_entropy": torch.tensor(0.5 + rank), "drop_fraction": torch.tensor(0.0)}}
    if rank == 1 and micro == 1:
        by_modality["video"] = {"tokens": torch.tensor(30), "load": torch.tensor([1.0, 0.0]),
                                "router_entropy": torch.tensor(0.1), "drop_fraction": torch.tensor(0.5)}
    stats = {"layer": 1, "load": torch.tensor([0.5, 0.5]) if rank == 0 else torch.tensor([0.0, 1.0]),
             "drop_fraction": torch.tensor(0.1 * rank), "router_entropy": torch.tensor(0.6), "capacity": 8,
             "aux_loss": torch.tensor(0.01), "z_loss": torch.tensor(0.02), "by_modality": by_modality}
    return SimpleNamespace(loss=torch.tensor(value), losses={"text": torch.tensor(2 * value)},
                           tokens={"positions": torch.tensor(100 * (rank + 1) + micro)}, moe_stats=[stats])


def main() -> None:
    from microturn.trainer.engine import init_distributed, shutdown_distributed
    from microturn.trainer.metrics import TrainMetrics

    rank, world = init_distributed()
    metrics = TrainMetrics("cpu")
    for micro in range(2):
        metrics.add(micro_output(rank, micro), step=1, detail=True)
    metrics.end_step()
    metrics.check_finite()
    rec = metrics.record(1, lr=0.1, loader_stats={"samples": 3 + rank}, flops_per_token=0.0, peak_tflops=0.0)
    metrics.add(micro_output(rank, 0, loss=float("nan") if rank == 1 else 1.0), step=2, detail=False)
    metrics.end_step()
    try:
        metrics.check_finite()
        error = None
    except FloatingPointError as exc:
        error = str(exc)
    if rank == 0:
        with open(sys.argv[1], "w") as f:
            json.dump({"world": world, "record": rec, "error": error}, f)
    elif error is None:
        raise SystemExit("rank 1 did not stop on its own nan loss")
    shutdown_distributed()


if __name__ == "__main__":
    main()
