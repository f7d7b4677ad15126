"""The training loop: DeepSpeed steps over the shard loader, metrics, checkpoints, resume.

Metrics go to ``OUTPUT/metrics.jsonl`` (one JSON object per logged step, rank 0) and to the
console with a progress bar: loss per head, tokens per second, MFU by active parameters when
the device's peak is given, per MoE layer the expert load, drop fraction and router entropy,
and the loader's counts (``loader/*``: samples read, skipped, split, ...), which also end the
run as one summary line. Checkpoints are DeepSpeed's (``OUTPUT/checkpoints/step{N}``, ``latest``
names the last one), written whole or not at all (``microturn.trainer.checkpoint``), with the
step in the client state. A resumed run checks the checkpoint's model settings against its
config before anything is loaded, reports changed training settings, keeps the metric lines up
to its step and skips the batches it has already used, so with the same number of processes
it repeats the uninterrupted run's losses exactly (fp32 on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import torch

from microturn.trainer import checkpoint
from microturn.trainer.engine import build_engine, init_distributed
from microturn.trainer.train_config import RunConfig, as_dict

log = logging.getLogger(__name__)
CKPT_DIR = "checkpoints"


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def pad_batch(batch: dict, length: int, rows: int | None = None) -> dict:
    """``batch`` with every per-position tensor padded (PAD, segment 0, no video) to ``length``
    positions and, with ``rows``, to that many rows.

    Expert parallelism needs the same token count on every process (the all-to-all exchanges
    fixed-capacity buffers computed from it), so those runs use rows of exactly ``max_len``, and
    as many rows as the process with the most (packing and long samples split over rows make
    the row count vary).
    """
    B, L = batch["kind_BL"].shape
    rows = B if rows is None else rows
    if L >= length and B >= rows:
        return batch
    out = dict(batch)
    for name, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 2 and name.endswith(("_BL", "_BLM")):
            fill = -1 if name == "video_BL" else 0
            if L < length:
                value = torch.cat([value, value.new_full((B, length - L, *value.shape[2:]), fill)], dim=1)
            if B < rows:
                value = torch.cat([value, value.new_full((rows - B, *value.shape[1:]), fill)], dim=0)
            out[name] = value
    return out


def _max_rows(batch: dict, device: torch.device) -> int:
    """The largest row count of this step's batches over all processes."""
    rows = torch.tensor([batch["kind_BL"].shape[0]], device=device)
    torch.distributed.all_reduce(rows, op=torch.distributed.ReduceOp.MAX)
    return int(rows.item())


def _keep_metrics_until(path: str, step: int) -> None:
    """Drop the metric lines after ``step`` (written by a run killed after its checkpoint), so a
    resumed run's file holds each step once."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.replace(tmp, path)


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


def train(cfg: RunConfig, *, shards, output: str, progress: bool = True, stop_after: int | None = None,
          allow_pipe: bool = False) -> list[dict]:
    """Train ``cfg`` on ``shards`` into ``output``; resume from ``output``'s latest checkpoint.

    ``stop_after`` ends the run after that many optimiser steps of this invocation (as if the
    job were killed there, after its checkpoint). ``allow_pipe`` lets ``pipe:`` shard URLs run
    their shell command. Raises ``ValueError`` before any work when the latest checkpoint has
    another model shape. Returns the metric records of this invocation.
    """
    from microturn.trainer.data import make_loader
    from microturn.trainer.model import InteractionModel, count_params, flops_per_token
    from microturn.trainer.tokenizer import get_tokenizer

    t = cfg.train
    rank, world = init_distributed()
    ckpt = os.path.join(output, CKPT_DIR)
    run_config = as_dict(cfg)
    # Before any model is built or any file loaded: a checkpoint of another model shape is an error.
    tag = checkpoint.latest_tag(ckpt)
    if tag is not None:
        changed = checkpoint.check_resume(ckpt, tag, run_config)
        if changed and rank == 0:
            log.warning("resuming %s with changed training settings: %s", os.path.join(ckpt, tag), "; ".join(changed))
    torch.manual_seed(t.seed)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
        else torch.device("cpu")
    tokenizer = get_tokenizer(t.tokenizer)
    if cfg.model.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"model.vocab_size {cfg.model.vocab_size} is smaller than the tokenizer's "
                         f"{tokenizer.vocab_size}")
    # Resolved (and a pipe: URL refused) before the engine is built.
    loader = make_loader(shards, tokenizer=tokenizer, batch_size=t.micro_batch, max_len=t.max_len, pack=t.pack,
                         buffer=t.shuffle_buffer, resampled=True, seed=t.seed, allow_pipe=allow_pipe)
    model = InteractionModel(cfg.model, ep_size=t.ep_size, seed=t.seed)
    engine = build_engine(model, t, world_size=world)
    fpt = flops_per_token(cfg.model, seq_len=t.max_len)
    metrics_path = os.path.join(output, "metrics.jsonl")
    if rank == 0:
        os.makedirs(output, exist_ok=True)
        gone = checkpoint.clear_partial(ckpt)
        if gone:
            log.warning("removed %s: checkpoint(s) a killed run left half-written", ", ".join(gone))
        with open(os.path.join(output, "config.json"), "w") as f:
            json.dump({**run_config, "params": count_params(model), "world_size": world}, f, indent=2,
                      sort_keys=True)
    start = 0
    if tag is not None:
        loaded, client = engine.load_checkpoint(ckpt, tag=tag)
        if loaded is None:
            raise ValueError(f"DeepSpeed could not load {os.path.join(ckpt, tag)}")
        start = int((client or {}).get("step", 0))
        if rank == 0:
            log.warning("resumed from %s at step %d", os.path.join(ckpt, tag), start)
    if rank == 0:
        _keep_metrics_until(metrics_path, start)
    batches = iter(loader)
    # Batches already consumed by the steps before the checkpoint: the loader is deterministic,
    # so skipping them puts the resumed run on the same batches as an uninterrupted one.
    for _ in range(start * t.grad_accum):
        next(batches)
    records: list[dict] = []
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
                batch = pad_batch(batch, t.max_len, rows=_max_rows(batch, engine.device))
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
        rec.update({f"loader/{k}": v for k, v in loader.stats.items()})
        records.append(rec)
        if rank == 0 and (t.log_every and step % t.log_every == 0 or step == t.steps or step == 1):
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}")
        if (t.ckpt_every and step % t.ckpt_every == 0) or step == t.steps or \
                (stop_after is not None and step - start == stop_after):
            checkpoint.save(engine, ckpt, f"step{step}", client_state={"step": step}, run_config=run_config,
                            rank=rank)
    if bar is not None:
        bar.close()
    if rank == 0:
        # One line for everything the loader read, split, skipped or cut (no line per sample).
        (log.warning if loader.losses() else log.info)("%s", loader.summary())
    return records
