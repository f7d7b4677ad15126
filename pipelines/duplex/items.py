"""Evaluation items made from conversation records (``microturn eval items``).

For every conversation of the chosen split (default ``test``), every role assignment the shard
stage makes (each speaker with speech as the model-role speaker, everyone else as the user;
:func:`microturn.pipelines.shard.samples.model_speakers`), the events of each task are chosen
(:mod:`.items_select` for Full-Duplex-Bench's four tasks, :mod:`.items_behaviours` for visual
cues, repetition counting, background results and simultaneous speech) and written as item
folders in Full-Duplex-Bench's layout (:mod:`.items_write`), with both streams built by the shard
stage's stream code (:func:`microturn.pipelines.shard.streams.build_stream`: own channels, or the
diarization-gated mixture of a one-channel recording). Items of the visual tasks also hold
``input.mp4``: the conversation's video (``media_dir/video_file``) over the item's window, cut by
the shard stage's clip cutter (:func:`microturn.pipelines.shard.video.cut_clip`: ffmpeg on
``file:`` URLs, 10 fps, scaled to the patch grid the shard stage gives that video), two frames
per 200 ms chunk of ``input.wav``.

By default the tasks are every task present in the records: Full-Duplex-Bench's four, and each
behaviour task whose events some conversation holds (:func:`.items_behaviours.tasks_present`).

Only conversations of one split give items, so no conversation gives items to two splits. The
output folder is this command's own: an existing non-empty folder is refused unless its marker
``_microturn_stage.json`` says ``{"stage": "eval-items"}``; a rerun replaces the task folders and
``items.jsonl`` it finds there. Outputs are deterministic: conversations, roles and events are
taken in sorted order, the ``--max-per-conversation`` choice is drawn from a generator seeded by
``(seed, conversation, task)``, and no file holds a time stamp.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from apache_beam.io.filesystems import FileSystems

from microturn.pipelines import media
from microturn.pipelines.duplex.items_behaviours import SELECTORS, TASKS, tasks_present
from microturn.pipelines.duplex.items_records import conversation_split, read_records
from microturn.pipelines.duplex.items_select import Plan, role_view
from microturn.pipelines.duplex.items_write import LAYOUT_VERSION, item_name, write_item
from microturn.pipelines.shard.config import parse_splits
from microturn.pipelines.shard.samples import Record, RecordError, WindowSpec, check_record, model_speakers
from microturn.pipelines.shard.streams import build_stream
from microturn.schemas.stage_marker import MARKER, read_marker

log = logging.getLogger(__name__)
STAGE = "eval-items"
INDEX = "items.jsonl"


@dataclass(frozen=True, kw_only=True)
class ItemsConfig:
    """What ``microturn eval items`` makes.

    Attributes:
        records: record folders (ingest or synthesize outputs), read in this order.
        output: the items folder (local).
        split: only conversations of this split give items.
        splits: the shard stage's ``--splits`` (``name=ratio,...``) when the shards were cut with
            other ratios than the default: the split is then computed as the shard stage computes
            it; None reads the records' ``split`` column (the default ratios).
        tasks: the tasks to make items for (a subset of :data:`TASKS`); None: every task present in
            the records (:func:`.items_behaviours.tasks_present`).
        context_s: at most this much of the conversation before an event (see :mod:`.items_select`).
        max_per_conversation: at most this many items per conversation and task (all when None).
        seed: seeds the choice among a conversation's events when ``max_per_conversation`` cuts.
    """

    records: tuple[str, ...]
    output: str
    split: str = "test"
    splits: str | None = None
    tasks: tuple[str, ...] | None = None
    context_s: float = 8.0
    max_per_conversation: int | None = None
    seed: int = 0

    def __post_init__(self):
        if not self.records:
            raise ValueError("give at least one --records folder")
        if self.splits is not None:
            names = [name for name, _ in parse_splits(self.splits)]  # ValueError names what is wrong
            if self.split not in names:
                raise ValueError(f"--split {self.split!r} is not one of --splits {self.splits!r}")
        unknown = sorted(set(self.tasks or ()) - set(TASKS))
        if unknown or self.tasks == ():
            raise ValueError(f"--tasks: unknown task(s) {unknown}; choose from {list(TASKS)}" if unknown
                             else f"--tasks: give at least one of {list(TASKS)}")
        if not (self.context_s > 0 and np.isfinite(self.context_s)):
            raise ValueError(f"--context-s must be a positive number of seconds, got {self.context_s}")
        if self.max_per_conversation is not None and self.max_per_conversation < 1:
            raise ValueError(f"--max-per-conversation must be at least 1, got {self.max_per_conversation}")
        if "://" in self.output:
            raise ValueError(f"--output {self.output}: items are written to a local folder")


@dataclass(frozen=True, kw_only=True)
class ItemsSummary:
    """What a run made: conversations per split (all inputs), items per task, the output."""

    conversations_per_split: dict[str, int]
    conversations_used: int
    items_per_task: dict[str, int]
    output: str


def check_items_output(output: str) -> None:
    """``ValueError`` for an output this command must not write: a file, or a non-empty folder
    without this command's marker."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output} is a file, not a folder")
    if not os.path.isdir(output) or not os.listdir(output):
        return
    stage = (read_marker(output) or {}).get("stage")
    if stage != STAGE:
        raise ValueError(f"--output {output} is not empty and was not written by `microturn eval items` "
                         f"(no {MARKER} saying stage {STAGE!r}); give a new or empty folder")


def _pick(plans: list[Plan], *, limit: int | None, seed: int, conversation_id: str, task: str) -> list[int]:
    """Indices of the plans kept: all, or ``limit`` of them drawn without replacement (sorted)."""
    if limit is None or len(plans) <= limit:
        return list(range(len(plans)))
    digest = hashlib.sha256(f"microturn/eval-items/{seed}/{conversation_id}/{task}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    return sorted(int(i) for i in rng.choice(len(plans), size=limit, replace=False))


def plan_conversation(record: Record, config: ItemsConfig,
                      tasks: tuple[str, ...] | None = None) -> dict[str, list[tuple[int, Plan]]]:
    """Task → ``(event index, plan)`` of one conversation for ``tasks`` (default the config's, or
    all); indices number every candidate of the task (roles in the record's speaker order, then
    time), so a folder's name does not depend on ``max_per_conversation``."""
    conv = record.conversation
    context_ms = round(config.context_s * 1000)
    views = [role_view(model=m, speakers=conv["speakers"], duration_ms=record.duration_ms,
                       segments=record.segments, words=record.words, events=record.events)
             for m in model_speakers(record)]
    out = {}
    for task in tasks or config.tasks or TASKS:
        try:
            plans = [p for v in views for p in SELECTORS[task](v, context_ms=context_ms)]
        except ValueError as exc:
            raise ValueError(f"{record.root}: conversation {record.id}: {exc}") from None
        keep = _pick(plans, limit=config.max_per_conversation, seed=config.seed,
                     conversation_id=record.id, task=task)
        out[task] = [(i, plans[i]) for i in keep]
    return out


def _media_paths(record: Record) -> list[str]:
    conv = record.conversation
    return [FileSystems.join(record.root, conv["media_dir"], name) for name in conv["audio_files"] or []]


def _video_path(record: Record) -> str:
    """The conversation's video file; ``ValueError`` when it has none or the file is missing."""
    conv = record.conversation
    if not conv.get("has_video") or not conv.get("video_file"):
        raise ValueError(f"{record.root}: conversation {record.id} has events of a visual task but no video "
                         "(has_video is false); leave visual_cue and repetition out of --tasks, or give records "
                         "with the conversation's video")
    path = FileSystems.join(record.root, conv["media_dir"], conv["video_file"])
    if not FileSystems.exists(path):
        raise ValueError(f"{record.root}: conversation {record.id}: video file {path} does not exist")
    return path


def _check_media(record: Record, *, video: bool = False) -> None:
    """``ValueError`` naming the first missing audio file, or the missing video when ``video``
    (checked before the output is touched)."""
    paths = _media_paths(record)
    if not paths:
        raise ValueError(f"{record.root}: conversation {record.id} lists no audio files")
    for path in paths:
        if not FileSystems.exists(path):
            raise ValueError(f"{record.root}: conversation {record.id}: audio file {path} does not exist")
    if video:
        _video_path(record)


class _VideoCutter:
    """Clips of one conversation's video (opened on first use; a remote file is copied once)."""

    def __init__(self, record: Record, stack: contextlib.ExitStack):
        self.record, self.stack = record, stack
        self.path: str | None = None
        self.grid = (0, 0)

    def clip(self, start_ms: int, end_ms: int) -> bytes:
        """MP4 bytes of the video over ``[start_ms, end_ms)``, a whole number of 200 ms chunks."""
        from microturn.pipelines.shard.video import cut_clip, probe_video
        from microturn.schemas.sample import CHUNK_MS
        from microturn.schemas.video import DEFAULT_PATCH_BUDGET, patch_grid

        assert (end_ms - start_ms) % CHUNK_MS == 0, "visual items last whole chunks"
        try:
            if self.path is None:
                self.path, _, _ = self.stack.enter_context(media.local_copy(_video_path(self.record)))
                width, height, _, _ = probe_video(self.path)
                # The grid the shard stage cuts this video's clips to: the one the model trained on.
                self.grid = patch_grid(width, height, patch_budget=DEFAULT_PATCH_BUDGET)
            return cut_clip(self.path, start_ms=start_ms, chunks=(end_ms - start_ms) // CHUNK_MS,
                            patches_h=self.grid[0], patches_w=self.grid[1])
        except media.MediaError as exc:
            raise ValueError(f"{self.record.root}: conversation {self.record.id}: {exc}") from None


def _audio(record: Record) -> dict[int, np.ndarray]:
    _check_media(record)
    audio = {i: media.read_flac(path) for i, path in enumerate(_media_paths(record))}
    try:
        check_record(record, audio, WindowSpec())
    except RecordError as exc:
        raise ValueError(f"{record.root}: conversation {record.id}: {exc}") from None
    return audio


def _clear(output: str, tasks: Mapping[str, object]) -> None:
    """Remove what an earlier run of this command left (its task folders and index)."""
    for task in tasks:
        path = os.path.join(output, task)
        if os.path.isdir(path):
            shutil.rmtree(path)
    for name in (INDEX, MARKER):
        if os.path.exists(os.path.join(output, name)):
            os.remove(os.path.join(output, name))


def build_items(config: ItemsConfig) -> ItemsSummary:
    """Make the items of ``config`` (see the module docstring); ``ValueError`` for missing or bad
    inputs, an output that is not this command's, or a run that would make no item at all."""
    check_items_output(config.output)
    records = read_records(config.records)
    ratios = parse_splits(config.splits) if config.splits is not None else None
    splits = {r.id: conversation_split(r.conversation, ratios) for r in records}
    per_split = dict(sorted(Counter(splits.values()).items()))
    chosen = [r for r in records if splits[r.id] == config.split]
    if not chosen:
        log.warning("split %r holds no conversation (conversations per split: %s)", config.split, per_split)
    tasks = config.tasks or tasks_present(e for r in records for e in r.events)
    planned = [(r, plan_conversation(r, config, tasks)) for r in chosen]
    counts = {t: sum(len(p[t]) for _, p in planned) for t in tasks}
    if not sum(counts.values()):
        raise ValueError(f"no evaluation item: {len(chosen)} conversation(s) of split {config.split!r} "
                         f"(conversations per split: {per_split}) hold no event of {list(tasks)}")
    for record, plans in planned:
        if any(plans.values()):
            _check_media(record, video=any(plan.video for p in plans.values() for _, plan in p))
    os.makedirs(config.output, exist_ok=True)
    _clear(config.output, dict.fromkeys(SELECTORS))
    # The marker first: a run that stops half-way leaves a folder the next run may replace.
    with open(os.path.join(config.output, MARKER), "w", encoding="utf-8") as f:
        f.write(json.dumps({"stage": STAGE, "layout_version": LAYOUT_VERSION}, sort_keys=True) + "\n")
    lines = []
    for record, plans in planned:
        if not any(plans.values()):
            continue
        audio = _audio(record)
        conv = record.conversation
        everyone = frozenset(conv["speakers"])
        streams: dict[frozenset[str], np.ndarray] = {}

        def stream(speakers: frozenset[str], audio=audio, record=record, streams=streams) -> np.ndarray:
            if speakers not in streams:
                streams[speakers] = build_stream(speakers, audio=audio, segments=record.segments,
                                                 fade_ms=WindowSpec().fade_ms).wave_N
            return streams[speakers]

        with contextlib.ExitStack() as stack:
            video = _VideoCutter(record, stack)
            for task in tasks:
                for index, plan in plans[task]:
                    users = everyone - {plan.model}
                    rel = item_name(task, record.id, index)
                    words = [(t, s, e) for spk, t, s, e in record.words if spk == plan.model]
                    heard = [(t, s, e) for spk, t, s, e in record.words if spk in users]
                    item = write_item(os.path.join(config.output, rel), plan, conversation=conv,
                                      split=splits[record.id], user_N=stream(users),
                                      reference_N=stream(frozenset([plan.model])), reference_words=words,
                                      user_speakers=sorted(users), user_words=heard,
                                      video_mp4=video.clip(plan.start_ms, plan.end_ms) if plan.video else None)
                    lines.append(json.dumps({"path": rel, **item}, sort_keys=True, ensure_ascii=False))
    with open(os.path.join(config.output, INDEX), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in sorted(lines)))
    return ItemsSummary(conversations_per_split=per_split, conversations_used=len(chosen),
                        items_per_task=counts, output=config.output)
