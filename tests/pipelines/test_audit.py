"""`microturn audit`: read-only queries on a real catalog, refusals, and the three output formats."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog_fixtures import write_fixture_outputs
from microturn.pipelines.catalog.audit import (
    QueryResult,
    check_read_only,
    format_float,
    render_csv,
    render_json,
    run_query,
)
from microturn.pipelines.catalog.build import build_catalog
from microturn.pipelines.catalog.run import audit_main
from microturn.schemas.text import visible


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    outputs = write_fixture_outputs(str(tmp_path_factory.mktemp("outputs")))
    path = str(tmp_path_factory.mktemp("catalog") / "catalog.duckdb")
    build_catalog(outputs.all, path)
    return path


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def audit(capsys, *argv: str) -> tuple[int, str, str]:
    status = audit_main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


WRITES = [
    "COPY (SELECT 1) TO 'x.csv'",
    "COPY rejects TO 'rejects.parquet' (FORMAT parquet)",
    "INSERT INTO rejects VALUES ('i', 's', 'e', 'm', 'o')",
    "UPDATE rejects SET stage = 'x'",
    "DELETE FROM rejects",
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "DROP TABLE rejects",
    "ALTER TABLE rejects ADD COLUMN x INTEGER",
    "ATTACH 'other.duckdb' AS other",
    "EXPORT DATABASE 'dump'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET threads = 1",
    "PRAGMA threads = 1",
    "PRAGMA profiling_output = 'profile.json'",
    "CALL pragma_version()",
    "CHECKPOINT",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO 'y.csv'",
    "EXPLAIN INSERT INTO rejects SELECT * FROM rejects",
    "SELECT 1; COPY (SELECT 1) TO 'z.csv'",
    "SELECT 1; SELECT 2",
]


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_before_anything_happens(sql, catalog, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = sha(catalog)
    status, out, err = audit(capsys, "--catalog", catalog, sql)
    assert status == 2 and out == ""
    assert err.startswith("microturn audit: error: ") and "Traceback" not in err
    assert sha(catalog) == before
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError):
        check_read_only(sql)


def test_copy_and_insert_are_refused_with_a_clear_message(catalog, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, _, err = audit(capsys, "--catalog", catalog, "COPY (SELECT 1) TO 'x.csv'")
    assert status == 2 and "COPY statements are not allowed" in err and "--format csv" in err
    assert not (tmp_path / "x.csv").exists()
    status, _, err = audit(capsys, "--catalog", catalog, "INSERT INTO rejects SELECT * FROM rejects")
    assert status == 2 and "INSERT statements are not allowed" in err
    assert run_query(catalog, "SELECT count(*) FROM rejects").rows == [(6,)]


def test_the_connection_itself_cannot_reach_files(catalog, tmp_path, monkeypatch, capsys):
    # A SELECT passes the statement check; the locked, read-only connection stops the file access.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.csv").write_text("a\n1\n")
    status, _, err = audit(capsys, "--catalog", catalog, "SELECT * FROM read_csv('secret.csv')")
    assert status == 2 and "microturn audit: error:" in err and "disabled" in err
    with pytest.raises(duckdb.Error):
        run_query(catalog, "SELECT * FROM read_text('secret.csv')")
    assert sorted(os.listdir(tmp_path)) == ["secret.csv"]


def test_missing_catalog_is_a_clear_error_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nope.duckdb"
    status, out, err = audit(capsys, "--catalog", str(missing), "SELECT 1")
    assert status == 2 and out == ""
    assert "does not exist" in err and "microturn catalog build" in err
    assert not missing.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("sql, needle", [
    ("SELEC 1", "cannot parse"),
    ("SELECT * FROM no_such_table", "no_such_table"),
    ("SELECT no_such_column FROM rejects", "no_such_column"),
    ("", "no SQL statement"),
])
def test_bad_sql_is_an_error_without_traceback(sql, needle, catalog, capsys):
    status, out, err = audit(capsys, "--catalog", catalog, sql)
    assert status == 2 and out == ""
    assert err.startswith("microturn audit: error: ") and needle in err and "Traceback" not in err


@pytest.mark.parametrize("sql", [
    "DESCRIBE conversations",
    "SHOW TABLES",
    "SUMMARIZE shards",
    "PRAGMA show_tables",
    "PRAGMA table_info('samples')",
    "EXPLAIN SELECT count(*) FROM samples",
    "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
    "FROM hours_by_split",
    "SELECT * FROM catalog_views;",
])
def test_read_statements_run(sql, catalog, capsys):
    status, out, err = audit(capsys, "--catalog", catalog, sql)
    assert status == 0 and err == "" and out.strip()


def test_table_format_is_aligned_with_nulls_nested_values_and_a_count(catalog, capsys):
    status, out, _ = audit(capsys, "--catalog", catalog,
                           "SELECT conversation_id, license, stats.gaps_ms AS gaps, backends, stats.speech_ratio "
                           "AS speech FROM unique_conversations WHERE conversation_id IN ('c-1', 'r-2') "
                           "ORDER BY conversation_id")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["conversation_id", "license", "gaps", "backends", "speech"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].startswith("c-1") and "[100, 200, 300]" in lines[2]
    assert '{"vad": "silero", "diarization": "embedded"}' in lines[2] and lines[2].endswith("0.5")
    assert lines[3].startswith("r-2") and "NULL" in lines[3]
    # Columns line up: every column starts at the same offset in the header and the rows.
    start = lines[0].index("license")
    assert lines[2][start - 2: start] == "  " and lines[2][start] != " "
    assert lines[-1] == "(2 rows)"


def test_max_rows_cuts_and_says_so(catalog, capsys):
    status, out, _ = audit(capsys, "--catalog", catalog, "SELECT * FROM range(10)", "--max-rows", "3")
    assert status == 0 and out.splitlines()[-1].startswith("(3 rows shown; more rows not shown")
    status, out, err = audit(capsys, "--catalog", catalog, "SELECT * FROM range(10)", "--format", "csv",
                             "--max-rows", "3")
    assert out.splitlines() == ["range", "0", "1", "2"] and "first 3 rows" in err
    status, out, _ = audit(capsys, "--catalog", catalog, "SELECT * FROM range(2000)", "--format", "csv",
                           "--max-rows", "0")
    assert len(out.splitlines()) == 2001
    assert audit(capsys, "--catalog", catalog, "SELECT 1", "--max-rows", "-1")[0] == 2


def test_csv_parses_back(catalog, capsys):
    status, out, _ = audit(capsys, "--catalog", catalog, "SELECT * FROM hours_by_split", "--format", "csv")
    assert status == 0
    got = list(csv.DictReader(io.StringIO(out, newline="")))
    want = run_query(catalog, "SELECT * FROM hours_by_split").rows
    assert len(got) == len(want) == 7
    for row, (split, origin, license_, n, hours) in zip(got, want, strict=True):
        assert (row["split"], row["origin"], row["license"] or None) == (split, origin, license_)
        assert int(row["conversations"]) == n and float(row["hours"]) == hours
    status, out, _ = audit(capsys, "--catalog", catalog, "SELECT conversation_id, stats FROM conversations "
                                                         "WHERE conversation_id = 'c-2'", "--format", "csv")
    (row,) = list(csv.DictReader(io.StringIO(out, newline="")))
    assert json.loads(row["stats"])["gaps_ms"] == [400, 600]


def test_json_parses_back_with_nested_values(catalog, capsys):
    status, out, _ = audit(capsys, "--catalog", catalog,
                           "SELECT conversation_id, stats, backends, speakers, provenance FROM conversations "
                           "WHERE origin = 'remix' ORDER BY conversation_id", "--format", "json")
    assert status == 0
    rows = json.loads(out)
    assert [r["conversation_id"] for r in rows] == ["r-1", "r-2"]
    assert rows[0]["stats"]["overlaps_ms"] == [60] and rows[0]["stats"]["overlap_ratio"] == 0.2
    assert rows[0]["backends"] == {"vad": "silero", "diarization": "embedded"}
    assert rows[0]["speakers"] == ["A", "B"] and rows[1]["stats"] is None
    assert json.loads(rows[0]["provenance"])["remix_of"] == "c-1"
    status, out, _ = audit(capsys, "--catalog", catalog, "SELECT 1 AS a, 2 AS a, 'nan'::DOUBLE AS f",
                           "--format", "json")
    assert json.loads(out) == [{"a": 1, "a_1": 2, "f": None}]


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(VALUES, VALUES), max_size=5))
def test_json_and_csv_round_trip(rows):
    result = QueryResult(columns=("x", "y"), types=("VARCHAR", "VARCHAR"), rows=rows, truncated=False)
    assert json.loads(render_json(result)) == [{"x": x, "y": y} for x, y in rows]
    parsed = list(csv.reader(io.StringIO(render_csv(result), newline="")))
    assert parsed[0] == ["x", "y"] and len(parsed) == len(rows) + 1
    for got, want in zip(parsed[1:], rows, strict=True):
        for text, value in zip(got, want, strict=True):
            if value is None:
                assert text == ""
            elif isinstance(value, (dict, list)):
                assert json.loads(text) == value
            elif isinstance(value, float):
                assert float(text) == value
            elif isinstance(value, str):
                assert text == visible(value)  # control characters shown escaped


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_float_is_close(v):
    text = format_float(v)
    assert math.isclose(float(text), v, rel_tol=1e-5, abs_tol=5e-7)


HOSTILE = "red\x1b[31m \x1b]0;title\x07 \x1b[2J\r\x00 rlo\u202e \x9b1m \u2028 \U000e0041 end"
# Bytes that drive a terminal: C0 controls, DEL, and C1 controls as UTF-8 (0xC2 0x80-0x9F),
# plus the UTF-8 of the bidi override, the line separator and a tag character.
_DRIVING = [bytes([b]) for b in range(0x20) if b not in (0x0A,)] + [b"\x7f"] + [
    bytes([0xC2, b]) for b in range(0x80, 0xA0)] + ["\u202e".encode(), "\u2028".encode(), "\U000e0041".encode()]


@pytest.fixture(scope="module")
def hostile_catalog(tmp_path_factory):
    from catalog_fixtures import write_table
    from microturn.schemas import TABLE_NAMES

    out = str(tmp_path_factory.mktemp("hostile") / "out")
    write_table(out, "rejects", [{"input": HOSTILE, "stage": "ingest", "error_type": "Bad\x1b[5m",
                                  "message": HOSTILE}])
    assert "rejects" in TABLE_NAMES
    path = str(tmp_path_factory.mktemp("hostile-catalog") / "catalog.duckdb")
    build_catalog([out], path)
    return path


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_values_with_control_characters_are_printed_escaped(hostile_catalog, fmt, capfdbinary):
    sql = "SELECT input, message AS \"col\x1b[1m\", [message] AS nested, {'k\x1b': message} AS obj FROM rejects"
    status = audit_main(["--catalog", hostile_catalog, sql, "--format", fmt])
    out = capfdbinary.readouterr().out
    assert status == 0 and out
    body = out.replace(b"\r\n", b"\n") if fmt == "csv" else out  # RFC 4180 line ends
    for seq in _DRIVING:
        assert seq not in body, (fmt, seq)
    text = out.decode("utf-8")
    if fmt == "json":
        (row,) = json.loads(text)
        assert row["input"] == HOSTILE and row["nested"] == [HOSTILE]  # JSON escapes parse back exactly
        assert row["obj"] == {"k\x1b": HOSTILE}
    else:
        assert "red\\x1b[31m" in text and "rlo\\u202e" in text and "\\x00" in text


def test_errors_quoting_a_hostile_value_are_escaped(hostile_catalog, capfdbinary):
    status = audit_main(["--catalog", hostile_catalog, "SELECT input::INTEGER FROM rejects"])
    err = capfdbinary.readouterr().err
    assert status == 2 and b"\x1b" not in err and b"error" in err


def test_report_shows_hostile_values_escaped(hostile_catalog, tmp_path, capfdbinary):
    status = audit_main(["report", "--catalog", hostile_catalog, "--output", str(tmp_path / "report")])
    assert status == 0 and b"\x1b" not in capfdbinary.readouterr().out
    page = (tmp_path / "report" / "index.html").read_bytes()
    for seq in _DRIVING:
        if seq not in (b"\t", b"\r"):  # the page's own layout whitespace
            assert seq not in page, seq
    assert b"Bad\\x1b[5m" in page


@pytest.mark.parametrize("argv,named", [
    (["--catalog", "{c}", "SELECT 1", "--bogus"], "--bogus"),
    (["--catalog", "{c}", "SELECT 1", "SELECT 2"], "SELECT 2"),
    (["--catalog", "{c}", "SELECT 1", "--max_rows", "3"], "--max_rows"),
    (["--cat", "{c}", "SELECT 1"], "--cat"),
    (["report", "--catalog", "{c}", "--output", "{t}/r", "--bogus"], "--bogus"),
    (["report", "--catalog", "{c}", "--output", "{t}/r", "stray"], "stray"),
    (["report", "--catalog", "{c}", "--out", "{t}/r"], "--out"),
])
def test_unknown_flags_and_stray_values_exit_2_naming_them(catalog, tmp_path, capsys, argv, named):
    status, out, err = audit(capsys, *[a.format(c=catalog, t=tmp_path) for a in argv])
    assert status == 2 and out == "" and named in err
    assert os.listdir(tmp_path) == []


def test_report_output_that_is_a_file_fails_before_any_work(catalog, tmp_path, capsys):
    target = tmp_path / "report.html"
    target.write_text("keep me")
    status, out, err = audit(capsys, "report", "--catalog", catalog, "--output", str(target))
    assert status == 2 and out == "" and "is a file" in err and len(err.strip().splitlines()) == 1
    assert target.read_text() == "keep me" and os.listdir(tmp_path) == ["report.html"]
