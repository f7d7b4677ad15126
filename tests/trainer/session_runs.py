"""Runs and inputs for the live-session tests.

* :func:`trained_run_dir`: ``tiny-cpu`` trained by the real trainer for a few steps on the
  trainer tests' shards, made once per test process (removed at exit). After 20 steps it has
  learnt that most chunks of the shards carry no model text: greedy decoding ends every chunk's
  text at once, sampling at temperature 1 says 0-4 tokens per chunk.
* :func:`tiny_run`: an untrained model built in process, as a :class:`TrainedRun` (no files).
* :func:`user_audio` / :func:`video_frames`: a chunk's user inputs, seeded.
* :func:`one_thread`: a fixture body running torch on one thread.

Shape suffixes follow microturn.schemas.legend: N audio samples, F frames, H, W pixels,
C colours.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from microturn.trainer.config import ModelConfig
from microturn.trainer.model import InteractionModel
from microturn.trainer.train_config import TrainConfig
from microturn.trainer.trained_run import TrainedRun
from trainer_shards import train_shards

TRAIN_STEPS = 20
# dim 32, 2 blocks of which the second is MoE (4 experts, top-2), byte vocabulary (258 ids);
# one flow step: the flow head's sampler is not what these tests are about.
TINY = dict(dim=32, layers=2, heads=4, kv_heads=2, head_dim=8, ffn_dim=64, n_experts=4, top_k=2,
            moe_every=2, vocab_size=260, flow_hidden=32, flow_depth=1, min_capacity=1, flow_steps=1)


@functools.cache
def trained_run_dir() -> str:
    """A ``microturn train`` output folder of ``tiny-cpu`` after ``TRAIN_STEPS`` steps."""
    from microturn.trainer.loop import train
    from microturn.trainer.train_config import load_named

    tmp = tempfile.mkdtemp(prefix="microturn-session-run-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    cfg = load_named("tiny-cpu", [f"train.steps={TRAIN_STEPS}", "train.log_every=0"])
    out = os.path.join(tmp, "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # text cut per chunk, DeepSpeed's CPU notices
        train(cfg, shards=list(train_shards()), output=out, progress=False)
    return out


def tiny_config(**overrides: object) -> ModelConfig:
    """The :data:`TINY` model config with ``overrides``."""
    return ModelConfig(**{**TINY, **overrides})  # pyright: ignore[reportArgumentType]  # values typed per key


def tiny_run(cfg: ModelConfig | None = None, *, seed: int = 0, model: InteractionModel | None = None) -> TrainedRun:
    """An in-process :class:`TrainedRun` of ``model`` (default: an untrained one of ``cfg``)."""
    cfg = cfg or tiny_config()
    model = model or InteractionModel(cfg, seed=seed, dropless=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return TrainedRun(run_dir="<in process>", tag="none", step=0, model=cfg, train=TrainConfig(seed=seed),
                      state_dict=state)


def user_audio(chunks: int, seed: int = 0) -> list[np.ndarray]:
    """``chunks`` x float32 [3200]: quiet noise with a louder tone in every third chunk."""
    rng = np.random.default_rng(seed)
    t_N = np.arange(3200) / 16_000
    out = []
    for k in range(chunks):
        audio_N = 0.01 * rng.standard_normal(3200)
        if k % 3 == 1:
            audio_N += 0.3 * np.sin(2 * np.pi * (150 + 20 * k) * t_N)
        out.append(audio_N.astype(np.float32))
    return out


def video_frames(chunk: int, *, height: int = 40, width: int = 80) -> np.ndarray:
    """uint8 [2, H, W, 3]: two frames of a moving ramp (2 patches per chunk at 40 x 80)."""
    y_H = np.arange(height)[:, None, None]
    x_W = np.arange(width)[None, :, None]
    c_C = np.arange(3)[None, None, :]
    frames = [((x_W * 3 + y_H * 2 + c_C * 50 + 7 * (2 * chunk + f)) % 256) for f in range(2)]
    return np.stack([np.broadcast_to(frame, (height, width, 3)) for frame in frames]).astype(np.uint8)


def one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the count. A session feeds a few positions per
    forward: GEMMs of a few rows, where handing work to a second thread costs more than it
    saves, and on the suite's shared 2-core machine the two threads contend with the other
    processes: 5 steps of the tiny model took 9.0 s with 2 threads under load, 0.33 s with 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
