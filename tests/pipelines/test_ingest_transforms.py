"""In-memory tests of the ingest PTransforms and table writers (TestPipeline + assert_that)."""

import os
import shutil

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to, is_not_empty

from beam_testing import in_memory
from media_corpus import speech
from microturn.pipelines.ingest import dofns
from microturn.pipelines.ingest.config import IngestConfig
from microturn.pipelines.ingest.pipeline import ProbeSources
from microturn.pipelines.tables import REJECTS, ValidateRows, WriteSortedTable, read_table


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    speech(str(root / "a.wav"), dur=2)
    shutil.copyfile(root / "a.wav", root / "copy_of_a.wav")
    (root / "empty.mp4").write_bytes(b"")
    (root / "a.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    return str(root)


def test_probe_sources_dedupes_and_rejects(folder):
    cfg = IngestConfig(inputs=(f"{folder}/*", f"{folder}/a.wav", f"{folder}/nothing-*.mp4"), output="unused")
    with in_memory() as p:
        records, rejects = (p | beam.Create(sorted(cfg.inputs)) | ProbeSources(cfg, {"a.wav": ("CC0", "lab")}))
        assert_that(records | "Uris" >> beam.Map(lambda r: os.path.basename(r["uri"])),
                    equal_to(["a.wav"]), label="one record per distinct content")
        assert_that(records | "Lic" >> beam.Map(lambda r: (r["source"]["license"], r["source"]["origin"],
                                                           os.path.basename(r["source"]["sidecar_uri"]))),
                    equal_to([("CC0", "lab", "a.srt")]), label="license and sidecar")
        assert_that(rejects | "Why" >> beam.Map(lambda r: (os.path.basename(r["input"]), r["stage"], r["error_type"])),
                    equal_to([("copy_of_a.wav", "dedupe", "DuplicateContent"),
                              ("empty.mp4", "probe", "MediaError"),
                              ("nothing-*.mp4", "match", "NoMatch")]), label="rejects")


def test_keep_first_copy_is_order_independent():
    recs = [{"uri": "b", "conversation_id": "c"}, {"uri": "a", "conversation_id": "c"}]
    with in_memory() as p:
        out = (p | beam.Create([("c", recs)])
               | beam.ParDo(dofns.KeepFirstCopy()).with_outputs(REJECTS, main="ok"))
        assert_that(out.ok | beam.Map(lambda r: r["uri"]), equal_to(["a"]))
        assert_that(out[REJECTS] | beam.Map(lambda r: r["input"]), equal_to(["b"]), label="dup")


def test_invalid_rows_go_to_rejects_not_the_table():
    good = {"conversation_id": "c", "speaker": "S", "start_ms": 0, "end_ms": 5, "channel": 0}
    bad = {**good, "start_ms": 9}
    with in_memory() as p:
        res = p | beam.Create([good, bad]) | ValidateRows("segments")
        assert_that(res.valid, equal_to([good]))
        assert_that(res[REJECTS] | beam.Map(lambda r: (r["stage"], "before start_ms" in r["message"])),
                    equal_to([("validate", True)]), label="rejects")


def test_write_table_then_read_back(tmp_path):
    rows = [{"conversation_id": "c", "type": "turn_end", "speaker": "A", "t_ms": i, "payload": "{}"}
            for i in range(5)]
    out = str(tmp_path)
    with in_memory() as p:
        _ = p | beam.Create(rows[::-1]) | WriteSortedTable(out, "events")
    back = read_table(out, "events")
    assert back.to_pylist() == rows  # sorted by (conversation, time) whatever order came in
    assert back.schema.metadata[b"microturn.schema_version"] == b"3"
    assert os.listdir(tmp_path / "events") == ["part-00000-of-00001.parquet"]
    with in_memory() as p:  # an empty PCollection still writes a readable, empty table
        _ = p | beam.Create([]).with_output_types(dict) | WriteSortedTable(out, "rejects")
    assert read_table(out, "rejects").num_rows == 0


def test_sorted_writes_are_byte_identical_and_replace_old_files(tmp_path):
    rows = [{"conversation_id": f"c{k % 7}", "speaker": "AB"[k % 2], "start_ms": k * 10, "end_ms": k * 10 + 5,
             "channel": 0} for k in range(200)]
    digests = []
    for order in (rows, rows[::-1], rows[1::2] + rows[::2]):
        out = str(tmp_path / f"o{len(digests)}")
        with in_memory() as p:
            _ = p | beam.Create(order) | WriteSortedTable(out, "segments", num_shards=3)
        files = sorted(os.listdir(os.path.join(out, "segments")))
        assert files == [f"part-{i:05d}-of-00003.parquet" for i in range(3)]
        digests.append([open(os.path.join(out, "segments", f), "rb").read() for f in files])
        back = read_table(out, "segments").to_pylist()
        assert sorted(back, key=lambda r: (r["conversation_id"], r["start_ms"])) == sorted(
            rows, key=lambda r: (r["conversation_id"], r["start_ms"]))
    assert digests[0] == digests[1] == digests[2]
    with in_memory() as p:  # a rerun with fewer rows leaves no stale rows behind
        _ = p | beam.Create(rows[:3]) | WriteSortedTable(out, "segments", num_shards=3)
    assert read_table(out, "segments").num_rows == 3
    assert not [f for f in os.listdir(os.path.join(out, "segments")) if f.endswith(".tmp")]


@pytest.mark.parametrize(("n_rows", "parts"), [(0, 2), (5, 2), (200, 4), (201, 5)])
def test_rows_per_part_grows_the_number_of_files_with_the_table(tmp_path, n_rows, parts):
    rows = [{"conversation_id": f"c{k:03d}", "speaker": "A", "start_ms": k, "end_ms": k + 5, "channel": 0}
            for k in range(n_rows)]
    out = str(tmp_path)
    with in_memory() as p:
        _ = p | beam.Create(rows).with_output_types(dict) | WriteSortedTable(out, "segments", num_shards=2,
                                                                            rows_per_part=50)
    files = sorted(os.listdir(os.path.join(out, "segments")))
    assert files == [f"part-{i:05d}-of-{parts:05d}.parquet" for i in range(parts)]  # empty parts written too
    assert sorted(read_table(out, "segments").to_pylist(), key=lambda r: r["start_ms"]) == rows
    with pytest.raises(ValueError, match="rows_per_part"):
        WriteSortedTable(out, "segments", rows_per_part=0)


def test_large_tables_are_written_in_bounded_row_groups(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from microturn.pipelines import tables

    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", 7)  # readers hold one group at a time
    rows = [{"conversation_id": "c", "speaker": "A", "start_ms": k, "end_ms": k + 5, "channel": 0} for k in range(20)]
    with in_memory() as p:
        _ = p | beam.Create(rows) | WriteSortedTable(str(tmp_path), "segments")
    meta = pq.ParquetFile(tmp_path / "segments" / "part-00000-of-00001.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [7, 7, 6]
    assert read_table(str(tmp_path), "segments").to_pylist() == rows


def test_match_pattern_skips_sidecars(folder):
    with in_memory() as p:
        out = (p | beam.Create([f"{folder}/a.*"])
               | beam.ParDo(dofns.MatchPattern()).with_outputs(REJECTS, main="files"))
        assert_that(out.files | beam.Map(os.path.basename), equal_to(["a.wav"]))
        assert_that(out[REJECTS], equal_to([]), label="no rejects")


def test_local_matching_agrees_with_beam_and_classifies_what_it_cannot_read(tmp_path):
    from apache_beam.io.filesystems import FileSystems

    from microturn.pipelines.ingest import inputs

    for rel in ("a.wav", "sub/b.wav", "sub/deep/c.flac", "sub/a.srt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    for pattern in ("*", "**", "**/*.wav", "sub/", "a.wav", "nothing/*"):
        beam_paths = sorted(m.path for m in FileSystems.match([f"{tmp_path}/{pattern}"])[0].metadata_list)
        assert inputs.match(f"{tmp_path}/{pattern}") == beam_paths, pattern
    assert inputs.match(f"file://{tmp_path}/*") == [f"file://{tmp_path}/a.wav"]

    os.mkfifo(tmp_path / "fifo.wav")
    (tmp_path / "dev.wav").symlink_to("/dev/null")
    (tmp_path / "gone.wav").symlink_to(tmp_path / "missing.wav")
    (tmp_path / "ok.wav").symlink_to(tmp_path / "a.wav")  # a link to a regular file is read
    (tmp_path / "folder.wav").mkdir()  # a folder matched by * is not a file: not listed
    with open(os.path.join(os.fsencode(tmp_path), b"\xff\xfe.wav"), "wb") as f:
        f.write(b"x")
    found = inputs.match(f"{tmp_path}/*.wav")
    assert [p for p in found if isinstance(p, str)] == [f"{tmp_path}/a.wav", f"{tmp_path}/ok.wav"]
    skipped = {os.path.basename(s.path): s.error_type for s in found if isinstance(s, inputs.Skipped)}
    assert skipped == {"fifo.wav": "NotARegularFile", "dev.wav": "NotARegularFile",
                       "gone.wav": "BrokenSymlink", "\\xff\\xfe.wav": "NotUtf8Name"}
    # A folder given by name is refused as one.
    (only,) = inputs.match(str(tmp_path / "folder.wav"))
    assert isinstance(only, inputs.Skipped)
    assert only.error_type == "NotARegularFile" and "directory" in only.reason


def test_summarise_emits_rows_of_every_table():
    rec = {
        "uri": "x.wav", "conversation_id": "c-0000000000000001", "duration_ms": 8000,
        "source": {"license": "CC0"}, "media_dir": "media/c-0000000000000001",
        "audio_files": ["mix.flac"], "video_file": None, "channel_layout": "mixed",
        "vad": "silero-vad", "diarizer": "embedded", "transcriber": "sidecar+pocketsphinx",
        "turns": [["A", 0, 3000, 0], ["B", 1000, 1400, 0], ["B", 3200, 5000, 0]],
        "words": [["hello", 100, 400, 0.9, "A"]],
    }
    with in_memory() as p:
        out = p | beam.Create([rec]) | beam.ParDo(dofns.Summarise(output="unused")).with_outputs(
            REJECTS, *dofns.Summarise.OUTPUTS, main="conversations")
        assert_that(out.conversations | beam.Map(lambda c: (c["num_speakers"], c["stats"]["backchannels"],
                                                            c["stats"]["gaps_ms"])),
                    equal_to([(2, 1, [200])]))
        assert_that(out.segments | beam.combiners.Count.Globally(), equal_to([3]), label="segments")
        assert_that(out.words | beam.Map(lambda w: w["text"]), equal_to(["hello"]), label="words")
        assert_that(out.events | beam.Map(lambda e: e["type"]), is_not_empty(), label="events")
        assert_that(out[REJECTS], equal_to([]), label="no rejects")
