"""The in-memory pipeline of the PTransform tests, typed for static checking.

Beam annotates ``Pipeline.apply`` (and so ``pcoll | transform``) as returning a ``PValue``, and
``PTransform.__ror__`` is unannotated, so a type checker sees neither the tagged outputs
(``result.ok``, ``result[REJECTS]``) nor the tuples and dicts that composite transforms return.
``in_memory()`` is a ``TestPipeline`` whose type is left open, so those tests check cleanly
without an ignore on every line.
"""

from __future__ import annotations

from typing import Any

from apache_beam.testing.test_pipeline import TestPipeline


def in_memory() -> Any:
    """A fresh ``TestPipeline`` (DirectRunner); use as ``with in_memory() as p:``."""
    return TestPipeline()
