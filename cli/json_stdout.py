"""Keeping standard output for one JSON object while libraries print.

DeepSpeed and PyTorch print build and process-group notes to standard output (``print`` and
loggers whose handlers hold ``sys.stdout``), so a ``--json`` command that let them would give a
script something it cannot parse. Inside :func:`stdout_to_stderr` everything written to standard
output, from Python or from C, goes to standard error instead; the command prints its JSON after.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["stdout_to_stderr"]


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Send file descriptor 1 and ``sys.stdout`` to standard error for the block (no-op when
    ``enabled`` is false, so a command can wrap its work the same way with or without ``--json``)."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)
