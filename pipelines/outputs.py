"""What a stage may do to its output directory: own it, lock it, write into it atomically,
publish a run only when it succeeded, and tell output faults from input faults.

A stage run (``microturn ingest | synthesize | shard``) goes through these steps, all here:

1. :func:`check_output` before any work: the output is not a file, holds no other stage's
   tables, and is not one of the inputs (nor inside one, nor around one).
2. :class:`OutputLock`: an exclusive ``flock`` on ``OUT/.microturn.lock`` for the whole run, so
   a second run into the same output is refused (naming the holder's pid) instead of
   interleaving its writes. The kernel drops the lock when the holder dies, so a ``kill -9``
   never leaves a stale lock; the file itself is removed on release (and left, harmless, by a
   killed run until the next run removes it).
3. :func:`claim_output`: the marker ``OUT/_microturn_stage.json`` (stage name, schema version)
   that says which stage owns the output.
4. The pipeline writes every table part, tar, manifest and root file (the shard stage's dataset
   card) under a *pending* name (``.NAME.pending`` beside its final name, written through a
   temporary file by :func:`publish`), which no reader's ``*.parquet`` / ``*.tar`` pattern matches.
5. :func:`commit` after the pipeline succeeded and wrote something worth keeping: pending
   files take their final names, and final files of this kind that the run did not write
   (e.g. ``part-*-of-00004`` after a rerun with 2 table shards) are removed. Otherwise
   :func:`discard` deletes the pending files and the earlier output stays as it was.

Limitation: ``flock`` is taken only on local outputs; object stores (``gs://``, ``s3://``) have
no such lock, so on them concurrent runs into one output are not detected.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
from collections.abc import Iterable, Iterator

from apache_beam.io.filesystems import FileSystems

log = logging.getLogger(__name__)

MARKER = "_microturn_stage.json"
LOCK = ".microturn.lock"
PENDING = ".pending"
TMP = ".tmp"
# Bumped when the layout of a stage output changes in a way an older run must not overwrite.
LAYOUT_VERSION = 1

# The folders each stage writes; any of them in an output marks it as some stage's output.
STAGE_TABLES: dict[str, tuple[str, ...]] = {
    "ingest": ("sources", "conversations", "segments", "words", "events", "rejects"),
    "synthesize": ("conversations", "segments", "words", "events", "rejects"),
    "shard": ("samples", "shards", "rejects"),
}
TABLE_DIRS = ("sources", "conversations", "segments", "words", "events", "rejects", "samples", "shards", "media")
# Table parts (tables.WriteSortedTable) and shard files (shard.plan.shard_name and its manifest:
# audio-only ``train-000000.tar``, with video ``train-video-000000.tar``).
TABLE_PART = re.compile(r"^part-\d{5}-of-\d{5}\.parquet$")
SHARD_FILE = re.compile(r"^(?P<split>[a-z][a-z0-9_]*)(?:-video)?-\d{6}\.(tar|parquet)$")
# Files a stage writes at the root of its output (published by :func:`commit` with the rest),
# each with the text that marks a copy as the stage's own. A file of that name without the mark
# was put there by someone else: the stage refuses the output (:func:`check_output`) rather
# than replace it.
ROOT_FILES: dict[str, dict[str, str]] = {
    "shard": {"README.md": "<!-- microturn shard: dataset card"},  # pipelines/shard/card.py
}
_ROOT_MARK_BYTES = 1 << 16  # the mark sits in a card's first lines; a card is a few KB
SPLIT_DIR = re.compile(r"^[a-z][a-z0-9_]*$")

# errno values that always mean the destination cannot take the write, wherever it happened.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
# errno values that are about the output only when the path is the output's.
_ACCESS_ERRNOS = {errno.EACCES, errno.EPERM}


class OutputError(OSError):
    """The output cannot be written (disk full, quota, permissions, read-only filesystem...).

    Never a reject: it is no input's fault. Raised by the writers (:func:`publish`), re-raised
    by the stages' reject handlers, and printed by each stage's ``main`` as one line.
    """

    def __init__(self, path: str, reason: str, err: int | None = None):
        super().__init__(err or 0, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"cannot write the output {self.path}: {self.reason}"

    def __reduce__(self):  # survives being sent between Beam worker processes
        return OutputError, (self.path, self.reason, self.errno)


class OutputInUse(RuntimeError):
    """Another run holds the lock on this output."""


class NothingWritten(RuntimeError):
    """The run produced nothing worth publishing; the earlier output was left as it was."""


def _local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _os_path(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def _under(path: str | None, root: str | None) -> bool:
    if not path or not root:
        return False
    if not (_local(str(path)) and _local(root)):
        p, r = str(path).rstrip("/"), root.rstrip("/")
        return p == r or p.startswith(r + "/")
    # realpath: a symlinked folder is the folder it points to.
    p, r = os.path.realpath(_os_path(str(path))), os.path.realpath(_os_path(root))
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def is_output_fault(exc: BaseException, output: str | None = None) -> bool:
    """True when ``exc`` (or an exception it was raised from) says the output cannot be written:
    an :class:`OutputError`; ENOSPC, EDQUOT, EFBIG or EROFS from anywhere (reading never gives
    them); EACCES or EPERM on a path under ``output``; or ffmpeg's words for a full disk."""
    return find_output_fault(exc, output) is not None


_FULL = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
# As the text of an exception from another process, less what Beam appends (" [while running 'X']").
_TRACED = re.compile(r"OutputError: (cannot write the output .*?)(?: \[while running [^\n]*)?$", re.MULTILINE)


def find_output_fault(exc: BaseException, output: str | None = None) -> OutputError | None:
    """The output fault behind ``exc`` as an :class:`OutputError`, or ``None``.

    Follows ``__cause__`` / ``__context__`` (Beam re-raises a DoFn's exception inside its own),
    and reads the text of exceptions that crossed a process boundary as a traceback string
    (Beam's multi-process and portable runners)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OutputError):
            return e
        if isinstance(e, OSError) and e.errno is not None:
            where = e.filename or e.filename2 or output or "?"
            if e.errno in _DISK_ERRNOS or (e.errno in _ACCESS_ERRNOS and (
                    _under(e.filename, output) or _under(e.filename2, output))):
                return OutputError(str(where), e.strerror or os.strerror(e.errno), e.errno)
        text = str(e)
        m = _TRACED.search(text)
        if m:
            where, _, reason = m.group(1)[len("cannot write the output "):].rpartition(": ")
            return OutputError(where or "?", reason)
        if any(f in text for f in _FULL):
            return OutputError(output or "?", "no space left on the device (as reported by a tool writing it)",
                               errno.ENOSPC)
        todo += [e.__cause__, e.__context__, *[a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]]
    return None


def raise_if_output_fault(exc: BaseException, output: str | None = None) -> None:
    """For reject handlers: re-raise an output fault instead of blaming the input for it."""
    fault = find_output_fault(exc, output)
    if fault is not None:
        raise fault from exc


# --- fault injection -------------------------------------------------------------------------

FAULT_ENV = "MICROTURN_FAULT"
_writes = 0


def fault_point() -> None:
    """Called by the writers after each completed file write; does nothing unless the
    environment sets ``MICROTURN_FAULT``, for tests that need a fault at a chosen point of a
    run's output without timing races (writes are counted per process):

    - ``kill_after_writes:N``: the process SIGKILLs itself after its N-th write;
    - ``wait_after_writes:N:PATH``: after its N-th write the process waits (polling every
      50 ms, at most 10 minutes) until the file PATH exists, so a test can act while a run
      is half-way through its output (and holds its lock).
    """
    global _writes
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    kind, _, arg = spec.partition(":")
    if kind not in ("kill_after_writes", "wait_after_writes"):
        raise ValueError(f"{FAULT_ENV}={spec!r}: the faults are kill_after_writes:N and wait_after_writes:N:PATH")
    count, _, path = arg.partition(":")
    _writes += 1
    if _writes != int(count):
        return
    if kind == "kill_after_writes":
        os.kill(os.getpid(), signal.SIGKILL)
    import time

    for _ in range(12_000):
        if os.path.exists(path):
            return
        time.sleep(0.05)


# --- atomic writes ---------------------------------------------------------------------------

def pending_name(final: str) -> str:
    """``dir/.name.pending`` beside ``dir/name``."""
    head, _, tail = final.rpartition("/")
    return f"{head}/.{tail}{PENDING}" if head else f".{tail}{PENDING}"


def final_name(pending: str) -> str:
    head, _, tail = pending.rpartition("/")
    assert tail.startswith(".") and tail.endswith(PENDING), pending
    name = tail[1:-len(PENDING)]
    return f"{head}/{name}" if head else name


def _tmp_name(path: str) -> str:
    head, _, tail = path.rpartition("/")
    return f"{head}/.{tail}{TMP}" if head else f".{tail}{TMP}"


def _replace(src: str, dst: str) -> None:
    if _local(dst):
        os.replace(_os_path(src), _os_path(dst))
        return
    if FileSystems.exists(dst):
        FileSystems.delete([dst])
    FileSystems.rename([src], [dst])


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Turn any ``OSError`` raised inside into an :class:`OutputError` about ``path`` (for code
    that only writes to the output, so an OSError there is never the input's fault)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(path, exc.strerror or str(exc), exc.errno) from exc


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator:
    """A writable file object for ``path``: written to ``.name.tmp`` and renamed onto ``path``
    when the block ends without error; on any error the temporary file is removed and an
    ``OSError`` becomes an :class:`OutputError`. Counts as one write for :func:`fault_point`."""
    tmp = _tmp_name(path)
    try:
        with writing(path):
            if _local(path):
                os.makedirs(os.path.dirname(_os_path(path)) or ".", exist_ok=True)
            with FileSystems.create(tmp) as f:
                yield f
            _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            if FileSystems.exists(tmp):
                FileSystems.delete([tmp])
        raise
    fault_point()


def publish(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data)


# --- ownership -------------------------------------------------------------------------------

def _marker(output: str) -> dict | None:
    path = FileSystems.join(output, MARKER)
    if not FileSystems.exists(path):
        return None
    try:
        with FileSystems.open(path) as f:
            data = json.loads(f.read().decode("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _present_tables(output: str) -> list[str]:
    found = []
    for t in TABLE_DIRS:
        if FileSystems.match([FileSystems.join(output, t, "*")])[0].metadata_list:
            found.append(t)
    return found


def _inferred_stage(tables: list[str]) -> str | None:
    """The stage that wrote an output from before markers existed, from its tables."""
    if "samples" in tables or "shards" in tables:
        return "shard"
    if "sources" in tables:
        return "ingest"
    if "conversations" in tables:
        return "synthesize"
    return None


def owner(output: str) -> str | None:
    """The stage that owns ``output`` (its marker, or for an output written before markers
    existed, the stage its tables say), or ``None`` for an empty or missing folder."""
    mark = _marker(output)
    if mark is not None:
        stage = mark.get("stage")
        return stage if isinstance(stage, str) and stage in STAGE_TABLES else "an unknown writer"
    tables = _present_tables(output)
    if not tables:
        return None
    return _inferred_stage(tables) or "an unknown writer"


def _base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (the whole path when there is none)."""
    cut = min((i for i, ch in enumerate(pattern) if ch in "*?["), default=len(pattern))
    head = pattern[:cut]
    if cut < len(pattern):
        head = head.rpartition("/")[0] or ("/" if pattern.startswith("/") else ".")
    return head.rstrip("/") or "/"


def check_output(output: str, stage: str, *, inputs: Iterable[str] = (), globs: Iterable[str] = ()) -> None:
    """Refuse (``ValueError``, one line) an output the ``stage`` must not write into: a file;
    an output another stage owns; an output that is one of ``inputs`` (folders or files) or
    lies inside or around one; an output that is or holds the base folder of an input glob in
    ``globs``. An output *inside* a glob's base folder is allowed: the stage excludes it from
    the matches (:func:`excluded`)."""
    assert stage in STAGE_TABLES, stage
    if _local(output):
        path = _os_path(output)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"--output {output}: is a file, not a folder")
    who = owner(output)
    if who is not None and who != stage:
        raise ValueError(f"--output {output}: holds the output of {who}; this {stage} run would overwrite it. "
                         f"Give {stage} a folder of its own")
    for given in inputs:
        if _under(given, output) or _under(output, given):
            raise ValueError(f"--output {output}: is, contains or lies inside the input {given}; "
                             "give an output folder apart from the inputs")
    for pattern in globs:
        base = _base(pattern)
        if _under(base, output):
            raise ValueError(f"--output {output}: contains the files of the input {pattern}; "
                             "give an output folder apart from the inputs")
    for name, mark in ROOT_FILES.get(stage, {}).items():
        if not _owns_root_file(output, name, mark):
            raise ValueError(f"--output {output}: holds a {name} that {stage} did not write, and {stage} writes "
                             f"its own {name} there; move yours away or give {stage} another folder")


def _owns_root_file(output: str, name: str, mark: str) -> bool:
    """True when ``output/name`` is missing or carries the stage's ``mark`` (see :data:`ROOT_FILES`)."""
    path = FileSystems.join(output, name)
    if not FileSystems.exists(path):
        return True
    try:
        with FileSystems.open(path) as f:
            head = f.read(_ROOT_MARK_BYTES)
    except OSError:
        return False
    return mark.encode("utf-8") in head


def excluded(path: str, output: str) -> bool:
    """True for a matched input that lies in the output (an output inside a recursive input
    glob is never read back as input)."""
    return _under(path, output)


def claim_output(output: str, stage: str) -> None:
    """Write the marker that says ``stage`` owns ``output`` (same bytes on every run)."""
    data = json.dumps({"stage": stage, "layout_version": LAYOUT_VERSION}, sort_keys=True).encode() + b"\n"
    path = FileSystems.join(output, MARKER)
    if _marker(output) == json.loads(data):
        return
    with atomic_file(path) as f:
        f.write(data)


# --- lock ------------------------------------------------------------------------------------

class LockHeld(Exception):
    """Another live process holds a lock; ``holder`` is the pid it wrote into the lock file."""

    def __init__(self, holder: str):
        super().__init__(f"held by pid {holder}")
        self.holder = holder


def holder_locked(path: str) -> int:
    """Open ``path`` (created if missing), take an exclusive non-blocking ``flock`` on it and
    write this process's pid into it; return the descriptor, to be passed to
    :func:`release_lock`. Raises :class:`LockHeld` (not an ``OSError``: nothing is wrong with the
    disk) when another live process holds it. The kernel releases the lock when the holder
    exits in any way, ``kill -9`` included, so a lock is never stale."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(holder) from None
        # The previous holder removes the file on release: if it did so between our open and our
        # flock, we locked an orphaned inode and must start over on the new file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:  # e.g. a full disk: leave no lock file behind
        release_lock(fd, path)
        raise
    return fd


def release_lock(fd: int, path: str) -> None:
    """Remove the lock file (while still holding it, so no one else can hold this inode) and
    release the lock."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    os.close(fd)


class OutputLock:
    """An exclusive lock on an output for one run (a context manager).

    Local outputs: ``flock`` on ``OUT/.microturn.lock`` (:func:`holder_locked`), which holds the
    holder's pid and is removed on release. A second run raises :class:`OutputInUse` naming the
    holder. Non-local outputs are not locked (see the module notes)."""

    def __init__(self, output: str):
        self.output = output
        self.path = os.path.join(_os_path(output), LOCK) if _local(output) else None
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        if self.path is None:
            log.warning("%s is not a local folder: concurrent runs into it are not detected", self.output)
            return self
        with writing(self.output):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            with writing(self.path):
                self.fd = holder_locked(self.path)
        except LockHeld as exc:
            raise OutputInUse(f"--output {self.output}: another run (pid {exc.holder}) is writing it; "
                              f"wait for it to finish (lock {self.path})") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None and self.path is not None:  # a lock is only taken on a path
            release_lock(self.fd, self.path)
            self.fd = None


# --- pending files, commit, discard ----------------------------------------------------------

def _list(folder: str) -> list[str]:
    """Every file directly in ``folder`` (dot files too), as full paths."""
    if _local(folder):
        d = _os_path(folder)
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(os.path.join(d, n) for n in names if os.path.isfile(os.path.join(d, n)))
    return sorted(m.path for m in FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list)


def _owned_dirs(output: str, stage: str) -> list[tuple[str, re.Pattern]]:
    """The folders of ``output`` whose files the stage replaces, each with the pattern of the
    final names it owns there (the output itself for its :data:`ROOT_FILES`)."""
    dirs = [(FileSystems.join(output, t), TABLE_PART) for t in STAGE_TABLES[stage]]
    if ROOT_FILES.get(stage):
        names = "|".join(re.escape(n) for n in sorted(ROOT_FILES[stage]))
        dirs.append((output, re.compile(f"^(?:{names})$")))
    if stage == "shard" and _local(output):
        root = _os_path(output)
        with contextlib.suppress(FileNotFoundError):
            for name in sorted(os.listdir(root)):
                if SPLIT_DIR.match(name) and name not in TABLE_DIRS and os.path.isdir(os.path.join(root, name)):
                    dirs.append((os.path.join(root, name), SHARD_FILE))
    elif stage == "shard":
        splits = {m.path.rstrip("/").rsplit("/", 2)[-2]
                  for m in FileSystems.match([FileSystems.join(output, "*", "*")])[0].metadata_list}
        dirs += [(FileSystems.join(output, s), SHARD_FILE) for s in sorted(splits)
                 if SPLIT_DIR.match(s) and s not in TABLE_DIRS]
    return dirs


def _name(path: str) -> str:
    return path.replace(os.sep, "/").rpartition("/")[2]


def pending_files(output: str, stage: str) -> list[str]:
    """Pending files of the run, in every folder the stage owns."""
    return [p for d, _ in _owned_dirs(output, stage) for p in _list(d)
            if _name(p).startswith(".") and _name(p).endswith(PENDING)]


# The shard stage's sample bytes between the worker that made them and the one that packs them
# into a shard (pipelines/shard): run-private, removed when the run commits or fails.
SPOOL = ".spool"


def spool_dir(output: str) -> str:
    return FileSystems.join(output, SPOOL)


def clear_spool(output: str) -> int:
    """Delete the spool folder of a shard output (every file under it); returns how many files went."""
    root = spool_dir(output)
    if _local(root):
        path = _os_path(root)
        if not os.path.isdir(path):
            return 0
        n = sum(len(names) for _, _, names in os.walk(path))
        shutil.rmtree(path)
        return n
    files = [m.path for m in FileSystems.match([FileSystems.join(root, "**")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    return len(files)


def discard(output: str, stage: str) -> int:
    """Delete pending and temporary files in the stage's folders (of a failed or killed run),
    and the shard spool; final files are not touched. Returns how many went."""
    gone = [p for d, _ in _owned_dirs(output, stage) for p in _list(d)
            if _name(p).startswith(".") and _name(p).endswith((PENDING, TMP))]
    if gone:
        FileSystems.delete(gone)
    return len(gone) + (clear_spool(output) if stage == "shard" else 0)


def commit(output: str, stage: str) -> tuple[int, int]:
    """Publish a successful run: every pending file takes its final name, then final files in
    the same folders that the run did not write are removed (only names the stage writes:
    ``part-NNNNN-of-NNNNN.parquet``, and for shard ``SPLIT[-video]-NNNNNN.tar|parquet``; a root
    file such as the shard card is replaced, never removed). Returns ``(published, removed)``."""
    published = removed = 0
    for folder, pattern in _owned_dirs(output, stage):
        files = _list(folder)
        pend = [p for p in files if _name(p).startswith(".") and _name(p).endswith(PENDING)]
        if not pend and pattern is not SHARD_FILE:
            continue  # a table (or root file) this run did not write at all stays as it was
        keep = {_name(final_name(p.replace(os.sep, "/"))) for p in pend}
        for p in pend:
            with writing(output):
                _replace(p, final_name(p.replace(os.sep, "/")))
            published += 1
        stale = [p for p in files if pattern.match(_name(p)) and _name(p) not in keep]
        if stale:
            log.warning("removing %d file(s) of an earlier run under %s that this run superseded", len(stale), folder)
            FileSystems.delete(stale)
            removed += len(stale)
        with contextlib.suppress(OSError):
            if _local(folder) and not os.listdir(_os_path(folder)) and pattern is SHARD_FILE:
                os.rmdir(_os_path(folder))
    if stage == "shard":
        clear_spool(output)
    return published, removed


# --- one stage run ---------------------------------------------------------------------------

def pending_table(output: str, table: str):
    """The rows this run wrote for ``table`` (its pending parts) as one Arrow table."""
    import pyarrow as pa

    from microturn.pipelines.parquet_bytes import read_parquet_bytes
    from microturn.schemas import schema_for

    schema = schema_for(table)
    parts = []
    for p in sorted(_list(FileSystems.join(output, table))):
        if _name(p).startswith(".") and _name(p).endswith(PENDING):
            with FileSystems.open(p) as f:
                # an Arrow-owned copy: see parquet_bytes (a BytesIO here can abort the process at exit)
                parts.append(read_parquet_bytes(f.read(), schema=schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


@contextlib.contextmanager
def stage_output(output: str, stage: str, *, inputs: Iterable[str] = (), globs: Iterable[str] = ()) -> Iterator[None]:
    """Everything a stage run does to its output around its pipeline: check it
    (:func:`check_output`), lock it (:class:`OutputLock`), check it again under the lock,
    clear what a killed run left (:func:`discard`) and claim it (:func:`claim_output`). When
    the block raises, the run's pending files are discarded and an output fault behind the
    exception (Beam wraps a DoFn's exception in its own) is raised as an :class:`OutputError`.
    Publishing is the caller's: :func:`finish` inside the block."""
    inputs, globs = tuple(i for i in inputs if i), tuple(globs)
    check_output(output, stage, inputs=inputs, globs=globs)
    with OutputLock(output):
        check_output(output, stage, inputs=inputs, globs=globs)
        left = discard(output, stage)
        if left:
            log.warning("removed %d unfinished file(s) of an earlier run that did not complete under %s",
                        left, output)
        claim_output(output, stage)
        try:
            yield
        except BaseException as exc:
            with contextlib.suppress(Exception):
                discard(output, stage)
            fault = find_output_fault(exc, output) if isinstance(exc, Exception) else None
            if fault is not None and fault is not exc:
                raise fault from None
            raise


def finish(output: str, stage: str, *, made_table: str, what: str) -> None:
    """Publish the run (:func:`commit`) when it made at least one row of ``made_table``;
    otherwise discard it, leave the earlier output as it was and raise :class:`NothingWritten`
    naming the rejects (every input failed) or saying that the inputs gave nothing."""
    made = pending_table(output, made_table).num_rows
    if made:
        commit(output, stage)
        return
    rejects = pending_table(output, "rejects").to_pylist()
    discard(output, stage)
    if rejects:
        from collections import Counter

        reasons = Counter(f"{r['stage']}/{r['error_type']}" for r in rejects)
        first = rejects[0]
        raise NothingWritten(
            f"every input failed ({len(rejects)} reject(s): "
            + ", ".join(f"{k}: {n}" for k, n in sorted(reasons.items()))
            + f"; first: {first['input']}: {' '.join(first['message'].split())[:200]}); no {what} made, "
            f"{output} left as it was")
    raise NothingWritten(f"the inputs gave no {what} and no rejects; {output} left as it was")


def count_matches(patterns: Iterable[str], output: str) -> int | None:
    """Files the input ``patterns`` match, leaving out dot files and files inside ``output``
    (``None`` when a pattern cannot be matched here: the pipeline then rejects it). A stage
    refuses to start when this is 0, so a typo never replaces a good output with empty tables."""
    n = 0
    for pattern in patterns:
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # noqa: BLE001 - the pipeline's own match step turns this into a reject
            return None
        n += sum(1 for m in found if not _name(m.path).startswith(".") and not excluded(m.path, output))
    return n


class _DropOutputFaults(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "OutputError: cannot write the output" not in record.getMessage()


def quiet_output_faults() -> None:
    """Keep Beam from logging an output fault with its traceback before the stage prints it as
    its one error line (other DoFn failures are still logged in full)."""
    for name in ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker",
                 "apache_beam.runners.portability.fn_api_runner.fn_runner"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _DropOutputFaults) for f in lg.filters):
            lg.addFilter(_DropOutputFaults())
