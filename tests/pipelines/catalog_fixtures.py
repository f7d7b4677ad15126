"""Record directories for the catalog tests, written with the project's validator and Parquet.

Four outputs under a root, chosen so every audit view has something to find:

- ``ingest``: real conversations c-1 (CC-BY-4.0), c-2 (license 'unknown'), c-3 (a custom
  LicenseRef), their segments, sources, words, events, and three rejects;
- ``ingest2``: a second copy of c-3 (another duration and other segments: a duplicate id) and
  one reject;
- ``synth``: synthetic s-1 (license spelt 'apache-2.0'), s-2 (a license string holding a
  ``<script>`` tag), remix r-1 of c-1 in split 'valid' (its source is in 'train': leakage),
  remix r-2 of c-3 with no license and no stats, and one reject;
- ``shard``: samples of c-1 (train) and c-2 (train and test: leakage), their shards, one reject.

The expected values of the views are worked out by hand in the tests from the rows here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest

from microturn.schemas import validate_rows

SCRIPT_LICENSE = "<script>alert(1)</script>"


def write_table(output: str, table: str, rows: list[dict]) -> None:
    """Validate ``rows`` and write them as ``OUT/<table>/part-00000-of-00001.parquet``."""
    data = validate_rows(table, rows)
    os.makedirs(os.path.join(output, table), exist_ok=True)
    pq.write_table(data, os.path.join(output, table, "part-00000-of-00001.parquet"))


def stats(speech: float, overlap: float, turns: int, backchannels: int, gaps: list[int], overlaps: list[int]) -> dict:
    return {"speech_ratio": speech, "overlap_ratio": overlap, "turns": turns, "backchannels": backchannels,
            "gaps_ms": gaps, "overlaps_ms": overlaps, "median_gap_ms": None, "median_overlap_ms": None}


def conversation(cid: str, origin: str, duration_ms: int, license_: str | None, split: str, st: dict | None,
                 provenance: dict | None = None) -> dict:
    return {
        "conversation_id": cid, "source_uri": f"file:///data/{cid}.wav", "origin": origin,
        "duration_ms": duration_ms, "channels": 2, "channel_layout": "per_speaker", "has_video": False,
        "media_dir": f"media/{cid}", "audio_files": ["A.flac", "B.flac"], "video_file": None,
        "speakers": ["A", "B"], "num_speakers": 2,
        "backends": {"vad": "silero", "diarization": "embedded"},
        "license": license_, "split": split, "stats": st,
        "provenance": json.dumps(provenance, sort_keys=True) if provenance is not None else None,
    }


def segment(cid: str, speaker: str, start_ms: int, end_ms: int) -> dict:
    return {"conversation_id": cid, "speaker": speaker, "start_ms": start_ms, "end_ms": end_ms,
            "channel": 0 if speaker == "A" else 1}


def reject(input_: str, stage: str, error_type: str, message: str) -> dict:
    return {"input": input_, "stage": stage, "error_type": error_type, "message": message}


def sample(cid: str, split: str, window: int, offset: int) -> dict:
    return {
        "key": f"{cid}.A.{window:05d}", "shard": f"{split}/{split}-000000.tar", "split": split,
        "conversation_id": cid, "window": window, "offset_ms": window * 30_000, "duration_ms": 30_000,
        "chunks": 150, "model_speaker": "A", "user_speakers": ["B"], "origin": "real", "license": "CC-BY-4.0",
        "has_video": False, "tar_offset": offset, "tar_bytes": 1024, "sha256": "0" * 64,
        "stats": {"model_voiced": 0.5, "user_voiced": 0.4, "overlap_chunks": 3, "leak_chunks": 0,
                  "model_words": 20, "user_words": 15, "turn_ends": 2, "backchannels": 1, "interruptions": 0},
    }


def source(cid: str, license_: str, duration_ms: int) -> dict:
    return {
        "uri": f"file:///data/{cid}.wav", "conversation_id": cid, "sha256": "1" * 64, "bytes": 1000,
        "container": "wav", "streams": [{"index": 0, "codec_type": "audio", "codec_name": "pcm_s16le",
                                          "sample_rate": 16000, "channels": 2}],
        "duration_ms": duration_ms, "sample_rate": 16000, "channels": 2, "has_video": False,
        "license": license_, "origin": "real",
    }


@dataclass(frozen=True, kw_only=True)
class FixtureOutputs:
    ingest: str
    ingest2: str
    synth: str
    shard: str

    @property
    def all(self) -> list[str]:
        return [self.ingest, self.ingest2, self.synth, self.shard]


# Conversation facts the tests check the views against: id → (origin, duration_ms, license, stats).
C1 = stats(0.5, 0.1, 4, 1, [100, 200, 300], [50])
C2 = stats(0.8, 0.2, 10, 2, [400, 600], [80, 120])
C3 = stats(0.6, 0.0, 2, 0, [700], [])
S1 = stats(0.9, 0.05, 12, 3, [150, 250], [100, 200, 300])
S2 = stats(0.7, 0.1, 6, 0, [], [90])
R1 = stats(0.5, 0.2, 4, 1, [220], [60])


def write_fixture_outputs(root: str) -> FixtureOutputs:
    """Write the four fixture outputs under ``root``."""
    out = FixtureOutputs(ingest=os.path.join(root, "ingest"), ingest2=os.path.join(root, "ingest2"),
                         synth=os.path.join(root, "synth"), shard=os.path.join(root, "shard"))
    write_table(out.ingest, "conversations", [
        conversation("c-1", "real", 60_000, "CC-BY-4.0", "train", C1),
        conversation("c-2", "real", 120_000, "unknown", "train", C2),
        conversation("c-3", "real", 30_000, "LicenseRef-Corpus-X", "test", C3),
    ])
    write_table(out.ingest, "sources", [source("c-1", "CC-BY-4.0", 60_000), source("c-2", "unknown", 120_000),
                                        source("c-3", "LicenseRef-Corpus-X", 30_000)])
    write_table(out.ingest, "segments", [
        segment("c-1", "A", 0, 10_000), segment("c-1", "B", 10_000, 16_000), segment("c-1", "A", 16_000, 20_000),
        segment("c-2", "A", 0, 5_000), segment("c-2", "B", 5_000, 10_000),
        segment("c-3", "A", 0, 3_000),
    ])
    write_table(out.ingest, "words", [
        {"conversation_id": "c-1", "speaker": "A", "text": "hello", "start_ms": 100, "end_ms": 400, "score": 0.9},
        {"conversation_id": "c-1", "speaker": None, "text": "there", "start_ms": 400, "end_ms": 700, "score": None},
    ])
    write_table(out.ingest, "events", [
        {"conversation_id": "c-1", "type": "turn_end", "speaker": "A", "t_ms": 10_000,
         "payload": json.dumps({"gap_ms": 100})},
    ])
    write_table(out.ingest, "rejects", [
        reject("b.mp4", "decode", "MediaError", "truncated file"),
        reject("a.mp4", "decode", "MediaError", "no audio stream"),
        reject("c.json", "validate", "RowError", "conversations.split is required"),
    ])
    # ingest2: the same id c-3 again, with another duration and other segments.
    write_table(out.ingest2, "conversations", [conversation("c-3", "real", 99_000, "LicenseRef-Corpus-X", "test", C3)])
    write_table(out.ingest2, "segments", [segment("c-3", "A", 0, 3_000), segment("c-3", "B", 3_000, 9_000)])
    write_table(out.ingest2, "rejects", [reject("d.mp4", "decode", "MediaError", "no audio stream")])
    write_table(out.synth, "conversations", [
        conversation("s-1", "synthetic", 90_000, "apache-2.0", "train", S1, {"kind": "synthetic", "seed": 1}),
        conversation("s-2", "synthetic", 45_000, SCRIPT_LICENSE, "test", S2, {"kind": "synthetic", "seed": 2}),
        conversation("r-1", "remix", 60_000, "CC-BY-4.0", "valid", R1, {"kind": "remix", "remix_of": "c-1"}),
        conversation("r-2", "remix", 30_000, None, "test", None, {"kind": "remix", "remix_of": "c-3"}),
    ])
    write_table(out.synth, "segments", [segment("s-1", "A", 0, 30_000), segment("s-1", "B", 30_000, 40_000)])
    write_table(out.synth, "rejects", [reject("script-7", "synthesize", "UnsupportedVoice", "voice en-nowhere")])
    write_table(out.shard, "samples", [
        sample("c-1", "train", 0, 0), sample("c-1", "train", 1, 1024),
        sample("c-2", "train", 0, 2048), sample("c-2", "test", 1, 0),
    ])
    write_table(out.shard, "shards", [
        {"path": "train/train-000000.tar", "split": "train", "index": 0, "bytes": 3072, "samples": 3,
         "duration_ms": 90_000, "sha256": "2" * 64, "manifest": "train/train-000000.parquet"},
        {"path": "test/test-000000.tar", "split": "test", "index": 0, "bytes": 1024, "samples": 1,
         "duration_ms": 30_000, "sha256": "3" * 64, "manifest": "test/test-000000.parquet"},
    ])
    write_table(out.shard, "rejects", [reject("c-9", "shard", "KeyError", "no media for c-9")])
    return out


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """The fixture outputs written once per test module (import this fixture to use it)."""
    return write_fixture_outputs(str(tmp_path_factory.mktemp("outputs")))


@pytest.fixture(scope="module")
def catalog(outputs, tmp_path_factory):
    """A catalog built from :func:`outputs`."""
    from microturn.pipelines.catalog.build import build_catalog

    path = str(tmp_path_factory.mktemp("catalog") / "catalog.duckdb")
    build_catalog(outputs.all, path)
    return path

