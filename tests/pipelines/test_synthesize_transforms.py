"""In-memory tests of the synthesize PTransforms and DoFns (TestPipeline + assert_that), dead letters included.

Scripts are two-turn dialogues spoken by the real espeak-ng backend; the remix source is a 6 s
per-speaker record written by ``microturn.testing.records``.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_testing import in_memory
from microturn.pipelines import outputs
from microturn.pipelines.synthesize import dofns
from microturn.pipelines.synthesize.config import SynthesizeConfig
from microturn.pipelines.synthesize.pipeline import RemixRecords, Synthesize, SynthesizeScripts
from microturn.pipelines.tables import REJECTS, read_table
from microturn.synth.timing import DEFAULT_TIMING
from microturn.testing.records import two_streams, write_records

HELLO = json.dumps({"id": "hello", "speakers": {"A": {}, "B": {}},
                    "turns": [{"speaker": "A", "text": "hello there"}, {"speaker": "B", "text": "hi"}]})
BROKEN = '{"id": "broken", "speakers": '
SOURCE, NO_AUDIO = "s-00000000000000f1", "s-00000000000000f2"


def _why(rejects):
    """Rejects as ``(input, stage, error_type)``, the columns a user reads first."""
    return rejects | "Why" >> beam.Map(lambda r: (r["input"], r["stage"], r["error_type"]))


def test_read_scripts_yields_lines_and_rejects_what_it_cannot_read(tmp_path):
    (tmp_path / "good.jsonl").write_text(f"{HELLO}\n\n{BROKEN}\n")
    (tmp_path / "latin1.jsonl").write_bytes(b"caf\xe9\n" + HELLO.encode() + b"\n")
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    (tmp_path / "folder.jsonl").mkdir()
    root = str(tmp_path)
    with in_memory() as p:
        read = (p | beam.Create([f"{root}/*.jsonl", f"{root}/nothing-*.jsonl"])
                | beam.ParDo(dofns.ReadScripts()).with_outputs(REJECTS, main="ok"))
        assert_that(read.ok | beam.Map(lambda r: (r["input"], r["line"].rstrip("\n"))),
                    equal_to([(f"{root}/good.jsonl:1", HELLO), (f"{root}/good.jsonl:3", BROKEN),
                              (f"{root}/latin1.jsonl:2", HELLO)]), label="non-blank lines, keyed by path:line")
        assert_that(_why(read[REJECTS]),
                    equal_to([(f"{root}/latin1.jsonl:1", "read", "invalid_utf8"),
                              (f"{root}/empty.jsonl", "read", "EmptyFile"),
                              (f"{root}/folder.jsonl", "read", "NotAFile"),
                              (f"{root}/nothing-*.jsonl", "read", "NoMatch")]), label="rejects")


def test_synthesize_scripts_makes_rows_of_every_table_and_rejects_bad_lines(tmp_path):
    cfg = SynthesizeConfig(scripts=("unused",), output=str(tmp_path), seed=3)
    lines = [{"input": "s.jsonl:1", "line": HELLO}, {"input": "s.jsonl:2", "line": BROKEN},
             {"input": "s.jsonl:3", "line": HELLO}]
    with in_memory() as p:
        rows, rejects = p | beam.Create(lines) | SynthesizeScripts(cfg, DEFAULT_TIMING, "default")
        assert_that(rows["conversations"] | beam.Map(lambda r: (r["source_uri"], r["origin"], r["speakers"],
                                                                r["audio_files"])),
                    equal_to([("s.jsonl:1", "synthetic", ["A", "B"], ["A.flac", "B.flac"])]),
                    label="one conversation: the first copy of the dialogue")
        assert_that(rows["segments"] | beam.Map(lambda r: r["speaker"]), equal_to(["A", "B"]), label="segments")
        assert_that(rows["words"] | beam.Map(lambda r: (r["speaker"], r["text"], r["score"])),
                    equal_to([("A", "hello", 1.0), ("A", "there", 1.0), ("B", "hi", 1.0)]), label="words")
        assert_that(rows["events"] | beam.Map(lambda r: r["type"]), _not_empty, label="events")
        assert_that(_why(tuple(rejects) | beam.Flatten()),
                    equal_to([("s.jsonl:2", "parse", "invalid_json"), ("s.jsonl:3", "dedupe", "duplicate")]),
                    label="rejects")
    (conv_dir,) = os.listdir(tmp_path / "media")
    assert sorted(os.listdir(tmp_path / "media" / conv_dir)) == ["A.flac", "B.flac"]


def _not_empty(got: list) -> None:
    assert got, "no events"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An ingest-like output: one good per-speaker record and one whose audio file is gone."""
    root = write_records(str(tmp_path_factory.mktemp("source") / "rec"),
                         [two_streams(SOURCE, seconds=6.0, origin="real"),
                          two_streams(NO_AUDIO, seconds=6.0, origin="real")])
    os.remove(os.path.join(root, "media", NO_AUDIO, "A.flac"))
    return root


def test_remix_records_retimes_a_record_and_rejects_one_without_audio(source, tmp_path):
    cfg = SynthesizeConfig(remix=source, output=str(tmp_path), seed=3)
    with in_memory() as p:
        rows, rejects = p | RemixRecords(cfg, DEFAULT_TIMING, "default")
        assert_that(rows["conversations"] | beam.Map(lambda r: (r["origin"], json.loads(r["provenance"])["remix_of"],
                                                                r["conversation_id"].startswith("r-"))),
                    equal_to([("remix", SOURCE, True)]), label="one remix of the good record")
        assert_that(rows["segments"] | beam.Map(lambda r: r["speaker"]), _speakers_a_and_b, label="segments")
        # The error type is whatever reading the missing file raised; the input and stage are the contract.
        assert_that(tuple(rejects) | beam.Flatten() | beam.Map(lambda r: (r["input"], r["stage"])),
                    equal_to([(NO_AUDIO, "remix")]), label="rejects")


def _speakers_a_and_b(got: list[str]) -> None:
    assert set(got) == {"A", "B"}, got


def test_synthesize_writes_every_table_and_every_dead_letter(source, tmp_path):
    scripts = tmp_path / "scripts.jsonl"
    scripts.write_text(f"{HELLO}\n{BROKEN}\n")
    out = str(tmp_path / "out")
    cfg = SynthesizeConfig(scripts=(str(scripts), str(tmp_path / "nothing-*.jsonl")), remix=source, output=out,
                           seed=3)
    with in_memory() as p:
        _ = p | Synthesize(cfg, DEFAULT_TIMING, "default", generated=[HELLO])
    outputs.commit(out, "synthesize")
    convs = read_table(out, "conversations").to_pylist()
    # The script's dialogue and the generated copy of it have the same id: one is a duplicate.
    assert sorted(c["origin"] for c in convs) == ["remix", "synthetic"]
    rejects = sorted((r["stage"], r["error_type"]) for r in read_table(out, "rejects").to_pylist())
    assert [r for r in rejects if r[0] != "remix"] == [("dedupe", "duplicate"), ("parse", "invalid_json"),
                                                       ("read", "NoMatch")]
    assert [r[0] for r in rejects].count("remix") == 1
    for table in ("segments", "words", "events"):
        assert {r["conversation_id"] for r in read_table(out, table).to_pylist()} == {
            c["conversation_id"] for c in convs}, table
