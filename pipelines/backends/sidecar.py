"""Sidecar transcripts: find them next to a media file, read them with bounded work, and fit
them to the media.

A sidecar is a transcript file that shares the media file's stem (``talk.mp4`` ->
``talk.json`` / ``talk.stm`` / ``talk.vtt`` / ``talk.srt``). Its formats (whisperx JSON, NIST
STM, WebVTT, SubRip) are decoded and parsed by
:mod:`microturn.pipelines.backends.sidecar_formats`; this module re-exports that module's
public names, so that ``sidecar`` stays the one entry point for callers.

Limits, so that one sidecar costs bounded work (see :func:`read_sidecar_bytes` and
:func:`bound_transcript` for the numbers and their reasons): a sidecar over 16 MiB is refused
unread, only regular files are read (a FIFO named ``talk.srt`` would block the reader forever),
and cues holding more words than can be spoken in them, or more than a conversation of the
media's length can hold, are left out with a count.

Array-free module: no shape suffixes needed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from microturn.pipelines.backends.base import Utterance
from microturn.pipelines.backends.sidecar_formats import (
    SIDECAR_FORMATS,
    SidecarError,
    SidecarTranscript,
    StmSegment,
    decode_sidecar,
    format_timestamp,
    parse_sidecar,
    parse_stm_segments,
    parse_timestamp,
)
from microturn.synth.word_timing import split_span

__all__ = [
    "MAX_SIDECAR_BYTES",
    "SIDECAR_FORMATS",
    "SidecarError",
    "SidecarLimits",
    "SidecarTranscript",
    "StmSegment",
    "bound_transcript",
    "clip_to_media",
    "decode_sidecar",
    "find_sidecar",
    "format_timestamp",
    "parse_sidecar",
    "parse_stm_segments",
    "parse_timestamp",
    "read_sidecar",
    "read_sidecar_bytes",
    "spread_words",
]

# A sidecar larger than this is refused unread. A 4 h call (ingest's default --max-duration-s)
# at a brisk 200 words a minute holds 48,000 words; as whisperx JSON, with a start, end, score
# and speaker for every word (about 90 bytes each), that is 4.3 MB, so 16 MiB leaves 3x room,
# while the text of a sidecar is held a few times over in memory while it is parsed.
MAX_SIDECAR_BYTES = 16 << 20


# --------------------------------------------------------------------------------------------
# finding


def _default_exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    if "://" not in path or path.startswith("file://"):
        # A regular file (after symbolic links): a FIFO, a device, a folder or a broken link
        # with a sidecar's name is not a sidecar (ingest rejects it where a pattern matches it).
        return os.path.isfile(path[len("file://"):] if path.startswith("file://") else path)
    return FileSystems.exists(path)


def _split_stem(media_path: str) -> str:
    """The media path without its extension, by string manipulation only (works on URLs)."""
    cut = max(media_path.rfind("/"), media_path.rfind("\\"))
    name = media_path[cut + 1 :]
    dot = name.rfind(".")
    # A leading dot (".hidden") is part of the name, not an extension.
    if dot <= 0:
        return media_path
    return media_path[: cut + 1] + name[:dot]


def find_sidecar(
    media_path: str, exists: Callable[[str], bool] | None = None
) -> str | None:
    """The path of the sidecar transcript next to ``media_path``, or None.

    Candidates are ``<stem>.<ext>`` for ``ext`` in :data:`SIDECAR_FORMATS` order (json, stm,
    vtt, srt), each first in lower case and then in upper case (``.SRT``). The first candidate
    for which ``exists`` is true wins. ``exists`` defaults to Beam's ``FileSystems.exists`` so
    that ``gs://`` and ``s3://`` media work; candidates are built by string manipulation of the
    stem, never by resolving the path locally.
    """
    if not isinstance(media_path, str) or not media_path:
        raise TypeError(f"media_path must be a non-empty string, got {media_path!r}")
    exists = exists or _default_exists
    stem = _split_stem(media_path)
    for ext in SIDECAR_FORMATS:
        for variant in (ext, ext.upper()):
            candidate = f"{stem}.{variant}"
            if candidate != media_path and exists(candidate):
                return candidate
    return None


def read_sidecar(path: str, *, file_id: str | None = None) -> SidecarTranscript:
    """Read and parse the sidecar at ``path`` (any Beam filesystem URL); format from extension."""
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if fmt not in SIDECAR_FORMATS:
        raise SidecarError(
            f"cannot tell the sidecar format of {path!r}: its extension must be one of "
            f"{', '.join('.' + f for f in SIDECAR_FORMATS)}"
        )
    return parse_sidecar(read_sidecar_bytes(path), fmt, name=path, file_id=file_id)


def read_sidecar_bytes(path: str, *, max_bytes: int = MAX_SIDECAR_BYTES) -> bytes:
    """The bytes of the sidecar at ``path`` (any Beam filesystem URL), at most ``max_bytes``.

    A local sidecar must be a regular file (after symbolic links); a larger file raises
    :class:`SidecarError` after reading no more than ``max_bytes + 1`` bytes.
    """
    from apache_beam.io.filesystems import FileSystems

    from microturn.pipelines.media import NotARegularFile, open_regular

    if "://" not in path or path.startswith("file://"):
        try:
            fh = open_regular(path[len("file://"):] if path.startswith("file://") else path)
        except NotARegularFile as err:
            raise SidecarError(f"{path} is {err}") from None
    else:
        fh = FileSystems.open(path)
    with fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SidecarError(
            f"{path} is larger than {max_bytes / (1 << 20):g} MiB, more than any transcript of a "
            "4 h conversation (about 5 MB with word times); it was not read"
        )
    return data


# --------------------------------------------------------------------------------------------
# splitting a span


def spread_words(texts: Sequence[str], start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """Split [start_ms, end_ms) over ``texts`` in proportion to their character lengths.

    Spans are contiguous, integer, and each at least 1 ms long (the last one may then end past
    ``end_ms`` when the span is shorter than the number of words).
    """
    bounds = split_span(start_ms, end_ms, [max(len(t), 1) for t in texts], rounding="nearest")
    return list(zip(bounds[:-1], bounds[1:], strict=True))


# --------------------------------------------------------------------------------------------
# media bounds


def clip_to_media(
    transcript: SidecarTranscript, duration_ms: int
) -> tuple[SidecarTranscript, int, int]:
    """Fit a transcript to media of ``duration_ms``.

    Utterances starting at or after the media end are dropped; utterances running past it are
    clipped to end there. Words are treated the same way. Returns the new transcript, the
    number of dropped utterances and the number of clipped utterances (the caller records a
    reject row with these counts); warns when either is non-zero.
    """
    if not isinstance(duration_ms, int) or isinstance(duration_ms, bool) or duration_ms <= 0:
        raise ValueError(f"duration_ms must be a positive integer, got {duration_ms!r}")
    kept: list[Utterance] = []
    n_dropped = n_clipped = 0
    for u in transcript.utterances:
        if u.start_ms >= duration_ms:
            n_dropped += 1
        elif u.end_ms > duration_ms:
            n_clipped += 1
            kept.append(replace(u, end_ms=duration_ms))
        else:
            kept.append(u)
    words = transcript.words
    if words is not None:
        words = [
            replace(w, end_ms=min(w.end_ms, duration_ms)) for w in words if w.start_ms < duration_ms
        ]
    if n_dropped or n_clipped:
        warnings.warn(
            f"sidecar runs past the media end ({duration_ms} ms): dropped {n_dropped} "
            f"utterance(s) that start after it and clipped {n_clipped} that run past it",
            stacklevel=2,
        )
    clipped = SidecarTranscript(utterances=kept, words=words, format=transcript.format)
    return clipped, n_dropped, n_clipped


# --------------------------------------------------------------------------------------------
# work limits

# Speech tops out at about 6-7 words a second (auctioneers, the fastest rap); a cue holding more
# than 10 words a second of its span, plus 10 for short cues, cannot be what was said in it.
# Aligning such a cue is where the time went: one cue of a million words took 104 s and its
# words were then cut to what fit in the media.
MAX_WORDS_PER_CUE_SECOND = 10
_CUE_WORD_SLACK = 10
# A whole sidecar: two talkers at once, both at that pace (20 words a second of media, plus 100).
MAX_WORDS_PER_MEDIA_SECOND = 20
_FILE_WORD_SLACK = 100
# Alignment decodes every cue's span: the spans together may cover the media at most 4 times
# (a two-person call with overlapping cues covers it about 1.3 times), so alignment costs at
# most 4x the media's duration (plus one retry per cue) whatever the sidecar holds.
MAX_CUE_COVERAGE = 4


@dataclass(frozen=True, slots=True)
class SidecarLimits:
    """What :func:`bound_transcript` left out: counts, and a message for a ``rejects`` row."""

    dense_cues: int = 0
    dense_words: int = 0
    over_budget_cues: int = 0
    over_budget_words: int = 0
    dropped_word_times: int = 0

    def __bool__(self) -> bool:
        return bool(self.dense_cues or self.over_budget_cues or self.dropped_word_times)

    def message(self, duration_ms: int) -> str:
        parts = []
        if self.dense_cues:
            parts.append(
                f"{self.dense_cues} cue(s) ({self.dense_words} words) with more than "
                f"{MAX_WORDS_PER_CUE_SECOND} words per second of the cue (plus {_CUE_WORD_SLACK}), "
                "more than can be spoken in them")
        if self.over_budget_cues:
            parts.append(
                f"{self.over_budget_cues} cue(s) ({self.over_budget_words} words) past what "
                f"{duration_ms / 1000:g} s of media can hold ({MAX_WORDS_PER_MEDIA_SECOND} "
                f"words per second plus {_FILE_WORD_SLACK}, cues covering it at most "
                f"{MAX_CUE_COVERAGE} times)")
        if self.dropped_word_times:
            parts.append(f"{self.dropped_word_times} timed word(s) past that budget")
        return "left out " + "; ".join(parts)


def bound_transcript(
    transcript: SidecarTranscript, duration_ms: int
) -> tuple[SidecarTranscript, SidecarLimits]:
    """Leave out what no conversation of ``duration_ms`` can hold, so alignment work is bounded.

    Cues (in time order) with more words than :data:`MAX_WORDS_PER_CUE_SECOND` per second of
    their span (plus 10) are left out; then cues past a budget for the whole media
    (:data:`MAX_WORDS_PER_MEDIA_SECOND` words per second plus 100, cue spans covering it at most
    :data:`MAX_CUE_COVERAGE` times). Timed words (whisperx JSON) are cut to the same word budget.
    Returns the transcript and what was left out; warns when anything was.
    """
    if not isinstance(duration_ms, int) or isinstance(duration_ms, bool) or duration_ms <= 0:
        raise ValueError(f"duration_ms must be a positive integer, got {duration_ms!r}")
    word_budget = MAX_WORDS_PER_MEDIA_SECOND * duration_ms // 1000 + _FILE_WORD_SLACK
    span_budget = MAX_CUE_COVERAGE * duration_ms
    kept: list[Utterance] = []
    dense = dense_words = over = over_words = 0
    words_used = span_used = 0
    for u in transcript.utterances:
        n = len(u.text.split())
        span = max(0, min(u.end_ms, duration_ms) - u.start_ms)
        if n > MAX_WORDS_PER_CUE_SECOND * (u.end_ms - u.start_ms) // 1000 + _CUE_WORD_SLACK:
            dense, dense_words = dense + 1, dense_words + n
        elif words_used + n > word_budget or span_used + span > span_budget:
            over, over_words = over + 1, over_words + n
        else:
            kept.append(u)
            words_used, span_used = words_used + n, span_used + span
    words = transcript.words
    dropped_times = 0
    if words is not None and len(words) > word_budget:
        dropped_times = len(words) - word_budget
        words = words[:word_budget]
    limits = SidecarLimits(dense, dense_words, over, over_words, dropped_times)
    if limits:
        warnings.warn(f"sidecar: {limits.message(duration_ms)}", stacklevel=2)
    return SidecarTranscript(utterances=kept, words=words, format=transcript.format), limits
