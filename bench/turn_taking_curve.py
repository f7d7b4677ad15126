"""Turn-taking against training steps: shift/hold and the duplex metrics at every checkpoint of a run.

    python bench/turn_taking_curve.py --run RUN --held GLOB --calibrate GLOB [--items ITEMS] --out DIR

For each checkpoint ``stepN`` of ``RUN`` (a run trained with ``train.ckpt_every``, e.g. by
``bench/turn_taking.py --ckpt-every 400``), in step order:

1. ``microturn eval model --tag stepN --json`` on the held-out shards, its shift/hold threshold
   chosen on the ``--calibrate`` (training) shards: balanced accuracy, AUC and the threshold;
2. with ``--items``: ``microturn eval interaction --systems model --tag stepN --json`` with that
   threshold as the session's ``speak_threshold`` (the recipe's reading of the text head):
   smooth turn-taking TOR and latency, pause-handling TOR, the barge-in yield rate and VAP's
   shift/hold balanced accuracy in free-running sessions;
3. the training loss: the mean of the losses logged (``metrics.jsonl``) since the previous
   checkpoint.

Writes ``DIR/curve.json`` (one row per checkpoint) and ``DIR/curve.png`` (the figures against the
step, the goals drawn in) and prints the table. A checkpoint already in ``curve.json`` is not
evaluated again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

GOALS = {"held-out shift/hold BA": 0.75, "smooth TOR": 0.8, "pause TOR": 0.3, "yield rate": 0.7}


def _microturn_json(*args: str) -> dict:
    """Run ``microturn`` with ``args`` (no shell) and parse its standard output as JSON."""
    exe = os.path.join(os.path.dirname(sys.executable), "microturn")
    proc = subprocess.run([exe, *args, "--json"], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"microturn {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _tags(run: str) -> list[tuple[int, str]]:
    folder = os.path.join(run, "checkpoints")
    if not os.path.isdir(folder):
        sys.exit(f"{folder} does not exist: give the --output of `microturn train`")
    found = sorted((int(m.group(1)), name) for name in os.listdir(folder)
                   if (m := re.fullmatch(r"step(\d+)", name)) and os.path.isdir(os.path.join(folder, name)))
    if len(found) < 2:
        sys.exit(f"{folder} holds {len(found)} checkpoint(s); a curve needs a run trained with train.ckpt_every")
    return found


def _losses(run: str) -> dict[int, float]:
    """Logged step -> loss (``metrics.jsonl``: one batch's loss every ``log_every`` steps)."""
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        return {r["step"]: r["loss"] for r in map(json.loads, filter(str.strip, f))}


def _window_loss(losses: dict[int, float], after: int, upto: int) -> float | None:
    """Mean of the losses logged in steps (after, upto]: one batch's loss moves by 2x between
    logs (0.996 at step 1600, 1.568 at 2000 in the recipe's run), the mean over a checkpoint's
    8 logs does not."""
    window = [v for step, v in losses.items() if after < step <= upto]
    return sum(window) / len(window) if window else None


def _point(args: argparse.Namespace, step: int, tag: str, loss: float | None) -> dict:
    started = time.perf_counter()
    model = _microturn_json("eval", "model", "--checkpoint", args.run, "--tag", tag, "--shards", args.held,
                            "--calibrate", args.calibrate)["turn_taking"]
    row = {"step": step, "tag": tag, "train_loss": loss, "threshold": model["threshold"],
           "held-out shift/hold BA": model["model"]["balanced_accuracy"]["value"],
           "held-out shift/hold AUC": model["model"]["auc"]["value"]}
    if args.items:
        settings = os.path.join(args.out, f"{tag}_session.toml")
        with open(settings, "w", encoding="utf-8") as f:
            f.write(f"speak_threshold = {model['threshold']}\n")
        report = _microturn_json("eval", "interaction", "--checkpoint", args.run, "--tag", tag, "--items",
                                 args.items, "--output", os.path.join(args.out, tag), "--systems", "model",
                                 "--config", settings, "--no-progress")["model"]
        smooth, pause = report.get("smooth_turn_taking", {}), report.get("pause_handling", {})
        barge, vap = report.get("user_interruption", {}), report.get("vap", {}).get("shift_hold", {})
        row.update({"smooth TOR": smooth.get("tor"), "smooth latency (s)": smooth.get("latency_s"),
                    "pause TOR": pause.get("tor"), "yield rate": barge.get("yield_rate"),
                    "yield n": barge.get("yield_n"), "session VAP BA": vap.get("balanced_accuracy")})
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def _plot(rows: list[dict], path: str, losses: dict[int, float] | None = None) -> None:
    from matplotlib.figure import Figure

    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    ax_sh, ax_fdb, ax_loss = fig.subplots(1, 3)
    for ax, keys, title in ((ax_sh, ("held-out shift/hold BA", "held-out shift/hold AUC", "session VAP BA"),
                             "shift/hold"),
                            (ax_fdb, ("smooth TOR", "pause TOR", "yield rate"), "free-running sessions")):
        for key in keys:
            values = [r.get(key) for r in rows]
            if any(v is not None for v in values):
                line, = ax.plot(steps, [float("nan") if v is None else v for v in values], marker="o", label=key)
                if key in GOALS:
                    ax.axhline(GOALS[key], color=line.get_color(), linestyle=":", linewidth=1)
        ax.set(xlabel="training step", ylim=(-0.02, 1.02), title=f"{title} (dotted: goals)")
        ax.legend(fontsize=7)
    if losses:
        ax_loss.plot(list(losses), list(losses.values()), color="0.75", linewidth=1, label="one batch (logged)")
    ax_loss.plot(steps, [float("nan") if r["train_loss"] is None else r["train_loss"] for r in rows], marker="o",
                 label="mean since the previous checkpoint")
    means = [r["train_loss"] for r in rows if r["train_loss"] is not None]
    if means:  # the first logs (10 at step 1) would flatten the rest
        ax_loss.set_ylim(0, 1.3 * max(means))
    ax_loss.set(xlabel="training step", ylabel="loss", title="training loss")
    ax_loss.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0], allow_abbrev=False)
    p.add_argument("--run", required=True, help="a `microturn train` output with checkpoints every K steps")
    p.add_argument("--held", required=True, help="held-out shard glob (eval model --shards)")
    p.add_argument("--calibrate", required=True, help="training shard glob (eval model --calibrate)")
    p.add_argument("--items", help="duplex evaluation items (eval items output) for the free-running figures")
    p.add_argument("--out", required=True, help="folder for curve.json, curve.png and the sessions' answers")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "curve.json")
    done: dict[str, dict] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            done = {r["tag"]: r for r in json.load(f)}
    losses = _losses(args.run)
    rows, previous = [], 0
    for step, tag in _tags(args.run):
        loss = _window_loss(losses, previous, step)
        rows.append({**(done.get(tag) or _point(args, step, tag, loss)), "train_loss": loss})
        previous = step
        print(f"{tag}: " + ", ".join(f"{k} {_cell(v)}" for k, v in rows[-1].items() if k not in ("step", "tag")),
              flush=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    _plot(rows, os.path.join(args.out, "curve.png"), losses)
    print(f"wrote {path} and {os.path.join(args.out, 'curve.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
