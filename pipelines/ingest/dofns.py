"""Per-element steps of the ingest pipeline.

Elements passed between steps are plain dicts of strings, numbers and lists (encoded by Beam
without pickle); audio never travels through the pipeline: each step reads the normalised FLAC
media that the ``Normalise`` step wrote under ``OUT/media/{conversation_id}/``.

Every step catches the failure of one input, emits a ``rejects`` row (tagged output) and counts it
in a Beam metric, so one bad file never stops the others.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import TaggedOutput

from microturn.pipelines import media
from microturn.pipelines.backends.base import Region, SpeakerCount, Turn, Word
from microturn.pipelines.dead_letter import RejectingStep
from microturn.pipelines.ingest import channels as chan
from microturn.pipelines.ingest import inputs
from microturn.pipelines.tables import REJECTS, reject
from microturn.schemas import conversation_id, split_of
from microturn.schemas.turns import turn_events, turn_stats

log = logging.getLogger(__name__)

# Extensions that are never media inputs: sidecars and manifests matched by a folder glob.
SIDECAR_EXTS = (".srt", ".vtt", ".stm", ".json", ".rttm", ".txt", ".csv", ".md", ".uem", ".lab")


class _Step(RejectingStep):
    """A step of ingest: rejects as every stage's (:mod:`microturn.pipelines.dead_letter`), plus
    per-step timing metrics."""

    namespace = "ingest"

    def __init__(self):
        super().__init__()
        self.seconds = Metrics.distribution(self.namespace, f"{self.stage}_ms")
        self.audio = Metrics.counter(self.namespace, f"{self.stage}_audio_ms")

    def _timed(self, started: float, audio_ms: int) -> None:
        self.done.inc()
        self.seconds.update(int((time.perf_counter() - started) * 1000))
        self.audio.inc(int(audio_ms))


class MatchPattern(_Step):
    """A file pattern → the media files it matches (sidecars skipped), or a reject if none.

    Every matched entry that is not read (a broken symbolic link, a FIFO, a device, a name that
    is not UTF-8: :mod:`microturn.pipelines.ingest.inputs`) is a reject with its reason.
    """

    stage = "match"

    def __init__(self, exclude: str | None = None):
        super().__init__()
        self.skipped = Metrics.counter("ingest", "match_skipped_sidecar")
        self.exclude = exclude  # the run's output: never read back as input (e.g. --input 'data/**')

    def process(self, pattern: str):
        try:
            found = inputs.match(pattern)
        except Exception as exc:  # noqa: BLE001 - any filesystem error belongs in rejects
            yield self._reject(pattern, exc)
            return
        from microturn.pipelines.outputs import excluded

        def wanted(path: str) -> bool:
            return not os.path.basename(path).startswith(".") and not (
                self.exclude and excluded(path, self.exclude))

        unreadable = [s for s in found if isinstance(s, inputs.Skipped) and wanted(s.path)]
        files = [p for p in found if isinstance(p, str) and wanted(p)]
        media_files = [p for p in files if not p.lower().endswith(SIDECAR_EXTS)]
        if len(files) > len(media_files):
            self.skipped.inc(len(files) - len(media_files))
        for s in unreadable:
            yield self._reject(s.path, s.reason, s.error_type)
        if not media_files and not unreadable:
            yield self._reject(pattern, "the pattern matches no media file", "NoMatch")
        yield from media_files


class Probe(_Step):
    """Hash and probe one input; emits the ``sources`` row plus what later steps need."""

    stage = "probe"

    def __init__(self, *, max_duration_s: float, licenses: dict[str, tuple[str, str]]):
        super().__init__()
        self.max_duration_ms = int(max_duration_s * 1000)
        self.licenses = licenses

    def _license(self, uri: str) -> tuple[str, str]:
        return self.licenses.get(uri) or self.licenses.get(os.path.basename(uri)) or ("unknown", "real")

    def setup(self):
        from microturn.pipelines.backends.sidecar import find_sidecar

        self.find_sidecar = find_sidecar

    def process(self, uri: str):
        started = time.perf_counter()
        try:
            with media.local_copy(uri) as (path, sha, size):
                info = media.probe(path)
            audio, video = info.audio, info.video
            if audio is None:
                raise media.MediaError(
                    "no audio stream: microturn needs the conversation's audio "
                    f"(streams found: {[s.codec_type for s in info.streams] or 'none'})")
            if (audio.codec_name or "unknown") in ("unknown", "none"):
                raise media.MediaError(
                    "unsupported audio codec: ffmpeg has no decoder for audio stream "
                    f"{audio.index}; convert it to a common codec (PCM, FLAC, AAC, Opus, MP3)")
            if info.duration_ms <= 0:
                raise media.MediaError("duration is zero or unknown")
            if info.duration_ms > self.max_duration_ms:
                raise media.MediaError(
                    f"duration {info.duration_ms / 1000:.1f} s is over the limit of "
                    f"{self.max_duration_ms / 1000:.0f} s; raise --max-duration-s or split the file")
            license_, origin = self._license(uri)
            cid = conversation_id(sha)
            source = {
                "uri": uri, "conversation_id": cid, "sha256": sha, "bytes": size,
                "container": info.container, "streams": [s.as_row() for s in info.streams],
                "duration_ms": info.duration_ms, "sample_rate": audio.sample_rate,
                "channels": audio.channels, "has_video": video is not None,
                "video_fps": video.fps if video else None,
                "video_width": video.width if video else None,
                "video_height": video.height if video else None,
                "sidecar_uri": self.find_sidecar(uri), "license": license_, "origin": origin,
            }
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            yield self._reject(uri, exc)
            return
        self._timed(started, 0)
        yield {"uri": uri, "conversation_id": cid, "source": source,
               "audio_stream": audio.index, "audio_codec": audio.codec_name,
               "audio_channels": audio.channels or 1,
               "video_stream": video.index if video else None,
               "video_codec": video.codec_name if video else None}


class KeepFirstCopy(beam.DoFn):
    """(conversation_id, records) → the record of the first uri; later copies are rejected.

    Two paths with identical bytes are one conversation: ingesting both would duplicate it.
    """

    def process(self, keyed):
        cid, records = keyed
        records = sorted(records, key=lambda r: r["uri"])
        yield records[0]
        for dup in records[1:]:
            yield TaggedOutput(REJECTS, reject(
                dup["uri"], "dedupe", f"same content as {records[0]['uri']} (conversation {cid})",
                "DuplicateContent"))


class Normalise(_Step):
    """Decode audio to 16 kHz FLAC per stream and video to 10 fps under ``OUT/media/{id}/``."""

    stage = "normalise"

    def __init__(self, *, output: str, channel_layout: str, video_max_side: int,
                 max_duration_s: float | None = None):
        super().__init__()
        self.output, self.layout, self.max_side = output, channel_layout, video_max_side
        # Probe refuses what the header says is too long; this holds the limit on the samples.
        self.max_ms = None if max_duration_s is None else int(max_duration_s * 1000)

    def process(self, rec: dict):
        started = time.perf_counter()
        cid, uri = rec["conversation_id"], rec["uri"]
        media_dir = f"media/{cid}"
        try:
            with media.local_copy(uri) as (path, _, _):
                stream = media.StreamInfo(index=rec["audio_stream"], codec_type="audio",
                                          codec_name=rec["audio_codec"], channels=rec["audio_channels"])
                wave_CN = media.decode_audio(path, stream=stream, keep_channels=True,
                                             max_ms=self.max_ms)
                layout = self.layout if self.layout != "auto" else chan.detect_layout(wave_CN)
                if layout == chan.MIXED and wave_CN.shape[0] > 1:
                    wave_CN = wave_CN.mean(axis=0, keepdims=True)
                names = ["mix.flac"] if layout == chan.MIXED else [
                    f"ch{i}.flac" for i in range(wave_CN.shape[0])]
                video_file = None
                if rec["video_stream"] is not None:
                    video_file = "video.mp4"
                    local_video = _local_target(self.output, f"{media_dir}/{video_file}")
                    vstream = media.StreamInfo(index=rec["video_stream"], codec_type="video",
                                               codec_name=rec["video_codec"])
                    try:
                        media.normalise_video(path, local_video.path, stream=vstream,
                                              max_side=self.max_side, max_ms=self.max_ms)
                        local_video.commit()
                    finally:
                        local_video.discard()
            for name, wave_N in zip(names, wave_CN, strict=True):
                media.write_bytes(FileSystems.join(self.output, media_dir, name),
                                  media.encode_flac(wave_N))
        except media.TooLongError as exc:
            said = rec["source"]["duration_ms"] / 1000
            yield self._reject(uri, media.TooLongError(f"{exc} (its header says {said:.1f} s)"))
            return
        except Exception as exc:  # noqa: BLE001
            yield self._reject(uri, exc)
            return
        duration_ms = int(wave_CN.shape[1] * 1000 // media.SAMPLE_RATE)
        self._timed(started, duration_ms)
        yield {**rec, "media_dir": media_dir, "audio_files": names, "video_file": video_file,
               "channel_layout": layout, "duration_ms": duration_ms}


class _local_target:
    """A local path for a tool (ffmpeg) to write to, moved onto its destination on commit: a
    hidden temporary file beside it on local disk (renamed, so a failed or killed rerun never
    leaves half a file in place of an earlier one), a local temporary file copied up for remote
    outputs. :meth:`discard` removes the temporary file after a failure."""

    def __init__(self, output: str, rel: str):
        self.dest = FileSystems.join(output, rel)
        self.remote = "://" in self.dest and not self.dest.startswith("file://")
        if self.remote:
            import tempfile

            fd, self.path = tempfile.mkstemp(suffix=os.path.splitext(rel)[1])
            os.close(fd)
        else:
            folder, name = os.path.split(self.dest)
            self.path = os.path.join(folder, f".{name}.tmp")
            os.makedirs(folder, exist_ok=True)

    def commit(self) -> None:
        if self.remote:
            media.copy_file_to(self.path, self.dest)
            os.remove(self.path)
        else:
            os.replace(self.path, self.dest)

    def discard(self) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)


def load_streams(output: str, rec: dict) -> list[np.ndarray]:
    """The conversation's normalised audio, one float32 [N] array per media file."""
    return [media.read_flac(FileSystems.join(output, rec["media_dir"], name))
            for name in rec["audio_files"]]


def mixture(streams: list[np.ndarray]) -> np.ndarray:
    n = min(len(s) for s in streams)
    return streams[0][:n] if len(streams) == 1 else np.mean([s[:n] for s in streams], axis=0).astype(np.float32)


class DetectSpeech(_Step):
    """Speech regions per media audio file (silero-vad)."""

    stage = "vad"

    def __init__(self, *, output: str, vad=None):
        super().__init__()
        self.output, self.vad_config = output, vad

    def setup(self):
        from microturn.pipelines.backends.factory import make_vad

        self.vad = make_vad(self.vad_config)

    def process(self, rec: dict):
        started = time.perf_counter()
        try:
            speech = [[[r.start_ms, r.end_ms] for r in self.vad(wave_N)]
                      for wave_N in load_streams(self.output, rec)]
        except Exception as exc:  # noqa: BLE001
            yield self._reject(rec["uri"], exc)
            return
        self._timed(started, rec["duration_ms"])
        yield {**rec, "speech": speech, "vad": self.vad.name}


class Diarize(_Step):
    """Who spoke when: the diarizer on a mixture; the speech of each channel when per speaker."""

    stage = "diarize"

    def __init__(self, *, output: str, diarizer: str, model_dir: str | None, count: SpeakerCount,
                 embedded=None):
        super().__init__()
        self.output, self.kind, self.model_dir, self.count = output, diarizer, model_dir, count
        self.embedded = embedded  # EmbeddedDiarizerConfig or None (its defaults)

    def setup(self):
        from microturn.pipelines.backends.factory import make_diarizer

        self.diarizer = make_diarizer(self.kind, self.model_dir, embedded=self.embedded)

    def process(self, rec: dict):
        started = time.perf_counter()
        try:
            if rec["channel_layout"] == chan.PER_SPEAKER:
                turns, name = _channel_turns(rec["speech"]), "channels"
            else:
                wave_N = load_streams(self.output, rec)[0]
                speech = [Region(s, e) for s, e in rec["speech"][0]]
                # The diarizer decides what to make of the VAD regions: the embedded one finds
                # speech itself by default (silero misses far-field meeting speech).
                turns = self.diarizer(wave_N, speech=speech, count=self.count)
                name = self.diarizer.name
            turns = _clip_turns(turns, rec["duration_ms"])
        except Exception as exc:  # noqa: BLE001
            yield self._reject(rec["uri"], exc)
            return
        self._timed(started, rec["duration_ms"])
        yield {**rec, "turns": [[t.speaker, t.start_ms, t.end_ms, t.channel] for t in turns],
               "diarizer": name}


def _channel_turns(speech: list[list[list[int]]]) -> list[Turn]:
    turns, k = [], 0
    for ch, regions in enumerate(speech):
        if not regions:
            continue
        turns += [Turn(f"SPEAKER_{k:02d}", s, e, ch) for s, e in regions]
        k += 1
    return sorted(turns, key=lambda t: (t.start_ms, t.speaker))


def _clip_turns(turns: Iterable[Turn], duration_ms: int) -> list[Turn]:
    out = []
    for t in turns:
        s, e = max(0, int(t.start_ms)), min(duration_ms, int(t.end_ms))
        if e > s:
            out.append(Turn(t.speaker, s, e, t.channel))
    return out


class Transcribe(_Step):
    """Timed words: a sidecar aligned to the audio, or ASR; then a speaker for every word.

    Sidecar problems (bad encoding, lines beyond the media) are recorded in ``rejects`` while the
    conversation itself goes on, without words or with the usable lines.
    """

    stage = "transcribe"

    def __init__(self, *, output: str, transcriber: str, model_dir: str | None, language: str,
                 aligner=None):
        super().__init__()
        self.output, self.kind = output, transcriber
        self.model_dir, self.language = model_dir, language
        self.aligner = aligner  # PocketsphinxAlignerConfig or None (its defaults)

    def setup(self):
        from microturn.pipelines.backends import sidecar
        from microturn.pipelines.backends.assign import assign_speakers
        from microturn.pipelines.backends.factory import make_transcriber

        self.sidecar, self.assign_speakers = sidecar, assign_speakers
        self.transcriber = make_transcriber(self.kind, self.model_dir, self.language, aligner=self.aligner)

    def _sidecar(self, rec: dict, notes: list):
        sc = self.sidecar
        uri = rec["source"]["sidecar_uri"]
        if not uri:
            return None
        try:
            data = sc.read_sidecar_bytes(uri)  # regular files only, at most 16 MiB
            stem = os.path.splitext(os.path.basename(rec["uri"]))[0]
            transcript = sc.parse_sidecar(data, os.path.splitext(uri)[1].lstrip(".").lower(),
                                          name=uri, file_id=stem)
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                transcript, dropped, clipped = sc.clip_to_media(transcript, rec["duration_ms"])
            if dropped or clipped:
                notes.append(reject(uri, "sidecar", (
                    f"{dropped} line(s) start after the media ends ({rec['duration_ms']} ms) and were "
                    f"dropped; {clipped} line(s) ran past it and were clipped"), "SidecarBeyondMedia"))
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                transcript, limits = sc.bound_transcript(transcript, rec["duration_ms"])
            if limits:
                log.warning("sidecar %s: %s", uri, limits.message(rec["duration_ms"]))
                notes.append(reject(uri, "sidecar", limits.message(rec["duration_ms"]),
                                    "SidecarOverLimit"))
            return transcript
        except Exception as exc:  # noqa: BLE001 - a bad sidecar costs the words, not the conversation
            notes.append(reject(uri, "sidecar", exc))
            return None

    def process(self, rec: dict):
        started = time.perf_counter()
        notes: list[dict] = []
        words: list[Word] = []
        name = "none"
        try:
            turns = [Turn(*t) for t in rec["turns"]]
            if self.transcriber is not None:
                transcript = self._sidecar(rec, notes)
                utterances = transcript.utterances if transcript else None
                if transcript is not None and transcript.words:
                    words, name = list(transcript.words), "sidecar-words"
                elif utterances or self.kind == "whisperx":
                    wave_N = mixture(load_streams(self.output, rec))
                    words = self.transcriber(wave_N, utterances=utterances, turns=turns)
                    name = self.transcriber.name
                words, dropped = _valid_words(words, rec["duration_ms"])
                if dropped:
                    log.warning("transcribe %s: left out %d word(s)", rec["uri"], dropped)
                    notes.append(reject(rec["uri"], self.stage, (
                        f"left out {dropped} word(s) that were empty, ended before they began or "
                        f"began after the media ends ({rec['duration_ms']} ms)"), "WordsDropped"))
                if any(w.speaker is None for w in words):
                    words = self.assign_speakers(words, turns, utterances)
        except Exception as exc:  # noqa: BLE001
            for note in notes:
                yield TaggedOutput(REJECTS, note)
            yield self._reject(rec["uri"], exc)
            return
        for note in notes:
            self.rejected.inc()
            yield TaggedOutput(REJECTS, note)
        self._timed(started, rec["duration_ms"])
        yield {**rec, "transcriber": name,
               "words": [[w.text, w.start_ms, w.end_ms, w.score, w.speaker] for w in words]}


def _valid_words(words: Iterable[Word], duration_ms: int) -> tuple[list[Word], int]:
    """Words clipped to the media, and how many were left out (empty, reversed, past the end)."""
    out, dropped = [], 0
    for w in words:
        s, e = max(0, int(w.start_ms)), min(duration_ms, int(w.end_ms))
        if e < s or not w.text.strip() or s >= duration_ms:
            dropped += 1
            continue
        score = None if w.score is None else float(min(1.0, max(0.0, w.score)))
        out.append(Word(w.text.strip(), s, e, score, w.speaker))
    return out, dropped


class Summarise(_Step):
    """Turn-taking statistics and the rows of ``conversations``, ``segments``, ``words``, ``events``."""

    stage = "stats"
    OUTPUTS = ("segments", "words", "events")

    def __init__(self, *, output: str):
        super().__init__()
        self.output = output

    def process(self, rec: dict):
        started = time.perf_counter()
        cid = rec["conversation_id"]
        try:
            turns = [Turn(*t) for t in rec["turns"]]
            stats = turn_stats(turns, rec["duration_ms"])
            events = turn_events(turns)
            speakers = sorted({t.speaker for t in turns})
            backends = {"vad": rec["vad"], "diarizer": rec["diarizer"],
                        "transcriber": rec["transcriber"]}
            conv = {
                "conversation_id": cid, "source_uri": rec["uri"], "origin": "real",
                "duration_ms": rec["duration_ms"], "channels": len(rec["audio_files"]),
                "channel_layout": rec["channel_layout"], "has_video": rec["video_file"] is not None,
                "media_dir": rec["media_dir"], "audio_files": rec["audio_files"],
                "video_file": rec["video_file"], "speakers": speakers,
                "num_speakers": len(speakers), "backends": sorted(backends.items()),
                "license": rec["source"]["license"], "split": split_of(cid), "stats": stats.as_row(),
            }
        except Exception as exc:  # noqa: BLE001
            yield self._reject(rec["uri"], exc)
            return
        self._timed(started, rec["duration_ms"])
        yield conv
        for t in turns:
            yield TaggedOutput("segments", {
                "conversation_id": cid, "speaker": t.speaker, "start_ms": t.start_ms,
                "end_ms": t.end_ms, "channel": t.channel})
        for text, s, e, score, spk in rec["words"]:
            yield TaggedOutput("words", {
                "conversation_id": cid, "speaker": spk, "text": text, "start_ms": s, "end_ms": e,
                "score": score})
        for ev in events:
            yield TaggedOutput("events", {
                "conversation_id": cid, "type": ev.type, "speaker": ev.speaker, "t_ms": ev.t_ms,
                "payload": json.dumps(ev.payload, sort_keys=True)})
