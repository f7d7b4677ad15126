"""Checkpoints that are complete or absent, and resuming only what the config can load.

Layout under ``RUN/checkpoints/``: one DeepSpeed checkpoint per tag (``step{N}/``), a
``step{N}/run_config.json`` with the model and training settings it was made with, one
``step{N}/loader-rank{R}.json`` per process with its loader's state (JSON: no pickle on the
data path; see ``ShardLoader.state_dict``), and ``latest`` naming the newest complete tag.

:func:`save` has DeepSpeed write into ``{tag}.partial/``, then (rank 0, after every rank has
written) renames it to ``{tag}/`` and only then replaces ``latest`` (written to a temporary file
and renamed). A process killed at any point leaves ``latest`` naming a complete checkpoint, or
no ``latest``; :func:`clear_partial` removes what such a process left.

:func:`check_resume` reads the checkpoint's ``run_config.json`` before DeepSpeed loads anything:
another model shape is a ``ValueError`` naming each key, other training settings are returned
for the caller to report.

Fault injection for tests: with ``MICROTURN_FAULT_KILL_IN_CHECKPOINT=TAG`` in the environment,
:func:`save` of that tag truncates the largest file DeepSpeed wrote to half its size and sends
SIGKILL to its own process, as a machine that dies half-way through writing would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import torch

from microturn.trainer.batch import layout_refusal

__all__ = ["FAULT_ENV", "check_resume", "clear_partial", "latest_tag", "load_loader_state", "save"]

FAULT_ENV = "MICROTURN_FAULT_KILL_IN_CHECKPOINT"
PARTIAL = ".partial"
CONFIG_NAME = "run_config.json"
LOADER_NAME = "loader-rank{rank}.json"


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _maybe_die(folder: str, tag: str) -> None:
    if os.environ.get(FAULT_ENV) != tag:
        return
    files = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names]
    if files:
        victim = max(files, key=os.path.getsize)
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) // 2)
    os.kill(os.getpid(), signal.SIGKILL)


def save(engine, ckpt_dir: str, tag: str, *, client_state: dict, run_config: dict, rank: int,
         loader_state: dict | None = None) -> None:
    """Save ``engine`` as ``ckpt_dir/tag`` atomically (see the module docstring); every rank calls
    it, each with its own ``loader_state`` (``ShardLoader.state_dict``), written as JSON."""
    partial = os.path.join(ckpt_dir, tag + PARTIAL)
    if rank == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)  # left by a run killed while saving this tag
    _barrier()
    engine.save_checkpoint(ckpt_dir, tag=tag + PARTIAL, client_state=client_state, save_latest=False)
    if loader_state is not None:
        _write_atomic(os.path.join(partial, LOADER_NAME.format(rank=rank)), json.dumps(loader_state, sort_keys=True))
    _barrier()
    _maybe_die(partial, tag)
    if rank == 0:
        _write_atomic(os.path.join(partial, CONFIG_NAME), json.dumps(run_config, indent=2, sort_keys=True))
        final = os.path.join(ckpt_dir, tag)
        if os.path.exists(final):  # the same tag saved before (a rerun past it): replaced whole
            old = final + ".old" + PARTIAL
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(partial, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, final)
        _fsync_dir(ckpt_dir)
        _write_atomic(os.path.join(ckpt_dir, "latest"), tag)
    _barrier()


def clear_partial(ckpt_dir: str) -> list[str]:
    """Remove the ``*.partial`` folders a killed save left in ``ckpt_dir`` (rank 0 only); returns them."""
    if not os.path.isdir(ckpt_dir):
        return []
    gone = sorted(n for n in os.listdir(ckpt_dir) if n.endswith(PARTIAL))
    for name in gone:
        shutil.rmtree(os.path.join(ckpt_dir, name), ignore_errors=True)
    return gone


def latest_tag(ckpt_dir: str) -> str | None:
    """The tag ``latest`` names, or None without one. Raises ``ValueError`` when it names no
    complete checkpoint."""
    path = os.path.join(ckpt_dir, "latest")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        tag = f.read().strip()
    if not tag or tag.endswith(PARTIAL) or not os.path.isfile(os.path.join(ckpt_dir, tag, CONFIG_NAME)):
        raise ValueError(f"{path} names {tag!r}, which is not a complete checkpoint of this trainer "
                         f"(no {tag}/{CONFIG_NAME}); remove {ckpt_dir} to start over")
    return tag


def _flat(section: str, values: dict) -> dict[str, object]:
    return {f"{section}.{k}": v for k, v in values.items()}


def check_resume(ckpt_dir: str, tag: str, run_config: dict) -> list[str]:
    """Compare ``run_config`` (``{"model": {...}, "train": {...}}``) with the checkpoint's.

    Raises ``ValueError`` for another sequence layout (``batch.SEQUENCE_LAYOUT``; a checkpoint
    without one is layout 1) and naming every model key whose value differs (``model.dim:
    checkpoint has 64, config has 128``): the weights would not fit. Returns one line per training
    setting that differs, for the caller to report.
    """
    path = os.path.join(ckpt_dir, tag, CONFIG_NAME)
    with open(path) as f:
        saved = json.load(f)
    layout_old, layout_new = saved.get("layout", 1), run_config.get("layout", 1)
    if layout_old != layout_new:
        raise ValueError(f"cannot resume {os.path.join(ckpt_dir, tag)}: it was trained on sequence layout "
                         f"{layout_old}, this trainer uses layout {layout_new} ({layout_refusal(layout_old)}); "
                         "start a new run in another --output")
    model_old, model_new = _flat("model", saved.get("model", {})), _flat("model", run_config["model"])
    shape = [f"{k}: checkpoint has {model_old.get(k)!r}, config has {model_new.get(k)!r}"
             for k in sorted(set(model_old) | set(model_new)) if model_old.get(k) != model_new.get(k)]
    if shape:
        raise ValueError(f"cannot resume {os.path.join(ckpt_dir, tag)} with another model: " + "; ".join(shape)
                         + " (use the checkpoint's model settings, or another --output)")
    train_old, train_new = _flat("train", saved.get("train", {})), _flat("train", run_config["train"])
    return [f"{k}: {train_old.get(k)!r} -> {train_new.get(k)!r}"
            for k in sorted(set(train_old) | set(train_new)) if train_old.get(k) != train_new.get(k)]


def load_loader_state(ckpt_dir: str, tag: str, *, rank: int, world: int) -> dict | None:
    """This rank's loader state in checkpoint ``tag``, or None when the checkpoint has none (one
    written before loaders saved their state).

    Raises ``ValueError`` when the checkpoint was saved by another number of processes (each
    process's loader read its own part of the data) or the file does not parse."""
    folder = os.path.join(ckpt_dir, tag)
    saved = sorted(n for n in os.listdir(folder) if n.startswith("loader-rank") and n.endswith(".json"))
    if not saved:
        return None
    if len(saved) != world:
        raise ValueError(f"{folder} holds the loader state of {len(saved)} process(es); this run has {world}: "
                         f"resume with {len(saved)} process(es)")
    return read_json_object(os.path.join(folder, LOADER_NAME.format(rank=rank)), "the loader state")


def read_json_object(path: str, what: str) -> dict:
    """The JSON object in ``path``; ``ValueError`` naming ``what`` when it cannot be read, does
    not parse or is not an object."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {what} is not a JSON object")
    return value
