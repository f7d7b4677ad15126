"""In-memory tests of the shard PTransforms and DoFns (TestPipeline + assert_that), dead letters included.

Records are tiny two-speaker conversations written by ``microturn.testing.records``: 6 s of noise
bursts where A, then B talk, cut into two windows of 15 chunks for each of the 2 role assignments (4 samples).
"""

from __future__ import annotations

import hashlib
import os

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_testing import in_memory
from microturn.pipelines import outputs
from microturn.pipelines.shard import dofns
from microturn.pipelines.shard.config import ShardConfig
from microturn.pipelines.shard.pipeline import ReadRecords, Shard, WriteShards
from microturn.pipelines.shard.samples import WindowSpec
from microturn.pipelines.tables import REJECTS, WriteSortedTable, read_table
from microturn.testing.records import two_streams, write_records

GOOD, DUP, ORPHAN = "s-00000000000000e1", "s-00000000000000e2", "s-00000000000000e3"
WINDOW = WindowSpec(window_chunks=15, min_chunks=5)
TRAIN = (("train", 1.0),)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two record folders: the first holds GOOD and DUP; the second DUP again, plus segments of a
    conversation (ORPHAN) that has no conversations row."""
    root = tmp_path_factory.mktemp("records")
    first = write_records(str(root / "first"), [two_streams(GOOD, seconds=6.0), two_streams(DUP, seconds=6.0)])
    dup = two_streams(DUP, seconds=6.0)
    dup["segments"] = dup["segments"] + [{**row, "conversation_id": ORPHAN}
                                         for row in two_streams(ORPHAN, seconds=6.0)["segments"]]
    second = write_records(str(root / "second"), [dup])
    return first, second


def test_read_records_keeps_the_first_input_and_rejects_the_copies(inputs):
    first, second = inputs
    with in_memory() as p:
        records, rejects = p | ReadRecords((first, second))
        assert_that(records | beam.Map(lambda r: (r["root"], [c["conversation_id"] for c in r["conversations"]],
                                                  len(r["segments"]) > 0)),
                    equal_to([(first, [GOOD], True), (first, [DUP], True), (second, [], True)]),
                    label="one record per conversation, from the first input that has it")
        assert_that(rejects | beam.Map(lambda r: (r["input"], r["stage"], r["error_type"])),
                    equal_to([(f"{second}#{DUP}", "shard", "duplicate_conversation")]), label="rejects")


def _grouped(root: str, cid: str) -> dict:
    """One conversation's rows of a record folder, as ReadRecords hands them to MakeSamples."""
    return {"root": root, **{t: [r for r in read_table(root, t).to_pylist() if r["conversation_id"] == cid]
                             for t in ("conversations", "segments", "words", "events")}}


def test_make_samples_emits_samples_and_rejects_bad_records(inputs, tmp_path):
    first, _ = inputs
    good = _grouped(first, GOOD)
    twice = {**good, "conversations": good["conversations"] * 2}
    outside = {**good, "conversations": [{**good["conversations"][0], "media_dir": "../elsewhere"}]}
    no_audio = write_records(str(tmp_path / "no_audio"), [two_streams(GOOD, seconds=6.0)])
    os.remove(os.path.join(no_audio, "media", GOOD, "A.flac"))
    missing = _grouped(no_audio, GOOD)
    with in_memory() as p:
        made = (p | beam.Create([good, twice, outside, missing])
                | beam.ParDo(dofns.MakeSamples(window=WINDOW, splits=TRAIN, video=None)).with_outputs(
                    REJECTS, main="samples"))
        # 30 chunks: two windows of 15, each for both role assignments (A as model, then B).
        assert_that(made.samples | beam.Map(lambda s: (s["split"], s["row"]["conversation_id"],
                                                       s["size"] == len(s["blob"]) == s["row"]["tar_bytes"] > 0)),
                    equal_to([("train", GOOD, True)] * 4), label="samples")
        assert_that(made[REJECTS] | beam.Map(lambda r: (r["input"], r["stage"], r["error_type"])),
                    equal_to([("?", "shard", "bad_record"), (GOOD, "shard", "bad_media_path"),
                              (GOOD, "shard", "missing_media")]), label="rejects")


def _check_shards(got: list[dict]) -> None:
    """Every sample in exactly one train shard; shard indices 0..n-1; byte counts are real."""
    assert sum(s["samples"] for s in got) == 8, got
    assert sorted(s["index"] for s in got) == list(range(len(got))), got
    assert all(s["split"] == "train" and s["path"] == f"train/train-{s['index']:06d}.tar" and s["bytes"] > 0
               and s["manifest"] == s["path"][: -len(".tar")] + ".parquet" for s in got), got


def test_write_shards_packs_samples_into_pending_tars_with_manifests(inputs, tmp_path):
    first, _ = inputs
    out = str(tmp_path / "shards")
    with in_memory() as p:
        samples = (p | beam.Create([_grouped(first, GOOD), _grouped(first, DUP)])
                   | beam.ParDo(dofns.MakeSamples(window=WINDOW, splits=TRAIN, video=None)))
        shards, rows = samples | WriteShards(out, shard_bytes=64 << 10)
        assert_that(shards, _check_shards, label="shards")
        assert_that(rows | beam.Map(lambda r: r["conversation_id"]), equal_to([GOOD] * 4 + [DUP] * 4),
                    label="one samples row per sample")
    written = sorted(os.listdir(os.path.join(out, "train")))
    # Nothing is final until the run commits: tars and manifests are under pending names.
    assert written and all(n.startswith(".") and n.endswith(outputs.PENDING) for n in written), written
    assert len([n for n in written if ".tar" in n]) == len([n for n in written if ".parquet" in n])


def _write(first: str, out: str, **kw) -> list[str]:
    with in_memory() as p:
        samples = (p | beam.Create([_grouped(first, GOOD), _grouped(first, DUP)])
                   | beam.ParDo(dofns.MakeSamples(window=WINDOW, splits=TRAIN, video=None)))
        shards, rows = samples | WriteShards(out, **kw)
        assert_that(shards, _check_shards, label="shards")
        _ = rows | WriteSortedTable(out, "samples", pending=True)
    outputs.commit(out, "shard")
    return sorted(os.listdir(os.path.join(out, "train")))


def test_write_shards_in_many_buckets_numbers_shards_densely_and_copies_each_sample_from_the_spool(inputs, tmp_path):
    first, _ = inputs
    # 64 KiB shards, one shard per bucket: several buckets with gaps (2 conversations over >= 3
    # buckets); every sample still in one shard, indices 0..n-1 (_check_shards).
    many = _write(first, str(tmp_path / "many"), shard_bytes=64 << 10, bucket_shards=1)
    again = _write(first, str(tmp_path / "again"), shard_bytes=64 << 10, bucket_shards=1)
    assert many == again and len([n for n in many if n.endswith(".tar")]) >= 2
    for name in many:
        with open(tmp_path / "many" / "train" / name, "rb") as a, open(tmp_path / "again" / "train" / name, "rb") as b:
            assert a.read() == b.read(), name
    # Each sample's byte range in its shard is the blob MakeSamples hashed; the spool is gone.
    for row in read_table(str(tmp_path / "many"), "samples").to_pylist():
        with open(tmp_path / "many" / row["shard"], "rb") as f:
            f.seek(row["tar_offset"])
            assert hashlib.sha256(f.read(row["tar_bytes"])).hexdigest() == row["sha256"], row["key"]
    assert not os.path.exists(tmp_path / "many" / outputs.SPOOL)


def test_shard_writes_tables_whose_rejects_name_every_dead_letter(inputs, tmp_path):
    first, second = inputs
    out = str(tmp_path / "out")
    cfg = ShardConfig(inputs=(first, second), output=out, window_chunks=15, min_chunks=5, splits="train=1",
                      video=False)
    with in_memory() as p:
        _ = p | Shard(cfg)
    outputs.commit(out, "shard")
    samples = read_table(out, "samples").to_pylist()
    assert sorted({s["conversation_id"] for s in samples}) == [GOOD, DUP] and len(samples) == 8
    assert read_table(out, "shards").num_rows >= 1
    rejects = sorted((r["input"], r["error_type"]) for r in read_table(out, "rejects").to_pylist())
    assert rejects == sorted([("?", "bad_record"), (f"{second}#{DUP}", "duplicate_conversation")])
