"""Records → `export lhotse` → `import lhotse` → records: what the records say survives the trip.

The exported cut ids are the original conversation ids, so each imported conversation is found
by its source (``CUTS#cut_id``). Ids themselves are not kept: an import names a conversation by
the hash of its audio, as ingest does.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from microturn.pipelines.tables import read_table


@pytest.fixture(scope="module")
def round_trip(exported, tmp_path_factory) -> str:
    from microturn.cli.interop import import_main

    out = str(tmp_path_factory.mktemp("roundtrip") / "records")
    assert import_main(["lhotse", os.path.join(exported, "microturn_cuts.jsonl.gz"), "--output", out]) == 0
    return out


def table(root: str, name: str, rename: dict[str, str] | None = None) -> dict[str, list[tuple]]:
    """Rows of ``name`` per conversation (renamed to the original ids), without the id column, sorted."""
    out: dict[str, list[tuple]] = {}
    for r in read_table(root, name).to_pylist():
        cid = str((rename or {}).get(r["conversation_id"], r["conversation_id"]))
        values = tuple(v if not isinstance(v, float) else round(v, 4) for k, v in r.items() if k != "conversation_id")
        out.setdefault(cid, []).append(values)
    return {k: sorted(v, key=repr) for k, v in out.items()}


def test_speakers_segments_words_and_events_survive(records, round_trip):
    back = {c["source_uri"].rsplit("#", 1)[1]: c for c in read_table(round_trip, "conversations").to_pylist()}
    original = {c["conversation_id"]: c for c in read_table(records, "conversations").to_pylist()}
    assert sorted(back) == sorted(original)
    rename = {c["conversation_id"]: old for old, c in back.items()}
    for cid, conv in original.items():
        got = back[cid]
        for key in ("speakers", "num_speakers", "origin", "license", "channel_layout", "channels", "duration_ms",
                    "stats", "provenance"):
            assert got[key] == conv[key], (cid, key)
        assert got["conversation_id"][0] == cid[0]  # c- real, s- synthetic: the origin's prefix
    for name in ("segments", "words", "events"):  # times to the ms, channels, texts, speakers, scores
        assert table(round_trip, name, rename) == table(records, name), name


def test_media_survive_at_16_bit_precision(records, round_trip):
    back = {c["source_uri"].rsplit("#", 1)[1]: c for c in read_table(round_trip, "conversations").to_pylist()}
    for conv in read_table(records, "conversations").to_pylist():
        new = back[conv["conversation_id"]]
        for old_name, new_name in zip(conv["audio_files"], new["audio_files"], strict=True):
            a, _ = sf.read(os.path.join(records, conv["media_dir"], old_name), dtype="float32")
            b, _ = sf.read(os.path.join(round_trip, new["media_dir"], new_name), dtype="float32")
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=2 / 32768)
