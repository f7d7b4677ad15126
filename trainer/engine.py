"""The DeepSpeed engine of a training run.

``ds_config`` turns a :class:`TrainConfig` into DeepSpeed's JSON config (ZeRO stage, precision,
AdamW, warmup-cosine schedule, clipping, accumulation); ``init_distributed`` starts the process
group (gloo on CPU, nccl on GPU) from the launcher's environment (``deepspeed`` and ``torchrun``
both set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT) or as a single process;
``build_engine`` wraps the model with MoE-aware parameter groups: expert parameters are reduced
over their expert-data-parallel group, not the whole world, which DeepSpeed needs them in
groups of their own for.
"""

from __future__ import annotations

import os
import socket

import torch

from microturn.trainer.train_config import TrainConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> tuple[int, int]:
    """Start torch.distributed for DeepSpeed if needed; returns ``(rank, world_size)``.

    Without a launcher the run is one process on a free local port.
    """
    import deepspeed

    if not torch.distributed.is_initialized():
        if "RANK" not in os.environ:
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    # A process group made by other code (a notebook, a test harness) may leave the launcher's
    # variables unset; DeepSpeed's engine reads them.
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world))
    os.environ.setdefault("LOCAL_RANK", "0" if world == 1 else str(rank))
    return rank, world


def shutdown_distributed() -> None:
    """Leave the process group cleanly: every process waits for the others, then the group is
    destroyed. A process that exits with a live gloo group can abort in its destructor
    ("terminate called without an active exception", SIGABRT) while its peer is still talking
    to it, which turns a finished run into a failed one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def ds_config(cfg: TrainConfig, *, world_size: int) -> dict:
    """DeepSpeed's config for ``cfg`` on ``world_size`` processes."""
    if world_size % cfg.ep_size:
        raise ValueError(f"ep_size {cfg.ep_size} must divide the number of processes {world_size}")
    if cfg.precision == "bf16" and not torch.cuda.is_available():
        raise ValueError("precision bf16 is for GPUs; use precision fp32 on CPU (train.precision=\"fp32\")")
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.micro_batch * cfg.grad_accum * world_size,
        "gradient_clipping": cfg.grad_clip,
        "steps_per_print": 10**9,  # the trainer logs; DeepSpeed's own lines would duplicate them
        "wall_clock_breakdown": False,
        "optimizer": {"type": "AdamW", "params": {
            "lr": cfg.lr, "betas": [cfg.beta1, cfg.beta2], "eps": cfg.eps, "weight_decay": cfg.weight_decay,
            # torch's AdamW: no compiled extension to build, the same update on CPU and GPU.
            "torch_adam": True}},
        "scheduler": {"type": "WarmupCosineLR", "params": {
            "total_num_steps": cfg.steps,
            # DeepSpeed refuses 0 warmup steps; one step from lr 0 is the nearest it allows.
            "warmup_num_steps": max(1, cfg.warmup_steps), "warmup_type": "linear",
            "warmup_min_ratio": 0.0, "cos_min_ratio": cfg.min_lr_ratio}},
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "fp16": {"enabled": False},
    }


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on norms, biases and embeddings' 1-D params; experts split out for
    DeepSpeed's MoE reduction."""
    from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    return split_params_into_different_moe_groups_for_optimizer(groups)


def build_engine(model: torch.nn.Module, cfg: TrainConfig, *, world_size: int):
    """``deepspeed.initialize`` for ``model``; returns the engine (optimizer and schedule inside)."""
    import deepspeed

    # deepspeed annotates model_parameters as a Module, while its docstring (and its use) take an
    # iterable of tensors or of param-group dicts, which is what this passes.
    groups = param_groups(model, cfg.weight_decay)
    engine, _, _, _ = deepspeed.initialize(model=model,
                                           model_parameters=groups,  # pyright: ignore[reportArgumentType]
                                           config=ds_config(cfg, world_size=world_size))
    return engine
