"""Benchmark of the trainer on CPU: DeepSpeed's step against a plain PyTorch loop, and the loader
against the steps.

    python bench/train.py [--config tiny-cpu] [--steps 30] [--repeats 3]

Shards: the bench corpus of ``bench/shard.py`` (the real pyannote call, looped, mixed and
per-speaker) cut by the real shard stage into 25-chunk (5 s) windows.

1. Step time (goal: DeepSpeed at most 1.15x the plain loop). The same model (same seed), the same
   batches held in memory, the same AdamW, warmup-cosine schedule and gradient clipping: once
   through ``deepspeed.initialize`` (ZeRO stage of the config, MoE parameter groups), once as a
   plain loop (``loss.backward(); clip_grad_norm_; opt.step()``). Median step time over
   ``--steps`` steps after 3 warm-up steps, runs alternated ``--repeats`` times, best median.
2. Loader throughput (goal: at least 5x what the steps consume): batches per second of the
   training loader (decode, tokenise, pack; resampled, shuffle buffer) against steps per second.
3. With a GPU: tokens per second and MFU by active parameters on ``small-gpu`` (not run here).
4. Resume (goal: restoring the loader costs at most what one batch costs, whatever the step): the
   time from a new loader to its first batch after ``--steps`` x 3 batches, restored from the
   saved ``state_dict`` (JSON round trip) against replaying those batches as resuming did before
   loaders kept a state; both first batches must be equal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shard import build_corpus  # noqa: E402


def make_shards(tmp: str) -> list[str]:
    from microturn.pipelines.shard.run import run

    rec = os.path.join(tmp, "records")
    build_corpus(rec, conversations=6, seconds=120)
    out = os.path.join(tmp, "shards")
    run(["--input", rec, "--output", out, "--window-chunks", "25", "--splits", "train=1", "--shard-bytes", "4MiB"],
        print_summary=False)
    return sorted(os.path.join(out, "train", n) for n in os.listdir(os.path.join(out, "train")) if n.endswith(".tar"))


def schedule(step: int, t) -> float:
    """The warmup-cosine multiplier DeepSpeed's WarmupCosineLR applies (linear warmup from 0)."""
    import math

    warm = max(1, t.warmup_steps)
    if step < warm:
        return step / warm
    progress = min(1.0, (step - warm) / max(1, t.steps - warm))
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def time_steps(step_fn, batches, n: int) -> float:
    times = []
    for i in range(n + 3):
        started = time.perf_counter()
        step_fn(batches[i % len(batches)], i)
        if i >= 3:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _same_batch(a: dict, b: dict) -> bool:
    return a["keys"] == b["keys"] and all(torch.equal(a[k], b[k]) for k in a if k != "keys")


def resume_figures(make, n: int) -> dict[str, float]:
    """Seconds from a new loader to its first batch: ``fresh`` (the start of a run), after ``n``
    batches ``restored`` from the saved state (through JSON) and ``replayed`` by reading the
    ``n`` batches again. Raises ``AssertionError`` when the three ways disagree on the batch."""
    import json

    saved = make()
    it = iter(saved)
    for _ in range(n):
        next(it)
    state = json.dumps(saved.state_dict())
    expected = next(it)
    started = time.perf_counter()
    next(iter(make()))
    fresh = time.perf_counter() - started
    started = time.perf_counter()
    restored = make()
    restored.load_state_dict(json.loads(state))
    first = next(iter(restored))
    restore = time.perf_counter() - started
    started = time.perf_counter()
    replay = iter(make())
    for _ in range(n):
        next(replay)
    again = next(replay)
    replayed = time.perf_counter() - started
    assert _same_batch(first, expected) and _same_batch(again, expected)
    return {"fresh": fresh, "restored": restore, "replayed": replayed}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny-cpu")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    from microturn.trainer.data import make_loader
    from microturn.trainer.engine import build_engine, init_distributed
    from microturn.trainer.model import InteractionModel
    from microturn.trainer.tokenizer import get_tokenizer
    from microturn.trainer.train_config import load_named

    cfg = load_named(args.config)
    t = cfg.train
    _, world = init_distributed()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        shards = make_shards(tmp)
        tok = get_tokenizer(t.tokenizer)

        def loader():
            return make_loader(shards, tokenizer=tok, batch_size=t.micro_batch, max_len=t.max_len, pack=t.pack,
                               buffer=t.shuffle_buffer, resampled=True, seed=t.seed)

        it = iter(loader())
        batches = [next(it) for _ in range(args.steps + 3)]
        tokens = statistics.mean(int((b["segment_BL"] > 0).sum()) for b in batches)

        ds_model = InteractionModel(cfg.model, ep_size=1, seed=t.seed)
        engine = build_engine(ds_model, t, world_size=world)

        def ds_step(batch, i):
            out = engine(batch, generator=torch.Generator().manual_seed(i))
            engine.backward(out.loss)
            engine.step()

        plain_model = InteractionModel(cfg.model, ep_size=1, seed=t.seed)
        decay = [q for q in plain_model.parameters() if q.ndim >= 2]
        no_decay = [q for q in plain_model.parameters() if q.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=t.lr, betas=(t.beta1, t.beta2),
                                eps=t.eps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, t))

        def plain_step(batch, i):
            out = plain_model(batch, generator=torch.Generator().manual_seed(i))
            out.loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(plain_model.parameters(), t.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)

        best = {"deepspeed": float("inf"), "plain": float("inf")}
        for _ in range(args.repeats):
            for name, fn in (("plain", plain_step), ("deepspeed", ds_step)):
                best[name] = min(best[name], time_steps(fn, batches, args.steps))
        print(f"config {cfg.name}: {sum(q.numel() for q in plain_model.parameters()) / 1e6:.2f}M parameters, "
              f"{t.micro_batch} rows x {t.max_len} positions, {tokens:.0f} tokens per step, "
              f"ZeRO {t.zero_stage}, {torch.get_num_threads()} threads")
        print(f"\n1. step time: plain PyTorch {best['plain'] * 1000:.1f} ms, DeepSpeed "
              f"{best['deepspeed'] * 1000:.1f} ms -> {best['deepspeed'] / best['plain']:.3f}x (goal <= 1.15)")

        n = max(50, args.steps * 3)
        rates = []
        for _ in range(args.repeats):
            it = iter(loader())
            next(it)  # shard opening and the first buffer fill are start-up, not throughput
            started = time.perf_counter()
            for _ in range(n):
                next(it)
            rates.append(n / (time.perf_counter() - started))
        steps_per_s = 1 / best["deepspeed"]
        print(f"\n2. loader: {max(rates):.1f} batches/s, the DeepSpeed steps consume {steps_per_s:.1f} batches/s "
              f"-> {max(rates) / steps_per_s:.1f}x (goal >= 5)")
        print("\n3. GPU figures (tokens/s and MFU on small-gpu): not measured, no GPU on this machine")

        n = args.steps * 3
        r = resume_figures(loader, n)
        print(f"\n4. resume after {n} batches: loader restored from its state {r['restored'] * 1000:.0f} ms, "
              f"replayed {r['replayed'] * 1000:.0f} ms -> {r['replayed'] / r['restored']:.1f}x; a fresh loader's "
              f"first batch {r['fresh'] * 1000:.0f} ms -> restore {r['restored'] / r['fresh']:.2f}x of a fresh start "
              "(goal <= 1.5: the buffer refill and one batch, whatever the step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
