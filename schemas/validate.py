"""Validation of rows against the table schemas, before anything is written."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from microturn.schemas.tables import ORIGINS, REQUIRED, schema_for


class RowError(ValueError):
    """A row that does not satisfy its table's contract."""


def _check_semantics(table: str, row: Mapping[str, Any]) -> None:
    # Time columns: non-negative integers, ends after starts.
    for col in ("start_ms", "end_ms", "t_ms", "duration_ms", "bytes"):
        v = row.get(col)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise RowError(f"{table}.{col} must be a non-negative integer, got {v!r}")
    if "start_ms" in row and "end_ms" in row and row["end_ms"] < row["start_ms"]:
        raise RowError(f"{table}: end_ms {row['end_ms']} is before start_ms {row['start_ms']}")
    # sources.origin is free-text provenance from the license manifest; conversations.origin is
    # the kind of conversation and is one of ORIGINS.
    if table == "conversations" and row["origin"] not in ORIGINS:
        raise RowError(f"{table}.origin must be one of {ORIGINS}, got {row['origin']!r}")
    if table == "words" and not str(row.get("text", "")).strip():
        raise RowError("words.text must not be empty")
    score = row.get("score")
    if score is not None and not (0.0 <= float(score) <= 1.0):
        raise RowError(f"words.score must be in [0, 1], got {score!r}")
    if table == "conversations":
        check_media_paths(row)
        if row["num_speakers"] != len(row["speakers"]):
            raise RowError(
                f"conversations.num_speakers={row['num_speakers']} but speakers has {len(row['speakers'])}"
            )
        stats = row.get("stats") or {}
        for key in ("speech_ratio", "overlap_ratio"):
            v = stats.get(key)
            if v is not None and not (0.0 <= v <= 1.0 + 1e-9) or (v is not None and math.isnan(v)):
                raise RowError(f"conversations.stats.{key} must be in [0, 1], got {v!r}")


# A conversation's media sit in one folder under the output, named by plain file names. Readers
# join these columns onto an output root, so a row from a hand-made or hostile table could point
# them anywhere ("../../etc", "/abs", "concat:x") unless every part is one plain path component.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")


def check_media_paths(row: Mapping[str, Any]) -> None:
    """Raise :class:`RowError` unless a ``conversations`` row's ``media_dir`` is ``media/NAME``
    and its ``audio_files`` / ``video_file`` are plain file names (letters, digits, ``_.+-``,
    not starting with a dot or a dash, no ``..``): what readers join onto the output root stays
    inside the conversation's media folder."""
    def plain(value: Any) -> bool:
        return isinstance(value, str) and bool(_PLAIN_NAME.fullmatch(value)) and ".." not in value

    media_dir = row.get("media_dir")
    head, _, name = media_dir.partition("/") if isinstance(media_dir, str) else ("", "", "")
    if head != "media" or not plain(name):
        raise RowError(f"conversations.media_dir must be 'media/<plain name>', got {media_dir!r}")
    for file in list(row.get("audio_files") or []) + ([row["video_file"]] if row.get("video_file") else []):
        if not plain(file):
            raise RowError(f"conversations: media file name {file!r} must be a plain file name "
                           "inside media_dir")


def _int_check(bits: int):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and lo <= v <= hi


_PRIMITIVE = {
    pa.string(): lambda v: isinstance(v, str),
    pa.int64(): _int_check(64),
    pa.int32(): _int_check(32),
    pa.float64(): lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
    pa.float32(): lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
    pa.bool_(): lambda v: isinstance(v, bool),
}
_CHECKS: dict[str, list | None] = {}


def _primitive_checks(table: str) -> list | None:
    """Per-column Python type checks when every column of ``table`` is a primitive type (the
    row tables written by the million: segments, words, events); None when Arrow must check.
    A plain isinstance check is ~50x cheaper than building a one-row Arrow table."""
    if table not in _CHECKS:
        schema = schema_for(table)
        checks = [(f.name, _PRIMITIVE.get(f.type)) for f in schema]
        _CHECKS[table] = None if any(ok is None for _, ok in checks) else checks
    return _CHECKS[table]


def validate_row(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """Check one row against ``table``'s schema and rules; return it as a plain dict.

    Raises :class:`RowError` (a ``ValueError``) naming the column at fault: missing or unknown
    columns, nulls in required columns, values Arrow cannot convert to the column type, and
    rule violations (negative times, end before start, unknown origin, empty word text).
    """
    schema = schema_for(table)
    names = set(schema.names)
    unknown = set(row) - names
    if unknown:
        raise RowError(f"{table}: unknown column(s) {sorted(unknown)}; expected {schema.names}")
    out = {name: row.get(name) for name in schema.names}
    for col in REQUIRED[table]:
        if out[col] is None:
            raise RowError(f"{table}.{col} is required and must not be null")
    checks = _primitive_checks(table)
    if checks is not None:
        for col, ok in checks:
            value = out[col]
            if value is not None and not ok(value):
                raise RowError(f"{table}.{col}: {value!r} does not match the schema "
                               f"(column type {schema.field(col).type})")
    else:
        try:
            pa.Table.from_pylist([out], schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise RowError(f"{table}: row does not match the schema: {exc}") from exc
    _check_semantics(table, out)
    return out


def validate_rows(table: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Validate every row and return them as one Arrow table with ``table``'s schema."""
    checked = [validate_row(table, r) for r in rows]
    return pa.Table.from_pylist(checked, schema=schema_for(table))
