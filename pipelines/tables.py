"""Writing and reading the record tables (Parquet datasets at ``OUT/<table>/``).

Tables are written sorted, in a fixed number of files (:class:`WriteSortedTable`), so that the
same rows give the same bytes on every run and runner.

Every row is validated against its schema in :mod:`microturn.schemas` before it is written; a
row that fails becomes a ``rejects`` row (stage ``validate``) instead of reaching the table.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import AsSingleton, TaggedOutput

from microturn.pipelines.outputs import pending_name, publish
from microturn.pipelines.parquet_bytes import read_parquet_bytes
from microturn.schemas import RowError, schema_for, validate_row
from microturn.schemas.text import visible

REJECTS = "rejects"
log = logging.getLogger(__name__)


# Parts of messages that differ between identical runs: heap addresses in object reprs
# (``<_io.BytesIO object at 0x7f...>``) and the random part of temporary names (``tmpk3j_x9a2``).
_RUN_SPECIFIC = ((re.compile(r" at 0x[0-9a-fA-F]+"), ""),
                 (re.compile(r"\b0x[0-9a-fA-F]{8,}\b"), "0x..."),
                 (re.compile(r"\btmp[a-z0-9_]{8}\b"), "tmp..."))


def scrub(message: str) -> str:
    """``message`` without what changes between identical runs (heap addresses, temporary names),
    so reruns give the same ``rejects`` rows, and with control characters escaped."""
    for pattern, repl in _RUN_SPECIFIC:
        message = pattern.sub(repl, message)
    # Messages quote what failed (a script's text, a sidecar line, a file name): control and bidi
    # characters are written as visible escapes, so no table row can drive a terminal.
    return visible(message, keep="\n")


def reject(input_: str, stage: str, exc: BaseException | str, error_type: str | None = None) -> dict:
    """A ``rejects`` row: which input failed, at which stage, and why (the message passed through :func:`scrub`)."""
    if isinstance(exc, BaseException):
        return {"input": input_, "stage": stage, "error_type": error_type or type(exc).__name__,
                "message": scrub(str(exc) or repr(exc))}
    return {"input": input_, "stage": stage, "error_type": error_type or "Error", "message": scrub(str(exc))}


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
            yield TaggedOutput(REJECTS, reject(str(key), "validate", exc))


class ValidateRows(beam.PTransform):
    """Validate rows of ``table``; outputs ``valid`` and ``rejects``."""

    def __init__(self, table: str):
        super().__init__(label=None)
        schema_for(table)
        self.table = table

    def expand(self, rows):
        return rows | f"Validate{self.table.title()}" >> beam.ParDo(_Validate(self.table)).with_outputs(
            REJECTS, main="valid")


# Columns that order the rows of each table in a sorted write (then the whole row breaks ties).
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "sources": ("uri",),
    "conversations": ("conversation_id",),
    "segments": ("conversation_id", "start_ms", "end_ms", "speaker"),
    "words": ("conversation_id", "start_ms", "end_ms", "speaker"),
    "events": ("conversation_id", "t_ms", "type", "speaker"),
    "rejects": ("input", "stage"),
    "samples": ("shard", "tar_offset"),
    "shards": ("path",),
}


# Rows per Parquet row group. Readers hold a row group at a time (Beam's ReadFromParquet turns a
# whole one into Python dicts: ~1 KB a row), so a table of 500,000 words in one group costs a
# reader ~500 MB; 16384 rows keep it near 16 MB whatever the table's size. Smaller tables are one
# group either way, so their bytes do not change.
ROW_GROUP_ROWS = 16384


def _sort_key(table: str, row: dict) -> tuple:
    head = tuple((row.get(c) is None, row.get(c) if row.get(c) is not None else 0) for c in SORT_KEYS[table])
    return head + (json.dumps(row, sort_keys=True, default=str),)


def _shard_of(table: str, row: dict, num_shards: int) -> int:
    # Rows of one conversation stay together; the shard is a pure function of the row's key.
    key = row.get("conversation_id") or row.get("input") or row.get("uri") or row.get("path") or ""
    digest = hashlib.sha256(f"{table}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


class _WriteSortedShard(beam.DoFn):
    def __init__(self, output: str, table: str, num_shards: int, pending: bool):
        self.output, self.table, self.num_shards, self.pending = output, table, num_shards, pending

    def process(self, item, parts: int | None = None):
        index, rows = item
        rows = sorted((r for r in rows if r is not None), key=lambda r: _sort_key(self.table, r))
        data = pa.Table.from_pylist(rows, schema=schema_for(self.table))
        buf = io.BytesIO()
        pq.write_table(data, buf, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        name = f"part-{index:05d}-of-{parts or self.num_shards:05d}.parquet"
        final = FileSystems.join(table_path(self.output, self.table), name)
        target = pending_name(final) if self.pending else final
        publish(buf.getvalue(), target)
        yield target


class WriteSortedTable(beam.PTransform):
    """Write validated rows of ``table`` as ``num_shards`` Parquet files with a fixed row order.

    Rows go to a shard by a hash of their conversation id (or input/uri) and are sorted within it,
    so the same rows give byte-identical files on every run and runner, whatever order the
    runner produced them in. Every shard file is written (empty ones too) under a temporary name
    and renamed when complete, so a reader never sees half a file. Holds one shard's rows in
    memory at a time: raise ``num_shards`` for tables of many millions of rows.

    With ``rows_per_part`` the number of files grows with the table: ``max(num_shards,
    ceil(rows / rows_per_part))``, from a count (a combiner), so that no writer holds more than
    about ``rows_per_part`` rows whatever the corpus size.

    With ``pending=True`` the files get pending names (``.part-...parquet.pending``) that no
    reader matches, published by :func:`microturn.pipelines.outputs.commit` once the whole run
    succeeded (which also removes parts of an earlier run with another ``num_shards``).
    """

    def __init__(self, output: str, table: str, *, num_shards: int = 1, pending: bool = False,
                 rows_per_part: int | None = None):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be at least 1, got {num_shards}")
        if rows_per_part is not None and rows_per_part < 1:
            raise ValueError(f"rows_per_part must be at least 1, got {rows_per_part}")
        schema_for(table)
        self.output, self.table, self.num_shards, self.pending = output, table, num_shards, pending
        self.rows_per_part = rows_per_part

    def expand(self, rows):
        t, n, per = self.table, self.num_shards, self.rows_per_part
        if per is not None:
            parts = (rows
                     | f"Count{t.title()}" >> beam.combiners.Count.Globally()
                     | f"Parts{t.title()}" >> beam.Map(lambda count: max(n, -(-count // per))))
            return (
                (rows | f"Shard{t.title()}" >> beam.Map(lambda r, k: (_shard_of(t, r, k), r), AsSingleton(parts)),
                 parts | f"AllShards{t.title()}" >> beam.FlatMap(lambda k: [(i, None) for i in range(k)]))
                | f"Join{t.title()}" >> beam.Flatten()
                | f"Group{t.title()}" >> beam.GroupByKey()
                | f"WriteSorted{t.title()}" >> beam.ParDo(_WriteSortedShard(self.output, t, n, self.pending),
                                                          AsSingleton(parts))
            )
        keyed = rows | f"Shard{t.title()}" >> beam.Map(lambda r: (_shard_of(t, r, n), r))
        every = rows.pipeline | f"AllShards{t.title()}" >> beam.Create([(i, None) for i in range(n)])
        return (
            (keyed, every)
            | f"Join{t.title()}" >> beam.Flatten()
            | f"Group{t.title()}" >> beam.GroupByKey()
            | f"WriteSorted{t.title()}" >> beam.ParDo(_WriteSortedShard(self.output, t, n, self.pending))
        )


def store_tables(rows: dict, rejects: list, *, output: str, num_shards: int, rows_per_part: int | None = None) -> None:
    """Validate and write every table of a stage: ``rows`` maps a table name to a PCollection
    (or a tuple of them, flattened first); rows that fail validation join ``rejects``, which are
    validated and written last. Tables are written sorted (:class:`WriteSortedTable`), under
    pending names: the stage's ``run`` publishes them with :func:`microturn.pipelines.outputs.commit`
    when the run succeeded, or discards them."""
    rejects = list(rejects)
    for table, pcolls in rows.items():
        if isinstance(pcolls, tuple):
            pcolls = pcolls | f"Merge{table.title()}" >> beam.Flatten()
        checked = pcolls | f"Check{table.title()}" >> ValidateRows(table)
        rejects.append(checked[REJECTS])
        _ = checked.valid | f"Store{table.title()}" >> WriteSortedTable(output, table, num_shards=num_shards,
                                                                         pending=True, rows_per_part=rows_per_part)
    all_rejects = tuple(rejects) | "FlattenRejects" >> beam.Flatten()
    checked = all_rejects | "CheckRejects" >> ValidateRows(REJECTS)
    _ = checked.valid | "StoreRejects" >> WriteSortedTable(output, REJECTS, num_shards=num_shards, pending=True,
                                                           rows_per_part=rows_per_part)


def read_table(output: str, table: str) -> pa.Table:
    """Read ``OUT/<table>/`` (any Beam filesystem) into one Arrow table with its schema."""
    schema = schema_for(table)
    pattern = FileSystems.join(table_path(output, table), "*.parquet")
    matches = FileSystems.match([pattern])[0].metadata_list
    parts = []
    for meta in sorted(matches, key=lambda m: m.path):
        with FileSystems.open(meta.path) as f:
            # Arrow-owned copy: a Python-owned buffer released by Arrow's I/O threads at exit aborts the process
            parts.append(read_parquet_bytes(f.read(), schema=schema))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts)
