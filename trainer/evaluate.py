"""Held-out loss per head of a trained run (``microturn eval model``).

The run's ``config.json`` rebuilds the model and DeepSpeed's engine loads the latest checkpoint
(or a named tag) without optimiser state; the shards are read once, in order, without
shuffling, and each head's loss is averaged over its targets (text tokens, audio frames), so
the figure does not depend on the batch size. Anything the loader skipped or cut is one line
of the report.

It also scores turn-taking on the same shards (:mod:`microturn.trainer.turn_taking_eval`): the
text head's probability that a model word starts, read teacher-forced at each chunk's
MODEL_MARK position, at shift/hold events found in the samples' VOICED labels, against a
user-only endpointer rule, with bootstrap intervals. The marks are read in the batches the loss
is read from: a window longer than ``train.max_len`` positions is cut into pieces as in
training, and a mark sees only the chunks of its piece before it.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch


def evaluate(run_dir: str, shards, *, tag: str | None = None, max_batches: int | None = None,
             batch_size: int | None = None, calibration_shards=None, user_text: bool = True) -> dict:
    """``{"text", "dmel", "flow", "aux", "z", "batches", "text_targets", "audio_targets", "step",
    "loader", "loader_losses", "turn_taking"}``; ``turn_taking`` is
    :func:`~microturn.trainer.turn_taking_eval.score`'s dict with the counts of
    ``collect_events`` (``unread``, ``duplicates``) merged in.

    ``calibration_shards``: other shards (e.g. the training split), read first and only for the
    turn-taking readings, on whose events the shift/hold threshold is chosen
    (:func:`~microturn.trainer.turn_taking_eval.calibrate`, as VAP picks its thresholds on
    validation data) instead of the fixed one; never the evaluated shards themselves.

    ``user_text=False`` reads every sample without the user's words (both shard sets), as a
    session without a streaming recogniser hears the user: the model's skill from audio alone."""
    from microturn.schemas.config import from_mapping
    from microturn.trainer.checkpoint import latest_tag
    from microturn.trainer.config import ModelConfig
    from microturn.trainer.data import resolve_shards
    from microturn.trainer.engine import build_engine, init_distributed
    from microturn.trainer.loop import CKPT_DIR
    from microturn.trainer.model import InteractionModel
    from microturn.trainer.train_config import TrainConfig
    from microturn.trainer.turn_taking_eval import THRESHOLD, collect_events, score

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
    loader = _loader(shards, train_cfg, batch_size, user_text)
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
    threshold, calibration = THRESHOLD, None
    if calibration_shards:
        overlap = sorted(set(resolve_shards(calibration_shards)) & set(resolve_shards(shards)))
        if overlap:
            raise ValueError(f"--calibrate and --shards share {overlap[0]}: a threshold chosen on the evaluated "
                             "shards would flatter the model; calibrate on other shards (e.g. the training split)")
        threshold, calibration = _calibrate(engine, calibration_shards, train_cfg, batch_size, max_batches, gen,
                                            user_text)
    speak: dict[str, dict[int, float]] = {}  # sample key -> chunk -> P(a model word starts)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: (v.to(engine.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            out = engine(batch, generator=gen)
            _read_marks(engine.module, batch, out.hidden_BLD, speak)
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
    events, left_out = collect_events(_windows(shards, speak))
    turn_taking = {**score(events, threshold=threshold), **left_out,
                   **({"calibration": calibration} if calibration is not None else {})}
    return {"text": sums["text"] / max(1, counts["text"]), "dmel": sums["dmel"] / max(1, counts["audio"]),
            "flow": sums["flow"] / max(1, counts["audio"]), "aux": sums["aux"] / counts["batches"],
            "z": sums["z"] / counts["batches"], "batches": counts["batches"], "text_targets": counts["text"],
            "audio_targets": counts["audio"], "step": int((client or {}).get("step", 0)),
            "loader": loader.summary(), "loader_losses": loader.losses(), "turn_taking": turn_taking,
            "user_text": user_text}


def _loader(shards, train_cfg, batch_size: int | None, user_text: bool):
    """The shards in order, once, batched as the run was trained; without the user's words unless
    ``user_text``."""
    from microturn.trainer.data import make_loader
    from microturn.trainer.tokenizer import get_tokenizer

    return make_loader(shards, tokenizer=get_tokenizer(train_cfg.tokenizer),
                       batch_size=batch_size or train_cfg.micro_batch, max_len=train_cfg.max_len,
                       pack=train_cfg.pack, shuffle_shards=False, buffer=0, resampled=False, seed=0,
                       user_text_dropout=0.0 if user_text else 1.0)


def _calibrate(engine, shards, train_cfg, batch_size, max_batches, gen, user_text: bool) -> tuple[float, dict]:
    """The shift/hold threshold that maximises balanced accuracy on the events of ``shards``, and
    what it was chosen on; the turn-taking readings only (no losses)."""
    from microturn.trainer.turn_taking_eval import calibrate, collect_events

    loader = _loader(shards, train_cfg, batch_size, user_text)
    speak: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: (v.to(engine.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            _read_marks(engine.module, batch, engine(batch, generator=gen).hidden_BLD, speak)
    events, _ = collect_events(_windows(shards, speak))
    return calibrate(events)


def _read_marks(model, batch: dict, hidden_BLD: torch.Tensor, speak: dict[str, dict[int, float]]) -> None:
    """Add to ``speak`` the text head's P(not end-of-text) at every MODEL_MARK of ``batch``, by
    sample key and chunk (``keys`` lists the segments row by row, numbered from 1 in each row)."""
    from microturn.trainer.batch import Kind

    kind_BL, segment_BL, time_BL = batch["kind_BL"], batch["segment_BL"], batch["time_BL"]
    mark_BL = kind_BL == Kind.MODEL_MARK
    if not bool(mark_BL.any()):
        return
    head = model.text_head
    p_U = 1 - torch.softmax(head.logits(hidden_BLD[mark_BL]), dim=-1)[:, head.end_of_text]
    first_B = torch.cumsum(segment_BL.amax(dim=1), 0) - segment_BL.amax(dim=1)  # keys before each row
    b_U = mark_BL.nonzero()[:, 0]
    key_U = (first_B[b_U] + segment_BL[mark_BL] - 1).tolist()
    for k, t, p in zip(key_U, time_BL[mark_BL].tolist(), p_U.tolist(), strict=True):
        speak.setdefault(batch["keys"][k], {})[int(t)] = float(p)


def _windows(shards, speak: dict[str, dict[int, float]]):
    """``(meta, user labels, model labels, P per chunk)`` of every sample in ``speak``, read from
    the shards again (the loader's batches carry no labels); chunks never read are NaN."""
    from microturn.schemas.sample import npy_load
    from microturn.trainer.data import LoaderConfig, resolve_shards
    from microturn.trainer.shard_reader import ReadLimits, ShardError, iter_samples, open_shard

    limits = ReadLimits(max_member_bytes=LoaderConfig.max_member_bytes,
                        max_sample_bytes=LoaderConfig.max_sample_bytes)
    fields = ("json", "user.labels.npy", "model.labels.npy")
    for url in resolve_shards(shards):
        try:
            with open_shard(url) as stream:
                for raw in iter_samples(stream, url, limits, on_member=_ignore, on_sample=_ignore):
                    if not all(f in raw for f in fields):
                        continue  # the loader could not decode it either: it has no marks
                    meta = json.loads(raw["json"])
                    chunks = speak.get(str(meta.get("key")))
                    if chunks is None:
                        continue
                    speak_K = np.full(int(meta["chunks"]), math.nan)
                    speak_K[list(chunks)] = list(chunks.values())
                    yield meta, npy_load(raw["user.labels.npy"]), npy_load(raw["model.labels.npy"]), speak_K
        except (ShardError, OSError):
            continue  # the loader met the same shard, counted it and reported it in its summary line


def _ignore(message: str) -> None:
    """What the loader already counted and reported (skipped members and samples)."""


def render(result: dict, run_dir: str) -> str:
    """The report of :func:`evaluate`'s result, one figure a line."""
    from microturn.trainer.turn_taking_eval import render_lines

    return "\n".join([
        f"held-out loss of {run_dir} at step {result['step']} ({result['batches']} batches, "
        f"{result['text_targets']} text targets, {result['audio_targets']} audio frames)"
        + ("" if result.get("user_text", True) else ", read without the user's words"),
        f"  text CE    {result['text']:.4f}",
        f"  dMel CE    {result['dmel']:.4f}  (per channel, 16 bins)",
        f"  flow MSE   {result['flow']:.4f}",
        f"  MoE aux    {result['aux']:.4f}   router z {result['z']:.4f}",
        *([result["loader"]] if result.get("loader_losses") else []),
        *(render_lines(result["turn_taking"]) if "turn_taking" in result else []),
    ])
