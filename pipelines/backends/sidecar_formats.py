"""Sidecar transcript formats: decode a sidecar's bytes and parse them into utterances.

Four formats are understood:

- whisperx-style JSON: ``{"segments": [{"start": s, "end": s, "text": ..., "speaker"?: ...,
  "words"?: [{"word", "start", "end", "score"?}]}]}`` (times in seconds). When every segment
  with text carries timed words, those words are returned as word-level times (no alignment
  needed, and usable as word-level references by :mod:`microturn.pipelines.eval_words`).
- NIST STM: ``file channel speaker start end [<label>] text...``; ``;;`` comments and
  ``ignore_time_segment_in_scoring`` / ``inter_segment_gap`` segments are ignored.
- WebVTT: cues with ``HH:MM:SS.mmm`` or ``MM:SS.mmm`` times; ``<v Speaker>`` voice tags give
  the speaker; NOTE / STYLE / REGION blocks are skipped.
- SubRip (SRT): numbered cues with ``HH:MM:SS,mmm`` times.

All times returned are integer milliseconds. Markup (``<i>``, ``{\\an8}``, karaoke timestamps)
is stripped from the text. A malformed cue or line is skipped with a warning; a file with no
usable cue at all raises :class:`SidecarError`.

Finding sidecars next to media, reading them with bounded work and fitting them to the media
are the jobs of :mod:`microturn.pipelines.backends.sidecar`, which re-exports this module's
public names.

Array-free module: no shape suffixes needed.
"""

from __future__ import annotations

import html
import json
import math
import re
import warnings
from dataclasses import dataclass

from microturn.pipelines.backends.base import Utterance, Word

__all__ = [
    "SIDECAR_FORMATS",
    "SidecarError",
    "SidecarTranscript",
    "StmSegment",
    "decode_sidecar",
    "format_timestamp",
    "parse_sidecar",
    "parse_stm_segments",
    "parse_timestamp",
]

# Order of preference when several sidecars sit next to one media file: whisperx JSON first
# (it may carry word times and speakers, so it can skip alignment), then STM (speakers and
# precise segment times), then VTT (may carry voice tags), then SRT (times and text only).
SIDECAR_FORMATS: tuple[str, ...] = ("json", "stm", "vtt", "srt")

# Speaker names that STM uses for non-speech regions rather than for a talker.
_STM_NON_SPEECH = frozenset({"inter_segment_gap", "excluded_region"})
_STM_IGNORE_TEXT = "ignore_time_segment_in_scoring"

# At most this many individual problems are quoted in one warning; the rest are counted.
_MAX_QUOTED_PROBLEMS = 3


class SidecarError(ValueError):
    """A sidecar transcript that cannot be used at all (bad encoding, no usable cue, ...)."""


@dataclass(frozen=True, slots=True)
class SidecarTranscript:
    """A parsed sidecar.

    ``utterances`` are sorted by (start_ms, end_ms). ``words`` holds word-level times when the
    sidecar has them for every utterance with text (whisperx JSON), else None.
    """

    utterances: list[Utterance]
    words: list[Word] | None = None
    format: str = ""


@dataclass(frozen=True, slots=True)
class StmSegment:
    """One scored STM line, with the file id and channel that a multi-file STM needs."""

    file: str
    channel: str
    speaker: str
    start_ms: int
    end_ms: int
    text: str


# --------------------------------------------------------------------------------------------
# decoding


def decode_sidecar(data: bytes, *, name: str = "sidecar") -> str:
    """Decode sidecar bytes: UTF-8 (with or without BOM) or UTF-16 with a BOM.

    Line endings are normalised to ``\\n``. Anything else raises :class:`SidecarError` naming
    the problem and the fix.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name}: sidecar data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.strip():
        raise SidecarError(f"{name} is empty; write the transcript into it or delete it")
    # UTF-32 BOMs start with the UTF-16 LE BOM, so test them first.
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise SidecarError(f"{name} is UTF-32 encoded; re-encode it as UTF-8")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as err:
            raise SidecarError(
                f"{name} starts with a UTF-16 byte-order mark but is not valid UTF-16 at byte "
                f"{err.start + 2}; re-encode it as UTF-8"
            ) from None
    else:
        body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
        # ASCII text in UTF-16 is valid UTF-8 byte for byte, so look for its NULs first.
        if body.count(b"\x00") > len(body) // 4:
            raise SidecarError(
                f"{name} looks like UTF-16 without a byte-order mark (many NUL bytes); "
                "re-encode it as UTF-8"
            )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            offset = err.start + (len(data) - len(body))
            raise SidecarError(
                f"{name} is not valid UTF-8 at byte {offset} "
                f"({data[offset:offset + 4]!r}); re-encode it as UTF-8 "
                "(for example `iconv -f latin1 -t utf-8`)"
            ) from None
    if "\x00" in text:
        raise SidecarError(f"{name} contains NUL characters after decoding; re-encode it as UTF-8")
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")


# --------------------------------------------------------------------------------------------
# timestamps

_TS_RE = re.compile(r"^\s*(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,9})\s*$")


def parse_timestamp(text: str) -> int:
    """``HH:MM:SS,mmm``, ``HH:MM:SS.mmm`` or ``MM:SS.mmm`` to integer milliseconds.

    Fractions shorter than 3 digits are read as decimal fractions (``.5`` = 500 ms); longer
    ones are rounded to the millisecond. Raises ValueError when the text is not a timestamp or
    minutes/seconds are 60 or more.
    """
    m = _TS_RE.match(text)
    if m is None:
        raise ValueError(f"not a timestamp: {text!r} (expected HH:MM:SS,mmm or MM:SS.mmm)")
    hours = int(m.group(1) or 0)
    minutes, seconds = int(m.group(2)), int(m.group(3))
    if minutes >= 60 or seconds >= 60:
        raise ValueError(f"minutes and seconds must be below 60 in timestamp {text!r}")
    frac = m.group(4)
    ms = round(int(frac) * 10 ** (3 - len(frac))) if len(frac) <= 3 else round(
        int(frac) / 10 ** (len(frac) - 3)
    )
    return ((hours * 60 + minutes) * 60 + seconds) * 1000 + ms


def format_timestamp(ms: int, *, sep: str = ",") -> str:
    """Integer milliseconds to ``HH:MM:SS<sep>mmm`` (``sep`` is ``,`` for SRT, ``.`` for VTT)."""
    if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
        raise ValueError(f"timestamp must be a non-negative integer of milliseconds, got {ms!r}")
    seconds, milli = divmod(ms, 1000)
    minutes, sec = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours:02d}:{minute:02d}:{sec:02d}{sep}{milli:03d}"


# --------------------------------------------------------------------------------------------
# parsing


class _Problems:
    """Collects skipped cues so that one warning per file reports them all."""

    def __init__(self, name: str, fmt: str) -> None:
        self.name, self.fmt, self.items = name, fmt, []

    def add(self, where: str, why: str) -> None:
        self.items.append(f"{where}: {why}")

    def warn(self) -> None:
        if not self.items:
            return
        quoted = "; ".join(self.items[:_MAX_QUOTED_PROBLEMS])
        more = len(self.items) - _MAX_QUOTED_PROBLEMS
        tail = f"; and {more} more" if more > 0 else ""
        warnings.warn(
            f"{self.name}: skipped {len(self.items)} malformed {self.fmt.upper()} "
            f"entr{'y' if len(self.items) == 1 else 'ies'} ({quoted}{tail})",
            stacklevel=3,
        )


_TAG_RE = re.compile(r"<[^>\n]*>")
_ASS_RE = re.compile(r"\{\\[^}\n]*\}")
_VOICE_RE = re.compile(r"<v(?:\.[^\s>]+)*(?:\s+([^>]*))?>")
_SPACE_RE = re.compile(r"\s+")


def _clean_text(text: str) -> str:
    """Strip markup tags and ASS overrides, unescape entities, collapse whitespace."""
    text = _ASS_RE.sub("", text)
    text = _TAG_RE.sub("", text)
    text = html.unescape(text).replace("\u200e", "").replace("\u200f", "")
    return _SPACE_RE.sub(" ", text).strip()


def _split_blocks(text: str) -> list[tuple[int, list[str]]]:
    """Blank-line separated blocks with the (1-based) line number where each begins."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            if not current:
                start = lineno
            current.append(line.rstrip())
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def _parse_timing(line: str) -> tuple[int, int]:
    """``start --> end [settings]`` to (start_ms, end_ms); ValueError when malformed."""
    left, arrow, right = line.partition("-->")
    if not arrow:
        raise ValueError("no '-->' in the timing line")
    right_ts = right.strip().split()
    if not right_ts:
        raise ValueError("no end time after '-->'")
    start, end = parse_timestamp(left), parse_timestamp(right_ts[0])
    if end <= start:
        raise ValueError(f"end {right_ts[0]} is not after start {left.strip()}")
    return start, end


def _parse_cues(text: str, fmt: str, name: str) -> list[Utterance]:
    problems = _Problems(name, fmt)
    blocks = _split_blocks(text)
    out: list[Utterance] = []
    if fmt == "vtt":
        if not blocks or not blocks[0][1][0].startswith("WEBVTT"):
            warnings.warn(
                f"{name}: a WebVTT file must start with 'WEBVTT'; parsing the cues anyway",
                stacklevel=3,
            )
        elif "-->" not in blocks[0][1][0]:
            blocks = blocks[1:]  # header block (WEBVTT plus metadata lines)
    for lineno, lines in blocks:
        first = lines[0].strip()
        if fmt == "vtt" and (first.startswith(("NOTE", "STYLE", "REGION")) and "-->" not in first):
            continue
        timing_at = next((i for i, ln in enumerate(lines[:2]) if "-->" in ln), None)
        if timing_at is None:
            problems.add(f"line {lineno}", "no 'start --> end' timing line")
            continue
        if fmt == "srt" and timing_at == 1 and not first.isdigit():
            problems.add(f"line {lineno}", f"cue number {first!r} is not an integer")
            continue
        try:
            start, end = _parse_timing(lines[timing_at])
        except ValueError as err:
            problems.add(f"line {lineno + timing_at}", str(err))
            continue
        payload = lines[timing_at + 1 :]
        # VTT voice tags: one utterance per voice, so that a cue holding two talkers keeps
        # both speakers (their utterances share the cue span).
        pieces: list[tuple[str | None, str]] = []
        for raw in payload:
            voice = _VOICE_RE.search(raw) if fmt == "vtt" else None
            speaker = (voice.group(1) or "").strip() or None if voice else None
            cleaned = _clean_text(raw)
            if not cleaned:
                continue
            # A line without a voice tag continues the previous line's voice.
            if pieces and (speaker is None or pieces[-1][0] == speaker):
                pieces[-1] = (pieces[-1][0], f"{pieces[-1][1]} {cleaned}")
            else:
                pieces.append((speaker, cleaned))
        if not pieces:
            problems.add(f"line {lineno}", "cue has no text")
            continue
        out.extend(Utterance(start, end, t, s) for s, t in pieces)
    problems.warn()
    return out


def parse_stm_segments(text: str, *, name: str = "STM") -> list[StmSegment]:
    """All scored segments of an STM document (every file id), in file order.

    Comments (``;;``), ``ignore_time_segment_in_scoring`` lines and non-speech speakers
    (``inter_segment_gap``, ``excluded_region``) are left out silently: they are annotations,
    not transcript. Malformed lines are skipped with one warning.
    """
    problems = _Problems(name, "stm")
    out: list[StmSegment] = []
    n_empty = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(";;"):
            continue
        fields = stripped.split(None, 5)
        if len(fields) < 5:
            problems.add(f"line {lineno}", f"{len(fields)} fields, need at least 5")
            continue
        file_id, channel, speaker, start_s, end_s = fields[:5]
        rest = fields[5] if len(fields) > 5 else ""
        if rest.startswith("<"):
            close = rest.find(">")
            if close < 0:
                problems.add(f"line {lineno}", "unclosed <label> field")
                continue
            rest = rest[close + 1 :]
        rest = rest.strip()
        if rest == _STM_IGNORE_TEXT or speaker in _STM_NON_SPEECH:
            continue
        try:
            start, end = _seconds_to_ms(start_s), _seconds_to_ms(end_s)
        except ValueError as err:
            problems.add(f"line {lineno}", str(err))
            continue
        if end <= start:
            problems.add(f"line {lineno}", f"end {end_s} is not after start {start_s}")
            continue
        text_clean = _clean_text(rest)
        if not text_clean:
            n_empty += 1
            continue
        out.append(StmSegment(file_id, channel, speaker, start, end, text_clean))
    problems.warn()
    if n_empty:
        warnings.warn(f"{name}: skipped {n_empty} STM segment(s) without text", stacklevel=2)
    return out


def _seconds_to_ms(value: object) -> int:
    """Seconds (str or number) to integer ms; ValueError for non-finite or negative values."""
    if isinstance(value, bool):
        raise ValueError(f"time {value!r} is not a number of seconds")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"time {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"time {value!r} must be a finite, non-negative number of seconds")
    return round(seconds * 1000)


def _parse_stm(text: str, name: str, file_id: str | None) -> list[Utterance]:
    segments = parse_stm_segments(text, name=name)
    files = sorted({s.file for s in segments})
    if file_id is not None and file_id in files:
        segments = [s for s in segments if s.file == file_id]
    elif len(files) > 1:
        raise SidecarError(
            f"{name} holds segments of {len(files)} recordings ({', '.join(files[:5])}"
            f"{', ...' if len(files) > 5 else ''}); a sidecar must describe one recording: "
            "split it per recording or pass file_id"
        )
    return [Utterance(s.start_ms, s.end_ms, s.text, s.speaker) for s in segments]


def _parse_json(text: str, name: str) -> tuple[list[Utterance], list[Word] | None]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise SidecarError(
            f"{name} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    segments = doc.get("segments") if isinstance(doc, dict) else doc
    if not isinstance(segments, list):
        raise SidecarError(
            f"{name} must be a JSON object with a 'segments' list (whisperx format), "
            f"got {type(doc).__name__} without one"
        )
    problems = _Problems(name, "json")
    utterances: list[Utterance] = []
    words_per_utt: list[list[Word] | None] = []
    n_untimed = 0
    for i, seg in enumerate(segments):
        if not isinstance(seg, dict):
            problems.add(f"segment {i}", "not an object")
            continue
        try:
            start, end = _seconds_to_ms(seg.get("start")), _seconds_to_ms(seg.get("end"))
        except ValueError as err:
            problems.add(f"segment {i}", str(err))
            continue
        if end <= start:
            problems.add(
                f"segment {i}", f"end {seg.get('end')} is not after start {seg.get('start')}"
            )
            continue
        raw_text = seg.get("text")
        if raw_text is None and isinstance(seg.get("words"), list):
            raw_text = " ".join(str(w.get("word", "")) for w in seg["words"] if isinstance(w, dict))
        if not isinstance(raw_text, str):
            problems.add(f"segment {i}", "no 'text' string")
            continue
        text_clean = _clean_text(raw_text)
        if not text_clean:
            continue
        speaker = seg.get("speaker")
        speaker = str(speaker) if speaker not in (None, "") else None
        utt = Utterance(start, end, text_clean, speaker)
        utterances.append(utt)
        raw_words = seg.get("words")
        if isinstance(raw_words, list) and raw_words:
            words, untimed = _json_words(raw_words, utt)
            n_untimed += untimed
            words_per_utt.append(words or None)
        else:
            words_per_utt.append(None)
    problems.warn()
    have = sum(w is not None for w in words_per_utt)
    if have == 0:
        return utterances, None
    if have < len(words_per_utt):
        warnings.warn(
            f"{name}: only {have} of {len(words_per_utt)} segments carry word times; "
            "ignoring the word times so that every word is timed the same way (by alignment)",
            stacklevel=3,
        )
        return utterances, None
    if n_untimed:
        warnings.warn(
            f"{name}: {n_untimed} word(s) had no start/end; placed them by interpolation "
            "between their timed neighbours (score None)",
            stacklevel=3,
        )
    words = [w for ws in words_per_utt for w in (ws or [])]
    return utterances, words


def _json_words(raw_words: list, utt: Utterance) -> tuple[list[Word], int]:
    """Words of one whisperx segment; untimed words are interpolated inside the segment."""
    items: list[tuple[str, int | None, int | None, float | None, str | None]] = []
    for w in raw_words:
        if not isinstance(w, dict):
            continue
        text = _clean_text(str(w.get("word", "")))
        if not text:
            continue
        try:
            start = _seconds_to_ms(w["start"]) if "start" in w else None
            end = _seconds_to_ms(w["end"]) if "end" in w else None
        except ValueError:
            start = end = None
        if start is None or end is None:
            start = end = None
        raw_score = w.get("score")  # a number; a bool (an int to Python) is not a score
        score = float(raw_score) if isinstance(raw_score, (int, float)) and not isinstance(raw_score, bool) else None
        if score is not None and not (0.0 <= score <= 1.0 and math.isfinite(score)):
            score = min(max(score, 0.0), 1.0) if math.isfinite(score) else None
        speaker = w.get("speaker", utt.speaker)
        items.append((text, start, end, score, str(speaker) if speaker not in (None, "") else None))
    out: list[Word] = []
    n_untimed = 0
    i = 0
    while i < len(items):
        text, start, end, score, speaker = items[i]
        if start is not None and end is not None:
            # whisperx sometimes gives zero-length words; keep them 1 ms long so start < end.
            out.append(Word(text, start, max(end, start + 1), score, speaker))
            i += 1
            continue
        j = i
        while j < len(items) and items[j][1] is None:
            j += 1
        lo = out[-1].end_ms if out else utt.start_ms
        # items[j], where the run ends, is timed (its start is not None).
        next_start = items[j][1] if j < len(items) else None
        hi = utt.end_ms if next_start is None else next_start
        run = items[i:j]
        # sidecar.py re-exports this module, so a module-level import of its split would be
        # circular; by the time a JSON sidecar is parsed, both modules are loaded.
        from microturn.pipelines.backends.sidecar import spread_words

        spans = spread_words([r[0] for r in run], lo, max(hi, lo + len(run)))
        out.extend(Word(t, s, e, None, spk) for (t, _, _, _, spk), (s, e) in zip(run, spans, strict=True))
        n_untimed += len(run)
        i = j
    return out, n_untimed


def parse_sidecar(
    data: bytes, fmt: str, *, name: str = "sidecar", file_id: str | None = None
) -> SidecarTranscript:
    """Parse sidecar bytes of format ``fmt`` (``srt``, ``vtt``, ``stm`` or ``json``).

    ``name`` (e.g. the file path) is used in messages. ``file_id`` picks the recording out of a
    multi-recording STM. Raises :class:`SidecarError` when the bytes cannot be decoded or hold
    no usable cue.
    """
    if not isinstance(fmt, str):
        raise TypeError(f"fmt must be a string such as 'srt', got {type(fmt).__name__}")
    fmt_key = fmt.lower().lstrip(".")
    if fmt_key not in SIDECAR_FORMATS:
        raise ValueError(
            f"unknown sidecar format {fmt!r}; use one of {', '.join(SIDECAR_FORMATS)}"
        )
    text = decode_sidecar(data, name=name)
    words: list[Word] | None = None
    if fmt_key == "json":
        utterances, words = _parse_json(text, name)
    elif fmt_key == "stm":
        utterances = _parse_stm(text, name, file_id)
    else:
        utterances = _parse_cues(text, fmt_key, name)
    if not utterances:
        raise SidecarError(
            f"{name} has no usable {fmt_key.upper()} cue (no entry with valid times and text); "
            "check that the file matches its extension"
        )
    utterances.sort(key=lambda u: (u.start_ms, u.end_ms))
    if words is not None:
        words.sort(key=lambda w: (w.start_ms, w.end_ms))
    return SidecarTranscript(utterances=utterances, words=words, format=fmt_key)
