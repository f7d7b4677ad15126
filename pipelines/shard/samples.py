"""One conversation record → its micro-turn samples (a plain library; the Beam DoFn wraps it).

For every role assignment (each speaker with speech as ``model``, everyone else as ``user``)
and every window of K chunks, a :class:`microturn.schemas.sample.Sample` with both streams'
dMel, the model stream's log-mel, label bits, words and events, and optionally a video clip.
Features are computed once per stream over the whole conversation and sliced per window, so a
window's first dMel frame sees the 50 ms before it, exactly as a live session would.

Shape suffixes follow :mod:`microturn.schemas.legend`: N samples at 16 kHz, K chunks (of the
conversation, or of a window), T = 4 K dMel frames, M = 80 mel channels.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from microturn.pipelines.shard.activity import stream_speech
from microturn.pipelines.shard.labels import behaviour_spans, stream_labels
from microturn.pipelines.shard.streams import Stream, build_stream
from microturn.schemas import dmel
from microturn.schemas.ids import split_of
from microturn.schemas.sample import (
    CHUNK_MS,
    FRAMES_PER_CHUNK,
    SAMPLE_RATE,
    Label,
    Sample,
    make_meta,
    sample_key,
    validate_sample,
)
from microturn.schemas.turns import Turn, split_backchannels

log = logging.getLogger(__name__)
SAMPLES_PER_CHUNK = 16 * CHUNK_MS  # 3200 at 16 kHz
# Event payload keys that hold conversation times; inside a sample they become window times.
ABSOLUTE_PAYLOAD_KEYS = ("target_ms", "response_start_ms", "response_end_ms", "request_end_ms", "delegated_ms",
                         "arrival_ms", "mention_ms", "mention_end_ms", "yield_ms", "source_start_ms", "source_end_ms",
                         "end_ms")


class RecordError(ValueError):
    """A record that cannot make valid samples; ``reason`` is the rejects' error type."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class Record:
    """A conversation with its rows, as the shard stage reads them from one input directory."""

    root: str  # the input directory (media paths are relative to it)
    conversation: dict
    segments: list[Turn]
    words: list[tuple[str | None, str, int, int]]  # speaker, text, start_ms, end_ms
    events: list[dict] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.conversation["conversation_id"]

    @property
    def duration_ms(self) -> int:
        return int(self.conversation["duration_ms"])


@dataclass(frozen=True, kw_only=True)
class WindowSpec:
    """How conversations are cut: ``window_chunks`` K per sample, shorter tails kept when they
    have at least ``min_chunks``; ``fade_ms`` of the diarization gates; ``tolerance_ms`` of the
    checks of media length and word times against the record's duration."""

    window_chunks: int = 150
    min_chunks: int = 10
    fade_ms: int = 10
    tolerance_ms: int = 200


def split_key(conversation: Mapping) -> str:
    """The id a conversation's split is drawn from: its own, or for a remix the id of the real
    conversation it was made from, so that a remix never lands in another split than its source."""
    prov = conversation.get("provenance")
    if conversation.get("origin") == "remix" and prov:
        try:
            source = json.loads(prov).get("remix_of")
        except (json.JSONDecodeError, AttributeError):
            source = None
        if isinstance(source, str) and source:
            return source
    return conversation["conversation_id"]


def check_record(record: Record, audio: Mapping[int, np.ndarray], spec: WindowSpec) -> None:
    """Raise :class:`RecordError` when the media and rows disagree beyond ``spec.tolerance_ms``."""
    dur = record.duration_ms
    if dur <= 0:
        raise RecordError("bad_duration", f"duration_ms is {dur}")
    for ch, a in sorted(audio.items()):
        media_ms = a.shape[0] * 1000 // SAMPLE_RATE
        if abs(media_ms - dur) > spec.tolerance_ms:
            raise RecordError("duration_mismatch", f"audio file {ch} lasts {media_ms} ms but the record says "
                                                   f"{dur} ms (tolerance {spec.tolerance_ms} ms)")
    limit = dur + spec.tolerance_ms
    for _, text, s, e in record.words:
        if s < 0 or e > limit:
            raise RecordError("words_outside_media", f"word {text!r} at [{s}, {e}] ms lies outside the "
                                                     f"{dur} ms of media")
    for t in record.segments:
        if t.start_ms < 0 or t.end_ms > limit:
            raise RecordError("segments_outside_media", f"segment of {t.speaker} at [{t.start_ms}, {t.end_ms}] ms "
                                                        f"lies outside the {dur} ms of media")
    known = set(record.conversation["speakers"] or [])
    unknown = {t.speaker for t in record.segments} - known
    if unknown:
        raise RecordError("unknown_speaker", f"segments name speakers {sorted(unknown)} not in {sorted(known)}")
    channels = set(range(len(record.conversation["audio_files"] or [])))
    bad = {int(t.channel or 0) for t in record.segments} - channels
    if bad:
        raise RecordError("bad_channel", f"segments use channels {sorted(bad)}; media has {len(channels)} file(s)")


def model_speakers(record: Record) -> list[str]:
    """Speakers that take the model role: those with speech, in the record's speaker order."""
    talking = {t.speaker for t in record.segments if t.end_ms > t.start_ms}
    return [s for s in record.conversation["speakers"] if s in talking]


@dataclass
class _Features:
    logmel_TM: np.ndarray
    dmel_TM: np.ndarray


def _features(stream: Stream, chunks: int) -> _Features:
    wave_N = np.zeros(chunks * SAMPLES_PER_CHUNK, dtype=np.float32)
    n = min(wave_N.shape[0], stream.wave_N.shape[0])
    wave_N[:n] = stream.wave_N[:n]
    logmel_TM, dmel_TM = dmel.features(wave_N)
    assert dmel_TM.shape[0] == chunks * FRAMES_PER_CHUNK
    return _Features(logmel_TM=logmel_TM, dmel_TM=dmel_TM)


VideoFn = Callable[[int, int, int], tuple[bytes, dict]]  # (window, start_ms, chunks) -> (clip, meta)


def make_samples(record: Record, audio: Mapping[int, np.ndarray], *, spec: WindowSpec,
                 splits: tuple[tuple[str, float], ...], video: VideoFn | None = None,
                 counters: dict[str, int] | None = None) -> Iterator[tuple[Sample, dict]]:
    """Yield ``(sample, row)`` for every role assignment and window of ``record``.

    ``row`` holds the ``samples`` table columns known before writing (the tar position and
    hash are added by the writer). ``counters`` (optional) accumulates what was skipped:
    ``short_windows`` (tails under ``min_chunks``), ``unattributed_words`` (words without a
    speaker), for metrics. Raises :class:`RecordError` for a record that cannot make samples.
    """
    counters = counters if counters is not None else {}
    check_record(record, audio, spec)
    conv = record.conversation
    chunks = math.ceil(record.duration_ms / CHUNK_MS)
    K = spec.window_chunks
    windows = [(w, min(K, chunks - w * K)) for w in range(math.ceil(chunks / K))]
    kept = [(w, k) for w, k in windows if k >= spec.min_chunks]
    if len(kept) < len(windows):
        counters["short_windows"] = counters.get("short_windows", 0) + len(windows) - len(kept)
    speakers_model = model_speakers(record)
    if not kept or not speakers_model:
        raise RecordError("too_short" if not kept else "no_speech",
                          f"{record.duration_ms} ms give no window of {spec.min_chunks}+ chunks" if not kept
                          else "no speaker has a segment with speech")
    split = split_of(split_key(conv), splits)
    main, backchannels = split_backchannels(record.segments)
    events = sorted(record.events, key=lambda e: (e["t_ms"], e["type"], e.get("speaker") or ""))
    events = [{**e, "payload": _payload(e)} for e in events]
    event_times = [e["t_ms"] for e in events]
    behaviours = behaviour_spans(events)
    # The background stream: results arriving for a speaker, shown to that speaker as the model.
    arrivals = [(e["speaker"], e["t_ms"], e["payload"]["result"]) for e in events
                if e["type"] == "background_result" and e["payload"].get("phase") == "arrival"]
    words_sorted = sorted(record.words, key=lambda w: (w[2], w[3], w[1], w[0] or ""))
    word_starts = [w[2] for w in words_sorted]
    unattributed = sum(1 for w in record.words if w[0] is None)
    if unattributed:
        counters["unattributed_words"] = counters.get("unattributed_words", 0) + unattributed

    streams: dict[frozenset[str], tuple[Stream, _Features, np.ndarray]] = {}
    speech: dict[frozenset[str], tuple[Stream, list[tuple[int, int]]]] = {}
    everyone = frozenset(conv["speakers"])

    def speech_of(speakers: frozenset[str]) -> tuple[Stream, list[tuple[int, int]]]:
        if speakers not in speech:
            s = build_stream(speakers, audio=audio, segments=record.segments, fade_ms=spec.fade_ms)
            speech[speakers] = (s, stream_speech(s, segments=record.segments, words=record.words))
        return speech[speakers]

    def stream(speakers: frozenset[str]):
        if speakers not in streams:
            # The other stream of a role assignment is always everyone else (model vs user).
            s, mine = speech_of(speakers)
            bits_K = stream_labels(
                chunks, speakers=speakers, speech_ms=mine, other_speech_ms=speech_of(everyone - speakers)[1],
                main_turns=main, backchannels=backchannels,
                word_starts_ms=[w[2] for w in record.words if w[0] in speakers],
                interruptions_ms=[e["t_ms"] for e in events if e["type"] == "interruption"
                                  and e.get("speaker") in speakers],
                leaks_ms=s.leaks_ms, behaviours=behaviours)
            streams[speakers] = (s, _features(s, chunks), bits_K)
        return streams[speakers]

    clips: dict[int, tuple[bytes, dict]] = {}
    tokens = role_tokens(speakers_model)
    for model in speakers_model:
        roles = {"model": frozenset([model]), "user": everyone - {model}}
        feats = {r: stream(spk) for r, spk in roles.items()}
        for w, k in kept:
            offset_ms, span_ms = w * K * CHUNK_MS, k * CHUNK_MS
            key = sample_key(record.id, tokens[model], w)
            f0, f1 = w * K * FRAMES_PER_CHUNK, (w * K + k) * FRAMES_PER_CHUNK
            c0, c1 = w * K, w * K + k
            # Words and events are sorted by time: bisect to the window instead of scanning all.
            in_words = words_sorted[bisect.bisect_left(word_starts, offset_ms):
                                    bisect.bisect_left(word_starts, offset_ms + span_ms)]
            words = {r: [{"text": text, "start_ms": s - offset_ms, "end_ms": e - offset_ms,
                          "chunk": (s - offset_ms) // CHUNK_MS}
                         for spk, text, s, e in in_words if spk in roles[r]]
                     for r in roles}
            words["background"] = [{"text": text, "start_ms": t - offset_ms, "end_ms": t - offset_ms,
                                    "chunk": (t - offset_ms) // CHUNK_MS}
                                   for spk, t, text in arrivals
                                   if spk == model and offset_ms <= t < offset_ms + span_ms]
            in_events = events[bisect.bisect_left(event_times, offset_ms):
                               bisect.bisect_left(event_times, offset_ms + span_ms)]
            window_events = [_sample_event(e, offset_ms, model) for e in in_events if e.get("speaker") is not None]
            clip, vmeta = (None, None)
            if video is not None:
                if w not in clips:
                    clips[w] = video(w, offset_ms, k)
                clip, vmeta = clips[w]
            meta = make_meta(key=key, conversation_id=record.id, window=w, chunks=k, window_chunks=K,
                             model_speaker=model, user_speakers=sorted(roles["user"]), origin=conv["origin"],
                             license=conv.get("license"), split=split, channel_layout=conv["channel_layout"],
                             conversation_ms=record.duration_ms, video=vmeta)
            labels = {r: feats[r][2][c0:c1].copy() for r in roles}
            sample = Sample(key=key, meta=meta, dmel={r: feats[r][1].dmel_TM[f0:f1] for r in roles},
                            logmel_TM=feats["model"][1].logmel_TM[f0:f1].astype(np.float16), labels=labels,
                            words=words, events=window_events, video=clip)
            validate_sample(sample)
            yield sample, _row(sample, labels, words, window_events)


def role_tokens(speakers: Sequence[str]) -> dict[str, str]:
    """The role part of each speaker's sample keys: the speaker name, or when two names
    sanitise to the same key, the name followed by its position (keys must stay unique)."""
    base = {s: sample_key("x", s, 0) for s in speakers}
    clash = {k for k in base.values() if list(base.values()).count(k) > 1}
    return {s: (f"{i}-{s}" if base[s] in clash else s) for i, s in enumerate(speakers)}


def _payload(e: Mapping) -> dict:
    payload = e.get("payload") or {}
    return json.loads(payload) if isinstance(payload, str) else dict(payload)


def _sample_event(e: Mapping, offset_ms: int, model: str) -> dict:
    payload = _payload(e)
    payload = {k: (v - offset_ms if k in ABSOLUTE_PAYLOAD_KEYS and isinstance(v, int) else v)
               for k, v in payload.items()}
    t = int(e["t_ms"]) - offset_ms
    return {"type": e["type"], "speaker": e["speaker"], "role": "model" if e["speaker"] == model else "user",
            "t_ms": t, "chunk": t // CHUNK_MS, "payload": payload}


def _row(sample: Sample, labels: Mapping[str, np.ndarray], words: Mapping[str, list], events: Sequence[dict]) -> dict:
    m = sample.meta
    k = m["chunks"]
    voiced = {r: float((labels[r] & Label.VOICED).astype(bool).sum()) / k for r in labels}
    count = {t: sum(1 for e in events if e["type"] == t) for t in ("turn_end", "backchannel", "interruption")}
    return {
        "key": sample.key, "split": m["split"], "conversation_id": m["conversation_id"], "window": m["window"],
        "offset_ms": m["offset_ms"], "duration_ms": m["duration_ms"], "chunks": k,
        "model_speaker": m["model_speaker"], "user_speakers": m["user_speakers"], "origin": m["origin"],
        "license": m["license"], "has_video": sample.video is not None,
        "stats": {
            "model_voiced": voiced["model"], "user_voiced": voiced["user"],
            "overlap_chunks": int((labels["model"] & Label.OVERLAP).astype(bool).sum()),
            "leak_chunks": int(((labels["model"] | labels["user"]) & Label.LEAK).astype(bool).sum()),
            "model_words": len(words["model"]), "user_words": len(words["user"]),
            "turn_ends": count["turn_end"], "backchannels": count["backchannel"],
            "interruptions": count["interruption"],
        },
    }


def warn_skipped(counters: Mapping[str, int], conversation_id: str) -> None:
    """One logged warning per kind of thing a record's samples left out (the shard job also
    counts them as Beam metrics and prints the totals)."""
    if counters.get("short_windows"):
        log.warning("%s: %d tail window(s) under min_chunks left out", conversation_id, counters["short_windows"])
    if counters.get("unattributed_words"):
        log.warning("%s: %d word(s) without a speaker left out of the streams", conversation_id,
                    counters["unattributed_words"])
