"""`microturn catalog build`: real Parquet outputs into a real DuckDB file, views checked against
values worked out by hand from the fixture rows (tests/pipelines/catalog_fixtures.py)."""

from __future__ import annotations

import os
import warnings

import duckdb
import numpy as np
import pytest

# The fixtures outputs and catalog come from conftest.py.
from catalog_fixtures import C1, C2, C3, R1, S1, S2, SCRIPT_LICENSE, write_table
from microturn.pipelines.catalog.build import DEFAULT_ALLOWED_LICENSES, build_catalog, normalise_output
from microturn.pipelines.catalog.run import catalog_main
from microturn.pipelines.catalog.views import VIEW_NAMES
from microturn.pipelines.tables import read_table
from microturn.schemas import TABLE_NAMES

H = 3_600_000  # ms per hour


def query(path: str, sql: str) -> list[tuple]:
    with duckdb.connect(path, read_only=True) as con:
        return con.execute(sql).fetchall()


def dump(path: str) -> dict[str, list[tuple]]:
    """Every table and view of a catalog, rows in a canonical order."""
    names = [*TABLE_NAMES, "catalog_meta", "license_allowlist", "catalog_views", *VIEW_NAMES]
    with duckdb.connect(path, read_only=True) as con:
        return {n: sorted(con.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}


def test_tables_hold_every_row_with_its_output_and_nested_types(catalog, outputs):
    counts = dict(query(catalog, "SELECT 'conversations', count(*) FROM conversations UNION ALL "
                                 "SELECT 'segments', count(*) FROM segments UNION ALL "
                                 "SELECT 'rejects', count(*) FROM rejects UNION ALL "
                                 "SELECT 'samples', count(*) FROM samples UNION ALL "
                                 "SELECT 'shards', count(*) FROM shards UNION ALL "
                                 "SELECT 'words', count(*) FROM words"))
    assert counts == {"conversations": 8, "segments": 10, "rejects": 6, "samples": 4, "shards": 2, "words": 2}
    by_output = dict(query(catalog, "SELECT output, count(*) FROM conversations GROUP BY output"))
    assert by_output == {outputs.ingest: 3, outputs.ingest2: 1, outputs.synth: 4}
    types = dict((r[0], r[1]) for r in query(catalog, "DESCRIBE conversations"))
    assert types["stats"].startswith("STRUCT(speech_ratio DOUBLE")
    assert "gaps_ms INTEGER[]" in types["stats"]
    assert types["backends"] == "MAP(VARCHAR, VARCHAR)"
    assert types["speakers"] == "VARCHAR[]"
    assert list(types)[-1] == "output"
    (backends, gaps), = query(catalog, "SELECT backends, stats.gaps_ms FROM conversations WHERE conversation_id='c-1'")
    assert backends == {"vad": "silero", "diarization": "embedded"} and gaps == [100, 200, 300]
    # Every table of DESIGN.md is there, with the schema's columns and `output`.
    for table in TABLE_NAMES:
        cols = [r[0] for r in query(catalog, f"DESCRIBE {table}")]
        assert cols == [*read_table(outputs.ingest, table).schema.names, "output"]


def test_meta_and_allowlist(catalog, outputs):
    (version, inputs, allowed, rows), = query(catalog, "SELECT schema_version, inputs, allowed_licenses, table_rows "
                                                       "FROM catalog_meta")
    assert version == 3 and inputs == outputs.all
    assert allowed == list(DEFAULT_ALLOWED_LICENSES)
    assert rows["conversations"] == 8 and set(rows) == set(TABLE_NAMES)
    assert {r[0] for r in query(catalog, "SELECT name FROM catalog_views")} == set(VIEW_NAMES)


def test_hours_by_split_uses_sample_splits_and_counts_a_duplicate_once(catalog):
    got = query(catalog, "SELECT * FROM hours_by_split")
    assert got == [
        ("test", "real", "LicenseRef-Corpus-X", 1, 30_000 / H),  # the ingest copy of c-3, not ingest2's 99 s
        ("test", "remix", None, 1, 30_000 / H),
        ("test", "synthetic", SCRIPT_LICENSE, 1, 45_000 / H),
        ("test+train", "real", "unknown", 1, 120_000 / H),  # c-2: samples in two splits
        ("train", "real", "CC-BY-4.0", 1, 60_000 / H),  # c-1: samples in train
        ("train", "synthetic", "apache-2.0", 1, 90_000 / H),
        ("valid", "remix", "CC-BY-4.0", 1, 60_000 / H),
    ]


def test_turn_taking_by_origin_matches_hand_computation(catalog):
    rows = {r[0]: r for r in query(catalog, "SELECT * FROM turn_taking_by_origin")}
    real = rows["real"]
    # Pooled gaps 100 200 300 400 600 700: linear percentiles p10 = 150, p50 = 350, p90 = 650.
    # Overlaps 50 80 120: p10 = 50 + 0.2 * 30 = 56, p50 = 80, p90 = 80 + 0.8 * 40 = 112.
    assert real[1:3] == (3, 210_000 / H)
    assert real[3:7] == (6, 150.0, 350.0, 650.0)
    assert real[7:11] == (3, pytest.approx(56.0), 80.0, pytest.approx(112.0))
    speech = 0.5 * 60_000 + 0.8 * 120_000 + 0.6 * 30_000  # 144 000 ms
    assert real[11] == pytest.approx((0.1 * 0.5 * 60_000 + 0.2 * 0.8 * 120_000) / speech)  # 0.1541...
    assert real[12] == pytest.approx(3 / (speech / 60_000))  # 1.25 backchannels per minute of speech
    assert real[13] == pytest.approx(16 / 3.5)  # 16 turns in 3.5 minutes
    synthetic = rows["synthetic"]
    gaps = S1["gaps_ms"] + S2["gaps_ms"]
    overlaps = S1["overlaps_ms"] + S2["overlaps_ms"]
    assert synthetic[3:7] == (2, *(pytest.approx(v) for v in np.percentile(gaps, [10, 50, 90])))
    assert synthetic[7:11] == (4, *(pytest.approx(v) for v in np.percentile(overlaps, [10, 50, 90])))
    # The remix without stats (r-2) counts in conversations and hours only.
    remix = rows["remix"]
    assert remix[1:4] == (2, 90_000 / H, 1) and remix[11] == pytest.approx(R1["overlap_ratio"])
    assert remix[12] == pytest.approx(1 / 0.5) and remix[13] == pytest.approx(4 / 1.5)


def test_gap_overlap_values_one_row_per_value(catalog):
    got = dict(((o, k), n) for o, k, n in query(
        catalog, "SELECT origin, kind, count(*) FROM gap_overlap_values GROUP BY ALL"))
    n_real_gaps = len(C1["gaps_ms"] + C2["gaps_ms"] + C3["gaps_ms"])
    assert got == {("real", "gap"): n_real_gaps, ("real", "overlap"): 3, ("synthetic", "gap"): 2,
                   ("synthetic", "overlap"): 4, ("remix", "gap"): 1, ("remix", "overlap"): 1}


def test_speaker_balance_uses_the_kept_records_segments(catalog):
    rows = {r[0]: r for r in query(catalog, "SELECT * FROM speaker_balance")}
    assert rows["c-1"][1:] == ("real", 2, {"A": 14_000, "B": 6_000}, 20_000, "A", 0.7)
    assert rows["c-2"][5:] == ("A", 0.5)  # a tie goes to the first name
    assert rows["c-3"][2:] == (1, {"A": 3_000}, 3_000, "A", 1.0)  # not ingest2's segments
    assert rows["r-1"][2:] == (0, None, None, None, None)
    by_origin = {r[0]: r for r in query(catalog, "SELECT * FROM speaker_balance_by_origin")}
    assert by_origin["real"][3] == pytest.approx((0.7 + 0.5 + 1.0) / 3)
    assert by_origin["synthetic"][3] == pytest.approx(0.75)


def test_rejects_by_stage(catalog):
    assert query(catalog, "SELECT * FROM rejects_by_stage") == [
        ("decode", "MediaError", 3, "a.mp4", "no audio stream"),
        ("shard", "KeyError", 1, "c-9", "no media for c-9"),
        ("synthesize", "UnsupportedVoice", 1, "script-7", "voice en-nowhere"),
        ("validate", "RowError", 1, "c.json", "conversations.split is required"),
    ]


def test_leakage_lists_multi_split_and_remix_source(catalog):
    assert query(catalog, "SELECT * FROM leakage") == [
        ("c-2", "multi_split", ["test", "train"], "samples in test (1), train (1)"),
        ("r-1", "remix_source", ["valid", "train"], "remix in valid, its source c-1 in train"),
    ]


def test_license_check_and_duplicates(catalog, outputs):
    assert query(catalog, "SELECT conversation_id, origin, license, hours, reason FROM license_check") == [
        ("c-2", "real", "unknown", 120_000 / H, "unknown"),
        ("c-3", "real", "LicenseRef-Corpus-X", 30_000 / H, "not in allow-list"),
        ("r-2", "remix", None, 30_000 / H, "missing"),
        ("s-2", "synthetic", SCRIPT_LICENSE, 45_000 / H, "not in allow-list"),
    ]  # s-1's 'apache-2.0' passes: the comparison ignores case
    assert query(catalog, "SELECT * FROM duplicate_conversations") == [
        ("c-3", 2, [outputs.ingest, outputs.ingest2], ["real"], outputs.ingest)]


def test_cli_allow_license_is_case_insensitive(outputs, tmp_path, capsys):
    path = str(tmp_path / "cat.duckdb")
    assert catalog_main(["build", *outputs.all, "--catalog", path, "--allow-license", "licenseref-CORPUS-x"]) == 0
    assert "conversations" in capsys.readouterr().out
    assert [r[0] for r in query(path, "SELECT conversation_id FROM license_check")] == ["c-2", "r-2", "s-2"]
    assert query(path, "SELECT license, added_by FROM license_allowlist WHERE added_by <> 'default'") == [
        ("licenseref-CORPUS-x", "--allow-license")]
    assert catalog_main(["build", *outputs.all, "--catalog", path, "--allow-license", "unknown"]) == 2
    assert "not a license name" in capsys.readouterr().err


def test_rebuild_is_idempotent_and_replaces_the_file_whole(outputs, catalog, tmp_path):
    path = str(tmp_path / "cat.duckdb")
    build_catalog(outputs.all, path)
    first = dump(path)
    assert first == dump(catalog)
    build_catalog(outputs.all, path)
    assert dump(path) == first
    assert sorted(os.listdir(tmp_path)) == ["cat.duckdb"]  # no temporary file left beside it
    # A build that fails half-way leaves the previous catalog as it was, and no temporary file.
    broken = tmp_path / "broken"
    (broken / "segments").mkdir(parents=True)
    (broken / "segments" / "part-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="cannot read table 'segments'"):
        build_catalog([*outputs.all, str(broken)], path)
    assert dump(path) == first
    assert sorted(os.listdir(tmp_path)) == ["broken", "cat.duckdb"]


def test_tables_stream_in_batch_by_batch_with_the_rows_of_a_whole_read(outputs, catalog, tmp_path, monkeypatch):
    """One row per batch gives the catalog of the default batch size, rows in the same order; a
    table in two files and a file of an older schema (no ``provenance`` column: null, as a
    dataset read fills it) read as a whole-table read gives them."""
    import pyarrow.parquet as pq

    from microturn.pipelines.catalog import build

    monkeypatch.setattr(build, "BATCH_ROWS", 1)
    path = str(tmp_path / "one-row-batches.duckdb")
    build_catalog(outputs.all, path)
    assert dump(path) == dump(catalog)
    order = "SELECT conversation_id, output FROM conversations"
    assert query(path, order) == query(catalog, order)  # insertion order, not only the same rows

    split = tmp_path / "split"
    whole = read_table(outputs.synth, "conversations")
    (split / "conversations").mkdir(parents=True)
    pq.write_table(whole.slice(0, 2), split / "conversations" / "part-00000-of-00002.parquet")
    pq.write_table(whole.slice(2).drop_columns(["provenance"]), split / "conversations" / "part-00001-of-00002.parquet")
    other = str(tmp_path / "split.duckdb")
    with pytest.warns(UserWarning, match="remix conversation"):  # their sources are in another output
        build_catalog([str(split)], other)
    # A remote file is read whole into an Arrow-owned buffer, then batch by batch like a local one.
    first = split / "conversations" / "part-00000-of-00002.parquet"
    assert build.parquet_file_bytes(first.read_bytes()).read().equals(pq.read_table(first))
    got = query(other, "SELECT conversation_id, provenance FROM conversations")
    assert [cid for cid, _ in got] == whole.column("conversation_id").to_pylist()
    assert [p for _, p in got] == whole.column("provenance").to_pylist()[:2] + [None] * (whole.num_rows - 2)


def test_only_a_shard_output_and_a_clean_ingest(outputs, tmp_path):
    shard_only = str(tmp_path / "shard.duckdb")
    build_catalog([outputs.shard], shard_only)
    assert query(shard_only, "SELECT count(*) FROM conversations") == [(0,)]
    assert query(shard_only, "SELECT count(*) FROM hours_by_split") == [(0,)]
    assert [r[:2] for r in query(shard_only, "SELECT * FROM leakage")] == [("c-2", "multi_split")]
    clean = str(tmp_path / "clean.duckdb")
    summary = build_catalog([outputs.ingest], clean)
    assert query(clean, "SELECT * FROM leakage") == [] and summary.leakage == 0
    assert query(clean, "SELECT split, sum(conversations) FROM hours_by_split GROUP BY split ORDER BY split") == [
        ("test", 1), ("train", 2)]  # no samples: conversations.split


def test_warnings_and_input_errors(outputs, tmp_path):
    path = str(tmp_path / "cat.duckdb")
    with pytest.warns(UserWarning, match="remix conversation"):
        summary = build_catalog([outputs.synth], path)
    assert summary.unchecked_remixes == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = build_catalog([outputs.ingest, outputs.ingest + "/", outputs.synth], path)
    assert summary.inputs == (outputs.ingest, outputs.synth)
    assert any("given twice" in str(w.message) for w in caught)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="holds none of the record tables"):
        build_catalog([str(tmp_path / "nothing")], path)  # an empty folder is a wrong path, not an output
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        build_catalog([str(tmp_path / "afile")], path)
    with pytest.raises(ValueError, match="is a file, not a directory"):
        build_catalog([outputs.ingest], str(tmp_path / "afile" / "sub" / "cat.duckdb"))
    with pytest.raises(ValueError, match="does not exist"):
        build_catalog([str(tmp_path / "typo")], path)
    with pytest.raises(ValueError, match="local file"):
        build_catalog([outputs.ingest], "gs://bucket/catalog.duckdb")
    assert normalise_output("gs://bucket/out/") == "gs://bucket/out"
    assert normalise_output("./x/../out/") == "out"


def test_a_table_written_by_the_writers_of_another_stage(tmp_path):
    # Rows only in `events` and `words`: the other tables are empty but present.
    out = str(tmp_path / "out")
    write_table(out, "events", [{"conversation_id": "c-9", "type": "backchannel", "speaker": "B", "t_ms": 5,
                                 "payload": "{}"}])
    path = str(tmp_path / "cat.duckdb")
    summary = build_catalog([out], path)
    assert summary.rows["events"] == 1 and summary.rows["conversations"] == 0
    assert query(path, "SELECT * FROM turn_taking_by_origin") == []


@pytest.mark.slow
def test_catalog_of_a_real_synthesize_output(tmp_path):
    from microturn.pipelines.synthesize.run import run

    synth = str(tmp_path / "synth")
    run(["--generate", "2", "--output", synth], print_summary=False)
    path = str(tmp_path / "cat.duckdb")
    summary = build_catalog([synth], path)
    convs = read_table(synth, "conversations").to_pylist()
    assert summary.rows["conversations"] == len(convs) == 2
    assert summary.rows["segments"] == read_table(synth, "segments").num_rows > 0
    (origin, n, hours, gaps, overlaps), = query(
        path, "SELECT origin, conversations, hours, gap_count, overlap_count FROM turn_taking_by_origin")
    assert (origin, n) == ("synthetic", 2)
    assert hours == pytest.approx(sum(c["duration_ms"] for c in convs) / H)
    assert gaps == sum(len(c["stats"]["gaps_ms"]) for c in convs)
    assert overlaps == sum(len(c["stats"]["overlaps_ms"]) for c in convs)
    assert query(path, "SELECT * FROM license_check") == []  # synthesize licenses scripts Apache-2.0
    assert query(path, "SELECT * FROM leakage") == []
    splits = query(path, "SELECT split, sum(conversations) FROM hours_by_split GROUP BY split")
    assert sum(n for _, n in splits) == 2 and {s for s, _ in splits} <= {c["split"] for c in convs}
    shares = query(path, "SELECT dominant_share FROM speaker_balance")
    assert len(shares) == 2 and all(0.5 <= s <= 1.0 for s, in shares)


@pytest.mark.parametrize("extra,named", [(["--bogus"], "--bogus"), (["--cat", "x.duckdb"], "--cat"),
                                         (["--allow_license", "MIT"], "--allow_license"),
                                         (["stray-value"], "stray-value")])
def test_unknown_flags_and_stray_values_exit_2_naming_them(outputs, tmp_path, capsys, extra, named):
    path = str(tmp_path / "cat.duckdb")
    assert catalog_main(["build", outputs.ingest, "--catalog", path, *extra]) == 2
    assert named in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_a_missing_input_is_one_line_and_creates_no_folder(tmp_path, capsys):
    path = tmp_path / "new" / "cat.duckdb"
    assert catalog_main(["build", str(tmp_path / "missing"), "--catalog", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "missing does not exist" in err
    assert os.listdir(tmp_path) == []
