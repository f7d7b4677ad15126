"""The shard loader: WebDataset tars of micro-turn samples to trainer batches.

Stages (``microturn.trainer.loader_stream``), run inside the process (or DataLoader worker)
that iterates:

    shard list -> shuffle (seed, epoch) -> split by node -> split by worker     (or: resample)
    -> open (``shard_reader.open_shard``) -> bounded tar reader -> samples -> shuffle buffer
    (raw bytes) -> decode_sample -> build_sequence -> pieces of at most ``max_len`` -> batches
    of ``batch_size`` samples -> collate

No stage unpickles anything: members stay bytes until ``microturn.schemas.sample.decode_sample``
reads them (``.npy`` with ``allow_pickle=False``, JSON, H.264). A shard name never selects a
protocol or runs a command: local names (glob matches, paths) are opened with ``open()``, and a
``pipe:`` URL needs ``allow_pipe``. Tars are read by ``shard_reader.iter_samples``: never
decompressed, members bounded in size, links, devices and odd names refused.

Nothing is dropped silently. Each kind of loss is counted in ``loader.stats`` and warned about:
a sample that fails to decode (``skipped``), a shard that fails to open or read on
(``shard_errors``), a member skipped unread (``bad_members``). A sample longer than ``max_len``
is split into pieces of whole chunks with their times kept (``split``, ``pieces``); only a chunk
that alone is longer than ``max_len`` is left out (``dropped_chunks``), and text over
``max_text_per_chunk`` is cut (``text_cut``), as is background text still queued when a window
ends (``background_cut``, see ``build_sequence``): those are counted without a warning per sample, and
:meth:`ShardLoader.summary` gives them in one line. Iteration goes on in every case, except that
a resampled stream gives up with a ``ValueError`` when no sample can be read from any shard.

Every random choice draws from ``numpy.random.Generator`` seeded by sha256 of (seed, epoch[,
rank, worker]), so a loader with the same shards, seed and epoch yields the same batches in the
same order. :meth:`ShardLoader.state_dict` saves where a loader stands (shard, byte offset,
shuffle buffer as references, generator states, counts) as JSON-ready values, and
:meth:`ShardLoader.load_state_dict` continues from there without reading the earlier batches
again: the trainer keeps it with each checkpoint.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import webdataset as wds
from webdataset.shardlists import expand_urls

from microturn.schemas.config import setting, validate
from microturn.trainer.loader_stream import COUNTERS, WORK, Counters, ShardStream
from microturn.trainer.shard_reader import local_path, pipe_refusal, scheme_of

__all__ = ["LoaderConfig", "LoaderStateMismatch", "ShardLoader", "glob_shards", "make_loader", "resolve_shards"]

_GLOB_CHARS = ("*", "?", "[")
STATE_VERSION = 1
# The settings the batches depend on: a saved state is only good for a loader with the same.
_STATE_CONFIG = ("batch_size", "max_len", "pack", "shuffle_shards", "buffer", "resampled", "seed",
                 "max_text_per_chunk", "max_background_per_chunk", "max_member_bytes", "max_sample_bytes")


def glob_shards(pattern: str) -> list[str]:
    """Shards of ``pattern``: a local glob (``*``, ``?``, ``[...]``) is expanded now and sorted;
    a local directory gives its ``*.tar`` files; an existing file is itself; a brace pattern
    (``train-{000000..000009}.tar``), a URL or a plain path is returned as it is, for
    :func:`resolve_shards` to expand and the loader to open.

    Local matches are absolute paths, so that a matched name such as ``pipe:cmd`` or ``s3:x``
    can never be read as a URL, and resolving a result again gives it back unchanged.
    Braces and glob characters together are brace-expanded first, then each part globbed.
    Raises ``ValueError`` when a local glob or directory matches no tar.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"a shard pattern must be a non-empty string, got {pattern!r}")
    local = local_path(pattern)
    if local is None:  # a URL (pipe: included): opened, or refused, by the loader
        return [pattern]
    if os.path.isfile(local):
        return [pattern if scheme_of(pattern) == "file" else os.path.abspath(local)]
    if os.path.isdir(local):
        found = sorted(os.path.abspath(p) for p in glob.glob(os.path.join(glob.escape(local), "*.tar")))
        if not found:
            raise ValueError(f"shard directory {pattern!r} holds no .tar file")
        return found
    if not any(c in local for c in _GLOB_CHARS):
        return [pattern]
    parts = expand_urls(local) if "{" in local else [local]
    found = sorted({os.path.abspath(path) for part in parts for path in glob.glob(part)})
    if not found:
        raise ValueError(f"shard pattern {pattern!r} matches no file")
    return found


def resolve_shards(urls: str | Iterable[str], *, allow_pipe: bool = False) -> list[str]:
    """The concrete shard list of ``urls``: one string (several may be joined with ``::``, the
    webdataset convention, unless the whole string names an existing file) or a list of them,
    each through :func:`glob_shards` and brace expansion.

    Raises ``ValueError`` for an empty result, for a ``pipe:`` URL without ``allow_pipe`` (it
    runs a shell command), and for a URL scheme that no installed ``fsspec`` driver opens.
    """
    if isinstance(urls, (str, os.PathLike)):
        text = os.fspath(urls)
        items = [text] if os.path.isfile(local_path(text) or "") else text.split("::")
    else:
        items = [os.fspath(u) for u in urls]
    shards: list[str] = []
    for item in items:
        for path in glob_shards(item):
            is_local_file = os.path.isfile(local_path(path) or "")
            shards += expand_urls(path) if "{" in path and not is_local_file else [path]
    if not shards:
        raise ValueError(f"no shards in {urls!r}")
    for url in shards:
        _check_scheme(url, allow_pipe=allow_pipe)
    return shards


def _check_scheme(url: str, *, allow_pipe: bool) -> None:
    scheme = scheme_of(url)
    if scheme is None or scheme == "file":
        return
    if scheme == "pipe":
        if not allow_pipe:
            raise ValueError(pipe_refusal(url))
        return
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"shard {url!r}: cannot open {scheme}:// URLs; install fsspec with the "
                         f"filesystem driver for {scheme} (e.g. s3fs for s3://)") from None
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"shard {url!r}: fsspec cannot open {scheme}:// URLs ({exc}); install its driver") from None


@dataclass(frozen=True, kw_only=True)
class LoaderConfig:
    """How :class:`ShardLoader` reads, shuffles and batches.

    Attributes:
        batch_size: samples per batch (packing may put several in one row, and a sample longer
            than ``max_len`` takes several).
        max_len: positions per row; a longer sample is split into pieces of whole chunks.
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
        max_background_per_chunk: background tokens placed per chunk, the rest queued for the next
            chunks (see ``build_sequence``); a session must place them alike
            (``SessionConfig.max_background_per_chunk``, also 16 by default).
        allow_pipe: open ``pipe:CMD`` shard URLs, which run CMD in a shell. Off: such a URL is
            a ``ValueError`` before anything is read.
        max_member_bytes: largest tar member read; a shard with a larger one is read no further.
        max_sample_bytes: largest sample (all its members); a larger one is dropped, counted.
        user_text_dropout: share of samples built without the user's words (``build_sequence``'s
            ``user_text=False``), each sample's draw a function of (seed, epoch, its key). Not part
            of the saved state's settings: it changes what a sample holds, not the place in the data.
    """

    batch_size: int = setting(ge=1)
    max_len: int = setting(ge=1)
    pack: bool = True
    shuffle_shards: bool = True
    # 1000 raw samples of 150 chunks are ~0.2 GB (2 x 48 KB dMel + 96 KB log-mel each, plus any
    # compressed clip); the buffer holds them undecoded, since one decoded clip at 48 patches
    # per chunk is 150 x 48 x 9.6 KB = 69 MB.
    buffer: int = setting(1000, ge=0)
    resampled: bool = False
    seed: int = setting(0, ge=0)
    num_workers: int = setting(0, ge=0)
    epoch: int = setting(0, ge=0)
    max_text_per_chunk: int = setting(16, ge=0)
    max_background_per_chunk: int = setting(16, ge=1)
    allow_pipe: bool = False
    # The largest member the shard stage writes is a window's H.264 clip. Its raw frames bound
    # it: 150 chunks x 2 frames x 48 patches x 1600 px x 1.5 bytes (YUV 4:2:0) = 35 MB, so 64 MiB
    # holds any clip of a default window (30 s, 48-patch budget) with room to spare, and every
    # array of the longest window the model accepts (9000 chunks: 5.8 MB of log-mel). Raise it
    # for longer windows or larger patch budgets.
    max_member_bytes: int = setting(64 << 20, ge=1)
    # One clip at the member cap plus every array of the longest window, twice over.
    max_sample_bytes: int = setting(128 << 20, ge=1)
    user_text_dropout: float = setting(0.0, ge=0.0, le=1.0)

    def __post_init__(self):
        validate(self)


class LoaderStateMismatch(ValueError):
    """A loader state saved over other shards or with other settings: the place it names in the
    data means nothing to this loader."""


class _SampleStream(torch.utils.data.IterableDataset):
    """The pipeline as an IterableDataset; built anew by each iteration in its own process.

    ``active`` is the stream of the latest iteration in this process, ``restore`` the state the
    next iteration starts from (:meth:`ShardLoader.load_state_dict`)."""

    def __init__(self, shards: list[str], tokenizer, cfg: LoaderConfig):
        super().__init__()
        self.shards = shards
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.epoch = cfg.epoch
        self.counters = Counters()
        self.active: ShardStream | None = None
        self.restore: dict | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        rank, world, worker, _ = wds.utils.pytorch_worker_info()
        if not cfg.resampled and len(self.shards) < world:
            raise ValueError(f"{len(self.shards)} shards cannot be split across {world} ranks: "
                             f"rank {rank} would get none; write more shards or use resampled=True")
        state, self.restore = self.restore, None
        stream = ShardStream(self.shards, self.tokenizer, cfg, self.counters, epoch=self.epoch, rank=rank,
                             worker=worker, state=state)
        self.active = stream
        yield from stream.batches()


class ShardLoader:
    """Batches from WebDataset shards of micro-turn samples (see the module docstring).

    Iterating gives the trainer's batch dicts (``microturn.trainer.batch.collate``). Without
    ``resampled`` one iteration is one pass over this rank's shards; call :meth:`set_epoch`
    between passes for a new order, since the same epoch repeats the same batches.
    ``stats`` counts decoded samples and every loss over all iterations.
    """

    def __init__(self, urls: str | list[str], *, tokenizer, config: LoaderConfig):
        self.shards = resolve_shards(urls, allow_pipe=config.allow_pipe)
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
        """Counts so far, summed over workers: ``samples`` decoded; ``skipped`` samples, ``shard_errors``,
        ``bad_members`` (tar members skipped unread); ``split`` samples longer than ``max_len`` and
        the ``pieces`` they gave; ``dropped_chunks`` (longer than ``max_len`` alone) and
        ``text_cut`` tokens (over ``max_text_per_chunk``), ``background_cut`` tokens (background text
        still queued when its window ended)."""
        return self.dataset.counters.snapshot(COUNTERS)

    @property
    def work(self) -> dict[str, int]:
        """How much the loader read, summed over workers: ``read`` raw samples taken from tars,
        ``reread`` of them read again to refill a restored shuffle buffer, ``decoded`` samples
        handed to the decoder (including those that failed)."""
        return self.dataset.counters.snapshot(WORK)

    def _fingerprint(self) -> dict[str, Any]:
        listing = json.dumps(self.shards).encode()
        return {"shards": {"count": len(self.shards), "sha256": hashlib.sha256(listing).hexdigest()},
                "config": {name: getattr(self.config, name) for name in _STATE_CONFIG}}

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands, as JSON-ready values: after the batches taken so far from the
        latest iteration (or where :meth:`load_state_dict` put it), the next iteration of a loader
        given this state with :meth:`load_state_dict` yields the batches this one would have
        yielded next, reading only its buffered samples again and decoding none of them.

        Holds the shards' count and sha256, the settings the batches depend on, epoch, rank and
        world size, the counts of :attr:`stats` (not :attr:`work`, which counts this process's work)
        and the stream's place
        (``loader_stream.ShardStream.state``). Only with ``num_workers=0`` (``ValueError``
        otherwise): the state of worker processes does not reach this one.
        """
        if self.config.num_workers:
            raise ValueError(f"the loader's state is kept with num_workers=0 only (this loader has "
                             f"{self.config.num_workers}); the workers' streams live in other processes")
        rank, world, _, _ = wds.utils.pytorch_worker_info()
        if self.dataset.restore is not None:
            stream = self.dataset.restore
        else:
            stream = None if self.dataset.active is None else self.dataset.active.state()
        return {"version": STATE_VERSION, **self._fingerprint(), "epoch": self.epoch, "rank": rank, "world": world,
                "counts": self.dataset.counters.snapshot(COUNTERS), "stream": stream}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (:meth:`state_dict`, possibly through JSON): the counts are
        restored now, the stream on the next iteration. Raises :class:`LoaderStateMismatch` (a
        ``ValueError``) when the state was saved over other shards or with other settings, and
        ``ValueError`` when it is of another version, rank or world size."""
        if self.config.num_workers:
            raise ValueError(f"the loader's state is kept with num_workers=0 only (this loader has "
                             f"{self.config.num_workers})")
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            found = state.get("version") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"loader state of version {found!r}; this loader reads version {STATE_VERSION}")
        mine = self._fingerprint()
        if state.get("shards") != mine["shards"]:
            raise LoaderStateMismatch(f"the loader state was saved over other shards ({state.get('shards')}; "
                                      f"this loader has {mine['shards']})")
        saved = state.get("config") or {}
        changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in mine["config"].items() if saved.get(k) != v]
        if changed:
            raise LoaderStateMismatch("the loader state was saved with other settings (" + "; ".join(changed) + "); "
                                      "the saved place in the data means nothing with these")
        rank, world, _, _ = wds.utils.pytorch_worker_info()
        if (state.get("rank"), state.get("world")) != (rank, world):
            raise ValueError(f"the loader state is rank {state.get('rank')} of {state.get('world')} processes; "
                             f"this loader is rank {rank} of {world}")
        epoch, counts = state.get("epoch"), state.get("counts") or {}
        if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0) or not (
                isinstance(counts, dict) and all(isinstance(v, int) for v in counts.values())):
            raise ValueError(f"loader state is malformed: epoch {epoch!r} (a whole number >= 0 expected), "
                             f"counts {counts!r} (name -> whole number expected)")
        self.set_epoch(epoch)
        self.dataset.counters.restore(counts)
        self.dataset.active = None
        self.dataset.restore = state.get("stream")

    def summary(self) -> str:
        """One line with every count of :attr:`stats`."""
        s = self.stats
        return (f"loader: {s['samples']} sample(s) read, {s['skipped']} skipped, {s['shard_errors']} shard error(s), "
                f"{s['bad_members']} tar member(s) refused; {s['split']} sample(s) longer than max_len="
                f"{self.config.max_len} split into {s['pieces']} piece(s), {s['dropped_chunks']} chunk(s) longer "
                f"than max_len left out, {s['text_cut']} text token(s) over max_text_per_chunk="
                f"{self.config.max_text_per_chunk} cut, {s['background_cut']} background token(s) cut at the end "
                f"of a window")

    def losses(self) -> int:
        """How many things were lost: skipped samples, shard errors, refused members, left-out
        chunks and cut text and background tokens (splitting loses nothing)."""
        s = self.stats
        return (s["skipped"] + s["shard_errors"] + s["bad_members"] + s["dropped_chunks"] + s["text_cut"]
                + s["background_cut"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._loader)


def make_loader(urls: str | list[str], *, tokenizer, batch_size: int, max_len: int, pack: bool = True,
                shuffle_shards: bool = True, buffer: int = 1000, resampled: bool = False, seed: int = 0,
                num_workers: int = 0, epoch: int = 0, max_text_per_chunk: int = 16, max_background_per_chunk: int = 16,
                allow_pipe: bool = False,
                max_member_bytes: int = LoaderConfig.max_member_bytes,
                max_sample_bytes: int = LoaderConfig.max_sample_bytes, user_text_dropout: float = 0.0) -> ShardLoader:
    """A :class:`ShardLoader` over ``urls`` (brace pattern, local glob or directory, path, URL, or a
    list of them) with the options of :class:`LoaderConfig`. Raises ``ValueError`` for bad
    options, for a ``pipe:`` URL without ``allow_pipe``, or when ``urls`` names no shard."""
    cfg = LoaderConfig(batch_size=batch_size, max_len=max_len, pack=pack, shuffle_shards=shuffle_shards,
                       buffer=buffer, resampled=resampled, seed=seed, num_workers=num_workers, epoch=epoch,
                       max_text_per_chunk=max_text_per_chunk, max_background_per_chunk=max_background_per_chunk,
                       allow_pipe=allow_pipe,
                       max_member_bytes=max_member_bytes, max_sample_bytes=max_sample_bytes,
                       user_text_dropout=user_text_dropout)
    return ShardLoader(urls, tokenizer=tokenizer, config=cfg)
