"""Faults of `microturn catalog build`: killed mid-build, and builds that race for one catalog.

A build is killed with SIGKILL at chosen points of its work (``MICROTURN_FAULT=kill_after_writes:N``
makes the real command kill itself after its N-th table, or after its final CHECKPOINT), in a
subprocess. Then the previous catalog must be byte-identical to what it was, and a rerun must
leave no temporary or lock file and give a catalog whose contents (every table and view, rows
in canonical order) equal a clean build's; DuckDB files are not byte-stable, their contents are.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import duckdb
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "pipelines"))
from catalog_fixtures import write_fixture_outputs  # noqa: E402
from microturn.pipelines.catalog.build import build_catalog  # noqa: E402
from microturn.pipelines.catalog.run import catalog_main  # noqa: E402
from microturn.pipelines.catalog.views import VIEW_NAMES  # noqa: E402
from microturn.schemas import TABLE_NAMES  # noqa: E402

FAULT_ENV = "MICROTURN_FAULT"


def dump(path: str) -> dict[str, list[tuple]]:
    names = [*TABLE_NAMES, "license_allowlist", "catalog_views", *VIEW_NAMES]
    with duckdb.connect(path, read_only=True) as con:
        out = {n: sorted(con.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}
        # catalog_meta minus nothing: inputs and row counts must match too.
        out["catalog_meta"] = con.execute("SELECT schema_version, inputs, allowed_licenses, table_rows "
                                          "FROM catalog_meta").fetchall()
    return out


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build_cmd(outputs: list[str], catalog: str) -> list[str]:
    return [sys.executable, "-m", "microturn.cli.main", "catalog", "build", *outputs, "--catalog", catalog]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return write_fixture_outputs(str(tmp_path_factory.mktemp("outputs")))


@pytest.fixture(scope="module")
def clean(outputs, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("clean") / "catalog.duckdb")
    build_catalog(outputs.all, path)
    return dump(path)


# After the 1st table (sources), the 5th (events) and the last (8 tables), and after the final
# CHECKPOINT (the 9th point): the temporary catalog is complete there but not yet renamed.
@pytest.mark.parametrize("kill_after", [1, 5, 8, 9])
def test_a_killed_build_leaves_the_previous_catalog_and_a_rerun_equals_a_clean_build(
        kill_after, outputs, clean, tmp_path):
    folder = tmp_path / "cat"
    folder.mkdir()
    catalog = str(folder / "catalog.duckdb")
    build_catalog([outputs.ingest], catalog)  # the previous catalog: another input set
    before = sha(catalog)
    env = {**os.environ, FAULT_ENV: f"kill_after_writes:{kill_after}"}
    proc = subprocess.run(build_cmd(outputs.all, catalog), env=env, capture_output=True, timeout=600)
    assert proc.returncode == -9, proc.stderr.decode()
    assert sha(catalog) == before
    leftovers = sorted(os.listdir(folder))
    assert any(n.startswith(".catalog.duckdb.tmp-") for n in leftovers), leftovers  # it was mid-write
    assert catalog_main(["build", *outputs.all, "--catalog", catalog]) == 0
    assert sorted(os.listdir(folder)) == ["catalog.duckdb"]  # temporary and lock files gone
    assert dump(catalog) == clean


def test_a_second_build_is_refused_while_one_holds_the_lock_and_a_dead_holder_blocks_nothing(
        outputs, clean, tmp_path, capsys):
    catalog = str(tmp_path / "catalog.duckdb")
    build_catalog([outputs.ingest], catalog)
    before = sha(catalog)
    # Another process holds the build lock (the real lock code), as a build in progress does.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom microturn.pipelines.catalog.build import build_lock\n"
         "with build_lock(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.read()\n", catalog],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout is not None  # stdout=PIPE
    try:
        assert holder.stdout.readline() == b"locked\n"
        assert catalog_main(["build", *outputs.all, "--catalog", catalog]) == 2
        err = capsys.readouterr().err
        assert f"(pid {holder.pid}) is building it" in err and len(err.strip().splitlines()) == 1
        assert sha(catalog) == before
    finally:
        holder.kill()  # SIGKILL: the lock file stays, the kernel drops the lock
        holder.wait()
    assert os.path.exists(str(tmp_path / ".catalog.duckdb.lock"))
    assert catalog_main(["build", *outputs.all, "--catalog", catalog]) == 0
    assert sorted(os.listdir(tmp_path)) == ["catalog.duckdb"]
    assert dump(catalog) == clean


def test_two_concurrent_builds_never_interleave(outputs, clean, tmp_path):
    catalog = str(tmp_path / "catalog.duckdb")
    procs = [subprocess.Popen(build_cmd(outputs.all, catalog), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    results = []
    for p in procs:
        _, err = p.communicate(timeout=600)  # waits, reads the pipes and closes them
        results.append((p.returncode, err.decode()))
    # Each either built the catalog or was refused with the lock message: never a mixed file.
    assert all(code == 0 or (code == 2 and "is building it" in err) for code, err in results), results
    assert any(code == 0 for code, _ in results)
    assert sorted(os.listdir(tmp_path)) == ["catalog.duckdb"]
    assert dump(catalog) == clean
