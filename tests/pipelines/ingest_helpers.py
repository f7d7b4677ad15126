"""Helpers shared by the end-to-end ingest tests."""

from __future__ import annotations

import json

from microturn.pipelines.ingest.run import run
from microturn.pipelines.tables import read_table
from microturn.schemas import TABLE_NAMES


def ingest(inputs: list[str], out: str, *extra: str):
    argv = [a for pattern in inputs for a in ("--input", pattern)]
    return run([*argv, "--output", out, *extra], print_summary=False)


def table_rows(out: str, table: str) -> list[dict]:
    return read_table(out, table).to_pylist()


def canonical(out: str) -> dict[str, list[str]]:
    """Every table as a sorted list of JSON rows: equal when the contents are equal."""
    return {t: sorted(json.dumps(r, sort_keys=True, default=str) for r in table_rows(out, t))
            for t in TABLE_NAMES}
