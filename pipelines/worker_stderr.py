"""Beam's start-up notices of DirectRunner worker processes, kept off the terminal.

In ``--direct_running_mode=multi_processing`` each worker is a new Python process that shares
this process's stderr. Importing Beam there logs "apitools not found ..." on its root logger,
which makes ``logging.basicConfig`` print that and every later record of the worker in Beam's
``LEVEL:name:message`` format: four lines per worker at each start (the notice, "Logging handler
created.", "No semi_persistent_directory found", Beam's own runner flags "discarded"), before and
among the stage's own output. A worker's logs also reach the runner through Beam's logging
service, and this process logs its warnings and errors again (filtered by
:class:`microturn.cli.logs.DropBeamNotices`), so nothing a worker reports is lost here.

:func:`filtered` points file descriptor 2 at a pipe for the duration of the run, so that the
workers inherit it, and copies what arrives to the real stderr line by line, leaving out those
notices and the workers' ``INFO:``/``DEBUG:`` lines; everything else (a worker's traceback, a
tool's message) passes unchanged. This process's own ``sys.stderr`` writes to the real stderr
directly meanwhile, so a progress bar is not delayed by the line-by-line copy.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

from microturn.cli.logs import is_beam_notice

# A worker's record in logging's default format, below warning: "INFO:__main__:Logging handler created."
_CHATTER = re.compile(rb"^(DEBUG|INFO):[\w.]+:")
_JOIN_S = 5.0  # a worker that outlives the run keeps the pipe open; the copy is left to finish alone


def _wanted(line: bytes, *, chatter: bool) -> bool:
    if not chatter and _CHATTER.match(line):
        return False
    return not is_beam_notice(line.decode("utf-8", "replace"))


def _copy(read_fd: int, write_fd: int, chatter: bool) -> None:
    pending = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            chunk = pipe.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if _wanted(line, chatter=chatter))
            if out:
                os.write(write_fd, out)
    if pending and _wanted(pending, chatter=chatter):
        os.write(write_fd, pending)


@contextlib.contextmanager
def filtered(*, chatter: bool = False) -> Iterator[None]:
    """Within the block, what other processes write to this process's stderr reaches it without
    Beam's worker notices (and without their info lines unless ``chatter``)."""
    try:
        sys.stderr.flush()
        real_fd = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr to filter (a closed or replaced stream)
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    copier = threading.Thread(target=_copy, args=(read_fd, real_fd, chatter), name="worker-stderr", daemon=True)
    copier.start()
    saved = sys.stderr
    sys.stderr = os.fdopen(os.dup(real_fd), "w", buffering=1, encoding=getattr(saved, "encoding", None) or "utf-8",
                           errors="backslashreplace")
    try:
        yield
    finally:
        ours, sys.stderr = sys.stderr, saved
        ours.close()
        os.dup2(real_fd, 2)  # closes this process's end of the pipe; the copy ends when the workers' do
        copier.join(_JOIN_S)
        if not copier.is_alive():
            os.close(real_fd)


def for_run(options) -> contextlib.AbstractContextManager:
    """:func:`filtered` for a run on the DirectRunner's ``multi_processing`` mode, else nothing
    (``options``: the run's ``PipelineOptions``). The workers' info lines pass at debug level."""
    import logging

    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from microturn.pipelines.progress import LOCAL_RUNNERS

    runner = options.view_as(StandardOptions).runner
    local = runner is None or (isinstance(runner, str) and runner.lower() in LOCAL_RUNNERS)
    if not local or options.view_as(DirectOptions).direct_running_mode != "multi_processing":
        return contextlib.nullcontext()
    return filtered(chatter=logging.getLogger("microturn").getEffectiveLevel() <= logging.DEBUG)
