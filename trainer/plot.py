"""``microturn train plot RUN``: PNG curves of a run's ``metrics.jsonl``.

Three panels: the loss of each head against the step, tokens per second, and per MoE layer
the share of tokens taken by its busiest expert (1/E is perfect balance) with the drop fraction.
"""

from __future__ import annotations

import argparse
import json
import os


def read_metrics(run_dir: str) -> list[dict]:
    """The records of ``RUN/metrics.jsonl``; ValueError when there are none."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist: give the --output of `microturn train`")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise ValueError(f"{path} has no records yet")
    # A resumed run may repeat steps after its checkpoint; the last record of a step wins.
    return sorted({r["step"]: r for r in rows}.values(), key=lambda r: r["step"])


def plot_run(run_dir: str, out_png: str) -> str:
    from matplotlib.figure import Figure

    rows = read_metrics(run_dir)
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_loss, ax_tok, ax_moe = fig.subplots(1, 3)
    heads = sorted({k for r in rows for k in r if k.startswith("loss/")})
    ax_loss.plot(steps, [r["loss"] for r in rows], label="total", color="black")
    for k in heads:
        ax_loss.plot(steps, [r.get(k, float("nan")) for r in rows], label=k[5:])
    ax_loss.set(xlabel="step", ylabel="loss", title="loss per head")
    ax_loss.legend(fontsize=7)
    ax_tok.plot(steps, [r["tokens_per_s"] for r in rows])
    ax_tok.set(xlabel="step", ylabel="tokens / s", title="throughput")
    layers = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("moe/")}, key=int)  # block depths
    for layer in layers:
        load = [max(r.get(f"moe/{layer}/load") or [float("nan")]) for r in rows]
        ax_moe.plot(steps, load, label=f"block {layer} max load")
        drops = [r.get(f"moe/{layer}/drop_fraction", float("nan")) for r in rows]
        ax_moe.plot(steps, drops, linestyle="--", label=f"block {layer} dropped")
    ax_moe.set(xlabel="step", ylabel="share of tokens", title="MoE: busiest expert, drops")
    if layers:
        ax_moe.legend(fontsize=7)
    fig.savefig(out_png, dpi=110)
    return out_png


def main(argv: list[str]) -> int:
    from microturn.cli.logs import add_level_flag

    p = argparse.ArgumentParser(prog="microturn train plot", description="PNG curves of a training run")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--output", help="PNG path (default RUN/curves.png)")
    add_level_flag(p)
    args = p.parse_args(argv)
    png = plot_run(args.run, args.output or os.path.join(args.run, "curves.png"))
    print(f"wrote {png}")
    return 0
