"""The catalog file opens in the previous DuckDB minor release, not only the project's own.

The catalog is built from the fixture outputs (tests/pipelines/catalog_fixtures.py) with the
project's DuckDB, then opened read-only by the older DuckDB of ``.venv-interop`` in a subprocess,
which reads every table and view: a view's SQL is bound by the reader, so a function the older
release lacks would fail there even when the file format is right.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys

import duckdb

from microturn.pipelines.catalog.build import STORAGE_COMPATIBILITY_VERSION
from microturn.pipelines.catalog.views import VIEW_NAMES
from microturn.schemas import TABLE_NAMES
from microturn.testing.interop import interop_python

# The newest storage version DuckDB 1.5 reads ("can only read versions between 64 and 68");
# DuckDB 2.0's own format is 69.
DUCKDB_1_5_MAX_STORAGE = 68

# Run by the interop python: every table and view of the catalog (argv[1]) with its reader's
# version, its columns, its row count and its rows as JSON values, sorted (so row order does not
# matter) by a key with floats rounded to 6 digits (two releases may differ in the last bits).
READ_ALL = r"""
import json, sys
import duckdb


def rounded(v):
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, (list, tuple)):
        return [rounded(x) for x in v]
    if isinstance(v, dict):
        return {str(k): rounded(x) for k, x in v.items()}
    return v


con = duckdb.connect(sys.argv[1], read_only=True)
names = [r[0] for r in con.execute(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name").fetchall()]
out = {"version": duckdb.__version__, "views": sorted(r[0] for r in con.execute(
    "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()), "relations": {}}
for name in names:
    cur = con.execute(f'SELECT * FROM "{name}"')
    rows = json.loads(json.dumps([list(r) for r in cur.fetchall()], default=str))
    rows.sort(key=lambda r: json.dumps(rounded(r), sort_keys=True))
    columns = [d[0] for d in cur.description]
    (count,), = con.execute(f'SELECT count(*) FROM "{name}"').fetchall()
    out["relations"][name] = {"columns": columns, "count": count, "rows": rows}
print(json.dumps(out))
"""


def read_all(python: str, path: str) -> dict:
    """Run :data:`READ_ALL` under ``python`` on the catalog ``path`` (no shell: an argv list)."""
    done = subprocess.run([python, "-c", READ_ALL, path], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{python} could not read {path}:\n{done.stderr}"
    return json.loads(done.stdout)


def same(a, b) -> bool:
    """``a == b`` with floats compared to a relative 1e-9: two DuckDB releases may compute a
    quantile or an average to different last bits."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def storage_version(path: str) -> int:
    """The storage version number in a DuckDB file's main header: 8 bytes of checksum, the magic
    ``DUCK``, then the version as a little-endian 64-bit integer."""
    with open(path, "rb") as f:
        head = f.read(20)
    assert head[8:12] == b"DUCK", f"{path} is not a DuckDB file"
    return struct.unpack("<Q", head[12:20])[0]


def test_catalog_header_holds_a_storage_version_duckdb_1_5_reads(catalog):
    assert STORAGE_COMPATIBILITY_VERSION == "v1.5.0"
    assert storage_version(catalog) <= DUCKDB_1_5_MAX_STORAGE
    with duckdb.connect(catalog, read_only=True) as con:
        (tags,), = con.execute("SELECT tags FROM duckdb_databases() "
                               "WHERE database_name = current_database()").fetchall()
    assert tags["storage_version"].startswith(STORAGE_COMPATIBILITY_VERSION)


def test_previous_duckdb_minor_reads_every_table_and_view_as_the_project_does(catalog):
    python = interop_python()
    older = read_all(python, catalog)
    ours = read_all(sys.executable, catalog)
    older_version = tuple(int(p) for p in older["version"].split(".")[:2])
    our_version = tuple(int(p) for p in duckdb.__version__.split(".")[:2])
    assert older_version < our_version, f"the interop DuckDB {older['version']} is not older than {duckdb.__version__}"
    assert ours["version"] == duckdb.__version__
    # Every record table, the catalog's own tables and every view are there for the older reader.
    expected = {*TABLE_NAMES, "catalog_meta", "license_allowlist", "catalog_views", *VIEW_NAMES}
    assert expected <= set(older["relations"])
    assert set(VIEW_NAMES) <= set(older["views"]) and older["views"] == ours["views"]
    assert older["relations"].keys() == ours["relations"].keys()
    for name, got in older["relations"].items():
        want = ours["relations"][name]
        assert got["columns"] == want["columns"], name
        assert got["count"] == want["count"], name
        assert same(got["rows"], want["rows"]), f"{name}: {got['rows']} != {want['rows']}"
    assert older["relations"]["conversations"]["count"] == 8
    assert older["relations"]["leakage"]["count"] == 2
