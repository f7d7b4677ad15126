"""The dead-letter output every stage shares: one bad input becomes a ``rejects`` row, not a failure.

A step of any stage subclasses :class:`RejectingStep`, names its Beam metric ``namespace`` (the
stage: ``ingest``, ``synthesize``, ``shard``) and its ``stage`` (the ``rejects`` table's stage
column, e.g. ``probe``), and turns the failure of one input into ``yield self._reject(...)``:
a row tagged :data:`~microturn.pipelines.tables.REJECTS`, counted in the Beam counter
``{stage}_rejected`` (or the class's ``rejected_metric``) and logged. A fault of the run's own
output (full disk, read-only file system) is no input's fault: it is raised, and the run stops.

Array-free module: no shape suffixes needed.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import TaggedOutput

from microturn.pipelines.outputs import raise_if_output_fault
from microturn.pipelines.tables import REJECTS, reject

log = logging.getLogger(__name__)

__all__ = ["RejectingStep"]


class RejectingStep(beam.DoFn):
    """A DoFn whose failed inputs go to the ``rejects`` output.

    Class attributes: ``namespace`` (Beam metric namespace), ``stage`` (the rejects rows' stage
    and the metrics' prefix), ``rejected_metric`` (the reject counter's name when it is not
    ``{stage}_rejected``). Counters: ``self.rejected`` and ``self.done`` (``{stage}_ok``, for
    the subclass to count its successes).
    """

    namespace: ClassVar[str] = "pipeline"
    stage: ClassVar[str] = "step"
    rejected_metric: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.rejected = Metrics.counter(self.namespace, self.rejected_metric or f"{self.stage}_rejected")
        self.done = Metrics.counter(self.namespace, f"{self.stage}_ok")

    def _reject(self, key: str, exc: BaseException | str, error_type: str | None = None) -> TaggedOutput:
        """The ``rejects`` row of input ``key`` (tagged output), counted and logged.

        ``exc`` is the exception (its type names the error unless ``error_type`` does) or a
        message. Raises instead when ``exc`` is a fault of the output (the step's ``output``
        attribute, when it has one): see :func:`microturn.pipelines.outputs.raise_if_output_fault`.
        """
        if isinstance(exc, BaseException):
            raise_if_output_fault(exc, getattr(self, "output", None))
        self.rejected.inc()
        row = reject(key, self.stage, exc, error_type)
        log.warning("%s rejected %s (%s): %s", self.stage, key, row["error_type"], row["message"])
        return TaggedOutput(REJECTS, row)
