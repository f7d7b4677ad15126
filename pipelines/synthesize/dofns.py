"""Per-element steps of the synthesize pipeline.

Elements are plain dicts of strings and numbers; audio never travels through the pipeline: the
step that makes a conversation writes its stems under ``OUT/media/{conversation_id}/`` and emits
rows. Every step turns the failure of one input into a ``rejects`` row (tagged output, counted in
a Beam metric), so one bad script never stops the others.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import stat
import tempfile
import time

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import TaggedOutput

from microturn.pipelines import media
from microturn.pipelines.dead_letter import RejectingStep
from microturn.schemas import RowError, check_media_paths, conversation_id, split_of
from microturn.schemas.dialogue import MAX_LINE_BYTES, Dialogue, ScriptError, bounded_lines, parse_dialogue
from microturn.schemas.text import describe_char, refused_char, visible
from microturn.schemas.turns import Turn
from microturn.synth.engine import Conversation, check_dialogue, dialogue_rng, scene_spec, synthesize_dialogue
from microturn.synth.espeak import EspeakUnavailableError
from microturn.synth.mix import MixConfig
from microturn.synth.timing import TimingModel
from microturn.synth.tts import get_tts

NAMESPACE = "synthesize"
ROW_OUTPUTS = ("segments", "words", "events")


class _Step(RejectingStep):
    """A step of synthesize: rejects as every stage's (:mod:`microturn.pipelines.dead_letter`)."""

    namespace = NAMESPACE


def label(path: str) -> str:
    """How a script file is named in the tables: its path with control characters, bidi controls
    and the lone surrogates of an undecodable file name (Python's surrogateescape) written as
    visible escapes (:func:`microturn.schemas.text.visible`), so any file name can be stored in
    Parquet and printed safely."""
    return visible(path)


class ReadScripts(_Step):
    """A file pattern → one element per non-blank line: ``{"input": "path:line", "line": text}``.

    Per-file and per-line failures are rejects: a pattern matching nothing, a match that is not a
    regular file (a FIFO or device would block the read forever; a broken link; a folder), a line
    that is not UTF-8 or is longer than :data:`~microturn.schemas.dialogue.MAX_LINE_BYTES` (skipped
    without holding it), a file that breaks mid-read (a corrupt ``.gz``: the lines before the break
    are kept).
    """

    stage = "read"

    def __init__(self, exclude: str | None = None):
        super().__init__()
        self.exclude = exclude  # the run's output: never read back as input (e.g. --scripts 'data/**')

    def _wanted(self, path: str) -> bool:
        from microturn.pipelines.outputs import excluded

        return not (self.exclude and excluded(path, self.exclude))

    def process(self, pattern: str):
        try:
            paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        except Exception as exc:  # noqa: BLE001 - any filesystem error belongs in rejects
            yield self._reject(label(pattern), visible(str(exc)), type(exc).__name__)
            return
        paths = [p for p in paths if self._wanted(p)]
        skipped = 0
        if "://" not in pattern:
            # Beam's match leaves out what is not a readable file; a broken link or a folder that
            # the pattern names is still the user's mistake, so it is a reject, not nothing.
            # A pattern whose last part is only stars ("data/**", "data/*") means everything in
            # the folder: the folders it matches are on the way to files, not mistakes.
            everything = set(os.path.basename(pattern.rstrip("/"))) == {"*"}
            extras = {p for p in glob.glob(pattern, recursive=True)
                      if self._wanted(p) and not (everything and os.path.isdir(p))}
            for extra in sorted(extras - set(paths)):
                skipped += 1
                if os.path.isdir(extra):
                    yield self._reject(label(extra), "a directory, not a script file; give a pattern that "
                                       "matches .jsonl files", "NotAFile")
                else:
                    yield self._reject(label(extra), "a broken symbolic link (its target does not exist)",
                                       "NotAFile")
        if not paths and not skipped:
            yield self._reject(label(pattern), "the pattern matches no script file", "NoMatch")
        for path in paths:
            yield from self._lines(path)

    def _lines(self, path: str):
        # Line by line, so that a huge file is never held whole and one undecodable line costs
        # only itself.
        name = label(path)
        if "://" not in path:
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                yield self._reject(name, visible(str(exc)), type(exc).__name__)
                return
            if not stat.S_ISREG(mode):
                yield self._reject(name, "not a regular file (a FIFO, device or socket, which a read could "
                                   "wait on forever); give script files", "NotAFile")
                return
        found = 0
        no = 0
        try:
            with FileSystems.open(path) as f:
                for no, raw in enumerate(bounded_lines(f), start=1):
                    key = f"{name}:{no}"
                    if raw is None:
                        yield self._reject(key, f"the line is longer than {MAX_LINE_BYTES} bytes, far more "
                                           "than a dialogue holds; split it", "line_too_long")
                        continue
                    if no == 1:
                        raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        yield self._reject(key, f"the line is not UTF-8 text: {exc}", "invalid_utf8")
                        continue
                    if line.strip():
                        found += 1
                        yield {"input": key, "line": line}
        except Exception as exc:  # noqa: BLE001 - a corrupt compressed file raises zlib.error, not OSError
            yield self._reject(name, f"reading stopped after line {no}: {visible(str(exc))}", type(exc).__name__)
            return
        if not found:
            yield self._reject(name, "the file holds no dialogue lines", "EmptyFile")
        else:
            self.done.inc()


def provenance(dialogue: Dialogue, *, seed: int, tts_version: str, timing: TimingModel, timing_source: str,
               mix: MixConfig) -> dict:
    """What determines a synthetic conversation's bytes; its hash is the conversation id."""
    return {"kind": "script", "dialogue_id": dialogue.id, "dialogue_sha256": dialogue.sha256(), "seed": seed,
            "tts": tts_version, "timing": timing.to_dict(), "timing_source": timing_source, "mix": mix.to_dict()}


def id_from(prov: dict, prefix: str) -> str:
    canonical = json.dumps(prov, sort_keys=True, separators=(",", ":"))
    return conversation_id(hashlib.sha256(canonical.encode()).hexdigest(), prefix=prefix)


class ParseScript(_Step):
    """Validate a script line and check the TTS can speak it; key it by its conversation id."""

    stage = "parse"

    def __init__(self, *, tts: str, seed: int, timing: TimingModel, timing_source: str, mix: MixConfig):
        super().__init__()
        self.tts_name, self.seed, self.timing, self.timing_source, self.mix = tts, seed, timing, timing_source, mix

    def setup(self):
        self.tts = get_tts(self.tts_name)

    def process(self, item: dict):
        try:
            yield from self._parse(item)
        except EspeakUnavailableError:
            raise  # the machine's fault, not the script's: every script would fail the same way
        except Exception as exc:  # noqa: BLE001 - one script's failure is a reject, not a crash
            yield self._reject(item["input"], visible(str(exc)), type(exc).__name__)

    def _parse(self, item: dict):
        try:
            dialogue = parse_dialogue(item["line"])
        except ScriptError as exc:
            yield self._reject(item["input"], exc, exc.reason)
            return
        if not any(dialogue.language == lang or dialogue.language.split("-")[0] == lang.split("-")[0]
                   for lang in self.tts.languages()):
            yield self._reject(item["input"], f"{dialogue.id}: {self.tts.version()} has no voice for language "
                               f"{dialogue.language!r}", "unsupported_language")
            return
        try:
            check_dialogue(dialogue, self.tts)
        except ValueError as exc:
            yield self._reject(item["input"], f"{dialogue.id}: {exc}", "unsupported_voice")
            return
        prov = provenance(dialogue, seed=self.seed, tts_version=self.tts.version(), timing=self.timing,
                          timing_source=self.timing_source, mix=self.mix)
        self.done.inc()
        yield id_from(prov, "s"), {"input": item["input"], "dialogue": dialogue.to_json(), "provenance": prov}


class KeepFirst(_Step):
    """One element per conversation id: the first input by name; the others are duplicates."""

    stage = "dedupe"

    def process(self, item):
        cid, copies = item
        copies = sorted(copies, key=lambda c: c["input"])
        for dup in copies[1:]:
            yield self._reject(dup["input"], f"the same dialogue as {copies[0]['input']} (conversation {cid})",
                               "duplicate")
        yield {**copies[0], "conversation_id": cid}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "speaker"


VIDEO_FILE = "video.mp4"
SCENE_BACKEND = "microturn-scene"  # the backends entry of a conversation whose video was drawn


def write_scene(conv: Conversation, *, cid: str, output: str) -> str | None:
    """Draw and encode the scene video of a conversation with visual cues into OUT/media/{cid}/;
    its file name, or None when the conversation has no visual cue. The scene's seed is a
    function of the conversation id, so a rerun draws the same frames."""
    seed = int(hashlib.sha256(f"microturn/scene/{cid}".encode()).hexdigest()[:8], 16)
    spec = scene_spec(conv, seed=seed)
    if spec is None:
        return None
    from microturn.synth.scene_video import write_scene_video

    with tempfile.TemporaryDirectory(prefix="microturn-scene-") as tmp:
        local = os.path.join(tmp, VIDEO_FILE)
        write_scene_video(spec, local)
        media.copy_file_to(local, FileSystems.join(output, f"media/{cid}", VIDEO_FILE))
    return VIDEO_FILE


def conversation_rows(conv: Conversation, *, cid: str, source_uri: str, origin: str, license: str,
                      backends: dict[str, str], prov: dict, output: str, word_score: float | None,
                      video_file: str | None = None):
    """Write the stems of ``conv`` under OUT/media/{cid}/ and return its rows by table.

    ``word_score``: 1.0 for TTS word times (exact by construction); None for remixed words, whose
    times moved with their turn and whose aligner scores stay in the source record.
    ``video_file``: the conversation's video in the same folder (:func:`write_scene`), if any.
    """
    media_dir = f"media/{cid}"
    files = []
    for speaker, stem_N in conv.stems.items():
        name = f"{_safe(speaker)}.flac"
        media.write_bytes(FileSystems.join(output, media_dir, name), media.encode_flac(stem_N))
        files.append(name)
    speakers = list(conv.stems)
    row = {
        "conversation_id": cid, "source_uri": source_uri, "origin": origin, "duration_ms": conv.duration_ms,
        "channels": len(files), "channel_layout": "per_speaker", "has_video": video_file is not None,
        "media_dir": media_dir, "audio_files": files, "video_file": video_file, "speakers": speakers,
        "num_speakers": len(speakers),
        "backends": sorted(backends.items()), "license": license, "split": split_of(cid),
        "stats": conv.stats.as_row(), "provenance": json.dumps(prov, sort_keys=True),
    }
    segments = [{"conversation_id": cid, "speaker": t.speaker, "start_ms": t.start_ms, "end_ms": t.end_ms,
                 "channel": t.channel} for t in conv.segments]
    words = [{"conversation_id": cid, "speaker": spk, "text": text, "start_ms": s, "end_ms": e,
              "score": word_score} for spk, text, s, e in conv.words]
    events = [{"conversation_id": cid, "type": e["type"], "speaker": e["speaker"], "t_ms": e["t_ms"],
               "payload": json.dumps(e["payload"], sort_keys=True)} for e in conv.events]
    return row, {"segments": segments, "words": words, "events": events}


def _emit(row: dict, rows: dict[str, list[dict]]):
    """The conversation row (main output), then its segments, words and events (tagged)."""
    yield row
    for table in ROW_OUTPUTS:
        for r in rows[table]:
            yield TaggedOutput(table, r)


class Synthesize(_Step):
    """Speak, lay out and mix one dialogue; write its stems; emit its rows."""

    stage = "synthesize"

    def __init__(self, *, output: str, tts: str, seed: int, timing: TimingModel, timing_source: str,
                 mix: MixConfig, license: str):
        super().__init__()
        self.output, self.tts_name, self.seed = output, tts, seed
        self.timing, self.timing_source, self.mix, self.license = timing, timing_source, mix, license
        self.audio_ms = Metrics.counter(NAMESPACE, "synthesized_audio_ms")
        self.wall_ms = Metrics.distribution(NAMESPACE, "synthesize_wall_ms")

    def setup(self):
        self.tts = get_tts(self.tts_name)

    def process(self, item: dict):
        started = time.perf_counter()
        cid = item["conversation_id"]
        try:
            dialogue = parse_dialogue(item["dialogue"])
            try:
                conv = synthesize_dialogue(dialogue, tts=self.tts, timing=self.timing, mix=self.mix,
                                           seed=self.seed)
            except EspeakUnavailableError:
                raise
            except (ValueError, TypeError) as exc:
                # The TTS cannot speak a turn (no letter it can read, e.g. only "..." or combining
                # marks): the script's fault, named as such.
                yield self._reject(item["input"], f"{dialogue.id}: {visible(str(exc))}", "unspeakable")
                return
            video_file = write_scene(conv, cid=cid, output=self.output)
            backends = {"tts": self.tts.version(), "timing": self.timing_source}
            if video_file is not None:
                backends["video"] = SCENE_BACKEND
            row, rows = conversation_rows(
                conv, cid=cid, source_uri=item["input"], origin="synthetic",
                license=dialogue.license or self.license, backends=backends, prov=item["provenance"],
                output=self.output, word_score=1.0, video_file=video_file)
        except Exception as exc:  # noqa: BLE001 - one dialogue's failure is a reject, not a crash
            yield self._reject(item["input"], exc)
            return
        self.done.inc()
        self.audio_ms.inc(conv.duration_ms)
        self.wall_ms.update(int((time.perf_counter() - started) * 1000))
        yield from _emit(row, rows)


def _refused_in(conversation: dict, segments, words) -> str | None:
    """Why the text of a source record may not enter this output's tables (the input boundary of
    :mod:`microturn.schemas.text`, applied to tables that can come from anywhere), or None."""
    fields = [("conversations.source_uri", conversation.get("source_uri")),
              ("conversations.license", conversation.get("license"))]
    fields += [("conversations.speakers", s) for s in conversation.get("speakers") or []]
    fields += [("segments.speaker", r.get("speaker")) for r in segments]
    fields += [(f"words.{k}", r.get(k)) for r in words for k in ("speaker", "text")]
    for name, value in fields:
        if isinstance(value, str):
            found = refused_char(value)
            if found is not None:
                return (f"{name} holds {describe_char(found[1])} ({visible(value)[:60]!r}); control characters "
                        "are not copied into a remix: fix the source record")
    return None


class Remix(_Step):
    """Re-time one ingested conversation into per-speaker streams; write them; emit rows."""

    stage = "remix"

    def __init__(self, *, source: str, output: str, seed: int, timing: TimingModel, timing_source: str,
                 mix: MixConfig):
        super().__init__()
        self.source, self.output, self.seed = source, output, seed
        self.timing, self.timing_source, self.mix = timing, timing_source, mix
        self.dropped_bc = Metrics.counter(NAMESPACE, "remix_dropped_backchannels")
        self.dropped_words = Metrics.counter(NAMESPACE, "remix_dropped_words")

    def process(self, item):
        from microturn.synth.remix import remix_conversation

        src_cid, grouped = item
        src_cid = visible(str(src_cid))
        convs = list(grouped["conversations"])
        if len(convs) != 1:
            yield self._reject(src_cid, f"expected one conversations row, found {len(convs)}", "BadRecord")
            return
        src = convs[0]
        bad = _refused_in(src, grouped["segments"], grouped["words"])
        if bad:
            yield self._reject(src_cid, bad, "bad_text")
            return
        try:
            check_media_paths(src)
        except RowError as exc:
            yield self._reject(src_cid, exc, "bad_media_path")
            return
        try:
            segs = [Turn(r["speaker"], int(r["start_ms"]), int(r["end_ms"]), int(r["channel"] or 0))
                    for r in grouped["segments"]]
            words = [(r["speaker"], r["text"], int(r["start_ms"]), int(r["end_ms"])) for r in grouped["words"]]
            audio = {i: media.read_flac(FileSystems.join(self.source, src["media_dir"], name))
                     for i, name in enumerate(src["audio_files"])}
            prov = {"kind": "remix", "remix_of": src_cid, "seed": self.seed, "timing": self.timing.to_dict(),
                    "timing_source": self.timing_source, "mix": self.mix.to_dict()}
            cid = id_from(prov, "r")
            result = remix_conversation(segments=sorted(segs, key=lambda t: (t.start_ms, t.end_ms, t.speaker)),
                                        words=sorted(words, key=lambda w: (w[2], w[3], w[1])), audio=audio,
                                        per_speaker=src["channel_layout"] == "per_speaker", timing=self.timing,
                                        mix=self.mix, rng=dialogue_rng(self.seed, f"remix/{src_cid}"))
            backends = dict(src["backends"] or [])
            backends["timing"] = self.timing_source
            row, rows = conversation_rows(result.conversation, cid=cid, source_uri=src["source_uri"] or src_cid,
                                          origin="remix", license=src["license"] or "unknown",
                                          backends=backends, prov=prov, output=self.output,
                                          word_score=None)
        except Exception as exc:  # noqa: BLE001
            yield self._reject(src_cid, exc)
            return
        self.dropped_bc.inc(result.dropped_backchannels)
        self.dropped_words.inc(result.dropped_words)
        self.done.inc()
        yield from _emit(row, rows)
