"""Arrow schemas of the record tables (DESIGN.md, "Records on disk").

All times are integer milliseconds from the start of the conversation. Every schema carries
``microturn.schema_version`` in its metadata; it is written into each Parquet file footer.
"""

from __future__ import annotations

import pyarrow as pa

# 2: VOICED marks speech (words and the stream's own audio activity, pauses of 200 ms or more
# unvoiced) instead of whole diarized turns, and OVERLAP follows it; samples of version 1 label
# a pause inside a turn as voiced, so readers refuse them. The tables' columns are unchanged.
# 3: label bits are uint16, because the 8 bits of uint8 were all taken and three behaviours need
# their own: CUE_RESPONSE, BACKGROUND and SIMULTANEOUS; words.json gains the input-side
# "background" stream; events gain visual_cue, background_result and simultaneous. A version-2
# reader would fail on the uint16 labels, so the number changes. The tables' columns are unchanged.
SCHEMA_VERSION = 3
_META = {b"microturn.schema_version": str(SCHEMA_VERSION).encode()}

ORIGINS = ("real", "synthetic", "remix")

_STREAM = pa.struct(
    [
        ("index", pa.int32()),
        ("codec_type", pa.string()),  # audio | video | subtitle | data
        ("codec_name", pa.string()),
        ("sample_rate", pa.int32()),  # audio only
        ("channels", pa.int32()),  # audio only
        ("width", pa.int32()),  # video only
        ("height", pa.int32()),  # video only
        ("fps", pa.float64()),  # video only: average frame rate
        ("variable_frame_rate", pa.bool_()),  # video only: r_frame_rate != avg_frame_rate
    ]
)

SOURCES = pa.schema(
    [
        ("uri", pa.string()),
        ("conversation_id", pa.string()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("container", pa.string()),
        ("streams", pa.list_(_STREAM)),
        ("duration_ms", pa.int64()),
        ("sample_rate", pa.int32()),  # of the first audio stream, before resampling
        ("channels", pa.int32()),
        ("has_video", pa.bool_()),
        ("video_fps", pa.float64()),  # original average frame rate
        ("video_width", pa.int32()),  # original size
        ("video_height", pa.int32()),
        ("sidecar_uri", pa.string()),
        ("license", pa.string()),
        ("origin", pa.string()),
    ],
    metadata=_META,
)

_STATS = pa.struct(
    [
        ("speech_ratio", pa.float64()),  # share of the duration where anyone speaks
        ("overlap_ratio", pa.float64()),  # share of speech time where two or more speak
        ("turns", pa.int32()),
        ("backchannels", pa.int32()),  # short turns inside another speaker's turn
        ("gaps_ms", pa.list_(pa.int32())),  # silence between one speaker's end and another's start
        ("overlaps_ms", pa.list_(pa.int32())),  # overlap at a change of speaker
        ("median_gap_ms", pa.float64()),
        ("median_overlap_ms", pa.float64()),
    ]
)

CONVERSATIONS = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("source_uri", pa.string()),
        ("origin", pa.string()),
        ("duration_ms", pa.int64()),
        ("channels", pa.int32()),  # audio streams kept in media: 1 for a mixture
        ("channel_layout", pa.string()),  # mixed | per_speaker
        ("has_video", pa.bool_()),
        ("media_dir", pa.string()),  # relative to OUT
        ("audio_files", pa.list_(pa.string())),  # relative to media_dir, one per channel
        ("video_file", pa.string()),  # relative to media_dir, 10 fps
        ("speakers", pa.list_(pa.string())),
        ("num_speakers", pa.int32()),
        ("backends", pa.map_(pa.string(), pa.string())),
        ("license", pa.string()),
        ("split", pa.string()),
        ("stats", _STATS),
        # JSON object, keys sorted: how a synthetic or remixed conversation was made (seed, script
        # hash, TTS version, timing-model parameters, mixing); null for real conversations.
        ("provenance", pa.string()),
    ],
    metadata=_META,
)

SEGMENTS = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("speaker", pa.string()),
        ("start_ms", pa.int64()),
        ("end_ms", pa.int64()),
        ("channel", pa.int32()),  # audio file index in media holding this speaker's voice
    ],
    metadata=_META,
)

WORDS = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("speaker", pa.string()),  # null when no segment covers the word
        ("text", pa.string()),
        ("start_ms", pa.int64()),
        ("end_ms", pa.int64()),
        ("score", pa.float32()),  # aligner confidence in [0, 1]; null when times were interpolated
    ],
    metadata=_META,
)

EVENTS = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("type", pa.string()),  # backchannel | interruption | turn_end | timed_instruction
        ("speaker", pa.string()),
        ("t_ms", pa.int64()),
        ("payload", pa.string()),  # JSON object, keys sorted
    ],
    metadata=_META,
)

REJECTS = pa.schema(
    [
        ("input", pa.string()),  # uri or record key that failed
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
    ],
    metadata=_META,
)

_SAMPLE_STATS = pa.struct(
    [
        ("model_voiced", pa.float64()),  # share of chunks with VOICED on the model stream
        ("user_voiced", pa.float64()),
        ("overlap_chunks", pa.int32()),  # chunks with OVERLAP
        ("leak_chunks", pa.int32()),  # chunks with LEAK on either stream
        ("model_words", pa.int32()),
        ("user_words", pa.int32()),
        ("turn_ends", pa.int32()),  # turn_end events inside the window
        ("backchannels", pa.int32()),
        ("interruptions", pa.int32()),
    ]
)

# One row per WebDataset sample. The same schema is the Parquet manifest beside every shard.
SAMPLES = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),  # relative to the shard output: {split}/{split}-{index:06d}.tar
        ("split", pa.string()),
        ("conversation_id", pa.string()),
        ("window", pa.int32()),
        ("offset_ms", pa.int64()),  # window start in the conversation
        ("duration_ms", pa.int64()),  # chunks x 200
        ("chunks", pa.int32()),
        ("model_speaker", pa.string()),
        ("user_speakers", pa.list_(pa.string())),
        ("origin", pa.string()),
        ("license", pa.string()),
        ("has_video", pa.bool_()),
        ("tar_offset", pa.int64()),  # byte offset of the sample's first member header in the tar
        ("tar_bytes", pa.int64()),  # bytes of its members (headers and padding included)
        ("sha256", pa.string()),  # of those tar bytes
        ("stats", _SAMPLE_STATS),
    ],
    metadata=_META,
)

SHARDS = pa.schema(
    [
        ("path", pa.string()),  # relative to the shard output
        ("split", pa.string()),
        ("index", pa.int32()),
        ("bytes", pa.int64()),
        ("samples", pa.int32()),
        ("duration_ms", pa.int64()),  # sum over its samples
        ("sha256", pa.string()),
        ("manifest", pa.string()),  # the Parquet manifest beside it
    ],
    metadata=_META,
)

_TABLES: dict[str, pa.Schema] = {
    "sources": SOURCES,
    "conversations": CONVERSATIONS,
    "segments": SEGMENTS,
    "words": WORDS,
    "events": EVENTS,
    "rejects": REJECTS,
    "samples": SAMPLES,
    "shards": SHARDS,
}
TABLE_NAMES = tuple(_TABLES)

# Columns that must be present and non-null in every row; the rest may be null.
REQUIRED: dict[str, tuple[str, ...]] = {
    "sources": ("uri", "conversation_id", "sha256", "bytes", "duration_ms", "has_video", "origin"),
    "conversations": (
        "conversation_id", "origin", "duration_ms", "channels", "channel_layout", "has_video",
        "media_dir", "audio_files", "speakers", "num_speakers", "split",
    ),
    "segments": ("conversation_id", "speaker", "start_ms", "end_ms"),
    "words": ("conversation_id", "text", "start_ms", "end_ms"),
    "events": ("conversation_id", "type", "t_ms", "payload"),
    "rejects": ("input", "stage", "error_type", "message"),
    "samples": (
        "key", "shard", "split", "conversation_id", "window", "offset_ms", "duration_ms", "chunks",
        "model_speaker", "user_speakers", "origin", "has_video", "tar_offset", "tar_bytes", "sha256",
    ),
    "shards": ("path", "split", "index", "bytes", "samples", "duration_ms", "sha256", "manifest"),
}


def schema_for(table: str) -> pa.Schema:
    """Arrow schema of ``table``; ``ValueError`` naming the known tables otherwise."""
    try:
        return _TABLES[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; known tables: {', '.join(TABLE_NAMES)}") from None
