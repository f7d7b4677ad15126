"""A trained run's settings and weights, read without DeepSpeed (for inference).

A run directory (``microturn train --output RUN``) holds ``config.json`` and
``checkpoints/step{N}/``, where DeepSpeed wrote ``mp_rank_00_model_states.pt`` (every weight but
the experts', under ``module``) and one ``layer_{l}_expert_{e}_mp_rank_00_model_states.pt`` per
MoE layer l and expert e, numbered globally whatever the expert-parallel size of the run. So a
checkpoint made with experts spread over several processes loads whole into one process.
Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, never
pickled code.

Shape suffixes: none (state dicts map names to tensors of the model's own shapes).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from microturn.schemas.config import from_mapping
from microturn.trainer.batch import SEQUENCE_LAYOUT, layout_refusal
from microturn.trainer.checkpoint import CONFIG_NAME, latest_tag, read_json_object
from microturn.trainer.config import ModelConfig
from microturn.trainer.loop import CKPT_DIR
from microturn.trainer.train_config import TrainConfig

MODEL_FILE = "mp_rank_00_model_states.pt"
_EXPERT_FILE = re.compile(r"^layer_(\d+)_expert_(\d+)_mp_rank_00_model_states\.pt$")


@dataclass(frozen=True, kw_only=True)
class TrainedRun:
    """What inference needs from a run: its settings, which checkpoint, and its weights."""

    run_dir: str
    tag: str
    step: int
    model: ModelConfig
    train: TrainConfig
    state_dict: dict[str, torch.Tensor]


def _load(path: str) -> dict:
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise ValueError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(value).__name__}")
    return value


def load_trained_run(run_dir: str, *, tag: str | None = None) -> TrainedRun:
    """Settings and weights of ``run_dir`` at checkpoint ``tag`` (default: the latest).

    Raises ``ValueError`` with the reason for: a folder that is not a run, a run without a
    complete checkpoint, a checkpoint of another sequence layout (``batch.SEQUENCE_LAYOUT``; a
    model of another layout cannot be decoded), settings this version does not know, and
    missing or unreadable weight files.
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir!r} is not a directory: give the --output directory of `microturn train`")
    ckpt = os.path.join(run_dir, CKPT_DIR)
    if tag is None:
        tag = latest_tag(ckpt) if os.path.isdir(ckpt) else None
        if tag is None:
            raise ValueError(f"{run_dir!r} has no complete checkpoint under {CKPT_DIR}/ (train it with ckpt_every "
                             "set, or until its last step)")
    folder = os.path.join(ckpt, tag)
    config_path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(config_path):
        raise ValueError(f"{folder} is not a complete checkpoint of this trainer (no {CONFIG_NAME})")
    saved = read_json_object(config_path, "the run's settings")
    layout = saved.get("layout", 1)
    if layout != SEQUENCE_LAYOUT:
        raise ValueError(f"{folder} was trained on sequence layout {layout}; this version decodes layout "
                         f"{SEQUENCE_LAYOUT} only ({layout_refusal(layout)}): retrain the run with this version")
    for section in ("model", "train"):
        if not isinstance(saved.get(section), dict):
            raise ValueError(f"{config_path}: no [{section}] settings")
    model_cfg = from_mapping(ModelConfig, saved["model"], where=f"{config_path} model")
    train_cfg = from_mapping(TrainConfig, saved["train"], where=f"{config_path} train")

    model_path = os.path.join(folder, MODEL_FILE)
    if not os.path.isfile(model_path):
        raise ValueError(f"{folder} has no {MODEL_FILE}")
    states = _load(model_path)
    module = states.get("module")
    if not isinstance(module, dict):
        raise ValueError(f"{model_path}: no 'module' state dict")
    state = dict(module)
    experts = sorted(n for n in os.listdir(folder) if _EXPERT_FILE.match(n))
    expected = model_cfg.moe_layers * model_cfg.n_experts
    if len(experts) != expected:
        raise ValueError(f"{folder} holds {len(experts)} expert file(s); its model has {model_cfg.moe_layers} MoE "
                         f"layer(s) of {model_cfg.n_experts} experts ({expected} files)")
    for name in experts:
        part = _load(os.path.join(folder, name))
        clash = sorted(set(part) & set(state))
        if clash:
            raise ValueError(f"{folder}/{name} repeats weights already read: {clash[:3]}")
        state.update(part)
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{model_path}: entries that are not tensors: {bad[:5]}")
    step = states.get("step", states.get("global_steps", 0))
    return TrainedRun(run_dir=run_dir, tag=tag, step=int(step) if isinstance(step, int) else 0, model=model_cfg,
                      train=train_cfg, state_dict=state)
