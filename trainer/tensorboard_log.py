"""Training metrics as TensorBoard event files, beside ``metrics.jsonl``.

Every numeric value of a metrics record (``microturn.trainer.metrics``) becomes a scalar at the
record's step, under the record's own key as its tag (``loss``, ``loss/text``, ``lr``,
``tokens_per_s``, ``moe/1/drop_fraction``, ``loader/skipped``, ...); a list value (an expert
load) gives one tag per element, ``moe/1/load/0``, ``moe/1/load/1``, ... Tags are written in
sorted order, so two runs give the same tags in the same order. TensorBoard keeps scalars as
float32: a value reads back rounded to about 7 significant digits; ``metrics.jsonl`` keeps
float64 and stays the record ``microturn train plot`` reads.

The files go to ``RUN/tensorboard/`` (``tensorboard --logdir RUN/tensorboard``); only rank 0
writes them. A resumed run purges the events after its checkpoint's step that a killed run had
written, as ``metrics.jsonl`` drops its lines after that step.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterator

__all__ = ["TB_DIR", "ScalarLog", "require_tensorboard", "scalars", "tensorboard_available"]

TB_DIR = "tensorboard"
# What to install when train.tensorboard=true and the package is missing (pyproject's extra).
INSTALL_HINT = "pip install 'microturn[tensorboard]' (or pip install tensorboard)"


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package is installed (``torch.utils.tensorboard`` needs it).
    Looked up without importing it, so a config loads as fast without it."""
    return importlib.util.find_spec("tensorboard") is not None


def scalars(record: dict) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` of every finite number in a metrics record but its ``step``, by sorted
    key; a list's elements get the tags ``KEY/0``, ``KEY/1``, ..."""
    for key in sorted(record):
        if key == "step":
            continue
        value = record[key]
        items = [(f"{key}/{i}", v) for i, v in enumerate(value)] if isinstance(value, list) else [(key, value)]
        for tag, v in items:
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                yield tag, float(v)


def require_tensorboard() -> None:
    """``ValueError`` with what to install when ``torch.utils.tensorboard`` cannot be loaded; a
    run with ``train.tensorboard=true`` calls it before any work."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"train.tensorboard=true but TensorBoard cannot be loaded ({exc}); "
                         f"{INSTALL_HINT}, or set train.tensorboard=false") from None


class ScalarLog:
    """The event-file writer of one training invocation (rank 0): :meth:`write` each metrics
    record, :meth:`close` at the end (it flushes)."""

    def __init__(self, run_dir: str, *, resume_step: int = 0):
        require_tensorboard()
        self.log_dir = os.path.join(run_dir, TB_DIR)
        self._resume_step = resume_step
        self._writer = None  # opened by the first record: an invocation with no step to run adds no file

    def write(self, record: dict) -> None:
        """Add every scalar of ``record`` (see :func:`scalars`) at ``record['step']``."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the events at and after it from earlier files of the directory:
            # the steps a killed run logged after its last checkpoint, which this run logs again.
            purge = self._resume_step + 1 if self._resume_step else None
            self._writer = SummaryWriter(log_dir=self.log_dir, purge_step=purge)
        step = int(record["step"])
        for tag, value in scalars(record):
            self._writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        """Write everything out and close the event file (if a record opened one)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
