"""Held-out loss per head of a trained run (``microturn eval model``).

The run's ``config.json`` rebuilds the model and DeepSpeed's engine loads the latest checkpoint
(or a named tag) without optimiser state; the shards are read once, in order, without
shuffling, and each head's loss is averaged over its targets (text tokens, audio frames), so
the figure does not depend on the batch size. Anything the loader skipped or cut is one line
of the report.
"""

from __future__ import annotations

import json
import os

import torch


def evaluate(run_dir: str, shards, *, tag: str | None = None, max_batches: int | None = None,
             batch_size: int | None = None) -> dict:
    """``{"text", "dmel", "flow", "aux", "z", "batches", "text_targets", "audio_targets", "step"}``."""
    from microturn.schemas.config import from_mapping
    from microturn.trainer.checkpoint import latest_tag
    from microturn.trainer.config import ModelConfig
    from microturn.trainer.data import make_loader
    from microturn.trainer.engine import build_engine, init_distributed
    from microturn.trainer.loop import CKPT_DIR
    from microturn.trainer.model import InteractionModel
    from microturn.trainer.tokenizer import get_tokenizer
    from microturn.trainer.train_config import TrainConfig

    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist: give the --output directory of `microturn train`")
    with open(path) as f:
        saved = json.load(f)
    model_cfg = from_mapping(ModelConfig, saved["model"], where=f"{path} model")
    train_cfg = from_mapping(TrainConfig, saved["train"], where=f"{path} train")
    if train_cfg.ep_size != 1:
        raise ValueError(f"the run used ep_size {train_cfg.ep_size}: evaluate it with the same number of processes "
                         "under torchrun (one process holds only ep_size 1 checkpoints)")
    ckpt = os.path.join(run_dir, CKPT_DIR)
    tag = tag or latest_tag(ckpt)  # only a complete checkpoint; before any model is built
    if tag is None:
        raise ValueError(f"no checkpoint under {ckpt}")
    loader = make_loader(shards, tokenizer=get_tokenizer(train_cfg.tokenizer),
                         batch_size=batch_size or train_cfg.micro_batch, max_len=train_cfg.max_len,
                         pack=train_cfg.pack, shuffle_shards=False, buffer=0, resampled=False, seed=0)
    init_distributed()
    model = InteractionModel(model_cfg, ep_size=1, seed=train_cfg.seed)
    engine = build_engine(model, train_cfg, world_size=torch.distributed.get_world_size())
    loaded, client = engine.load_checkpoint(ckpt, tag=tag, load_optimizer_states=False,
                                            load_lr_scheduler_states=False)
    if loaded is None:
        raise ValueError(f"no checkpoint under {ckpt}" + (f" with tag {tag}" if tag else ""))
    engine.eval()
    sums = {k: 0.0 for k in ("text", "dmel", "flow", "aux", "z")}
    counts = {"text": 0, "audio": 0, "batches": 0}
    gen = torch.Generator(device=engine.device).manual_seed(0)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: (v.to(engine.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            out = engine(batch, generator=gen)
            n_text, n_audio = int(out.tokens["text_targets"]), int(out.tokens["audio_targets"])
            sums["text"] += float(out.losses["text"]) * n_text
            sums["dmel"] += float(out.losses["dmel"]) * n_audio
            sums["flow"] += float(out.losses["flow"]) * n_audio
            sums["aux"] += float(out.losses["aux"])
            sums["z"] += float(out.losses["z"])
            counts["text"] += n_text
            counts["audio"] += n_audio
            counts["batches"] += 1
    if not counts["batches"]:
        raise ValueError(f"no batch could be read from {shards}: {loader.summary()}")
    return {"text": sums["text"] / max(1, counts["text"]), "dmel": sums["dmel"] / max(1, counts["audio"]),
            "flow": sums["flow"] / max(1, counts["audio"]), "aux": sums["aux"] / counts["batches"],
            "z": sums["z"] / counts["batches"], "batches": counts["batches"], "text_targets": counts["text"],
            "audio_targets": counts["audio"], "step": int((client or {}).get("step", 0)),
            "loader": loader.summary(), "loader_losses": loader.losses()}


def render(result: dict, run_dir: str) -> str:
    return "\n".join([
        f"held-out loss of {run_dir} at step {result['step']} ({result['batches']} batches, "
        f"{result['text_targets']} text targets, {result['audio_targets']} audio frames)",
        f"  text CE    {result['text']:.4f}",
        f"  dMel CE    {result['dmel']:.4f}  (per channel, 16 bins)",
        f"  flow MSE   {result['flow']:.4f}",
        f"  MoE aux    {result['aux']:.4f}   router z {result['z']:.4f}",
        *([result["loader"]] if result.get("loader_losses") else []),
    ])
