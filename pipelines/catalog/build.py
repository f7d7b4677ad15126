"""Build the auditors' DuckDB catalog from the record tables of one or more output directories.

The catalog holds one table per record table (DESIGN.md, "Records on disk"): the union of that
table over every output given, with the schema's columns plus ``output`` (the directory a row
came from). Nested columns keep their types (``stats`` STRUCT, lists, the ``backends`` MAP).
Beside them: ``catalog_meta`` (schema version, inputs, allow-list, row counts),
``build_info`` (build time and the code's version and git commit; :mod:`.build_info`),
``license_allowlist``, ``catalog_views`` (name and description of every view) and the views of
:mod:`microturn.pipelines.catalog.views`.

Tables stream in: each Parquet file of an output is read a batch of :data:`BATCH_ROWS` rows at a
time and inserted, so a build's memory does not grow with the corpus (a remote file is read
whole first: one file's bytes). Rows keep the order of a whole-table read.

A build writes a temporary file next to the target and renames it over the old catalog only
when complete, so a reader never sees half a catalog, and the same inputs give the same tables.
A build killed at any point (``kill -9`` included) leaves the previous catalog as it was; its
temporary file is removed by the next build.

Two builds of one catalog never interleave: a build holds an exclusive ``flock`` on
``.NAME.lock`` beside the catalog (it holds the builder's pid), and a second build is refused
with a message naming that pid. The kernel releases a ``flock`` when its process dies in any
way, so a lock is never stale: a lock file left by a killed build is simply locked again (and
removed at the end) by the next one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from microturn.pipelines.catalog.build_info import write_build_info
from microturn.pipelines.catalog.licenses import DEFAULT_ALLOWED_LICENSES
from microturn.pipelines.catalog.views import VIEWS
from microturn.pipelines.outputs import LockHeld, fault_point, holder_locked, release_lock
from microturn.pipelines.parquet_bytes import parquet_file_bytes
from microturn.pipelines.tables import table_path
from microturn.schemas import SCHEMA_VERSION, TABLE_NAMES, schema_for

OUTPUT_COLUMN = "output"
# Rows read and inserted at a time. A conversations row with its stats lists is about 1-2 KiB in
# Arrow, so 16384 rows keep a batch near 16-32 MiB while DuckDB's insert overhead per batch
# (a few ms) stays small against its rows.
BATCH_ROWS = 16384
_NOT_LICENSES = frozenset({"", "unknown"})
# The on-disk format the catalog is written in. DuckDB 2.0 writes its own format by default
# (storage version 69), which DuckDB 1.5 refuses ("can only read versions between 64 and 68"),
# and 1.5.x is the CLI most auditors have. 'v1.5.0' (storage version 68) is read by DuckDB 1.5
# and 2.0, the last two minor releases; the views use no function 1.5 lacks (their SQL is bound
# by the reader when queried). Raise it only when the oldest DuckDB in use reads the newer one.
STORAGE_COMPATIBILITY_VERSION = "v1.5.0"


@dataclass(frozen=True, kw_only=True)
class CatalogSummary:
    """What a build loaded and what its audit views found."""

    catalog: str
    inputs: tuple[str, ...]
    rows: dict[str, int]  # table → rows, over all inputs
    duplicate_conversations: int
    leakage: int  # rows of the `leakage` view
    license_issues: int  # rows of the `license_check` view
    unchecked_remixes: int  # remixes whose source conversation is not in the catalog

    def render(self) -> str:
        """A few plain-text lines for the command line."""
        lines = [f"catalog {self.catalog} from {len(self.inputs)} output(s): {', '.join(self.inputs)}"]
        lines += [f"  {table:<14} {n:>10,} rows" for table, n in self.rows.items()]
        lines.append(f"  duplicate conversation ids: {self.duplicate_conversations}")
        lines.append(f"  leakage rows: {self.leakage}    license issues: {self.license_issues}")
        if self.unchecked_remixes:
            lines.append(f"  remixes with no source in the catalog (leakage unchecked): {self.unchecked_remixes}")
        return "\n".join(lines)


def normalise_output(output: str) -> str:
    """The spelling of an output directory stored in the ``output`` column: local paths are
    normalised (``./out/`` → ``out``), URLs lose a trailing slash."""
    if "://" in output:
        stripped = output.rstrip("/")
        return stripped if not stripped.endswith(":/") and "://" in stripped else output
    return os.path.normpath(output)


def license_allowlist(extra: Sequence[str] = ()) -> tuple[tuple[str, str], ...]:
    """``(license, added_by)`` rows: the defaults, then ``extra`` ones not already present
    (case-insensitively). ``ValueError`` for a blank entry or 'unknown'."""
    rows = [(lic, "default") for lic in DEFAULT_ALLOWED_LICENSES]
    seen = {lic.lower() for lic in DEFAULT_ALLOWED_LICENSES}
    for lic in extra:
        name = lic.strip()
        if name.lower() in _NOT_LICENSES:
            raise ValueError(f"--allow-license {lic!r} is not a license name; give an SPDX id such as "
                             "CC-BY-NC-4.0 or a LicenseRef-... name")
        if name.lower() not in seen:
            seen.add(name.lower())
            rows.append((name, "--allow-license"))
    return tuple(rows)


def _inputs(outputs: Sequence[str]) -> tuple[str, ...]:
    if not outputs:
        raise ValueError("give at least one output directory to build the catalog from")
    kept: list[str] = []
    for out in outputs:
        name = normalise_output(out)
        if "://" not in name and not os.path.isdir(name):
            what = "is not a directory" if os.path.exists(name) else "does not exist"
            raise ValueError(f"output directory {out} {what}; give the --output of ingest, "
                             "synthesize or shard")
        if "://" not in name and not any(os.path.isdir(os.path.join(name, t)) for t in TABLE_NAMES):
            raise ValueError(f"{out} holds none of the record tables ({', '.join(TABLE_NAMES)}); give the "
                             "--output of ingest, synthesize or shard")
        if name in kept:
            warnings.warn(f"output {out!r} given twice; loading it once", stacklevel=3)
            continue
        kept.append(name)
    return tuple(kept)


def _files(output: str, table: str) -> list[str]:
    """The Parquet files of ``OUT/<table>/`` in name order (none when the table is absent)."""
    pattern = FileSystems.join(table_path(output, table), "*.parquet")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _parquet_file(path: str) -> pq.ParquetFile:
    """A local file opened by Arrow itself (row groups read as they are needed); a remote one
    read whole into an Arrow-owned buffer first (see :mod:`microturn.pipelines.parquet_bytes`:
    no Arrow thread may ever release a Python-owned buffer)."""
    if "://" not in path:
        return pq.ParquetFile(path)
    with FileSystems.open(path) as f:
        return parquet_file_bytes(f.read())


def _conform(batch: pa.RecordBatch, schema: pa.Schema, output: str) -> pa.Table:
    """``batch`` with the schema's columns in its order and types (a column a file of an older
    schema lacks is null, as a dataset read fills it) and ``output`` last."""
    n = batch.num_rows
    columns = [batch.column(f.name).cast(f.type) if f.name in batch.schema.names else pa.nulls(n, f.type)
               for f in schema]
    columns.append(pa.array([output] * n, pa.string()))
    return pa.Table.from_arrays(columns, schema=schema.append(pa.field(OUTPUT_COLUMN, pa.string())))


def _append(con: duckdb.DuckDBPyConnection, output: str, table: str) -> int:
    """Insert ``output``'s rows of ``table`` batch by batch: at most :data:`BATCH_ROWS` rows (and
    one remote file's bytes) in memory at a time, whatever the table's size. Rows of the files in
    name order, each file's in its order: the order a whole-table read gives."""
    schema, rows = schema_for(table), 0
    for path in _files(output, table):
        try:
            with contextlib.closing(_parquet_file(path)) as parquet:
                for batch in parquet.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
                    if batch.num_rows == 0:
                        continue
                    con.register("_incoming", _conform(batch, schema, output))
                    con.execute(f'INSERT INTO "{table}" SELECT * FROM _incoming')
                    con.unregister("_incoming")
                    rows += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(f"{output}: cannot read table {table!r} ({path}): {exc}") from exc
    return rows


def _load_tables(con: duckdb.DuckDBPyConnection, inputs: tuple[str, ...]) -> dict[str, int]:
    """One table per record table, streamed in from every output in turn (see :func:`_append`)."""
    rows: dict[str, int] = {}
    found = {out: 0 for out in inputs}
    for table in TABLE_NAMES:
        empty = schema_for(table).append(pa.field(OUTPUT_COLUMN, pa.string())).empty_table()
        con.register("_incoming", empty)
        con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM _incoming')
        con.unregister("_incoming")
        for out in inputs:
            found[out] += _append(con, out, table)
        rows[table] = _count(con, f'SELECT count(*) FROM "{table}"')
        fault_point()  # tests kill the build here (MICROTURN_FAULT=kill_after_writes:N)
    for out, n in found.items():
        if n == 0:
            warnings.warn(f"{out}: no rows in any record table ({', '.join(TABLE_NAMES)}); is it the "
                          "output directory of ingest, synthesize or shard?", stacklevel=3)
    return rows


def _write_meta(con, inputs: tuple[str, ...], allow: tuple[tuple[str, str], ...], rows: dict[str, int]) -> None:
    try:
        version = metadata.version("microturn")
    except metadata.PackageNotFoundError:
        version = None
    con.execute(
        "CREATE TABLE catalog_meta AS SELECT ?::INTEGER AS schema_version, ?::VARCHAR[] AS inputs, "
        "?::VARCHAR[] AS allowed_licenses, map(?::VARCHAR[], ?::BIGINT[]) AS table_rows, "
        "?::VARCHAR AS microturn_version",
        [SCHEMA_VERSION, list(inputs), [lic for lic, _ in allow], list(rows), list(rows.values()), version],
    )
    con.execute("CREATE TABLE license_allowlist (license VARCHAR NOT NULL, added_by VARCHAR NOT NULL)")
    con.executemany("INSERT INTO license_allowlist VALUES (?, ?)", [list(r) for r in allow])
    con.execute("CREATE TABLE catalog_views (name VARCHAR NOT NULL, description VARCHAR NOT NULL)")
    con.executemany("INSERT INTO catalog_views VALUES (?, ?)",
                    [[v.name, v.description.replace("\n", " ")] for v in VIEWS])


def _count(con, sql: str) -> int:
    # fetchall, not fetchone: DuckDB refuses further work on a connection while a result is unread.
    return int(con.execute(sql).fetchall()[0][0])


def _unchecked_remixes(con) -> int:
    return _count(con, """
        SELECT count(*) FROM unique_conversations AS r
        WHERE r.origin = 'remix' AND NOT EXISTS (
            SELECT 1 FROM unique_conversations AS s
            WHERE json_valid(r.provenance) AND s.conversation_id = r.provenance ->> '$.remix_of')""")


def _discard(path: str) -> None:
    for p in (path, f"{path}.wal"):
        if os.path.exists(p):
            os.remove(p)


class CatalogInUse(ValueError):
    """Another build holds the lock of this catalog."""


@contextlib.contextmanager
def build_lock(target: str):
    """Hold the exclusive lock of the catalog file ``target`` (``.NAME.lock`` beside it) for a
    build; :class:`CatalogInUse` at once when another live process holds it."""
    path = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.lock")
    try:
        fd = holder_locked(path)
    except LockHeld as exc:
        raise CatalogInUse(f"--catalog {target}: another `microturn catalog build` (pid {exc.holder}) is "
                           f"building it; wait for it to finish (lock {path})") from None
    try:
        yield
    finally:
        release_lock(fd, path)


def _sweep(target: str) -> None:
    """Remove the temporary files of earlier builds of ``target`` that were killed (only ever
    called under the build lock, so no live build owns them)."""
    pattern = os.path.join(glob.escape(os.path.dirname(target)), f".{glob.escape(os.path.basename(target))}.tmp-*")
    for path in glob.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def build_catalog(outputs: Sequence[str], catalog: str, *, allow_licenses: Sequence[str] = ()) -> CatalogSummary:
    """Build (or rebuild) the DuckDB ``catalog`` from the record tables under ``outputs``.

    ``outputs`` are output directories of ingest, synthesize or shard (local paths or Beam
    filesystem URLs); a table missing from one of them contributes no rows. ``catalog`` must be
    a local file: DuckDB opens local files only, so build it locally and copy it if it has to
    live elsewhere. ``allow_licenses`` extend :data:`DEFAULT_ALLOWED_LICENSES`.
    """
    if "://" in catalog:
        raise ValueError(f"--catalog {catalog}: the catalog must be a local file (DuckDB opens local files "
                         "only); build it locally and copy it afterwards")
    inputs = _inputs(outputs)
    allow = license_allowlist(allow_licenses)
    target = os.path.abspath(catalog)
    if os.path.isdir(target):
        raise ValueError(f"--catalog {catalog} is a directory; give a file name such as {catalog}/catalog.duckdb")
    parent = os.path.dirname(target)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ValueError(f"--catalog {catalog}: {parent} is a file, not a directory")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with build_lock(target):
        _sweep(target)
        summary = _build(inputs, allow, catalog, target)
    if summary.unchecked_remixes:
        warnings.warn(f"{summary.unchecked_remixes} remix conversation(s) name a source that is not in the "
                      "catalog; the leakage view skips them (add the ingest output they were remixed from)",
                      stacklevel=2)
    return summary


def _build(inputs: tuple[str, ...], allow, catalog: str, target: str) -> CatalogSummary:
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.tmp-{os.getpid()}")
    _discard(tmp)
    try:
        con = duckdb.connect(tmp, config={"storage_compatibility_version": STORAGE_COMPATIBILITY_VERSION})
        try:
            rows = _load_tables(con, inputs)
            _write_meta(con, inputs, allow, rows)
            write_build_info(con)  # when, and from which code: the audit report shows it
            for view in VIEWS:
                con.execute(view.create_statement())
            summary = CatalogSummary(
                catalog=catalog, inputs=inputs, rows=rows,
                duplicate_conversations=_count(con, "SELECT count(*) FROM duplicate_conversations"),
                leakage=_count(con, "SELECT count(*) FROM leakage"),
                license_issues=_count(con, "SELECT count(*) FROM license_check"),
                unchecked_remixes=_unchecked_remixes(con),
            )
            con.execute("CHECKPOINT")
            fault_point()
        finally:
            con.close()
        # A write-ahead log left by an interrupted writer of the old file would be replayed
        # into the new one; the catalog is only ever written whole, so it holds nothing to keep.
        if os.path.exists(f"{target}.wal"):
            warnings.warn(f"removing a stale write-ahead log {target}.wal of the previous catalog", stacklevel=2)
            os.remove(f"{target}.wal")
        os.replace(tmp, target)
    finally:
        _discard(tmp)
    return summary
