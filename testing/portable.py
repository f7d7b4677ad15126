"""Beam's portable path on one machine: a local job service and an external SDK worker pool.

:func:`portable_runner` starts both as subprocesses and yields a :class:`LocalPortable` whose
``flags`` send any ``microturn`` stage through the PortableRunner, the same Runner API / Fn API
path that Flink, Spark and Dataflow use, with the user code running in separate worker processes:

    with portable_runner(workers=2) as cluster:
        shard_run(["--input", rec, "--output", out, *cluster.flags])
        cluster.worker_pids()          # the SDK worker processes alive now

Why these pieces: Beam's own runners for a laptop (Prism) and the Flink and Spark job servers
fetch a binary or jar on first use, so they cannot start offline; Beam's Python job service
(``local_job_service_main``) and worker pool (``worker_pool_main``) ship inside the SDK.

How the worker count is set: ``--sdk_worker_parallelism=N``, the flag Flink and Spark read for
the number of SDK worker processes. Beam's local job service ignores it and asks the pool for
one worker per job, so the job service started here is
:mod:`microturn.testing.beam_job_service`, Beam's with that flag honoured; the pool starts one
process per request.

Limits: Linux only (the worker processes are found through ``/proc``). The pool gives each worker's
stdout a pipe that it never reads, so a DoFn, or a C library under one, that writes more than a
pipe's buffer (64 KiB) to stdout would block that worker; the stages log through ``logging``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["LocalPortable", "PortableStartError", "WorkerWatch", "portable_runner", "watch_workers"]

_JOB_SERVICE = "microturn.testing.beam_job_service"
_WORKER_POOL = "apache_beam.runners.worker.worker_pool_main"
# What the pool puts in each worker's command line (``python -c "...SdkHarness(...).run()"``).
_WORKER_MARK = b"SdkHarness"


class PortableStartError(RuntimeError):
    """The job service or the worker pool died or did not accept connections in time."""


@dataclass
class LocalPortable:
    """A running job service and worker pool, and the pipeline flags that use them.

    ``job_service`` and ``worker_pool`` are the two ``Popen`` objects; each leads its own process
    group, which also holds every worker the pool starts (the pool does not detach them).
    ``logs`` maps each service's name to the file of its output (workers write theirs into the
    pool's); the files go when the context exits.
    """

    flags: list[str]
    workers: int
    job_service: subprocess.Popen
    worker_pool: subprocess.Popen
    logs: dict[str, str] = field(default_factory=dict)

    def worker_pids(self) -> list[int]:
        """PIDs of the SDK worker processes running now (children of the pool, zombies left out).

        A job's workers live for that job: the job service starts ``workers`` of them when the job
        begins and they end with it; the pool does not reap them, so finished ones stay as
        zombies until the pool stops. Sample this while a job runs (e.g. for peak memory from
        ``/proc/PID/status``'s ``VmHWM``, or with ``psutil.Process(pid)``).
        """
        return [pid for pid, state in _children(self.worker_pool.pid) if state != "Z" and _is_worker(pid)]

    def started_workers(self) -> int:
        """How many worker processes the pool has started so far, finished ones included.

        Every child of the pool is a worker, and finished ones stay as zombies (never reaped by
        the pool), so the count of its children is the count of workers ever started.
        """
        return len(_children(self.worker_pool.pid))


@dataclass
class WorkerWatch:
    """What :func:`watch_workers` saw: the most workers alive at once, every worker pid seen, and each
    one's peak resident memory in bytes (``VmHWM``, as last read while it was alive)."""

    max_alive: int = 0
    pids: set[int] = field(default_factory=set)
    peak_rss: dict[int, int] = field(default_factory=dict)


@contextlib.contextmanager
def watch_workers(cluster: LocalPortable, interval_s: float = 0.05) -> Iterator[WorkerWatch]:
    """Sample the workers that ``cluster``'s pool starts while the body runs, every ``interval_s``.

    A job's workers start and end with the job, so they can only be seen while it runs; run the
    job inside this block and read the :class:`WorkerWatch` after it. Workers that were there
    when the block began are left out: those of the previous job take about a second to exit.
    """
    seen = WorkerWatch()
    done = threading.Event()
    earlier = {pid for pid, _ in _children(cluster.worker_pool.pid)}

    def sample() -> None:
        while True:
            alive = [pid for pid in cluster.worker_pids() if pid not in earlier]
            seen.max_alive = max(seen.max_alive, len(alive))
            seen.pids.update(alive)
            for pid in alive:
                rss = _peak_rss(pid)
                if rss is not None:
                    seen.peak_rss[pid] = max(rss, seen.peak_rss.get(pid, 0))
            if done.wait(interval_s):
                return

    thread = threading.Thread(target=sample, name="watch-workers", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


def _peak_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError):
        pass
    return None


def _children(ppid: int) -> list[tuple[int, str]]:
    """``(pid, state)`` of every process whose parent is ``ppid``, read from ``/proc``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone between listdir and open
            continue
        # The command name (field 2) is in parentheses and may hold spaces or ')': split after the last one.
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[1]) == ppid:
            found.append((int(entry), fields[0].decode()))
    return found


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return _WORKER_MARK in f.read()
    except OSError:
        return False


def _free_port() -> int:
    # The pool takes a port number, not a port file: ask the kernel for a free one and hand it
    # over. Another process could take it in between; the pool then dies and start-up says so.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("localhost", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """Stop ``proc``'s whole process group: SIGTERM, then SIGKILL what is left after ``grace_s``."""
    if proc.pid <= 0:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    # Workers (and a leader that ignored SIGTERM) may outlive the leader; the group still names them.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _python_dir(tmp: str) -> str:
    """A directory whose ``python`` is this interpreter, to put first on the pool's PATH.

    The pool starts each worker as a bare ``python`` from PATH. Any other interpreter (the
    system's, or none of that name beside this one, as when it is ``python3.12``) starts a worker
    without Beam or microturn that never connects, and the job hangs until the job service gives
    up on it, minutes later, with DEADLINE_EXCEEDED. Usually this interpreter's own directory has
    a ``python`` that is it (a virtual environment's ``bin``); else a two-line script in ``tmp``
    execs ``sys.executable``, which keeps a virtual environment in force where a symlink would not.
    """
    own = os.path.join(os.path.dirname(sys.executable), "python")
    if os.path.isfile(own) and os.path.samefile(own, sys.executable):
        return os.path.dirname(sys.executable)
    bin_dir = os.path.join(tmp, "bin")
    os.makedirs(bin_dir)
    path = os.path.join(bin_dir, "python")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    os.chmod(path, 0o755)
    return bin_dir


def _spawn(argv: list[str], log: str, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as out:
        # Own session, so its own process group: stopping it reaches the workers it starts, and a
        # Ctrl-C at the terminal reaches only the test, which then stops the group itself.
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def _wait_ready(procs: dict[str, tuple[subprocess.Popen, str]], port_of, deadline: float) -> dict[str, int]:
    """Wait until every service accepts connections; raise with its log tail if one dies or times out."""
    ports: dict[str, int] = {}
    while len(ports) < len(procs):
        for name, (proc, log) in procs.items():
            if name in ports:
                continue
            if proc.poll() is not None:
                raise PortableStartError(f"{name} exited with status {proc.returncode} before it accepted "
                                         f"connections; its output ends:\n{_tail(log)}")
            port = port_of(name)
            if port is not None and _accepts(port):
                ports[name] = port
        if len(ports) < len(procs):
            if time.monotonic() > deadline:
                waiting = [n for n in procs if n not in ports]
                tails = "\n".join(f"--- {n}:\n{_tail(procs[n][1])}" for n in waiting)
                raise PortableStartError(f"{', '.join(waiting)} did not accept connections in time; output:\n{tails}")
            time.sleep(0.1)
    return ports


@contextlib.contextmanager
def portable_runner(workers: int = 2, *, timeout_s: float = 60.0, grace_s: float = 5.0) -> Iterator[LocalPortable]:
    """Start a local Beam job service and an external worker pool; yield the flags that use them.

    ``workers`` SDK worker processes serve each job. ``timeout_s`` bounds the start-up of both
    services (importing Beam takes seconds); ``grace_s`` is how long each process group gets after
    SIGTERM before SIGKILL. Both groups are stopped on exit, whatever the body raised. Raises
    :class:`PortableStartError` (with the tail of the failing service's output) if either dies or
    does not accept connections within ``timeout_s``.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    with tempfile.TemporaryDirectory(prefix="microturn-portable-") as tmp:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([_python_dir(tmp), env.get("PATH", "")])
        logs = {"job service": os.path.join(tmp, "job_service.log"),
                "worker pool": os.path.join(tmp, "worker_pool.log")}
        port_file = os.path.join(tmp, "job.port")
        pool_port = _free_port()
        started: list[subprocess.Popen] = []
        try:
            # The job service picks its own port and writes it (atomically) to a file: no race.
            job = _spawn([sys.executable, "-m", _JOB_SERVICE, "--port", "0", "--port_file", port_file,
                          "--staging_dir", os.path.join(tmp, "staging")], logs["job service"], env)
            started.append(job)
            pool = _spawn([sys.executable, "-m", _WORKER_POOL, f"--service_port={pool_port}"],
                          logs["worker pool"], env)
            started.append(pool)

            def port_of(name: str) -> int | None:
                if name == "worker pool":
                    return pool_port
                try:
                    with open(port_file) as f:
                        return int(f.read())
                except (OSError, ValueError):
                    return None

            ports = _wait_ready({"job service": (job, logs["job service"]), "worker pool": (pool, logs["worker pool"])},
                                port_of, time.monotonic() + timeout_s)
            flags = ["--runner=PortableRunner", f"--job_endpoint=localhost:{ports['job service']}",
                     "--environment_type=EXTERNAL", f"--environment_config=localhost:{ports['worker pool']}",
                     f"--sdk_worker_parallelism={workers}",
                     # The PortableRunner watches the job through a stream opened with this
                     # timeout (300 s by default): a longer job fails with DEADLINE_EXCEEDED.
                     "--job_server_timeout=86400"]
            yield LocalPortable(flags=flags, workers=workers, job_service=job, worker_pool=pool, logs=logs)
        finally:
            for proc in reversed(started):
                _stop(proc, grace_s)
