"""Training configuration: one keyword-only dataclass per component, named configs in TOML.

A named config (``trainer/configs/NAME.toml``) has a ``[model]`` table (:class:`ModelConfig`)
and a ``[train]`` table (:class:`TrainConfig`); unknown keys are errors. ``load_named`` takes a
name or a path, then applies ``key=value`` overrides (``train.lr=3e-4``, ``model.layers=4``).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import os
import tomllib
from dataclasses import dataclass

# The typed, unknown-key-refusing loader the pipeline stages use (plain Python, no Beam import).
from microturn.pipelines.config_io import from_mapping
from microturn.trainer.config import ModelConfig

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
    """

    tokenizer: str = "bytes"
    micro_batch: int = 4
    grad_accum: int = 1
    max_len: int = 2048
    pack: bool = True
    shuffle_buffer: int = 256
    steps: int = 1000
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    zero_stage: int = 1
    ep_size: int = 1
    precision: str = "fp32"
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 0
    peak_tflops: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"train.{f.name} must be a finite number, got {value}")
        for name in ("micro_batch", "grad_accum", "max_len", "steps", "ep_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "log_every", "ckpt_every", "shuffle_buffer"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.zero_stage not in ZERO_STAGES:
            raise ValueError(f"train.zero_stage must be one of {ZERO_STAGES}, got {self.zero_stage}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1 and self.grad_clip >= 0):
            raise ValueError("train.lr must be > 0, min_lr_ratio in [0, 1], grad_clip >= 0")


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


def _parse_value(key: str, text: str):
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"override {key}={text}: {key} must be a finite number")
    return value


def load_named(name: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a named config and apply ``section.key=value`` overrides."""
    path = config_path(name)
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"model", "train"})
    if unknown:
        raise ValueError(f"{path}: unknown table(s) {unknown}; a config has [model] and [train]")
    sections = {"model": dict(data.get("model", {})), "train": dict(data.get("train", {}))}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot or section not in sections:
            raise ValueError(f"override {item!r} must look like train.lr=3e-4 or model.layers=4")
        sections[section][field] = _parse_value(key.strip(), value.strip())
    model = from_mapping(ModelConfig, sections["model"], where=f"{path} [model]")
    train = from_mapping(TrainConfig, sections["train"], where=f"{path} [train]")
    return RunConfig(name=os.path.basename(path)[:-5], model=model, train=train)


def as_dict(cfg: RunConfig) -> dict:
    return {"name": cfg.name, "model": dataclasses.asdict(cfg.model), "train": dataclasses.asdict(cfg.train)}
