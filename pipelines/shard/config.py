"""Configuration of the shard stage (one keyword-only dataclass; TOML-loadable)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from microturn.pipelines.shard.samples import WindowSpec
from microturn.pipelines.shard.video import VideoSpec
from microturn.schemas.config import setting, validate
from microturn.schemas.ids import DEFAULT_SPLITS

_SPLIT_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_RESERVED = ("samples", "shards", "rejects")
_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def parse_bytes(text: str | int) -> int:
    """``"512MiB"``, ``"1G"``, ``"65536"`` → bytes (binary units)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"--shard-bytes {text!r}: give a size such as 536870912, 512MiB or 1GiB")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_splits(text: str) -> tuple[tuple[str, float], ...]:
    """``"train=0.98,valid=0.01,test=0.01"`` → ``(("train", 0.98), ...)``; ratios must sum to 1."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, ratio = part.partition("=")
        name = name.strip()
        try:
            value = float(ratio)
        except ValueError:
            value = float("nan")
        if name in _RESERVED:
            raise ValueError(f"--splits: {name!r} is the name of a table folder of the shard output; pick another")
        if not sep or not _SPLIT_RE.match(name) or not value > 0:
            raise ValueError(f"--splits: {part!r} must be name=ratio with a lowercase name and a positive ratio")
        out.append((name, value))
    names = [n for n, _ in out]
    if not out or len(set(names)) != len(names):
        raise ValueError(f"--splits {text!r}: give each split once, e.g. train=0.98,valid=0.01,test=0.01")
    if abs(sum(r for _, r in out) - 1.0) > 1e-9:
        raise ValueError(f"--splits {text!r}: ratios sum to {sum(r for _, r in out)}, not 1")
    return tuple(out)


# Fields a named config may not set: the command line gives them.
CLI_ONLY = ("output",)


def format_splits(splits: tuple[tuple[str, float], ...]) -> str:
    return ",".join(f"{n}={r:g}" for n, r in splits)


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """Everything the shard job needs besides Beam's own pipeline options.

    Attributes:
        inputs: record directories (ingest and synthesize outputs; local paths or Beam URLs).
        output: the shard output directory SHARDS.
        window_chunks: K, chunks of 200 ms per sample (150 = 30 s).
        min_chunks: shortest tail window kept (shorter ones are counted and left out).
        splits: ``name=ratio,...``; a conversation's split is a pure function of its id.
        shard_bytes: target tar size; shards rotate before passing it (512 MiB default: large
            enough for sequential reads at full disk speed, small enough for a few hundred
            shards per 1000 hours, so nodes x workers can split them evenly).
        bucket_shards: shards' worth of samples per writer bucket (4): a split is spread over
            ``ceil(payload / (bucket_shards * shard_bytes))`` buckets by conversation, and each
            bucket is packed into shards by one writer. Larger buckets leave fewer part-filled
            shards (each bucket ends with one) and give fewer, longer writer tasks.
        video: cut video clips for conversations that have video.
        patch_budget, crf: video patches per chunk and H.264 quality (see :class:`VideoSpec`).
        fade_ms, tolerance_ms: see :class:`WindowSpec`.
        table_shards: Parquet files per table of SHARDS.
    """

    inputs: tuple[str, ...] = setting((), flag="--input")
    output: str = setting(flag="--output")
    window_chunks: int = setting(150, ge=1, flag="--window-chunks")
    min_chunks: int = 10  # 1..window_chunks, checked below
    splits: str = format_splits(DEFAULT_SPLITS)
    # A named config may spell it "512MiB"; 64 KiB is far below one sample of 30 s (~100 KB of dMel).
    shard_bytes: int = setting(512 << 20, ge=64 << 10, flag="--shard-bytes", parse=parse_bytes)
    bucket_shards: int = setting(4, ge=1)
    video: bool = True
    patch_budget: int = VideoSpec().patch_budget  # checked by VideoSpec
    crf: int = VideoSpec().crf
    fade_ms: int = setting(10, ge=0)
    tolerance_ms: int = setting(200, ge=0)
    table_shards: int = setting(1, ge=1, flag="--table-shards")

    def __post_init__(self) -> None:
        validate(self)
        if not self.inputs:
            raise ValueError("give at least one --input OUT (an ingest or synthesize output)")
        if not self.output:
            raise ValueError("--output is required")
        if not 1 <= self.min_chunks <= self.window_chunks:
            raise ValueError(f"--min-chunks must be in 1..window_chunks ({self.window_chunks}), got {self.min_chunks}")
        _ = self.split_ratios  # validates
        _ = self.video_spec  # validates

    @property
    def split_ratios(self) -> tuple[tuple[str, float], ...]:
        return parse_splits(self.splits)

    @property
    def window_spec(self) -> WindowSpec:
        return WindowSpec(window_chunks=self.window_chunks, min_chunks=self.min_chunks, fade_ms=self.fade_ms,
                          tolerance_ms=self.tolerance_ms)

    @property
    def video_spec(self) -> VideoSpec:
        return VideoSpec(patch_budget=self.patch_budget, crf=self.crf)
