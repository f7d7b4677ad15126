"""Writing and reading the record tables (Parquet datasets at ``OUT/<table>/``).

Every row is validated against its schema in :mod:`microturn.schemas` before it is written; a
row that fails becomes a ``rejects`` row (stage ``validate``) instead of reaching the table.
"""

from __future__ import annotations

import io
import logging

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from microturn.schemas import RowError, schema_for, validate_row

REJECTS = "rejects"
log = logging.getLogger(__name__)


def reject(input_: str, stage: str, exc: BaseException | str, error_type: str | None = None) -> dict:
    """A ``rejects`` row: which input failed, at which stage, and why."""
    if isinstance(exc, BaseException):
        return {"input": input_, "stage": stage, "error_type": error_type or type(exc).__name__,
                "message": str(exc) or repr(exc)}
    return {"input": input_, "stage": stage, "error_type": error_type or "Error", "message": exc}


def table_path(output: str, table: str) -> str:
    return FileSystems.join(output, table)


class _Validate(beam.DoFn):
    def __init__(self, table: str):
        self.table = table
        self.bad = Metrics.counter("validate", f"{table}_invalid")

    def process(self, row):
        try:
            yield validate_row(self.table, row)
        except RowError as exc:
            self.bad.inc()
            key = row.get("conversation_id") or row.get("uri") or row.get("input") or "?"
            yield beam.pvalue.TaggedOutput(REJECTS, reject(str(key), "validate", exc))


class ValidateRows(beam.PTransform):
    """Validate rows of ``table``; outputs ``valid`` and ``rejects``."""

    def __init__(self, table: str):
        super().__init__(label=None)
        schema_for(table)
        self.table = table

    def expand(self, rows):
        return rows | f"Validate{self.table.title()}" >> beam.ParDo(_Validate(self.table)).with_outputs(
            REJECTS, main="valid")


class WriteTable(beam.PTransform):
    """Write already-validated rows of ``table`` to ``OUT/<table>/part-SSSSS-of-NNNNN.parquet``.

    A fixed shard count makes reruns overwrite the same files instead of leaving stale ones.
    """

    def __init__(self, output: str, table: str, *, num_shards: int = 1):
        super().__init__()
        self.output, self.table, self.num_shards = output, table, num_shards

    def expand(self, rows):
        return rows | f"Write{self.table.title()}" >> beam.io.WriteToParquet(
            FileSystems.join(table_path(self.output, self.table), "part"),
            schema_for(self.table),
            num_shards=self.num_shards,
            shard_name_template="-SSSSS-of-NNNNN",
            file_name_suffix=".parquet",
            codec="zstd",
        )


def read_table(output: str, table: str) -> pa.Table:
    """Read ``OUT/<table>/`` (any Beam filesystem) into one Arrow table with its schema."""
    schema = schema_for(table)
    pattern = FileSystems.join(table_path(output, table), "*.parquet")
    matches = FileSystems.match([pattern])[0].metadata_list
    parts = []
    for meta in sorted(matches, key=lambda m: m.path):
        with FileSystems.open(meta.path) as f:
            parts.append(pq.read_table(io.BytesIO(f.read()), schema=schema))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts)
