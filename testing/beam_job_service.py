"""Beam's local job service, with ``--sdk_worker_parallelism`` honoured (``python -m`` entry point).

Run as ``python -m microturn.testing.beam_job_service --port 0 --port_file FILE`` (the flags of
``apache_beam.runners.portability.local_job_service_main``, which this wraps).

Why a wrapper: Beam's local job service runs each job with a fresh FnApiRunner through
``run_via_runner_api``, which never reads the job's options for a worker count, so it asks an
external worker pool for one worker per environment whatever the flags say (measured with Beam
2.77: one process per job). Flink and Spark start ``--sdk_worker_parallelism`` SDK workers per
task manager; this wrapper makes the local job service do the same, so that a job run through
:mod:`microturn.testing.portable` really spreads its bundles over that many worker processes.
The FnApiRunner then runs each stateless stage's bundles in parallel across the workers (its
``ParallelBundleManager``, as the DirectRunner's ``multi_processing`` mode does).

It relies on two private attributes of Beam's ``BeamJob`` and ``FnApiRunner``; the test of the
portable path counts the worker processes, so a Beam upgrade that moves them is caught there.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability import local_job_service, local_job_service_main
from apache_beam.runners.portability.fn_api_runner import fn_runner

__all__ = ["main", "worker_count"]


def worker_count(value: object) -> int:
    """The number of SDK workers that ``--sdk_worker_parallelism`` asks for (0: one per CPU).

    The option has no type in Beam's parser, so it arrives as a string from the command line
    and as an int by default.
    """
    n = int(str(value or 1))
    if n < 0:
        raise ValueError(f"--sdk_worker_parallelism must be 0 or more, got {n}")
    return n or (os.cpu_count() or 1)


def _invoke_runner(self: local_job_service.BeamJob):
    # Beam's own _invoke_runner, plus the worker count (FnApiRunner.run_pipeline sets the same
    # attribute from --direct_num_workers; run_via_runner_api, which the job service calls, does not).
    self.set_state(beam_job_api_pb2.JobState.RUNNING)
    options = self.pipeline_options()
    runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
    runner._num_workers = worker_count(options.view_as(PortableOptions).sdk_worker_parallelism)
    return runner.run_via_runner_api(self._pipeline_proto, options)


def main(argv: list[str] | None = None) -> None:
    """Serve jobs until SIGTERM (flags as ``local_job_service_main``: ``--port``, ``--port_file``, ...)."""
    local_job_service.BeamJob._invoke_runner = _invoke_runner
    # As local_job_service_main does when run as a script: SIGTERM ends it through its cleanup
    # (the port file is removed), and its log goes to stderr.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig()
    logging.getLogger().setLevel(logging.INFO)
    local_job_service_main.run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
