"""Progress of a stage run on the DirectRunner: inputs done out of inputs matched, rate, time left.

The DirectRunner runs a pipeline in this process (``in_memory``, ``multi_threading``) or in worker
processes (``multi_processing``), and reports Beam metrics only when the run has ended, so the
count cannot come from counters. Instead each input, when the stage has finished with it (its
conversation row written, or its reject), appends one line to a file of its worker in a local
folder (:class:`_MarkDone`); a thread of the launcher reads the new lines twice a second and counts
distinct inputs. That works the same in every running mode, since the workers of
``multi_processing`` share this machine's disk.

The display is a ``tqdm`` bar on stderr when stderr is a terminal (``--progress bar`` forces it),
plain log lines otherwise (``microturn.pipelines.progress``, level info, every
:data:`LOG_EVERY_S` seconds and at the end). Other runners keep their own reporting (Dataflow's
console, Flink's web UI): nothing is added to their pipelines.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pipeline import AppliedPTransform, Pipeline, PipelineVisitor

log = logging.getLogger(__name__)

MODES = ("auto", "bar", "log", "off")
# Log lines every 30 s: a 2 h ingest logs 240 lines, and a stalled run shows within half a minute.
LOG_EVERY_S = 30.0
POLL_S = 0.5
# Runners that run the pipeline on this machine (Beam's names for the DirectRunner and its parts).
LOCAL_RUNNERS = ("directrunner", "direct", "switchingdirectrunner", "bundlebaseddirectrunner", "fnapirunner")

# (full label of a step, output tag (None: the main output), path to the input's key in an element)
Source = tuple[str, str | None, tuple[str, ...]]


def mode_for(requested: str, options: PipelineOptions) -> str:
    """The display a run gets: ``off`` on runners other than the DirectRunner (they report on
    their own), else ``bar`` on a terminal and ``log`` elsewhere for ``auto``, else as asked."""
    if requested not in MODES:
        raise ValueError(f"--progress {requested!r}: choose from {', '.join(MODES)}")
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
    if name is not None and name.lower() not in LOCAL_RUNNERS:
        return "off"
    if requested == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return requested


class _MarkDone(beam.DoFn):
    """Appends a short hash of each element's key, one line, to a file of this DoFn instance."""

    def __init__(self, folder: str, path: tuple[str, ...]):
        self.folder, self.path = folder, path
        self._fd: int | None = None

    def setup(self) -> None:
        name = f"{os.getpid()}-{uuid.uuid4().hex}.done"
        try:
            self._fd = os.open(os.path.join(self.folder, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError:  # the folder is gone: the launcher has stopped watching
            self._fd = None

    def process(self, element) -> None:  # no output
        if self._fd is None:
            return
        key = element
        for part in self.path:
            key = key.get(part) if isinstance(key, dict) else None
        digest = hashlib.sha1(str(key).encode("utf-8", "surrogatepass")).hexdigest()[:20]
        try:
            os.write(self._fd, (digest + "\n").encode())
        except OSError:
            pass

    def teardown(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _find(pipeline: Pipeline, labels: set[str]) -> dict[str, AppliedPTransform]:
    found: dict[str, AppliedPTransform] = {}

    class _Visitor(PipelineVisitor):
        def enter_composite_transform(self, transform_node: AppliedPTransform) -> None:
            self.visit_transform(transform_node)

        def visit_transform(self, transform_node: AppliedPTransform) -> None:
            if transform_node.full_label in labels:
                found[transform_node.full_label] = transform_node

    pipeline.visit(_Visitor())
    return found


def _width() -> dict:
    """tqdm's size settings: the terminal's, followed as it is resized; 100 columns and 24 rows
    where the terminal reports no size (a pseudo-terminal without one, or a forced bar on a
    pipe), where tqdm would draw nothing (a bar at row 0 of 0 rows counts as off the screen)."""
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = 0
    return {"dynamic_ncols": True} if columns > 0 else {"ncols": 100, "nrows": 24}


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def line(stage: str, done: int, total: int | None, elapsed_s: float, *, finished: bool = False) -> str:
    """One progress line: ``ingest: 4/10 inputs done, 0.33/s, about 18 s left``."""
    of = f"{done}/{total}" if total is not None else f"{done}"
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if finished:
        return f"{stage}: {of} inputs done in {_clock(elapsed_s)} ({rate:.2f}/s)"
    if done == 0:
        return f"{stage}: {of} inputs done, {_clock(elapsed_s)} so far"
    left = f", about {_clock((total - done) / rate)} left" if total is not None else ""
    return f"{stage}: {of} inputs done, {rate:.2f}/s{left}"


class StageProgress:
    """The progress display of one stage run; a context manager around the pipeline's run.

    ``total``: the inputs the run will see (``None`` when unknown: the count is shown alone).
    ``mode``: from :func:`mode_for`; ``off`` makes every method a no-op. Inside the block, the
    caller builds its pipeline and calls :meth:`attach`; leaving the block without an error shows
    ``total/total``, since every input is then done (written or rejected), including any the
    markers cannot see (a shard conversation too short for any sample makes no output)."""

    def __init__(self, stage: str, total: int | None, *, mode: str, log_every_s: float = LOG_EVERY_S):
        self.stage, self.total, self.mode, self.log_every_s = stage, total, mode, log_every_s
        self.folder: str | None = None
        self._keys: set[str] = set()
        self._offsets: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._started = 0.0
        self._logged = 0.0
        self._finished = False

    @property
    def marked(self) -> int:
        """Distinct inputs the pipeline's steps have marked done so far."""
        return len(self._keys)

    @property
    def done(self) -> int:
        """Inputs finished so far (at most ``total``)."""
        n = len(self._keys)
        if self.total is None:
            return n
        return self.total if self._finished else min(n, self.total)

    def attach(self, pipeline: Pipeline, sources: Sequence[Source]) -> int:
        """Mark the elements of the steps in ``sources`` as done inputs; returns how many steps
        were found (a step missing from the pipeline is logged at debug level and left out)."""
        if self.mode == "off" or self.folder is None:
            return 0
        found = _find(pipeline, {label for label, _, _ in sources})
        attached = 0
        for i, (label, tag, path) in enumerate(sources):
            node = found.get(label)
            if node is None or tag not in node.outputs:
                log.debug("progress: no step %s (output %s) in the pipeline", label, tag)
                continue
            pcoll = node.outputs[tag]
            _ = pcoll | f"Progress{i}" >> beam.ParDo(_MarkDone(self.folder, path))
            attached += 1
        return attached

    def __enter__(self) -> StageProgress:
        if self.mode == "off":
            return self
        self.folder = tempfile.mkdtemp(prefix=f"microturn-{self.stage}-progress-")
        self._started = self._logged = time.monotonic()
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.stage, unit="input", file=sys.stderr, mininterval=POLL_S,
                             **_width())
        self._thread = threading.Thread(target=self._watch, name=f"{self.stage}-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.mode == "off":
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._poll()
        log.debug("%s: the pipeline marked %d input(s) done, of %s", self.stage, self.marked, self.total)
        self._finished = exc_type is None  # every input is done then: see the class notes
        elapsed = time.monotonic() - self._started
        if self._bar is not None:
            self._bar.update(self.done - self._bar.n)
            self._bar.close()
        elif exc_type is None:
            log.info("%s", line(self.stage, self.done, self.total, elapsed, finished=True))
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _poll(self) -> None:
        folder = self.folder
        if folder is None:
            return
        try:
            names = [n for n in os.listdir(folder) if n.endswith(".done")]
        except OSError:
            return
        for name in names:
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as f:
                    f.seek(self._offsets.get(name, 0))
                    data = f.read()
            except OSError:
                continue
            complete = data[:data.rfind(b"\n") + 1]  # a line being written is read on the next poll
            self._offsets[name] = self._offsets.get(name, 0) + len(complete)
            self._keys.update(complete.decode().split())

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            self._poll()
            now = time.monotonic()
            if self._bar is not None:
                self._bar.update(self.done - self._bar.n)
            elif now - self._logged >= self.log_every_s:
                self._logged = now
                log.info("%s", line(self.stage, self.done, self.total, now - self._started))
