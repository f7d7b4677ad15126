"""Per-element steps of the shard pipeline (Beam DoFns).

Elements are plain dicts, lists, strings, ints and bytes, so Beam encodes them with its
primitive coders; arrays become ``.npy`` bytes before they leave :class:`MakeSamples`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import TaggedOutput

from microturn.pipelines import media
from microturn.pipelines.dead_letter import RejectingStep
from microturn.pipelines.outputs import atomic_file, pending_name, publish, raise_if_output_fault, spool_dir
from microturn.pipelines.shard.plan import first_indices, plan_bucket, shard_name
from microturn.pipelines.shard.samples import Record, RecordError, WindowSpec, make_samples, warn_skipped
from microturn.pipelines.shard.tar import TarWriter, sample_blob
from microturn.pipelines.shard.video import VideoSpec
from microturn.pipelines.tables import REJECTS, reject
from microturn.schemas import RowError, check_media_paths, validate_rows
from microturn.schemas.sample import SampleError, encode_sample
from microturn.schemas.turns import Turn

NAMESPACE = "shard"


class PickFirst(beam.DoFn):
    """``(conversation_id, [(input index, grouped rows), ...])`` → one record; a conversation
    found in several inputs is kept from the first and rejected from the others."""

    def __init__(self, inputs: tuple[str, ...]):
        self.inputs = inputs
        self.duplicates = Metrics.counter(NAMESPACE, "duplicate_conversations")

    def process(self, item):
        cid, found = item
        found = sorted(found, key=lambda f: f[0])
        for i, _ in found[1:]:
            self.duplicates.inc()
            yield TaggedOutput(REJECTS, reject(
                f"{self.inputs[i]}#{cid}", "shard", f"conversation also in {self.inputs[found[0][0]]}; "
                                                   "kept there", "duplicate_conversation"))
        i, grouped = found[0]
        yield {"root": self.inputs[i], **grouped}


def to_record(item: dict) -> Record:
    """The grouped rows of one conversation as a :class:`Record` (``RecordError`` when malformed)."""
    convs = list(item["conversations"])
    if len(convs) != 1:
        raise RecordError("bad_record", f"expected one conversations row, found {len(convs)}")
    try:
        # Record tables are inputs too: a hand-made row must not point at media outside its folder.
        check_media_paths(convs[0])
    except RowError as exc:
        raise RecordError("bad_media_path", str(exc)) from None
    segs = sorted((Turn(r["speaker"], int(r["start_ms"]), int(r["end_ms"]), int(r["channel"] or 0))
                   for r in item["segments"]), key=lambda t: (t.start_ms, t.end_ms, t.speaker, t.channel))
    words = sorted(((r["speaker"], r["text"], int(r["start_ms"]), int(r["end_ms"])) for r in item["words"]),
                   key=lambda w: (w[2], w[3], w[1], w[0] or ""))
    events = [{k: r[k] for k in ("type", "speaker", "t_ms", "payload")} for r in item["events"]]
    return Record(root=item["root"], conversation=convs[0], segments=segs, words=words, events=events)


class MakeSamples(RejectingStep):
    """One conversation → its samples as tar bytes (``{"key", "split", "blob", "size", "row"}``);
    records that cannot make valid samples go to ``rejects`` with a reason."""

    namespace = NAMESPACE
    stage = "shard"
    rejected_metric = "rejected_conversations"

    def __init__(self, *, window: WindowSpec, splits: tuple[tuple[str, float], ...], video: VideoSpec | None):
        super().__init__()
        self.window, self.splits, self.video = window, splits, video
        self.conversations = Metrics.counter(NAMESPACE, "conversations")
        self.samples = Metrics.counter(NAMESPACE, "samples")
        self.short = Metrics.counter(NAMESPACE, "short_windows_left_out")
        self.unattributed = Metrics.counter(NAMESPACE, "unattributed_words_left_out")
        self.audio_ms = Metrics.counter(NAMESPACE, "conversation_ms")

    def _video_fn(self, record: Record, stack: contextlib.ExitStack):
        conv = record.conversation
        if self.video is None or not conv.get("has_video") or not conv.get("video_file"):
            return None
        from microturn.pipelines.shard.video import cut_clip, probe_video
        from microturn.schemas.video import patch_grid

        uri = FileSystems.join(record.root, conv["media_dir"], conv["video_file"])
        if not FileSystems.exists(uri):
            raise media.MediaError(f"video file {uri} does not exist")
        # ffmpeg reads local files: a remote video is copied once per conversation.
        path, _, _ = stack.enter_context(media.local_copy(uri))
        width, height, _, _ = probe_video(path)
        ph, pw = patch_grid(width, height, patch_budget=self.video.patch_budget)
        crf = self.video.crf

        def clip(window: int, start_ms: int, chunks: int):
            data = cut_clip(path, start_ms=start_ms, chunks=chunks, patches_h=ph, patches_w=pw, crf=crf)
            return data, {"width": pw * 40, "height": ph * 40, "patches_h": ph, "patches_w": pw,
                          "frames": 2 * chunks}

        return clip

    def process(self, item):
        with contextlib.ExitStack() as stack:
            yield from self._process(item, stack)

    def _process(self, item, stack: contextlib.ExitStack):
        convs = list(item.get("conversations") or [])
        cid = str(convs[0].get("conversation_id") or "?") if len(convs) == 1 else "?"
        try:
            record = to_record(item)
            cid = record.id
            conv = record.conversation
            audio = {}
            for i, name in enumerate(conv["audio_files"] or []):
                path = FileSystems.join(record.root, conv["media_dir"], name)
                if not FileSystems.exists(path):
                    yield self._reject(cid, f"audio file {path} does not exist", "missing_media")
                    return
                audio[i] = media.read_flac(path)
            if not audio:
                yield self._reject(cid, "the record lists no audio files", "missing_media")
                return
            try:
                video = self._video_fn(record, stack)
            except (media.MediaError, ValueError) as exc:
                yield self._reject(cid, str(exc), "video_decode")
                return
            counters: dict[str, int] = {}
            made = []
            for sample, row in make_samples(record, audio, spec=self.window, splits=self.splits, video=video,
                                            counters=counters):
                blob = sample_blob(encode_sample(sample))
                made.append({"key": sample.key, "split": row["split"], "blob": blob, "size": len(blob),
                             "row": {**row, "tar_bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}})
        except RecordError as exc:
            yield self._reject(cid, str(exc), exc.reason)
            return
        except media.MediaError as exc:
            reason = "video_decode" if "video" in str(exc).lower() else "bad_media"
            yield self._reject(cid, str(exc), reason)
            return
        except SampleError as exc:
            yield self._reject(cid, str(exc), "invalid_sample")
            return
        except Exception as exc:  # noqa: BLE001 - one bad record must never stop the others
            raise_if_output_fault(exc)  # a full disk is no record's fault: the run stops
            yield self._reject(cid, f"{exc}", type(exc).__name__)
            return
        warn_skipped(counters, cid)
        self.short.inc(counters.get("short_windows", 0))
        self.unattributed.inc(counters.get("unattributed_words", 0))
        self.conversations.inc()
        self.audio_ms.inc(record.duration_ms)
        self.samples.inc(len(made))
        yield from made


class CountParts(beam.DoFn):
    """``(where, [(key, size), ...])`` → ``(where, shards in the bucket)``, ``where`` being
    ``((split, shard set), bucket)``."""

    def __init__(self, target_bytes: int):
        self.target_bytes = target_bytes

    def process(self, item):
        where, sizes = item
        yield where, max(plan_bucket(sizes, target_bytes=self.target_bytes).values()) + 1


def spool_path(output: str, key: str) -> str:
    """Where a sample's bytes wait for their shard writer: ``SHARDS/.spool/XY/{key}.tar``, XY from a
    hash of the key (256 folders, so that no folder holds a whole corpus's samples). Keys are
    made of ``[A-Za-z0-9_-]`` (:func:`microturn.schemas.sample.sample_key`)."""
    assert _SAFE_KEY.match(key), key
    return FileSystems.join(spool_dir(output), hashlib.sha256(key.encode()).hexdigest()[:2], f"{key}.tar")


_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class SpoolSample(beam.DoFn):
    """A sample with its bytes → the bytes written to the run's spool (:func:`spool_path`) and the
    sample without them (``{"key", "split", "size", "row"}``), so that what the runner shuffles
    to group samples by shard is a small record per sample (about 1 KB), not its ~200 KB of
    features (30 s, audio only). A retried bundle writes the same bytes again."""

    def __init__(self, output: str):
        self.output = output
        self.spooled = Metrics.counter(NAMESPACE, "spooled_bytes")

    def process(self, sample):
        publish(sample["blob"], spool_path(self.output, sample["key"]))
        self.spooled.inc(len(sample["blob"]))
        yield {k: v for k, v in sample.items() if k != "blob"}


class WriteBucket(beam.DoFn):
    """``(((split, shard set), bucket), samples)`` → the bucket's shards: for each, one tar and its Parquet
    manifest, written under a temporary name and renamed to its pending name when complete
    (published by the run's commit); emits a ``shards`` row per shard (main output) and the
    ``samples`` rows (tagged ``samples``).

    The samples arrive without their bytes, in whatever order the runner groups them; the writer
    sorts them by key and copies each one's bytes from the spool into its shard, so it holds
    the bucket's keys, sizes and table rows and one sample's bytes at a time. ``parts`` (side
    input) gives every bucket's shard count, from which the bucket's first shard index follows
    (:func:`first_indices`).
    """

    def __init__(self, output: str, *, target_bytes: int):
        self.output, self.target_bytes = output, target_bytes
        self.shards = Metrics.counter(NAMESPACE, "shards")
        self.bytes = Metrics.counter(NAMESPACE, "shard_bytes")
        self._first: dict = {}
        self._parts_seen: object = None

    def _first_index(self, parts: dict, where: tuple[str, int]) -> int:
        if self._parts_seen is not parts:  # the side input is one dict per window: computed once
            self._first, self._parts_seen = first_indices(parts), parts
        return self._first[where]

    def process(self, item, parts):
        (group, bucket), samples = item
        split, members_set = group
        entries = sorted(((s["key"], s["size"], s["row"]) for s in samples), key=lambda e: e[0])
        plan = plan_bucket(((key, size) for key, size, _ in entries), target_bytes=self.target_bytes)
        count = max(plan.values()) + 1
        assert count == parts[(group, bucket)], "CountParts and WriteBucket planned the bucket differently"
        first = self._first_index(parts, (group, bucket))
        by_part: list[list] = [[] for _ in range(count)]
        for e in entries:
            by_part[plan[e[0]]].append(e)
        for part, members in enumerate(by_part):
            yield from self._write(split, members_set, first + part, members)

    def _write(self, split: str, members_set: str, index: int, members: list):
        rel = shard_name(split, index, members_set)
        final = FileSystems.join(self.output, rel)
        manifest_rel = rel[: -len(".tar")] + ".parquet"
        rows = []
        with atomic_file(pending_name(final)) as raw:
            writer = TarWriter(raw)
            for key, size, row in members:
                with FileSystems.open(spool_path(self.output, key)) as f:
                    blob = f.read()
                if len(blob) != size:
                    raise OSError(f"the spooled bytes of sample {key} are {len(blob)} bytes, not {size}: "
                                  "another run wrote into this output's spool?")
                rows.append({**row, "shard": rel, "tar_offset": writer.add_blob(blob)})
            total, sha = writer.close()
        buf = io.BytesIO()
        pq.write_table(validate_rows("samples", rows), buf, compression="zstd")
        publish(buf.getvalue(), pending_name(FileSystems.join(self.output, manifest_rel)))
        self.shards.inc()
        self.bytes.inc(total)
        yield {"path": rel, "split": split, "index": index, "bytes": total, "samples": len(rows),
               "duration_ms": sum(r["duration_ms"] for r in rows), "sha256": sha, "manifest": manifest_rel}
        for r in rows:
            yield TaggedOutput("samples", r)
