"""The rejects base that every stage's steps share (``microturn.pipelines.dead_letter``)."""

from __future__ import annotations

import errno
import os

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from beam_testing import in_memory
from microturn.pipelines.dead_letter import RejectingStep
from microturn.pipelines.outputs import OutputError
from microturn.pipelines.tables import REJECTS


class _Halve(RejectingStep):
    namespace = "test_stage"
    stage = "halve"

    def __init__(self, output: str | None = None):
        super().__init__()
        self.output = output  # the run's output folder: a fault there is raised, not rejected

    def process(self, n: int):
        if n % 2:
            yield self._reject(f"n={n}", ValueError(f"{n} is odd"))
        elif n < 0:
            yield self._reject(f"n={n}", "negative", "Negative")
        else:
            self.done.inc()
            yield n // 2


class _Renamed(_Halve):
    rejected_metric = "odd_numbers"


def _counters(result, namespace: str) -> dict[str, int]:
    found = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    return {c.key.metric.name: c.committed for c in found}


@pytest.mark.parametrize("step, rejected", [(_Halve, "halve_rejected"), (_Renamed, "odd_numbers")])
def test_failed_inputs_become_rows_of_the_rejects_output_and_are_counted(step, rejected):
    p = in_memory()
    out = p | beam.Create([4, 3, -2, 7]) | beam.ParDo(step()).with_outputs(REJECTS, main="ok")
    assert_that(out.ok, equal_to([2]), label="ok")
    assert_that(out[REJECTS], equal_to([
        {"input": "n=3", "stage": "halve", "error_type": "ValueError", "message": "3 is odd"},
        {"input": "n=-2", "stage": "halve", "error_type": "Negative", "message": "negative"},
        {"input": "n=7", "stage": "halve", "error_type": "ValueError", "message": "7 is odd"},
    ]), label="rejects")
    result = p.run()
    result.wait_until_finish()
    assert _counters(result, "test_stage") == {rejected: 3, "halve_ok": 1}


def test_a_fault_of_the_output_is_raised_not_rejected(tmp_path):
    step = _Halve(str(tmp_path))
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "media" / "x.flac"))
    with pytest.raises(OutputError):
        step._reject("in.wav", full)
    # The same error on an input's path is the input's: a reject.
    unreadable = OSError(errno.EACCES, os.strerror(errno.EACCES), "/elsewhere/in.wav")
    assert step._reject("in.wav", unreadable).tag == REJECTS
