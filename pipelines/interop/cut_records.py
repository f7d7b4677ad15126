"""One Lhotse cut as a microturn conversation record: its streams, content id and table rows.

Time frames (Lhotse's conventions): a cut's supervisions start relative to the cut, while their
alignment items keep times relative to the start of the *recording* (Lhotse does not move them
when it truncates a cut). A word's conversation time is therefore its start minus the cut's start
in the recording. A MixedCut shifts each track's supervisions by the track's offset, and their
words by that offset minus the track cut's own start.

Streams: a MonoCut (and a MixedCut, mixed down) becomes one mixed channel, ``mix.flac``. A
MultiCut whose supervisions each name one channel, with one speaker per channel and one channel
per speaker (a two-line call), keeps those channels apart as ``ch{i}.flac`` in the recording's
channel order; any other MultiCut (a microphone array: no speaker has a channel of their own) is
mixed down to ``mix.flac``. Media are 16 kHz, resampled with soxr as the TTS path does.

Content id: the SHA-256 of the kept streams at the source rate as 16-bit PCM, after a header
naming the layout, the rate and the channel count; two cuts with the same audio in the same layout
are one conversation (the second is a duplicate), whatever their cut ids.

Array suffixes: C channels, N samples.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from microturn.schemas import conversation_id, split_of
from microturn.schemas.sample import SAMPLE_RATE
from microturn.schemas.tables import ORIGINS
from microturn.schemas.turns import Turn, turn_events, turn_stats

__all__ = ["CutError", "Loaded", "Plan", "Span", "load_cut", "parse_cut", "record_rows", "resample_16k"]

MIXED, PER_SPEAKER = "mixed", "per_speaker"
WORD = "word"  # the alignment kind read as words: Lhotse's name for word-level alignments
# 1 ms: Lhotse's own tolerance for a supervision at the edge of its recording
# (lhotse.qa.validate_recordings_and_supervisions); float seconds hold ms well within it.
EDGE_S = 1e-3
CUT_TYPES = ("MonoCut", "MultiCut", "MixedCut", "PaddingCut", "Cut")  # "Cut": MonoCut before Lhotse 0.8
_PREFIX = {"real": "c", "synthetic": "s", "remix": "r"}


class CutError(ValueError):
    """A cut that cannot become a record; ``reason`` is its code in ``rejects.error_type``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class Span:
    """One supervision in conversation time (seconds), with its words (symbol, start, end, score)."""

    speaker: str
    start_s: float
    end_s: float
    channels: tuple[int, ...] | None  # the Lhotse channel ids it names; None when it names none
    words: tuple[tuple[str, float, float, float | None], ...]


@dataclass(frozen=True, kw_only=True)
class Plan:
    """How a cut's audio becomes media: ``layout`` (mixed | per_speaker), the Lhotse channel ids
    kept as streams in order (per_speaker only) and each speaker's stream index."""

    layout: str
    channels: tuple[int, ...] = ()
    speaker_stream: Mapping[str, int] | None = None

    @property
    def audio_files(self) -> list[str]:
        return ["mix.flac"] if self.layout == MIXED else [f"ch{i}.flac" for i in range(len(self.channels))]


def parse_cut(line: str) -> Any:
    """A Lhotse cut from one line of a cuts manifest; :class:`CutError` for what is not one."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CutError("invalid_json", f"not a JSON line ({exc}): {line[:80]!r}") from None
    if not isinstance(data, dict) or data.get("type") not in CUT_TYPES:
        what = ("a recording" if isinstance(data, dict) and "sources" in data else
                "a supervision" if isinstance(data, dict) and "recording_id" in data else "not a cut")
        raise CutError("not_a_cut", f"the line is {what}, not a Lhotse cut (give a cuts manifest, "
                                    f"e.g. *_cuts.jsonl.gz): {line[:80]!r}")
    from lhotse.cut.set import deserialize_cut

    try:
        return deserialize_cut(data)
    except Exception as exc:  # noqa: BLE001 - whatever Lhotse raises for a malformed cut
        raise CutError("bad_cut", f"Lhotse cannot read the cut: {type(exc).__name__}: {exc}") from None


def _channels(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    return (int(value),) if isinstance(value, int) else tuple(int(c) for c in value)


def spans_of(cut: Any) -> list[Span]:
    """The cut's supervisions in its own time, words included (blank alignment symbols, which
    some aligners use for pauses, are left out). :class:`CutError` for a supervision without a
    speaker."""
    from lhotse.cut import MixedCut, PaddingCut

    if isinstance(cut, MixedCut):
        pieces = [(t.cut, t.offset, t.offset - t.cut.start) for t in cut.tracks if not isinstance(t.cut, PaddingCut)]
    elif isinstance(cut, PaddingCut):
        pieces = []
    else:
        pieces = [(cut, 0.0, -cut.start)]
    spans = []
    for piece, sup_shift, word_shift in pieces:
        for sup in piece.supervisions:
            if not isinstance(sup.speaker, str) or not sup.speaker.strip():
                raise CutError("no_speaker", f"supervision {sup.id} has no speaker; every turn of a record "
                                             "belongs to a speaker")
            words = tuple(
                (item.symbol.strip(), item.start + word_shift, item.start + item.duration + word_shift, item.score)
                for item in (sup.alignment or {}).get(WORD, []) if str(item.symbol).strip())
            spans.append(Span(speaker=sup.speaker, start_s=sup.start + sup_shift, end_s=sup.end + sup_shift,
                              channels=_channels(sup.channel), words=words))
    return spans


def check_spans(spans: list[Span], duration_s: float) -> None:
    """:class:`CutError` when the cut has no supervision, or one of them or of their words lies
    outside the cut (beyond Lhotse's 1 ms)."""
    if not spans:
        raise CutError("no_supervisions", "the cut has no supervisions: no speaker turns to import")
    hint = "trim the cut to its supervisions first (e.g. truncate(..., keep_excessive_supervisions=False))"
    for s in spans:
        if s.start_s < -EDGE_S or s.end_s > duration_s + EDGE_S:
            raise CutError("supervision_outside_cut", f"a supervision of {s.speaker} at [{s.start_s:.3f}, "
                                                      f"{s.end_s:.3f}] s lies outside the cut's "
                                                      f"[0, {duration_s:.3f}] s; {hint}")
        for text, ws, we, _ in s.words:
            if ws < -EDGE_S or we > duration_s + EDGE_S:
                raise CutError("word_outside_cut", f"the word {text!r} of {s.speaker} at [{ws:.3f}, {we:.3f}] s "
                                                   f"lies outside the cut's [0, {duration_s:.3f}] s; {hint}")


def load_order(cut: Any) -> tuple[int, ...]:
    """The Lhotse channel ids of a MultiCut in the order its ``load_audio`` returns them (the
    recording's sources in turn, each source's channels in its order)."""
    wanted = {cut.channel} if isinstance(cut.channel, int) else set(cut.channel)
    return tuple(c for src in cut.recording.sources for c in src.channels if c in wanted)


def plan_streams(cut: Any, spans: list[Span]) -> Plan:
    """Per-speaker streams for a MultiCut with one speaker per channel, one mixture otherwise."""
    from lhotse.cut import MultiCut

    if not isinstance(cut, MultiCut):
        return Plan(layout=MIXED)
    order = load_order(cut)
    speakers_on: dict[int, set[str]] = {}
    channels_of: dict[str, set[int]] = {}
    for s in spans:
        if s.channels is None or len(s.channels) != 1:
            return Plan(layout=MIXED)
        (ch,) = s.channels
        if ch not in order:
            raise CutError("bad_channel", f"a supervision of {s.speaker} names channel {ch}; the cut has "
                                          f"channels {list(order)}")
        speakers_on.setdefault(ch, set()).add(s.speaker)
        channels_of.setdefault(s.speaker, set()).add(ch)
    if any(len(v) > 1 for v in speakers_on.values()) or any(len(v) > 1 for v in channels_of.values()):
        return Plan(layout=MIXED)
    kept = tuple(ch for ch in order if ch in speakers_on)
    return Plan(layout=PER_SPEAKER, channels=kept,
                speaker_stream={next(iter(speakers_on[ch])): i for i, ch in enumerate(kept)})


def load_streams(cut: Any, plan: Plan) -> tuple[np.ndarray, int, int]:
    """The planned streams at the cut's own rate: ``(wave_CN float32, sampling_rate, channels
    loaded)``. :class:`CutError` (``unreadable_audio``) when Lhotse cannot load them."""
    from lhotse.cut import MixedCut

    try:
        audio = cut.load_audio(mixed=True, mono_downmix=True) if isinstance(cut, MixedCut) else cut.load_audio()
    except Exception as exc:  # noqa: BLE001 - a missing, truncated or undecodable file: the cut's fault
        raise CutError("unreadable_audio", f"Lhotse cannot load the cut's audio: {type(exc).__name__}: "
                                           f"{' '.join(str(exc).split())[:300]}") from None
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise CutError("unreadable_audio", f"Lhotse loaded no samples (shape {audio.shape})")
    if not np.isfinite(audio).all():
        raise CutError("unreadable_audio", "the audio holds samples that are not finite numbers")
    if plan.layout == PER_SPEAKER:
        order = load_order(cut)
        if audio.shape[0] != len(order):
            raise CutError("unreadable_audio", f"expected {len(order)} channels, Lhotse loaded {audio.shape[0]}")
        wave_CN = audio[[order.index(ch) for ch in plan.channels]]
    else:
        wave_CN = audio.mean(axis=0, keepdims=True) if audio.shape[0] > 1 else audio
    rate = cut.sampling_rate
    if not isinstance(rate, int) or rate <= 0:
        raise CutError("unreadable_audio", f"the cut's sampling rate is {rate!r}")
    return np.ascontiguousarray(wave_CN, dtype=np.float32), rate, int(audio.shape[0])


def _pcm16(wave_CN: np.ndarray) -> np.ndarray:
    return np.clip(np.round(wave_CN * 32767.0), -32768, 32767).astype("<i2")


def content_sha256(wave_CN: np.ndarray, sampling_rate: int, layout: str) -> tuple[str, int]:
    """``(sha256 hex, bytes hashed)`` of the streams as 16-bit PCM with a header (module notes)."""
    pcm_CN = _pcm16(wave_CN)
    digest = hashlib.sha256(f"microturn/lhotse-cut/1 {layout} {sampling_rate} {pcm_CN.shape[0]}\n".encode())
    data = pcm_CN.tobytes(order="C")
    digest.update(data)
    return digest.hexdigest(), len(data)


@dataclass(frozen=True, kw_only=True)
class Loaded:
    """A cut read and checked: its spans, stream plan, streams at the source rate (``wave_CN``)
    and their content hash."""

    spans: list[Span]
    plan: Plan
    wave_CN: np.ndarray
    sampling_rate: int
    source_channels: int  # channels Lhotse loaded, before the plan kept or mixed them
    sha256: str
    hashed_bytes: int


def load_cut(cut: Any) -> Loaded:
    """Read one cut: supervisions, bounds, stream plan, audio, content hash (:class:`CutError`
    with its reason for a cut that cannot become a record)."""
    if not cut.has_recording:
        raise CutError("no_audio", "the cut has no recording (features only?); records need the audio")
    spans = spans_of(cut)
    check_spans(spans, float(cut.duration))
    plan = plan_streams(cut, spans)
    wave_CN, rate, loaded = load_streams(cut, plan)
    sha, hashed = content_sha256(wave_CN, rate, plan.layout)
    return Loaded(spans=spans, plan=plan, wave_CN=wave_CN, sampling_rate=rate, source_channels=loaded,
                  sha256=sha, hashed_bytes=hashed)


def resample_16k(wave_CN: np.ndarray, sampling_rate: int) -> np.ndarray:
    """The streams at 16 kHz (soxr HQ, the resampler of the TTS path)."""
    if sampling_rate == SAMPLE_RATE:
        return wave_CN
    import soxr

    out = soxr.resample(np.ascontiguousarray(wave_CN.T), sampling_rate, SAMPLE_RATE, quality="HQ")
    out = out.reshape(-1, wave_CN.shape[0])  # soxr returns [N] for one channel
    return np.ascontiguousarray(out.T, dtype=np.float32)


def _custom(cut: Any) -> Mapping[str, Any]:
    custom = getattr(cut, "custom", None)
    return custom if isinstance(custom, Mapping) else {}


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _provenance(value: Any) -> str | None:
    """The cut's ``custom["provenance"]`` (a JSON object, as a string or a mapping) as the
    column's sorted-key JSON; None for anything else."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else None


def _score(value: Any) -> float | None:
    """An aligner score kept only when it is a confidence in [0, 1] (some aligners give log
    probabilities, which the ``words.score`` column does not hold)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    return None


def record_rows(cut: Any, loaded: Loaded, *, uri: str, license: str, lhotse_version: str) -> dict[str, Any]:
    """The rows of one imported cut: ``{"conversation": row, "source": row, "segments": [...],
    "words": [...], "events": [...]}``.

    ``origin``, ``license`` and ``provenance`` come from the cut's ``custom`` fields when it has
    them (as ``microturn export lhotse`` writes them); otherwise ``real`` and ``license``. Times
    are rounded to ms and held inside the media's duration; words belong to their supervision's
    speaker; events and statistics are computed as ingest computes them (:mod:`microturn.schemas.turns`).
    """
    spans, plan, rate = loaded.spans, loaded.plan, loaded.sampling_rate
    custom = _custom(cut)
    given_origin = _text(custom.get("origin"))
    origin = given_origin if given_origin in ORIGINS else "real"
    license_ = _text(custom.get("license")) or license
    provenance = _provenance(custom.get("provenance")) if origin != "real" else None
    cid = conversation_id(loaded.sha256, prefix=_PREFIX[origin])
    duration_ms = loaded.wave_CN.shape[1] * 1000 // rate

    def ms(seconds: float) -> int:
        return min(max(round(seconds * 1000), 0), duration_ms)

    turns, words = [], []
    for s in spans:
        stream = (plan.speaker_stream or {}).get(s.speaker, 0)
        turns.append(Turn(s.speaker, ms(s.start_s), ms(s.end_s), stream))
        for text, ws, we, score in s.words:
            start = ms(ws)
            words.append({"conversation_id": cid, "speaker": s.speaker, "text": text, "start_ms": start,
                          "end_ms": max(start, ms(we)), "score": _score(score)})
    turns.sort(key=lambda t: (t.start_ms, t.end_ms, t.speaker))
    speakers = sorted({t.speaker for t in turns})
    has_words = bool(words)
    conversation = {
        "conversation_id": cid, "source_uri": uri, "origin": origin, "duration_ms": duration_ms,
        "channels": len(plan.audio_files), "channel_layout": plan.layout, "has_video": False,
        "media_dir": f"media/{cid}", "audio_files": plan.audio_files, "video_file": None,
        "speakers": speakers, "num_speakers": len(speakers),
        "backends": sorted({"import": f"lhotse {lhotse_version}", "diarizer": "lhotse",
                            "transcriber": "lhotse" if has_words else "none"}.items()),
        "license": license_, "split": split_of(cid), "stats": turn_stats(turns, duration_ms).as_row(),
        "provenance": provenance,
    }
    source = {
        "uri": uri, "conversation_id": cid, "sha256": loaded.sha256, "bytes": loaded.hashed_bytes,
        "container": f"lhotse {type(cut).__name__}",
        "streams": [{"index": 0, "codec_type": "audio", "codec_name": None, "sample_rate": rate,
                     "channels": loaded.source_channels, "width": None, "height": None, "fps": None,
                     "variable_frame_rate": None}],
        "duration_ms": duration_ms, "sample_rate": rate, "channels": loaded.source_channels, "has_video": False,
        "license": license_, "origin": given_origin or origin,
    }
    segments = [{"conversation_id": cid, "speaker": t.speaker, "start_ms": t.start_ms, "end_ms": t.end_ms,
                 "channel": t.channel} for t in turns]
    events = [{"conversation_id": cid, "type": e.type, "speaker": e.speaker, "t_ms": e.t_ms,
               "payload": json.dumps(e.payload, sort_keys=True)} for e in turn_events(turns)]
    return {"conversation": conversation, "source": source, "segments": segments, "words": words, "events": events}
