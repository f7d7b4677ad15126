"""Progress of stage runs on the DirectRunner (inputs done out of inputs matched), and the worker
processes' start-up notices kept off stderr.

Real runs on Beam's DirectRunner: a pipeline whose inputs are marked as they finish, and the
``microturn synthesize`` command on two generated dialogues in-process and with worker processes
(``multi_processing``), where the count must come from other processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from microturn.pipelines import worker_stderr
from microturn.pipelines.progress import StageProgress, line, mode_for

HANG_GUARD_S = 600  # only a hang reaches this


def _done_lines(folder: str) -> int:
    return sum(open(os.path.join(folder, n), "rb").read().count(b"\n") for n in os.listdir(folder))


class _Work(beam.DoFn):
    """Writes down how many marks the progress folder held when each input's work began."""

    def __init__(self, folder: str, observed: str):
        self.folder, self.observed = folder, observed

    def process(self, x):
        with open(self.observed, "a") as f:
            f.write(f"{_done_lines(self.folder)}\n")
        yield {"key": f"input-{x}"}


def test_each_input_is_marked_when_its_work_ends_not_at_the_end_of_the_run(tmp_path):
    observed = tmp_path / "observed.txt"
    with StageProgress("test", 4, mode="log") as progress:
        assert progress.folder is not None
        with beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"])) as p:
            _ = (p | beam.Create([0, 1, 2, 3]) | "Work" >> beam.ParDo(_Work(progress.folder, str(observed)))
                 | "Twice" >> beam.FlatMap(lambda d: [d, d]))  # a key marked twice counts once
            assert progress.attach(p, [("Twice", None, ("key",)), ("Missing", None, ("key",))]) == 1
    assert progress.marked == 4  # the pipeline's marks, read back (two per key count once)
    # In process the inputs run one after the other, each to its mark: input k begins after the
    # two marks of each of the k inputs before it.
    assert sorted(int(n) for n in observed.read_text().split()) == [0, 2, 4, 6]
    assert progress.done == 4


def test_marks_are_read_as_they_come():
    with StageProgress("test", 10, mode="log") as progress:
        assert progress.folder is not None
        with open(os.path.join(progress.folder, "a.done"), "w") as f:
            f.write("k1\nk2\nk2\nk3-part")  # the last line is still being written
            f.flush()
            progress._poll()
            assert progress.marked == 2 and progress.done == 2
            f.write("ial\n")
            f.flush()
            progress._poll()
            assert progress.marked == 3
    assert progress.done == 10  # the run ended without an error: every input is done


def test_a_failed_run_keeps_its_count_and_removes_its_folder():
    progress = StageProgress("test", 10, mode="log")
    with pytest.raises(RuntimeError), progress:
        assert progress.folder is not None
        folder = progress.folder
        with open(os.path.join(folder, "a.done"), "w") as f:
            f.write("k1\n")
        raise RuntimeError("the pipeline failed")
    assert progress.done == 1 and not os.path.exists(folder)


def test_lines_give_count_rate_and_time_left():
    assert line("ingest", 4, 10, 12.0) == "ingest: 4/10 inputs done, 0.33/s, about 18 s left"
    assert line("ingest", 0, 10, 5.0) == "ingest: 0/10 inputs done, 5 s so far"
    assert line("shard", 3, None, 3.0) == "shard: 3 inputs done, 1.00/s"
    assert line("ingest", 10, 10, 3725.0, finished=True) == "ingest: 10/10 inputs done in 1 h 02 min (0.00/s)"


@pytest.mark.parametrize("runner, requested, mode", [
    (None, "auto", "log"),  # pytest's stderr is no terminal
    ("DirectRunner", "bar", "bar"), ("DirectRunner", "off", "off"), ("direct", "log", "log"),
    ("DataflowRunner", "bar", "off"), ("PortableRunner", "auto", "off"), ("FlinkRunner", "log", "off"),
])
def test_progress_shows_on_the_direct_runner_only(runner, requested, mode):
    options = PipelineOptions([f"--runner={runner}"] if runner else [])
    assert mode_for(requested, options) == mode


def _synthesize(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    return subprocess.run([sys.executable, "-m", "microturn.cli.main", "synthesize", "--generate", "2",
                           "--output", str(out), *extra], capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_a_run_logs_n_of_n_done_and_nothing_of_beams_before_it(tmp_path):
    proc = _synthesize(tmp_path, "--progress", "log", "--log-level", "debug")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert lines and lines[0].startswith(("DEBUG microturn.", "INFO microturn.", "WARNING microturn.")), lines[:3]
    assert "apitools" not in proc.stderr
    assert "synthesize: the pipeline marked 2 input(s) done, of 2" in proc.stderr  # counted, not assumed
    assert "INFO microturn.pipelines.progress: synthesize: 2/2 inputs done in " in proc.stderr
    assert "synthesize: " in proc.stdout


def test_a_forced_bar_shows_n_of_n(tmp_path):
    proc = _synthesize(tmp_path, "--progress", "bar")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "synthesize: 100%" in proc.stderr and "2/2 [" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_worker_processes_are_counted_and_their_notices_kept_off_stderr(tmp_path):
    proc = _synthesize(tmp_path, "--progress", "log", "--log-level", "info", "--direct_running_mode",
                       "multi_processing", "--direct_num_workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "synthesize: 2/2 inputs done in " in proc.stderr
    for notice in ("apitools", "semi_persistent_directory", "Discarding unparseable args", "INFO:"):
        assert notice not in proc.stderr, proc.stderr[-3000:]
    debug = _synthesize(tmp_path, "--progress", "log", "--log-level", "debug", "--direct_running_mode",
                        "multi_processing", "--direct_num_workers", "2")
    assert debug.returncode == 0, debug.stderr[-3000:]
    assert "synthesize: the pipeline marked 2 input(s) done, of 2" in debug.stderr  # from the workers' marks


def test_the_worker_filter_passes_everything_else(capfd):
    worker = textwrap.dedent("""
        import sys
        sys.stderr.write("WARNING:root:apitools not found, and bigquery client libraries are not available\\n")
        sys.stderr.write("INFO:__main__:Logging handler created.\\n")
        sys.stderr.write("Traceback (most recent call last):\\nValueError: a real fault\\n")
        sys.stderr.write("no newline at the end")
    """)
    with worker_stderr.filtered():
        subprocess.run([sys.executable, "-c", worker], check=True, timeout=HANG_GUARD_S)
        print("the launcher's own line", file=sys.stderr)
    err = capfd.readouterr().err
    assert "apitools" not in err and "Logging handler" not in err
    assert "Traceback (most recent call last):\nValueError: a real fault\n" in err
    assert err.endswith("no newline at the end")  # a last line without its newline: at the end
    assert "the launcher's own line" in err


def test_only_the_direct_runners_workers_are_told_to_log_less():
    from microturn.pipelines.cli_args import direct_worker_args

    quiet = "--default_sdk_harness_log_level=WARNING"
    assert direct_worker_args([]) == [quiet]
    assert direct_worker_args(["--direct_running_mode=multi_processing"]) == ["--direct_running_mode=multi_processing",
                                                                               quiet]
    for kept in (["--runner", "DataflowRunner"], ["--runner=PortableRunner", "--job_endpoint=localhost:8099"],
                 ["--default_sdk_harness_log_level=INFO"]):
        assert direct_worker_args(kept) == kept
