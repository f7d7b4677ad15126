"""The training loop: DeepSpeed steps over the shard loader, metrics, checkpoints, resume.

Metrics go to ``OUTPUT/metrics.jsonl`` (one JSON object per logged step, rank 0) and to the
console with a progress bar: loss per head, tokens per second, MFU by active parameters when
the device's peak is given, and per MoE layer the expert load, drop fraction and router
entropy. Checkpoints are DeepSpeed's (``OUTPUT/checkpoints/step{N}``, ``latest`` names the last
one) with the step in the client state; a resumed run skips the batches it has already used,
so on CPU in fp32 it repeats the uninterrupted run's losses exactly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import torch

from microturn.trainer.engine import build_engine, init_distributed
from microturn.trainer.train_config import RunConfig, as_dict

log = logging.getLogger(__name__)
CKPT_DIR = "checkpoints"


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def pad_batch(batch: dict, length: int) -> dict:
    """``batch`` with every per-position tensor padded (PAD, segment 0, no video) to ``length``.

    Expert parallelism needs the same token count on every process (the all-to-all exchanges
    fixed-capacity buffers computed from it), so those runs use rows of exactly ``max_len``.
    """
    L = batch["kind_BL"].shape[1]
    if L >= length:
        return batch
    out = dict(batch)
    for name, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 2 and name.endswith(("_BL", "_BLM")):
            fill = -1 if name == "video_BL" else 0
            pad = value.new_full((value.shape[0], length - L, *value.shape[2:]), fill)
            out[name] = torch.cat([value, pad], dim=1)
    return out


def _scalar(v) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


def step_record(step: int, out, *, tokens: int, seconds: float, lr: float, flops_per_token: float,
                peak_tflops: float) -> dict:
    """One metrics line: losses per head, throughput, MFU, MoE statistics per layer."""
    rec = {"step": step, "lr": lr, "loss": _scalar(out.loss),
           **{f"loss/{k}": _scalar(v) for k, v in sorted(out.losses.items())},
           "tokens": tokens, "tokens_per_s": tokens / max(seconds, 1e-9), "step_s": seconds}
    if peak_tflops > 0:
        rec["mfu"] = rec["tokens_per_s"] * flops_per_token / (peak_tflops * 1e12)
    for n, st in enumerate(out.moe_stats or []):
        i = int(st.get("layer", n))  # the block's depth, so the keys name the real layer
        flat = {k: v for k, v in st.items() if k not in ("layer", "by_modality")}
        for modality, sub in (st.get("by_modality") or {}).items():
            flat.update({f"{modality}/{k}": v for k, v in sub.items()})
        for k, v in flat.items():
            if isinstance(v, torch.Tensor):
                v = v.detach().float().cpu()
                rec[f"moe/{i}/{k}"] = v.tolist() if v.ndim else float(v)
            else:
                rec[f"moe/{i}/{k}"] = v
    return rec


def train(cfg: RunConfig, *, shards, output: str, progress: bool = True, stop_after: int | None = None) -> list[dict]:
    """Train ``cfg`` on ``shards`` into ``output``; resume from ``output``'s latest checkpoint.

    ``stop_after`` ends the run after that many optimiser steps of this invocation (as if the
    job were killed there, after its checkpoint). Returns the metric records of this invocation.
    """
    from microturn.trainer.data import make_loader
    from microturn.trainer.model import InteractionModel, count_params, flops_per_token
    from microturn.trainer.tokenizer import get_tokenizer

    t = cfg.train
    rank, world = init_distributed()
    torch.manual_seed(t.seed)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
        else torch.device("cpu")
    tokenizer = get_tokenizer(t.tokenizer)
    if cfg.model.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"model.vocab_size {cfg.model.vocab_size} is smaller than the tokenizer's "
                         f"{tokenizer.vocab_size}")
    model = InteractionModel(cfg.model, ep_size=t.ep_size, seed=t.seed)
    engine = build_engine(model, t, world_size=world)
    fpt = flops_per_token(cfg.model, seq_len=t.max_len)
    if rank == 0:
        os.makedirs(output, exist_ok=True)
        with open(os.path.join(output, "config.json"), "w") as f:
            json.dump({**as_dict(cfg), "params": count_params(model), "world_size": world}, f, indent=2,
                      sort_keys=True)
    start = 0
    ckpt = os.path.join(output, CKPT_DIR)
    if os.path.exists(os.path.join(ckpt, "latest")):
        _, client = engine.load_checkpoint(ckpt)
        start = int((client or {}).get("step", 0))
        if rank == 0:
            log.warning("resumed from %s at step %d", ckpt, start)
    loader = make_loader(shards, tokenizer=tokenizer, batch_size=t.micro_batch, max_len=t.max_len, pack=t.pack,
                         buffer=t.shuffle_buffer, resampled=True, seed=t.seed)
    batches = iter(loader)
    # Batches already consumed by the steps before the checkpoint: the loader is deterministic,
    # so skipping them puts the resumed run on the same batches as an uninterrupted one.
    for _ in range(start * t.grad_accum):
        next(batches)
    records: list[dict] = []
    metrics_path = os.path.join(output, "metrics.jsonl")
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=t.steps, initial=start, desc=f"train {cfg.name}", unit="step", dynamic_ncols=True)
    engine.train()
    step = start
    while step < t.steps and (stop_after is None or step - start < stop_after):
        began, tokens = time.perf_counter(), 0
        for micro in range(t.grad_accum):
            batch = next(batches)
            if t.ep_size > 1:
                batch = pad_batch(batch, t.max_len)
            batch = _to_device(batch, engine.device)
            # The flow head's noise comes from a generator seeded by (seed, step, micro-batch, rank),
            # not the global random state, so a resumed run draws the same noise.
            gen = torch.Generator(device=engine.device).manual_seed(
                hash((t.seed, step, micro, rank)) & 0x7FFF_FFFF_FFFF_FFFF)
            out = engine(batch, generator=gen)
            engine.backward(out.loss)
            engine.step()
            tokens += int(out.tokens["positions"])
        step += 1
        seconds = time.perf_counter() - began
        if not math.isfinite(_scalar(out.loss)):
            raise FloatingPointError(f"loss is {_scalar(out.loss)} at step {step}; lower train.lr or check the data")
        rec = step_record(step, out, tokens=tokens * world, seconds=seconds, lr=engine.get_lr()[0],
                          flops_per_token=fpt, peak_tflops=t.peak_tflops)
        records.append(rec)
        if rank == 0 and (t.log_every and step % t.log_every == 0 or step == t.steps or step == 1):
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}")
        if (t.ckpt_every and step % t.ckpt_every == 0) or step == t.steps or \
                (stop_after is not None and step - start == stop_after):
            engine.save_checkpoint(ckpt, tag=f"step{step}", client_state={"step": step})
    if bar is not None:
        bar.close()
    return records
