"""The client side of the espeak-ng worker process: start, exchange, restart, fork reset.

Why espeak-ng runs in a worker process (one per Python process, a freshly forked and
initialised library per request) is told in :mod:`microturn.synth.espeak`; the worker itself is
:mod:`microturn.synth.espeak_worker`, started as a program by path with ``python -I``. This
module owns the per-process state: the worker and its pipes, the one lock that serialises the
requests of all threads, and the voice catalogue listed once per process. After a fork the
child starts its own worker; a worker that died is replaced once per request.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass

__all__ = [
    "WORKER_PATH",
    "Catalogue",
    "EspeakUnavailableError",
    "VoiceInfo",
    "catalogue",
    "request",
]

# The worker program, a file beside this one (shipped in the package as any module is).
WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "espeak_worker.py")
_LIBRARY_NAME = "libespeak-ng.so.1"
_INSTALL_HINT = (
    "install the espeak-ng Debian package (apt-get install espeak-ng), which provides "
    f"{_LIBRARY_NAME} and its voice data"
)


class EspeakUnavailableError(ValueError):
    """espeak-ng's C library or its data cannot be used on this machine."""


class _Worker:
    """The worker process of this Python process and its pipes."""

    def __init__(self, library: str) -> None:
        if not sys.executable:
            raise EspeakUnavailableError(
                "cannot start the espeak-ng worker: sys.executable is not set"
            )
        if not os.path.isfile(WORKER_PATH):
            raise EspeakUnavailableError(
                f"the espeak-ng worker program {WORKER_PATH} is missing; reinstall microturn"
            )
        self.pid = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", WORKER_PATH, library],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )

    def exchange(self, request: dict) -> tuple[dict, bytes]:
        """Send one request, return the header and the samples; OSError/EOFError when the
        worker is gone."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request).encode("utf-8") + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError("the espeak-ng worker closed its output")
        header = json.loads(line)
        payload = self.proc.stdout.read(int(header.get("n_bytes", 0)))
        if len(payload) != int(header.get("n_bytes", 0)):
            raise EOFError("the espeak-ng worker closed its output mid-answer")
        return header, payload

    def close_pipes(self) -> None:
        """Close this process's ends of the worker's pipes (the worker exits on end of input)."""
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is None:
                continue
            try:
                stream.close()
            except OSError:
                pass

    def close(self) -> None:
        """End the worker (it exits when its input closes)."""
        self.close_pipes()
        if self.pid == os.getpid():
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """One voice from espeak_ListVoices."""

    name: str  # "English (America)"
    identifier: str  # "gmw/en-US"
    languages: tuple[tuple[int, str], ...]  # ((priority, "en-us"), (priority, "en"))


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What the library reports about itself (listed once per process)."""

    version: str
    data_path: str
    voices: tuple[VoiceInfo, ...]
    variants: tuple[str, ...]  # lower-case variant names ("f3", "klatt")


class _State:
    """Per-process module state: the worker and the voice catalogue, made on first use."""

    def __init__(self) -> None:
        self.worker: _Worker | None = None
        self.catalogue: Catalogue | None = None


# One lock for every exchange with the worker (a request and its answer must not interleave).
_LOCK = threading.Lock()
_state = _State()
# Workers of a parent process, seen from a forked child: kept referenced, never used.
_inherited: list[_Worker] = []


def _reset_after_fork() -> None:
    # A forked child (multiprocessing, Beam's process pool) starts its own worker; the
    # parent's pipes are closed here, and a lock another thread held at the fork is replaced.
    global _LOCK, _state
    if _state.worker is not None:
        _state.worker.close_pipes()
        _inherited.append(_state.worker)
    _LOCK = threading.Lock()
    _state = _State()


os.register_at_fork(after_in_child=_reset_after_fork)


@atexit.register
def _stop_worker() -> None:
    # The worker also exits by itself when this process dies (its input closes); this only
    # reaps it. A thread stuck mid-request must not block the interpreter's exit.
    locked = _LOCK.acquire(timeout=1.0)
    try:
        worker, _state.worker = _state.worker, None
        if worker is not None:
            worker.close()
    finally:
        if locked:
            _LOCK.release()


def _system_library() -> str:
    """Path of the installed libespeak-ng.so.1."""
    candidates = []
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        candidates.append(f"/usr/lib/{multiarch}/{_LIBRARY_NAME}")
    folders = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64")
    candidates += [f"{d}/{_LIBRARY_NAME}" for d in (*folders, "/usr/lib", "/usr/local/lib")]
    for path in candidates:
        if os.path.exists(path):
            return path
    raise EspeakUnavailableError(
        f"espeak-ng's C library {_LIBRARY_NAME} was not found; {_INSTALL_HINT}"
    )


def request(req: dict, what: str) -> tuple[dict, bytes]:
    """One exchange with the worker (started on first use, restarted once if it died);
    ``what`` says what was asked, for messages."""
    with _LOCK:
        for attempt in range(2):
            if _state.worker is None:
                library = _system_library()
                try:
                    _state.worker = _Worker(library)
                except OSError as err:
                    raise EspeakUnavailableError(
                        f"could not start the espeak-ng worker process ({err})"
                    ) from err
            try:
                header, payload = _state.worker.exchange(req)
                break
            except (OSError, EOFError, ValueError) as err:
                _state.worker.close()
                _state.worker = None
                if attempt:
                    raise EspeakUnavailableError(
                        f"the espeak-ng worker process failed ({err}); {_INSTALL_HINT}"
                    ) from err
            except BaseException:
                # Interrupted mid-exchange: the protocol state is unknown, start afresh.
                _state.worker.proc.kill()
                _state.worker.close()
                _state.worker = None
                raise
    if not header.get("ok"):
        message = f"espeak-ng failed {what}: {header.get('message', 'unknown failure')}"
        if header.get("kind") == "unavailable":
            raise EspeakUnavailableError(f"{message}; {_INSTALL_HINT}")
        raise ValueError(message)
    return header, payload


def catalogue() -> Catalogue:
    """Version, voices and variants of the library (listed once per process)."""
    if _state.catalogue is None:
        header, _ = request({"op": "catalogue"}, "listing its voices")
        voices = tuple(
            VoiceInfo(
                name=v["name"],
                identifier=v["identifier"],
                languages=tuple((int(p), t) for p, t in v["languages"]),
            )
            for v in header["voices"]
            if v["identifier"].split("/")[0] != "mb"  # MBROLA voices need mbrola itself
        )
        if not voices:
            raise EspeakUnavailableError(
                f"espeak-ng found no voices in {header['data_path']!r}; {_INSTALL_HINT}"
            )
        _state.catalogue = Catalogue(
            version=header["version"],
            data_path=header["data_path"],
            voices=voices,
            variants=tuple(
                sorted({v["identifier"].rsplit("/", 1)[-1].lower() for v in header["variants"]})
            ),
        )
    return _state.catalogue


