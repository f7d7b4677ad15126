"""The training loop: DeepSpeed steps over the shard loader, metrics, checkpoints, resume.

Metrics (``microturn.trainer.metrics``) go to ``OUTPUT/metrics.jsonl``, one JSON object per
logged step (rank 0), and to a progress bar: the loss and loss per head as means over the step's
micro-batches and processes, tokens per second, MFU by active parameters when the device's peak
is given, per MoE layer the expert load, drop fraction and router entropy, and the loader's
counts (``loader/*``: samples read, skipped, split, ...), which also end the run as one summary
line. Only log steps reduce over processes and copy to the host; other steps only launch work.
With ``train.tensorboard`` the same records also go to TensorBoard event files under
``OUTPUT/tensorboard/`` (``microturn.trainer.tensorboard_log``, rank 0).

Warnings raised while the steps run (the loader warns once per sample it skips) are not printed
over the progress bar: each goes to ``OUTPUT/warnings.log`` (``warnings-rankN.log`` for the other
processes) and the run ends with one line of counts by reason
(``microturn.trainer.warning_tally``); the bar shows how many there were so far.

Checkpoints are DeepSpeed's (``OUTPUT/checkpoints/step{N}``, ``latest`` names the last one),
written whole or not at all (``microturn.trainer.checkpoint``), with the step in the client
state and each process's loader state (``ShardLoader.state_dict``) beside it as JSON. A
resumed run checks the checkpoint's model settings against its config before anything is
loaded, reports changed training settings, keeps the metric lines up to its step and restores
the loader where the checkpoint left it (nothing read before is decoded again), so with the
same number of processes it repeats the uninterrupted run's losses exactly (fp32 on CPU).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import deque
from dataclasses import dataclass

import torch

from microturn.schemas.seeds import seed_from
from microturn.trainer import checkpoint
from microturn.trainer.batch import PAD_VALUES
from microturn.trainer.engine import build_engine, init_distributed
from microturn.trainer.metrics import TrainMetrics
from microturn.trainer.tensorboard_log import ScalarLog, require_tensorboard
from microturn.trainer.train_config import RunConfig, as_dict
from microturn.trainer.warning_tally import WarningTally

log = logging.getLogger(__name__)
CKPT_DIR = "checkpoints"
# Records train() keeps in memory for its caller (a few KB each); metrics.jsonl holds every one.
KEEP_RECORDS = 1000


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def pad_batch(batch: dict, length: int, rows: int | None = None) -> dict:
    """``batch`` with the per-position tensors of ``batch.PAD_VALUES`` padded with their values
    (PAD, segment 0, no video, ...) to ``length`` positions and, with ``rows``, to that many rows.

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
    for name, fill in PAD_VALUES.items():
        value = batch[name]
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


def flow_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """Seed of the flow head's noise for one micro-batch (step counted from 0) of one process: a
    pure function of its place in the run, so a resumed run draws the noise again."""
    return seed_from(seed, "flow", step, micro, rank)


def _is_log_step(step: int, t) -> bool:
    return bool(t.log_every and step % t.log_every == 0) or step == t.steps or step == 1


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What :func:`train` did in this invocation.

    Attributes:
        start: the step it resumed from (0 for a fresh run).
        step: the last step it finished.
        records: the metric records it logged (the lines it added to ``metrics.jsonl``), the last
            :data:`KEEP_RECORDS` of them; the file holds them all.
    """

    start: int
    step: int
    records: list[dict]


def train(cfg: RunConfig, *, shards, output: str, progress: bool = True, stop_after: int | None = None,
          allow_pipe: bool = False) -> TrainResult:
    """Train ``cfg`` on ``shards`` into ``output``; resume from ``output``'s latest checkpoint.

    ``stop_after`` ends the run after that many optimiser steps of this invocation (as if the
    job were killed there, after its checkpoint). ``allow_pipe`` lets ``pipe:`` shard URLs run
    their shell command. Raises ``ValueError`` before any work when the latest checkpoint has
    another model shape or its loader state does not fit this run's shards and settings, and
    ``FloatingPointError`` when a loss is not finite.
    """
    from microturn.trainer.data import LoaderStateMismatch, make_loader
    from microturn.trainer.model import InteractionModel, count_params, flops_per_token
    from microturn.trainer.tokenizer import get_tokenizer

    t = cfg.train
    rank, world = init_distributed()
    if t.tensorboard and rank == 0:
        require_tensorboard()  # missing: ValueError now, before any model is built
    ckpt = os.path.join(output, CKPT_DIR)
    run_config = as_dict(cfg)
    # Before any model is built or any file loaded: a checkpoint of another model shape is an error.
    tag = checkpoint.latest_tag(ckpt)
    loader_state = None
    if tag is not None:
        changed = checkpoint.check_resume(ckpt, tag, run_config)
        if changed and rank == 0:
            log.warning("resuming %s with changed training settings: %s", os.path.join(ckpt, tag), "; ".join(changed))
        loader_state = checkpoint.load_loader_state(ckpt, tag, rank=rank, world=world)
    torch.manual_seed(t.seed)
    tokenizer = get_tokenizer(t.tokenizer)
    if cfg.model.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"model.vocab_size {cfg.model.vocab_size} is smaller than the tokenizer's "
                         f"{tokenizer.vocab_size}")
    # Resolved (and a pipe: URL refused) before the engine is built.
    loader = make_loader(shards, tokenizer=tokenizer, batch_size=t.micro_batch, max_len=t.max_len, pack=t.pack,
                         buffer=t.shuffle_buffer, resampled=True, seed=t.seed, allow_pipe=allow_pipe,
                         user_text_dropout=t.user_text_dropout)
    new_stream = False
    if loader_state is not None:
        try:
            loader.load_state_dict(loader_state)  # another version, rank or world size: ValueError, before work
        except LoaderStateMismatch as exc:
            # Other shards or loader settings, as changed training settings are allowed: the run
            # goes on, on a stream of its own (see below) rather than the one it started.
            new_stream = True
            if rank == 0:
                log.warning("%s: the loader starts a new stream", exc)
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
    if new_stream:
        loader.set_epoch(start)  # the epoch is in every loader seed: not the stream of step 1 again
    with contextlib.ExitStack() as stack:
        tally = stack.enter_context(WarningTally(os.path.join(
            output, "warnings.log" if rank == 0 else f"warnings-rank{rank}.log")))
        scalars = ScalarLog(output, resume_step=start) if t.tensorboard and rank == 0 else None
        if scalars is not None:
            stack.callback(scalars.close)  # flushed and closed however the loop ends
        bar = None
        if progress and rank == 0:
            from tqdm import tqdm

            bar = stack.enter_context(tqdm(total=t.steps, initial=start, desc=f"train {cfg.name}", unit="step",
                                           dynamic_ncols=True))
        step, records = _steps(cfg, engine, loader, output=output, rank=rank, start=start, tag=tag,
                               loader_state=loader_state, stop_after=stop_after, fpt=fpt, bar=bar, tally=tally,
                               scalars=scalars)
    if rank == 0:
        # One line for everything the loader read, split, skipped or cut (no line per sample).
        (log.warning if loader.losses() else log.info)("%s", loader.summary())
    line = tally.summary()
    if line is not None:  # one line for every warning of the steps, by reason
        log.warning("%s%s", "" if rank == 0 else f"rank {rank}: ", line)
    return TrainResult(start=start, step=step, records=list(records))


def _steps(cfg: RunConfig, engine, loader, *, output: str, rank: int, start: int, tag: str | None,
           loader_state: dict | None, stop_after: int | None, fpt: float, bar, tally: WarningTally,
           scalars: ScalarLog | None) -> tuple[int, deque[dict]]:
    """The optimiser steps of :func:`train` from ``start``: the last step done and its records.
    ``bar`` (a tqdm bar or None), ``tally`` and ``scalars`` are closed by the caller."""
    t = cfg.train
    ckpt = os.path.join(output, CKPT_DIR)
    metrics_path = os.path.join(output, "metrics.jsonl")
    run_config = as_dict(cfg)
    batches = iter(loader)
    if tag is not None and loader_state is None:
        # A checkpoint written before loaders saved their state: the loader is deterministic, so
        # reading (and decoding) the batches the earlier steps used again puts this run on the
        # uninterrupted run's batches; exact, but it costs as much loading as those steps did.
        if rank == 0:
            log.warning("%s holds no loader state (written by an older version): reading the %d batch(es) of steps "
                        "1-%d again to reach step %d", os.path.join(ckpt, tag), start * t.grad_accum, start, start + 1)
        for _ in range(start * t.grad_accum):
            next(batches)
    records: deque[dict] = deque(maxlen=KEEP_RECORDS)
    engine.train()
    device = engine.device
    assert device is not None  # set by deepspeed.initialize
    metrics = TrainMetrics(device)
    step = start
    while step < t.steps and (stop_after is None or step - start < stop_after):
        logging_step = _is_log_step(step + 1, t)
        tally.step = step + 1  # the warnings of this step's batches name it
        for micro in range(t.grad_accum):
            batch = next(batches)
            if t.ep_size > 1:
                batch = pad_batch(batch, t.max_len, rows=_max_rows(batch, device))
            batch = _to_device(batch, device)
            # The flow head's noise comes from a generator seeded by (seed, step, micro-batch, rank),
            # not the global random state, so a resumed run draws the same noise.
            gen = torch.Generator(device=device).manual_seed(flow_seed(t.seed, step, micro, rank))
            out = engine(batch, generator=gen)
            engine.backward(out.loss)
            engine.step()
            metrics.add(out, step=step + 1, detail=logging_step)
        step += 1
        metrics.end_step()
        saving = bool(t.ckpt_every and step % t.ckpt_every == 0) or step == t.steps or \
            (stop_after is not None and step - start == stop_after)
        if logging_step or saving:
            metrics.check_finite()  # before a checkpoint could keep weights that a nan reached
        if logging_step:
            rec = metrics.record(step, lr=engine.get_lr()[0], loader_stats={**loader.stats, **loader.work},
                                 flops_per_token=fpt, peak_tflops=t.peak_tflops)
            records.append(rec)
            if rank == 0:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec, sort_keys=True) + "\n")
                if scalars is not None:
                    scalars.write(rec)
                if bar is not None:
                    shown = {"loss": f"{rec['loss']:.3f}", "tok_s": f"{rec['tokens_per_s']:.0f}"}
                    if tally.total:
                        shown["warnings"] = str(tally.total)  # details: OUTPUT/warnings.log
                    bar.set_postfix(shown)
        if bar is not None:
            bar.update(1)
        if saving:
            checkpoint.save(engine, ckpt, f"step{step}", client_state={"step": step}, run_config=run_config,
                            rank=rank, loader_state=loader.state_dict())
    return step, records
