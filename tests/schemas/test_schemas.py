import pytest
from hypothesis import given
from hypothesis import strategies as st

from microturn.schemas import (
    SCHEMA_VERSION,
    TABLE_NAMES,
    RowError,
    conversation_id,
    schema_for,
    split_of,
    validate_row,
    validate_rows,
)
from microturn.schemas.ids import DEFAULT_SPLITS, is_conversation_id


def test_every_table_carries_the_schema_version():
    assert set(TABLE_NAMES) == {"sources", "conversations", "segments", "words", "events", "rejects",
                                "samples", "shards"}
    for name in TABLE_NAMES:
        assert schema_for(name).metadata[b"microturn.schema_version"] == str(SCHEMA_VERSION).encode()


def test_unknown_table_is_an_actionable_error():
    with pytest.raises(ValueError, match="known tables: sources"):
        schema_for("nope")


def _segment(**kw):
    row = {"conversation_id": "c-0123456789abcdef", "speaker": "SPEAKER_00", "start_ms": 10,
           "end_ms": 20, "channel": 0}
    row.update(kw)
    return row


def test_valid_segment_round_trips_through_arrow():
    table = validate_rows("segments", [_segment(), _segment(start_ms=30, end_ms=40, channel=None)])
    assert table.schema.equals(schema_for("segments"), check_metadata=True)
    assert table.column("end_ms").to_pylist() == [20, 40]


@pytest.mark.parametrize("bad, message", [
    (dict(start_ms=-1), "non-negative"),
    (dict(start_ms=50), "before start_ms"),
    (dict(speaker=None), "required"),
    (dict(extra=1), "unknown column"),
    (dict(start_ms="10"), "non-negative integer|does not match"),
    (dict(channel="left"), "does not match the schema"),
])
def test_bad_rows_are_refused_with_the_column_named(bad, message):
    with pytest.raises(RowError, match=message):
        validate_row("segments", _segment(**bad))


def test_words_rules():
    row = {"conversation_id": "c", "speaker": None, "text": "hi", "start_ms": 0, "end_ms": 5, "score": 0.5}
    assert validate_row("words", row)["speaker"] is None
    with pytest.raises(RowError, match="empty"):
        validate_row("words", {**row, "text": "  "})
    with pytest.raises(RowError, match=r"\[0, 1\]"):
        validate_row("words", {**row, "score": 1.5})


def test_conversation_origin_and_speaker_count_checked():
    row = {
        "conversation_id": "c-1", "source_uri": "x.mp4", "origin": "real", "duration_ms": 1000,
        "channels": 1, "channel_layout": "mixed", "has_video": False, "media_dir": "media/c-1",
        "audio_files": ["mix.flac"], "video_file": None, "speakers": ["A", "B"], "num_speakers": 2,
        "backends": [("vad", "silero")], "license": None, "split": "train",
        "stats": {"speech_ratio": 0.5, "overlap_ratio": 0.1, "turns": 3, "backchannels": 0,
                  "gaps_ms": [1], "overlaps_ms": [], "median_gap_ms": 1.0, "median_overlap_ms": None},
    }
    validate_row("conversations", row)
    with pytest.raises(RowError, match="origin"):
        validate_row("conversations", {**row, "origin": "made-up"})
    with pytest.raises(RowError, match="num_speakers"):
        validate_row("conversations", {**row, "num_speakers": 3})
    with pytest.raises(RowError, match="speech_ratio"):
        validate_row("conversations", {**row, "stats": {**row["stats"], "speech_ratio": 2.0}})


hexes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@given(hexes)
def test_conversation_ids_are_stable_and_well_formed(sha):
    cid = conversation_id(sha)
    assert cid == conversation_id(sha)
    assert is_conversation_id(cid)
    assert conversation_id(sha, prefix="s") != cid


@pytest.mark.parametrize("bad", ["", "ABC", "g" * 64, "a" * 63])
def test_conversation_id_refuses_non_sha(bad):
    with pytest.raises(ValueError, match="SHA-256"):
        conversation_id(bad)


@given(hexes, st.floats(0.05, 0.9))
def test_split_is_a_pure_function_of_the_id(sha, train):
    cid = conversation_id(sha)
    splits = (("train", train), ("test", 1 - train))
    assert split_of(cid, splits) == split_of(cid, splits)
    assert split_of(cid, splits) in ("train", "test")
    assert split_of(cid) in {name for name, _ in DEFAULT_SPLITS}


def test_split_ratios_are_respected_on_many_ids():
    ids = [conversation_id(f"{i:064x}") for i in range(4000)]
    share = sum(split_of(c, (("a", 0.8), ("b", 0.2))) == "a" for c in ids) / len(ids)
    assert abs(share - 0.8) < 0.03


@pytest.mark.parametrize("splits", [(), (("a", 0.5),), (("a", 1.2), ("b", -0.2))])
def test_bad_split_ratios(splits):
    with pytest.raises(ValueError):
        split_of("c-0000000000000000", splits)
