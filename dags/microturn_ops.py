"""The one operator of the microturn DAGs: a `microturn` subcommand run as an argv list.

Orchestration only. Every stage, its checks and its output rules live in the `microturn` command;
this module turns a task's DAG params into that command's argv, runs it and maps its exit status
to the task's state. At parse time it imports Airflow and the standard library only: the stages'
dependencies (Beam, torch, ffmpeg) load in the subprocess, in the project's own environment.

No shell anywhere: every value is one argv item, and a value a user typed goes in as
`--flag=VALUE`, so a file name or glob that starts with `-` is never read as an option.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The project's command in the checkout these DAGs came from, unless the deployment says otherwise
# (a worker whose microturn lives elsewhere sets MICROTURN_BIN, or a run sets the `microturn` param).
DEFAULT_MICROTURN = os.environ.get("MICROTURN_BIN") or os.path.join(_REPO, ".venv", "bin", "microturn")
DEFAULT_OUTPUT_ROOT = os.environ.get("MICROTURN_DAG_OUTPUT") or os.path.join(_REPO, "dag-out")

# The stages' exit status for a usage error (a bad flag, a missing file): a retry cannot fix it.
USAGE_ERROR = 2



def is_url(path: str) -> bool:
    """A Beam filesystem URL (gs://, s3://, ...) rather than a local path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URL (URLs always take ``/``)."""
    return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def absolute(value: str, name: str) -> str:
    """``value`` unchanged if it is an absolute path or a URL; a task fails (no retry) otherwise.

    A task runs in a temporary working directory on whichever worker takes it, so a relative path
    would name a different folder on every worker.
    """
    if not value or not (os.path.isabs(value) or is_url(value)):
        raise AirflowFailException(f"param {name!r} must be an absolute path or a URL, not {value!r}")
    return value


def run_folder(root: str, root_param: str, name: str) -> str:
    """``{root}/{name}``, ``name`` made a safe folder name.

    A run id (``manual__2026-12-05T03:31:00+00:00``) holds ``:`` and ``+``, which some tools read
    as a scheme or drive separator, and can hold glob characters when set by hand; everything
    outside ``[A-Za-z0-9._-]`` becomes ``_`` so the folder is safe inside a shard glob.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if safe in ("", ".", ".."):
        raise AirflowFailException(f"run name {name!r} is not a folder name")
    return join(absolute(root, root_param), safe)


@dataclass(frozen=True)
class Run:
    """Where one DAG run writes, the same folders on every retry of every task.

    ``out`` is ``{output_root}/{run_name or run id}`` (a local path or a Beam URL: the stages
    write there); ``local`` is the same name under ``local_root`` (default: ``output_root``), for
    what needs a local file system (the DuckDB catalog, the HTML report).
    """

    out: str
    local: str

    @classmethod
    def of(cls, params: dict[str, Any], run_id: str) -> Run:
        name = params.get("run_name") or run_id
        out = run_folder(params["output_root"], "output_root", name)
        local_root = params.get("local_root") or ""
        return cls(out, run_folder(local_root, "local_root", name) if local_root else out)

    def __call__(self, *parts: str) -> str:
        """A path under ``out``."""
        return join(self.out, *parts)


def flag(name: str, value: Any) -> list[str]:
    """``[name=value]``, or nothing when the param is empty (the stage's default then applies)."""
    return [] if value is None or value == "" else [f"{name}={value}"]


def flags(name: str, values: Sequence[Any]) -> list[str]:
    """One ``name=value`` per value: the stages' repeatable flags (``--input``, ``--shards``)."""
    return [f"{name}={v}" for v in values]


ArgvBuilder = Callable[[dict[str, Any], Run], list[str]]


class MicroturnOperator(BaseOperator):
    """Runs the argv ``args(params, Run.of(params, run_id))`` without a shell.

    The command's output goes to the task log line by line (or its stdout to ``stdout_to``, written
    under a temporary name and renamed when the command succeeds, so a retry never sees half a
    file). Exit 0 succeeds; exit 2 (a usage error) fails without retry; any other status fails and
    may be retried: the stages publish their outputs only on success and a rerun into their own
    earlier output replaces it, so a retry leaves the same outputs as one clean run.
    """

    ui_color = "#dfe9f7"

    def __init__(self, *, args: ArgvBuilder, stdout_to: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.args = args
        self.stdout_to = stdout_to  # a file name inside the run's local folder
        self._proc: subprocess.Popen[bytes] | None = None

    def execute(self, context: Any) -> str:
        params = context["params"]
        run = Run.of(params, context["run_id"])
        argv = self.args(params, run)
        self.log.info("run folder: %s", run.out)
        # shlex.join only to show the command in a form a reader can paste; it is never executed.
        self.log.info("running: %s", shlex.join(argv))
        stdout_path = join(run.local, self.stdout_to) if self.stdout_to else None
        if stdout_path and is_url(stdout_path):
            raise AirflowFailException(f"{self.task_id} writes {stdout_path} itself: the run folder must be local")
        status = self._run(argv, stdout_path)
        if status == USAGE_ERROR:
            raise AirflowFailException(f"{self.task_id}: the command refused its arguments (exit status 2)")
        if status != 0:
            raise AirflowException(f"{self.task_id}: the command failed with exit status {status}")
        return run.out

    def _run(self, argv: list[str], stdout_path: str | None) -> int:
        partial = f"{stdout_path}.partial" if stdout_path else None
        if stdout_path:
            os.makedirs(os.path.dirname(stdout_path), exist_ok=True)
        # A scratch working directory: whatever a tool drops into its cwd goes with it.
        with tempfile.TemporaryDirectory(prefix="microturn-task-") as cwd, contextlib.ExitStack() as stack:
            out = stack.enter_context(open(partial, "wb")) if partial else None
            # With stdout going to a file, stderr alone is the log; otherwise both are. Its own
            # session, so that on_kill stops the command and every process it started.
            self._proc = subprocess.Popen(
                argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out or subprocess.PIPE,
                stderr=subprocess.PIPE if out else subprocess.STDOUT, start_new_session=True)
            log_stream = self._proc.stderr if out else self._proc.stdout
            assert log_stream is not None
            try:
                for raw in iter(log_stream.readline, b""):
                    self.log.info("%s", raw.decode("utf-8", errors="backslashreplace").rstrip())
                status = self._proc.wait()
            except BaseException:
                # A timeout or a kill unwinds through here: take the command down with the task.
                self.on_kill()
                raise
            finally:
                log_stream.close()
        if partial and stdout_path:
            if status == 0:
                os.replace(partial, stdout_path)
            else:
                os.remove(partial)
        return status

    def on_kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.log.info("stopping microturn (pid %s) and its process group", proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
