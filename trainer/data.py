"""The shard loader: WebDataset tars of micro-turn samples to trainer batches.

Stages, each a plain generator run inside the process (or DataLoader worker) that iterates:

    shard list -> shuffle (seed, epoch) -> split by node -> split by worker     (or: resample)
    -> open -> tar members -> samples (webdataset) -> shuffle buffer (raw bytes)
    -> decode_sample -> build_sequence -> batches of ``batch_size`` -> collate

No stage unpickles anything: members stay bytes until ``microturn.schemas.sample.decode_sample``
reads them (``.npy`` with ``allow_pickle=False``, JSON, H.264). A sample that fails to decode
is skipped, counted in ``loader.stats["skipped"]`` and warned about; a shard that fails to open
or read is counted in ``stats["shard_errors"]``. Iteration goes on in both cases.

Every random choice draws from ``numpy.random.Generator`` seeded by (seed, epoch[, rank,
worker]), so a loader with the same shards, seed and epoch yields the same batches in the same
order.
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import webdataset as wds
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys, tar_file_expander

from microturn.schemas.sample import decode_sample
from microturn.trainer.batch import build_sequence, collate

__all__ = ["LoaderConfig", "ShardLoader", "glob_shards", "make_loader", "resolve_shards"]

_GLOB_CHARS = ("*", "?", "[")


def _has_scheme(url: str) -> bool:
    scheme = urlparse(url).scheme
    return len(scheme) > 1 or url.startswith("pipe:")  # one letter is a Windows drive, not a scheme


def glob_shards(pattern: str) -> list[str]:
    """Shards of ``pattern``: a local glob (``*``, ``?``, ``[...]``) is expanded now and sorted;
    a local directory gives its ``*.tar`` files; a brace pattern (``train-{000000..000009}.tar``),
    a URL or a plain path is returned as it is, for webdataset to expand and open.

    Braces and glob characters together are brace-expanded first, then each part globbed.
    Raises ``ValueError`` when a local glob or directory matches no tar.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"a shard pattern must be a non-empty string, got {pattern!r}")
    if _has_scheme(pattern) and not pattern.startswith("file:"):
        return [pattern]
    local = urlparse(pattern).path if pattern.startswith("file:") else pattern
    if os.path.isdir(local):
        found = sorted(glob.glob(os.path.join(glob.escape(local), "*.tar")))
        if not found:
            raise ValueError(f"shard directory {pattern!r} holds no .tar file")
        return found
    if not any(c in local for c in _GLOB_CHARS):
        return [pattern]
    parts = expand_urls(local) if "{" in local else [local]
    found = sorted({path for part in parts for path in glob.glob(part)})
    if not found:
        raise ValueError(f"shard pattern {pattern!r} matches no file")
    return found


def resolve_shards(urls: str | Iterable[str]) -> list[str]:
    """The concrete shard list of ``urls``: one string (several may be joined with ``::``, the
    webdataset convention) or a list of them, each through :func:`glob_shards` and brace expansion.

    Raises ``ValueError`` for an empty result and for a URL scheme that neither webdataset nor an
    installed ``fsspec`` can open.
    """
    items = urls.split("::") if isinstance(urls, str) else list(urls)
    shards: list[str] = []
    for item in items:
        for path in glob_shards(os.fspath(item)):
            shards += expand_urls(path) if "{" in path else [path]
    if not shards:
        raise ValueError(f"no shards in {urls!r}")
    for url in shards:
        _check_scheme(url)
    return shards


def _check_scheme(url: str) -> None:
    if not _has_scheme(url):
        return
    scheme = "pipe" if url.startswith("pipe:") else urlparse(url).scheme
    if scheme == "file" or scheme in wds.gopen_schemes:
        return
    try:
        import fsspec  # noqa: F401
    except ImportError:
        raise ValueError(f"shard {url!r}: webdataset cannot open {scheme}:// URLs; install fsspec with the "
                         f"filesystem driver for {scheme} (e.g. s3fs for s3://)") from None


def _open(url: str):
    """A binary stream of ``url``: webdataset's openers first, fsspec for other schemes."""
    scheme = urlparse(url).scheme
    if not _has_scheme(url) or scheme == "file" or url.startswith("pipe:") or scheme in wds.gopen_schemes:
        return wds.gopen(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


@dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """How :class:`ShardLoader` reads, shuffles and batches.

    Attributes:
        batch_size: samples per batch (packing may put several in one row).
        max_len: positions per row; longer sequences are cut at a chunk boundary.
        pack: pack sequences into rows (True) or one per row, padded (False).
        shuffle_shards: shuffle the shard order per (seed, epoch) before splitting it across
            nodes and workers.
        buffer: samples in the shuffle buffer; 0 or 1 keeps the order of the shards.
        resampled: draw shards with replacement, endlessly, independently per node and worker
            (equal-length epochs on every rank, which multi-node training needs).
        seed: base seed of every random choice.
        num_workers: DataLoader worker processes (0: read in the calling process).
        epoch: epoch number mixed into the seeds (:meth:`ShardLoader.set_epoch` changes it).
        max_text_per_chunk: text tokens per chunk and stream (see ``build_sequence``).
    """

    batch_size: int
    max_len: int
    pack: bool = True
    shuffle_shards: bool = True
    # 1000 raw samples of 150 chunks are ~0.2 GB (2 x 48 KB dMel + 96 KB log-mel each, plus any
    # compressed clip); the buffer holds them undecoded, since one decoded clip at 48 patches
    # per chunk is 150 x 48 x 9.6 KB = 69 MB.
    buffer: int = 1000
    resampled: bool = False
    seed: int = 0
    num_workers: int = 0
    epoch: int = 0
    max_text_per_chunk: int = 16

    def __post_init__(self):
        for name in ("batch_size", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("buffer", "seed", "num_workers", "epoch", "max_text_per_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


class _Skip:
    """A webdataset-style exception handler that counts, warns and goes on (returns True).

    With ``give_up_after``, that many errors in a row with no sample in between raise a
    ``ValueError`` instead: a resampled stream over shards that all fail would otherwise
    draw them forever."""

    def __init__(self, counter, what: str, *, give_up_after: int | None = None):
        self.counter = counter
        self.what = what
        self.give_up_after = give_up_after
        self.streak = 0

    def __call__(self, exn: BaseException) -> bool:
        self.streak += 1
        if self.give_up_after is not None and self.streak > self.give_up_after:
            raise ValueError(f"{self.streak} {self.what} errors in a row and no sample read (last: "
                             f"{type(exn).__name__}: {exn}); check that the shards are readable tars") from exn
        with self.counter.get_lock():
            self.counter.value += 1
        warnings.warn(f"skipped a {self.what}: {type(exn).__name__}: {exn}", stacklevel=2)
        return True


def _reset_streak(src: Iterable[dict], handler: _Skip) -> Iterator[dict]:
    for sample in src:
        handler.streak = 0
        yield sample


def _shard_source(shards: list[str], cfg: LoaderConfig, epoch: int, rank: int, worker: int) -> Iterator[dict]:
    if cfg.resampled:
        rng = np.random.default_rng([cfg.seed, epoch, rank, worker, 0])
        while True:
            yield {"url": shards[int(rng.integers(len(shards)))]}
    order = list(shards)
    if cfg.shuffle_shards:
        # The same permutation on every rank (no rank in the seed), so the node split stays disjoint.
        order = [order[i] for i in np.random.default_rng([cfg.seed, epoch]).permutation(len(order))]
    yield from wds.split_by_worker(wds.split_by_node({"url": u} for u in order))


def _open_shards(src: Iterable[dict], handler) -> Iterator[dict]:
    for item in src:
        try:
            stream = _open(item["url"])
        except Exception as exn:  # a missing or unreachable shard must not end the epoch
            exn.args = (*exn.args, item["url"])
            handler(exn)
            continue
        try:
            yield {"url": item["url"], "stream": stream}
        finally:  # the tar reader has moved on to the next shard, or the pipeline was closed
            stream.close()


def _shuffle(src: Iterable, size: int, rng: np.random.Generator) -> Iterator:
    """Buffer shuffle: fill ``size`` items, then emit a random one for each new one."""
    if size <= 1:
        yield from src
        return
    buf: list = []
    for item in src:
        if len(buf) < size:
            buf.append(item)
            continue
        i = int(rng.integers(size))
        buf[i], item = item, buf[i]
        yield item
    for i in rng.permutation(len(buf)):
        yield buf[int(i)]


def _decoded(src: Iterable[dict], handler) -> Iterator[dict]:
    for raw in src:
        try:
            yield decode_sample(raw)
        except Exception as exn:  # untrusted bytes: npy, JSON and H.264 readers raise many types
            exn.args = (*exn.args, f"sample {raw.get('__key__')!r} of {raw.get('__url__')!r}")
            handler(exn)


def _batches(src: Iterable, size: int, collate_fn) -> Iterator[dict]:
    batch: list = []
    for item in src:
        batch.append(item)
        if len(batch) == size:
            yield collate_fn(batch)
            batch = []
    if batch:
        yield collate_fn(batch)


class _SampleStream(torch.utils.data.IterableDataset):
    """The pipeline as an IterableDataset; built anew by each iteration in its own process."""

    def __init__(self, shards: list[str], tokenizer, cfg: LoaderConfig):
        super().__init__()
        self.shards = shards
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.epoch = cfg.epoch
        ctx = multiprocessing.get_context()
        # Shared counters, so that skips inside DataLoader workers reach the parent's stats.
        self.counters = {name: ctx.Value("q", 0) for name in ("samples", "skipped", "shard_errors")}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        rank, world, worker, _ = wds.utils.pytorch_worker_info()
        if not cfg.resampled and len(self.shards) < world:
            raise ValueError(f"{len(self.shards)} shards cannot be split across {world} ranks: "
                             f"rank {rank} would get none; write more shards or use resampled=True")
        # Resampling draws endlessly: give up after every shard failed about twice in a row.
        shard_errors = _Skip(self.counters["shard_errors"], "shard",
                             give_up_after=max(16, 2 * len(self.shards)) if cfg.resampled else None)
        src = _shard_source(self.shards, cfg, self.epoch, rank, worker)
        src = group_by_keys(tar_file_expander(_open_shards(src, shard_errors), handler=shard_errors),
                            handler=shard_errors)
        src = _reset_streak(src, shard_errors)
        src = _shuffle(src, cfg.buffer, np.random.default_rng([cfg.seed, self.epoch, rank, worker, 1]))
        src = _decoded(src, _Skip(self.counters["skipped"], "sample"))
        seqs = (self._count(build_sequence(s, self.tokenizer, max_text_per_chunk=cfg.max_text_per_chunk))
                for s in src)
        yield from _batches(seqs, cfg.batch_size, partial(collate, max_len=cfg.max_len, pack=cfg.pack))

    def _count(self, seq):
        with self.counters["samples"].get_lock():
            self.counters["samples"].value += 1
        return seq


class ShardLoader:
    """Batches from WebDataset shards of micro-turn samples (see the module docstring).

    Iterating gives the trainer's batch dicts (``microturn.trainer.batch.collate``). Without
    ``resampled`` one iteration is one pass over this rank's shards; call :meth:`set_epoch`
    between passes for a new order, since the same epoch repeats the same batches.
    ``stats`` counts decoded samples, skipped samples and shard errors over all iterations.
    """

    def __init__(self, urls: str | list[str], *, tokenizer, config: LoaderConfig):
        self.shards = resolve_shards(urls)
        self.config = config
        self.dataset = _SampleStream(self.shards, tokenizer, config)
        self._loader = torch.utils.data.DataLoader(self.dataset, batch_size=None, num_workers=config.num_workers)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` in the seeds of the next iteration (shard order, buffer, resampling)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.dataset.epoch = epoch

    @property
    def stats(self) -> dict[str, int]:
        """``{"samples", "skipped", "shard_errors"}``: counts so far, summed over workers."""
        return {name: int(c.value) for name, c in self.dataset.counters.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._loader)


def make_loader(urls: str | list[str], *, tokenizer, batch_size: int, max_len: int, pack: bool = True,
                shuffle_shards: bool = True, buffer: int = 1000, resampled: bool = False, seed: int = 0,
                num_workers: int = 0, epoch: int = 0, max_text_per_chunk: int = 16) -> ShardLoader:
    """A :class:`ShardLoader` over ``urls`` (brace pattern, local glob or directory, path, URL, or a
    list of them) with the options of :class:`LoaderConfig`. Raises ``ValueError`` for bad
    options or when ``urls`` names no shard."""
    cfg = LoaderConfig(batch_size=batch_size, max_len=max_len, pack=pack, shuffle_shards=shuffle_shards,
                       buffer=buffer, resampled=resampled, seed=seed, num_workers=num_workers, epoch=epoch,
                       max_text_per_chunk=max_text_per_chunk)
    return ShardLoader(urls, tokenizer=tokenizer, config=cfg)
