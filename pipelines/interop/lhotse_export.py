"""``microturn export lhotse``: conversation records as Lhotse recordings, supervisions and cuts.

For every conversation of OUT (an ingest or synthesize output, optionally one ``--split``):

- a ``Recording`` with the conversation id, one ``AudioSource`` per media FLAC (absolute path,
  channel id = its index in ``audio_files``): ``mix.flac`` gives a one-channel recording,
  per-speaker streams a recording with a channel per speaker;
- a ``SupervisionSegment`` per ``segments`` row (id ``{conversation_id}-{index:05d}`` in time
  order): speaker, start and duration in seconds, the speaker's channel, the text of its words,
  their times as ``alignment["word"]`` (``AlignmentItem`` with the aligner's score), and
  ``custom`` origin / license / split (``--language`` sets ``language``: records hold none);
- a cut spanning the recording with its supervisions: a ``MonoCut`` for one channel, a
  ``MultiCut`` over every channel otherwise; its ``custom`` holds the origin, license, split,
  source uri, channel layout and (synthetic or remix) provenance.

Lhotse needs what records allow but do not hold by contract, so the export adapts and counts:
a word goes to the supervision of its speaker that it overlaps most (or lies nearest to); a
word with no speaker (ingest leaves words that no turn covers without one) or whose speaker has
no turn is left out; a segment ending past the media is cut at its end; a segment of no
duration (Lhotse requires a positive one) is left out. Missing or malformed media, or a segment
on a channel the media lacks, are errors before anything is written.

Manifests are ``{prefix}_recordings.jsonl.gz``, ``{prefix}_supervisions.jsonl.gz`` and
``{prefix}_cuts.jsonl.gz``, each line the item's ``to_dict()`` as Lhotse writes it, gzipped with
no timestamp so that the same records give the same bytes. Both of Lhotse's validators
(``lhotse.qa.validate_recordings_and_supervisions`` and ``lhotse.validate``) run on them before
anything is written.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from microturn.pipelines.interop.export_dir import check_export_dir, publish_files
from microturn.schemas.config import setting, validate
from microturn.schemas.sample import SAMPLE_RATE

__all__ = ["ExportConfig", "ExportSummary", "export_lhotse"]

_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """What ``microturn export lhotse`` needs.

    Attributes:
        records: the record output to export (OUT of ingest or synthesize; a local folder).
        output: the folder the manifests go to (DIR).
        prefix: first part of the manifest names (``{prefix}_cuts.jsonl.gz``).
        split: export only the conversations of this split; all when None.
        language: the ``language`` of every supervision (records store none).
    """

    records: str = setting(flag="OUT")
    output: str = setting(flag="--output")
    prefix: str = setting("microturn", flag="--prefix")
    split: str | None = setting(None, flag="--split")
    language: str | None = setting(None, flag="--language")

    def __post_init__(self) -> None:
        validate(self)
        if not self.records:
            raise ValueError("give the record output to export (OUT)")
        if not self.output:
            raise ValueError("--output is required")
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(f"--prefix {self.prefix!r}: use 1-64 letters, digits, '_', '.' or '-', "
                             "starting with a letter or digit")

    def file_names(self) -> dict[str, str]:
        """Manifest kind → file name."""
        return {kind: f"{self.prefix}_{kind}.jsonl.gz" for kind in ("recordings", "supervisions", "cuts")}


@dataclass(frozen=True, kw_only=True)
class ExportSummary:
    """What an export wrote (counts of the manifests) and what it left out, with reasons."""

    records: str
    output: str
    files: list[str]
    recordings: int
    channels: int
    mono_cuts: int
    multi_cuts: int
    supervisions: int
    words: int
    hours: float
    lhotse_version: str
    left_out: dict[str, int] = field(default_factory=dict)

    def render(self) -> str:
        lines = [f"microturn export lhotse: {self.records} -> {self.output}",
                 f"  {self.recordings} recordings ({self.channels} channels, {self.hours:.3f} h), "
                 f"{self.supervisions} supervisions with {self.words} word alignments, "
                 f"{self.mono_cuts + self.multi_cuts} cuts ({self.mono_cuts} MonoCut, {self.multi_cuts} MultiCut)",
                 f"  validated with Lhotse {self.lhotse_version} (validate_recordings_and_supervisions, validate)",
                 "  files: " + ", ".join(self.files)]
        gone = {k: v for k, v in self.left_out.items() if v}
        lines.append("  adapted: " + (", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(gone.items()))
                                      if gone else "nothing"))
        return "\n".join(lines)


def _group(rows: Iterable[dict], keep: set[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["conversation_id"] in keep:
            out[r["conversation_id"]].append(r)
    return out


def _recording(root: str, conv: dict) -> Any:
    """The conversation's media as one Lhotse ``Recording`` (a source per FLAC, channel = index)."""
    import soundfile as sf
    from lhotse import Recording
    from lhotse.audio import AudioSource
    from lhotse.audio.utils import get_audio_duration_mismatch_tolerance

    cid = conv["conversation_id"]
    paths = [os.path.abspath(os.path.join(root, conv["media_dir"], name)) for name in conv["audio_files"] or []]
    if not paths:
        raise ValueError(f"conversation {cid}: the record lists no audio files")
    frames = []
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"conversation {cid}: media file {path} does not exist")
        try:
            info = sf.info(path)
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise ValueError(f"conversation {cid}: cannot read {path}: {exc}") from None
        if info.samplerate != SAMPLE_RATE or info.channels != 1:
            raise ValueError(f"conversation {cid}: {path} is {info.samplerate} Hz with {info.channels} channel(s); "
                             f"records hold {SAMPLE_RATE} Hz mono streams")
        frames.append(int(info.frames))
    n = max(frames)
    # Lhotse pads the shorter streams of a recording up to this tolerance and refuses beyond it.
    if (n - min(frames)) / SAMPLE_RATE > get_audio_duration_mismatch_tolerance():
        raise ValueError(f"conversation {cid}: its streams differ in length ({min(frames)} to {n} samples)")
    sources = [AudioSource(type="file", channels=[i], source=p) for i, p in enumerate(paths)]
    return Recording(id=cid, sources=sources, sampling_rate=SAMPLE_RATE, num_samples=n, duration=n / SAMPLE_RATE)


def _nearest(spans: list[tuple[int, int, int]], start: int, end: int) -> int:
    """Index (third item) of the span that ``[start, end]`` overlaps most, else the nearest one."""
    def key(span: tuple[int, int, int]) -> tuple[int, int, int]:
        s, e, _ = span
        return -(min(end, e) - max(start, s)), max(s - end, start - e, 0), s

    return min(spans, key=key)[2]


def _supervisions(conv: dict, segments: list[dict], words: list[dict], duration_s: float, *,
                  language: str | None, left: Counter) -> list[Any]:
    from lhotse import SupervisionSegment
    from lhotse.supervision import AlignmentItem

    cid, channels = conv["conversation_id"], len(conv["audio_files"])
    end_ms = duration_s * 1000
    kept = []
    for seg in sorted(segments, key=lambda r: (r["start_ms"], r["end_ms"], r["speaker"], r["channel"] or 0)):
        channel = int(seg["channel"] or 0) if channels > 1 else 0
        if not 0 <= channel < channels:
            raise ValueError(f"conversation {cid}: a segment of {seg['speaker']} is on channel {channel}; "
                             f"the media has {channels} stream(s)")
        start, end = seg["start_ms"], min(seg["end_ms"], end_ms)
        if end < seg["end_ms"] - 1:
            left["segment_ends_cut_at_media_end"] += 1
        if end <= start:
            left["segments_of_no_duration_left_out"] += 1
            continue
        kept.append((seg["speaker"], start, end, channel))
    by_speaker: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for i, (speaker, start, end, _) in enumerate(kept):
        by_speaker[speaker].append((start, end, i))
    items: list[list[Any]] = [[] for _ in kept]
    for w in sorted(words, key=lambda r: (r["start_ms"], r["end_ms"], r["text"])):
        spans = by_speaker.get(w["speaker"]) if w["speaker"] is not None else None
        if not spans:
            left["words_without_a_speaker_turn_left_out"] += 1
            continue
        items[_nearest(spans, w["start_ms"], w["end_ms"])].append(AlignmentItem(
            symbol=w["text"], start=w["start_ms"] / 1000, duration=(w["end_ms"] - w["start_ms"]) / 1000,
            score=None if w["score"] is None else round(float(w["score"]), 6)))
    custom = {k: conv[k] for k in ("origin", "license", "split") if conv.get(k) is not None}
    return [SupervisionSegment(
        id=f"{cid}-{i:05d}", recording_id=cid, start=start / 1000, duration=(end - start) / 1000, channel=channel,
        text=" ".join(a.symbol for a in ali) or None, language=language, speaker=speaker, custom=dict(custom),
        alignment={"word": ali} if ali else None)
        for i, ((speaker, start, end, channel), ali) in enumerate(zip(kept, items, strict=True))]


def _cut(conv: dict, recording: Any, supervisions: list[Any]) -> Any:
    from lhotse.cut import MonoCut, MultiCut

    custom = {k: conv[k] for k in ("origin", "license", "split", "source_uri", "channel_layout", "provenance")
              if conv.get(k) is not None}
    if recording.num_channels == 1:
        return MonoCut(id=recording.id, start=0.0, duration=recording.duration, channel=0, recording=recording,
                       supervisions=supervisions, custom=custom)
    return MultiCut(id=recording.id, start=0.0, duration=recording.duration, channel=list(recording.channel_ids),
                    recording=recording, supervisions=supervisions, custom=custom)


def _write_jsonl_gz(path: str, items: Iterable[Any]) -> None:
    """One ``to_dict()`` per line, gzipped without a timestamp (same items, same bytes)."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for item in items:
            gz.write((json.dumps(item.to_dict(), ensure_ascii=False) + "\n").encode("utf-8"))


def _validate(recordings: Any, supervisions: Any, cuts: Any) -> None:
    """Lhotse's own validators; their ``AssertionError`` becomes a ``ValueError``."""
    from lhotse import validate as lhotse_validate
    from lhotse.qa import validate_recordings_and_supervisions

    try:
        if len(supervisions):
            validate_recordings_and_supervisions(recordings, supervisions)
        else:  # Lhotse's supervision-set validator needs at least one supervision
            lhotse_validate(recordings)
        lhotse_validate(cuts)
    except AssertionError as exc:
        raise ValueError(f"Lhotse's validator refused the manifests: {exc}") from None


class ExportInputError(ValueError):
    """OUT, DIR or ``--split`` is wrong: found before any work (the command exits 2)."""


def export_lhotse(cfg: ExportConfig) -> ExportSummary:
    """Export the records of ``cfg.records`` to Lhotse manifests in ``cfg.output``.

    Checked before any work: OUT is a local record output with conversations (in ``cfg.split``
    when given), DIR is new, empty or an earlier export's. ``ValueError`` otherwise."""
    import lhotse
    from lhotse import CutSet, RecordingSet, SupervisionSet

    from microturn.pipelines.cli_args import require_records
    from microturn.pipelines.tables import read_table

    root = cfg.records
    if "://" in root:
        raise ExportInputError(f"OUT {root}: export reads a local record output (Lhotse sources are file paths)")
    try:
        require_records("OUT", root, "conversations")
        check_export_dir(cfg.output)
    except ValueError as exc:
        raise ExportInputError(str(exc)) from None
    convs = sorted(read_table(root, "conversations").to_pylist(), key=lambda r: r["conversation_id"])
    if cfg.split is not None:
        splits = sorted({c["split"] for c in convs})
        convs = [c for c in convs if c["split"] == cfg.split]
        if not convs:
            raise ExportInputError(f"--split {cfg.split}: no conversation of {root} is in that split "
                                   f"(its splits: {', '.join(splits) or 'none'})")
    if not convs:
        raise ExportInputError(f"OUT {root}: holds no conversations; nothing to export")
    keep = {c["conversation_id"] for c in convs}
    segments = _group(read_table(root, "segments").to_pylist(), keep)
    words = _group(read_table(root, "words").to_pylist(), keep)
    left: Counter = Counter()
    recordings, supervisions, cuts = [], [], []
    for conv in convs:
        rec = _recording(root, conv)
        sups = _supervisions(conv, segments.get(conv["conversation_id"], []), words.get(conv["conversation_id"], []),
                             rec.duration, language=cfg.language, left=left)
        recordings.append(rec)
        supervisions += sups
        cuts.append(_cut(conv, rec, sups))
    _validate(RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions),
              CutSet.from_cuts(cuts))
    names = cfg.file_names()
    publish_files(cfg.output, {
        names["recordings"]: lambda p: _write_jsonl_gz(p, recordings),
        names["supervisions"]: lambda p: _write_jsonl_gz(p, supervisions),
        names["cuts"]: lambda p: _write_jsonl_gz(p, cuts),
    })
    multi = sum(1 for r in recordings if r.num_channels > 1)
    return ExportSummary(
        records=root, output=cfg.output, files=list(names.values()), recordings=len(recordings),
        channels=sum(r.num_channels for r in recordings), mono_cuts=len(cuts) - multi, multi_cuts=multi,
        supervisions=len(supervisions), words=sum(len((s.alignment or {}).get("word", [])) for s in supervisions),
        hours=sum(r.duration for r in recordings) / 3600, lhotse_version=lhotse.__version__, left_out=dict(left))
