"""Training configuration: one keyword-only dataclass per component, named configs in TOML.

A named config (``trainer/configs/NAME.toml``) has a ``[model]`` table (:class:`ModelConfig`)
and a ``[train]`` table (:class:`TrainConfig`); unknown keys are errors. ``load_named`` takes a
name or a path, then applies ``key=value`` overrides (``train.lr=3e-4``, ``model.layers=4``).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from dataclasses import dataclass

from microturn.schemas.config import from_mapping, load_toml, parse_override, setting, validate
from microturn.trainer.config import ModelConfig
from microturn.trainer.tensorboard_log import INSTALL_HINT, tensorboard_available

ZERO_STAGES = (0, 1, 2)
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train: data, optimiser, schedule, engine.

    Attributes:
        tokenizer: ``bytes`` or a path to a Hugging Face ``tokenizer.json``.
        micro_batch: sequences rows per step and process (``train_micro_batch_size_per_gpu``).
        grad_accum: micro-batches per optimiser step.
        max_len: positions per row; samples are packed into rows (``pack``) or padded.
        pack: pack several samples per row (block-diagonal attention) instead of padding.
        shuffle_buffer: samples in the loader's shuffle buffer.
        steps: optimiser steps of the run.
        lr, min_lr_ratio, warmup_steps: warmup-cosine schedule: linear warmup to ``lr``, cosine
            decay to ``lr * min_lr_ratio`` at ``steps``.
        weight_decay, beta1, beta2, eps: AdamW.
        grad_clip: global gradient-norm clipping.
        zero_stage: DeepSpeed ZeRO stage 0, 1 or 2.
        ep_size: expert-parallel group size (divides the world size).
        precision: ``fp32`` (CPU) or ``bf16`` (GPU).
        seed: seeds the model initialisation and the loader's shuffling.
        log_every, ckpt_every: steps between metric lines and checkpoints (0: only at the end).
        peak_tflops: the device's peak dense TFLOP/s in the run's precision, for MFU; 0 leaves
            MFU out (CPUs have no meaningful peak).
        user_text_dropout: share of training samples without the user's words. A model that always
            reads the user's transcript takes its turn-taking cues from its punctuation alone
            (held-out AUC 1.000 at the silence's first chunk, chance on recordings without words:
            bench/turn_taking.py); a session may also run without a streaming recogniser.
        tensorboard: also write the metrics as TensorBoard event files under ``RUN/tensorboard/``
            (``microturn.trainer.tensorboard_log``). Defaults to true when the ``tensorboard``
            package is installed, else false; ``load_named`` refuses true without it.
    """

    tokenizer: str = "bytes"
    micro_batch: int = setting(4, ge=1)
    grad_accum: int = setting(1, ge=1)
    max_len: int = setting(2048, ge=1)
    pack: bool = True
    shuffle_buffer: int = setting(256, ge=0)
    steps: int = setting(1000, ge=1)
    lr: float = setting(3e-4, gt=0.0)
    min_lr_ratio: float = setting(0.1, ge=0.0, le=1.0)
    warmup_steps: int = setting(100, ge=0)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = setting(1.0, ge=0.0)
    zero_stage: int = setting(1, choices=ZERO_STAGES)
    ep_size: int = setting(1, ge=1)
    precision: str = setting("fp32", choices=PRECISIONS)
    seed: int = 0
    log_every: int = setting(10, ge=0)
    ckpt_every: int = setting(0, ge=0)
    peak_tflops: float = 0.0
    user_text_dropout: float = setting(0.0, ge=0.0, le=1.0)
    tensorboard: bool = setting(default_factory=tensorboard_available)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A named config: the model and how to train it."""

    name: str
    model: ModelConfig
    train: TrainConfig


def config_path(name: str) -> str:
    """Path of a named config (``tiny-cpu``) or a TOML path given as is."""
    if name.endswith(".toml") or os.sep in name:
        if not os.path.exists(name):
            raise ValueError(f"config file {name} does not exist")
        return name
    path = importlib.resources.files("microturn.trainer") / "configs" / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.name[:-5] for p in (importlib.resources.files("microturn.trainer") / "configs").iterdir()
                       if p.name.endswith(".toml"))
        raise ValueError(f"unknown config {name!r}; named configs: {known} (or give a .toml path)")
    return str(path)


def load_named(name: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a named config and apply ``section.key=value`` overrides."""
    path = config_path(name)
    data = load_toml(path)
    unknown = sorted(set(data) - {"model", "train"})
    if unknown:
        raise ValueError(f"{path}: unknown table(s) {unknown}; a config has [model] and [train]")
    sections = {"model": dict(data.get("model", {})), "train": dict(data.get("train", {}))}
    example = "train.lr=3e-4 or model.layers=4"
    for item in overrides:
        key, value = parse_override(item, example=example)
        if len(key) != 2 or key[0] not in sections:
            raise ValueError(f"override {item!r} must look like {example}")
        sections[key[0]][key[1]] = value
    model = from_mapping(ModelConfig, sections["model"], where=f"{path} [model]")
    train = from_mapping(TrainConfig, sections["train"], where=f"{path} [train]")
    # Here, not in TrainConfig: a run's saved config.json (tensorboard true) must still load
    # for evaluation on a machine without the package.
    if train.tensorboard and not tensorboard_available():
        raise ValueError(f"{path} [train]: tensorboard = true but the tensorboard package is not installed; "
                         f"{INSTALL_HINT}, or set train.tensorboard=false")
    return RunConfig(name=os.path.basename(path)[:-5], model=model, train=train)


def as_dict(cfg: RunConfig) -> dict:
    """The run's settings as saved in ``config.json`` and every checkpoint, with the sequence
    layout the model is trained on (``batch.SEQUENCE_LAYOUT``)."""
    from microturn.trainer.batch import SEQUENCE_LAYOUT

    return {"name": cfg.name, "layout": SEQUENCE_LAYOUT, "model": dataclasses.asdict(cfg.model),
            "train": dataclasses.asdict(cfg.train)}
