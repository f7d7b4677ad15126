"""End to end: records on disk → `microturn shard` → tars, manifests and tables, read back."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from webdataset.compat import WebDataset  # its own module: pyright does not follow the package re-export

from microturn.pipelines.shard.run import run
from microturn.pipelines.tables import read_table
from microturn.schemas import split_of, validate_rows
from microturn.schemas.sample import CHUNK_MS, Label, decode_sample
from microturn.testing.files import tree
from microturn.testing.records import real_call, two_streams, write_records


def shard(inputs, out, *extra):
    argv = [a for i in inputs for a in ("--input", str(i))]
    return run([*argv, "--output", str(out), "--window-chunks", "50", *extra], print_summary=False)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    real = real_call()
    remix_prov = json.dumps({"kind": "remix", "remix_of": real["conversation"]["conversation_id"]})
    return write_records(str(root / "rec"), [
        real, two_streams(), two_streams("r-00000000000000c3", seconds=23.0, seed=1, origin="remix",
                                         provenance=remix_prov)])


@pytest.fixture(scope="module")
def sharded(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "out"
    summary = shard([records], out)
    return out, summary


def test_every_sample_reads_back_with_webdataset_and_decodes(sharded):
    out, summary = sharded
    tars = sorted(p for p in tree(out) if p.endswith(".tar"))
    assert tars and all(p.split("/")[1].startswith(p.split("/")[0] + "-") for p in tars)
    seen = {}
    for rel in tars:
        for s in WebDataset(str(out / rel), shardshuffle=False):
            d = decode_sample(s)
            seen[d["key"]] = d
    # 30 s call: 150 chunks → 3 windows of 50, 2 roles; 41.3 s: 207 chunks → 4 full + 7 (< 10, left out);
    # 23 s: 115 chunks → 2 full + 15.
    assert len(seen) == 2 * 3 + 2 * 4 + 2 * 3 == summary["samples"]
    for d in seen.values():
        k = d["meta"]["chunks"]
        assert d["dmel"]["user"].shape == (4 * k, 80) and d["logmel_TM"].dtype == np.float16
        for role in ("user", "model"):
            for w in d["words"][role]:
                assert d["labels"][role][w["chunk"]] & Label.WORD_START
                assert w["chunk"] * CHUNK_MS <= w["start_ms"] < (w["chunk"] + 1) * CHUNK_MS


def test_plain_tar_lists_the_members(sharded):
    out, _ = sharded
    rel = sorted(p for p in tree(out) if p.endswith(".tar"))[0]
    names = subprocess.run(["tar", "tf", str(out / rel)], check=True, capture_output=True, text=True).stdout.split()
    assert names[0].endswith(".json") and all("/" not in n and n.count(".") >= 1 for n in names)
    assert {n.split(".", 1)[1] for n in names} >= {"json", "user.dmel.npy", "model.dmel.npy", "model.logmel.npy",
                                                    "user.labels.npy", "model.labels.npy", "words.json", "events.json"}


def test_manifests_tables_and_bytes_agree(sharded):
    out, _ = sharded
    samples = read_table(str(out), "samples").to_pylist()
    shards = read_table(str(out), "shards").to_pylist()
    assert sum(s["samples"] for s in shards) == len(samples)
    for sh in shards:
        data = (out / sh["path"]).read_bytes()
        assert len(data) == sh["bytes"] and hashlib.sha256(data).hexdigest() == sh["sha256"]
        manifest = pq.read_table(out / sh["manifest"]).to_pylist()
        assert manifest == [s for s in samples if s["shard"] == sh["path"]]
        for row in manifest:
            piece = data[row["tar_offset"]: row["tar_offset"] + row["tar_bytes"]]
            assert hashlib.sha256(piece).hexdigest() == row["sha256"]
            names = tarfile.open(fileobj=io.BytesIO(piece + b"\0" * 1024)).getnames()
            assert all(n.startswith(row["key"] + ".") for n in names)


def test_splits_follow_ids_and_a_remix_follows_its_source(sharded):
    out, _ = sharded
    samples = read_table(str(out), "samples").to_pylist()
    split = {s["conversation_id"]: s["split"] for s in samples}
    assert split["c-00000000000000a1"] == split_of("c-00000000000000a1")
    assert split["r-00000000000000c3"] == split["c-00000000000000a1"]
    for s in samples:
        assert s["shard"].startswith(s["split"] + "/")


def test_same_inputs_give_identical_bytes_on_every_run_and_runner(records, sharded, tmp_path):
    out, _ = sharded
    shard([records], tmp_path / "again")
    shard([records], tmp_path / "threads", "--direct_num_workers=2", "--direct_running_mode=multi_threading")
    shard([records], tmp_path / "processes", "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    reference = tree(out)
    assert tree(tmp_path / "again") == reference
    assert tree(tmp_path / "threads") == reference
    assert tree(tmp_path / "processes") == reference


def scatter(records, root, groups: dict[str, set[str]], seed: int) -> list[str]:
    """Copy the records into one folder per group of conversation ids, each table's rows in a
    shuffled order over three part files; returns the folders."""
    import random
    import shutil

    rng = random.Random(seed)
    roots = []
    for name, cids in groups.items():
        dst = root / name
        for cid in sorted(cids):
            shutil.copytree(records / "media" / cid, dst / "media" / cid)
        for table in ("conversations", "segments", "words", "events"):
            rows = [r for r in read_table(str(records), table).to_pylist() if r["conversation_id"] in cids]
            rng.shuffle(rows)
            (dst / table).mkdir(parents=True)
            for i in range(3):
                part = rows[i::3]
                if part:
                    pq.write_table(validate_rows(table, part), dst / table / f"part-{i:05d}-of-00003.parquet")
        roots.append(str(dst))
    return roots


def test_shuffled_rows_and_inputs_give_identical_bytes_and_a_record_alone_its_batch_samples(records, sharded,
                                                                                          tmp_path):
    from pathlib import Path

    out, _ = sharded
    reference = tree(out)
    rec = Path(records)
    roots = scatter(rec, tmp_path / "in", {"x": {"c-00000000000000a1"},
                                           "y": {"s-00000000000000b2", "r-00000000000000c3"}}, seed=7)
    shard(roots[::-1], tmp_path / "shuffled")
    shard(roots, tmp_path / "shuffled2", "--direct_num_workers=2", "--direct_running_mode=multi_processing")
    assert tree(tmp_path / "shuffled") == reference
    assert tree(tmp_path / "shuffled2") == reference
    (alone,) = scatter(rec, tmp_path / "alone_in", {"z": {"s-00000000000000b2"}}, seed=8)
    shard([alone], tmp_path / "alone")
    mine = {s["key"]: s["sha256"] for s in read_table(str(tmp_path / "alone"), "samples").to_pylist()}
    batch = {s["key"]: s["sha256"] for s in read_table(str(out), "samples").to_pylist()
             if s["conversation_id"] == "s-00000000000000b2"}
    assert mine and mine == batch


def test_shards_rotate_at_the_target_size_and_stale_shards_go(records, tmp_path):
    out = tmp_path / "small"
    shard([records], out, "--splits", "train=1", "--shard-bytes", "300KiB")
    tars = sorted(p for p in tree(out) if p.endswith(".tar"))
    assert len(tars) >= 3
    assert tars == [f"train/train-{i:06d}.tar" for i in range(len(tars))]
    for rel in tars:
        n = sum(1 for _ in WebDataset(str(out / rel), shardshuffle=False))
        assert os.path.getsize(out / rel) <= 300 * 1024 or n == 1
    shard([records], out, "--splits", "train=1")  # the default 512 MiB: one shard
    assert sorted(p for p in tree(out) if p.endswith((".tar", ".parquet")) and p.startswith("train/")) == [
        "train/train-000000.parquet", "train/train-000000.tar"]


def test_left_out_windows_are_counted(sharded):
    _, summary = sharded
    assert summary["left_out"]["short_windows_left_out"] == 1  # the 7-chunk tail of b2 (a window of the grid)


def test_bad_records_become_rejects_and_the_rest_is_written(tmp_path):
    good = two_streams("s-00000000000000d1", seconds=12.0)
    missing = two_streams("s-00000000000000d2", seconds=12.0)
    short_audio = two_streams("s-00000000000000d3", seconds=12.0)
    short_audio["audio"] = {k: v[: 16 * 9000] for k, v in short_audio["audio"].items()}
    far_word = two_streams("s-00000000000000d4", seconds=12.0)
    far_word["words"].append({"conversation_id": "s-00000000000000d4", "speaker": "A", "text": "late",
                              "start_ms": 20_000, "end_ms": 20_300, "score": 1.0})
    root = write_records(str(tmp_path / "rec"), [good, missing, short_audio, far_word])
    os.remove(os.path.join(root, "media", "s-00000000000000d2", "B.flac"))
    out = tmp_path / "out"
    summary = shard([root, root], out)  # the same directory twice: every conversation is a duplicate once
    rejects = {(r["input"].split("#")[-1], r["error_type"]) for r in read_table(str(out), "rejects").to_pylist()}
    assert ("s-00000000000000d2", "missing_media") in rejects
    assert ("s-00000000000000d3", "duration_mismatch") in rejects
    assert ("s-00000000000000d4", "words_outside_media") in rejects
    assert sum(1 for _, reason in rejects if reason == "duplicate_conversation") == 4
    assert {s["conversation_id"] for s in read_table(str(out), "samples").to_pylist()} == {"s-00000000000000d1"}
    assert summary["samples"] == 2 * 2  # 60 chunks: a window of 50 and a tail of 10 (= min_chunks), 2 roles


def test_a_killed_run_leaves_the_earlier_output_and_a_rerun_gives_the_same_bytes(records, tmp_path):
    args = ["--input", str(records), "--window-chunks", "50", "--splits", "train=1", "--shard-bytes", "300KiB"]
    reference = tmp_path / "reference"
    shard([records], reference, "--splits", "train=1", "--shard-bytes", "300KiB")
    ref = tree(reference)
    out = tmp_path / "killed"
    shard([records], out, "--splits", "train=1")  # an earlier run with other settings: one big shard
    earlier = tree(out)
    # SIGKILLed after its 3rd file past the spool (every sample is spooled first; then 2 shards
    # and a manifest of the 3 or more this run writes).
    spooled = read_table(str(reference), "samples").num_rows
    env = {**os.environ, "MICROTURN_FAULT": f"kill_after_writes:{spooled + 3}"}
    proc = subprocess.run([sys.executable, "-m", "microturn.pipelines.shard", *args, "--output", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = tree(out)
    # Pending files, the lock and the spool are the killed run's: invisible to readers, cleared by the next run.
    assert {k: v for k, v in left.items() if not k.endswith((".pending", ".tmp", ".lock"))
            and not k.startswith(".spool/")} == earlier
    assert any(p.endswith(".pending") for p in left)  # what it wrote is invisible to readers
    shard([records], out, "--splits", "train=1", "--shard-bytes", "300KiB")
    assert tree(out) == ref


def test_catalog_over_records_and_shards(records, sharded, tmp_path):
    from microturn.pipelines.catalog.audit import run_query
    from microturn.pipelines.catalog.build import build_catalog

    out, summary = sharded
    path = str(tmp_path / "catalog.duckdb")
    build_catalog([records, str(out)], path)
    rows = run_query(path, "SELECT count(*), count(DISTINCT conversation_id) FROM samples").rows
    assert rows == [(summary["samples"], 3)]
    assert run_query(path, "SELECT * FROM leakage").rows == []
    hours = dict(run_query(path, "SELECT origin, sum(conversations) FROM hours_by_split GROUP BY origin").rows)
    assert hours == {"real": 1, "synthetic": 1, "remix": 1}
