"""The stages of the shard loader in one process, and their state between batches.

``ShardStream.batches`` runs, for one process or DataLoader worker:

    shard source (resampled: a generator's draws; otherwise this worker's part of the shuffled
    list) -> bounded tar reader from a byte offset -> shuffle buffer (raw bytes) ->
    decode_sample -> build_sequence -> pieces of at most ``max_len`` -> batches -> collate

Between two batches nothing is held half-way (a batch takes whole samples and ``collate``
packs all of them), so :meth:`ShardStream.state` is, as JSON-ready values:

- the source: the resampling generator's state, or the index of the next shard in the list;
- the shard being read: its name, the byte where its next sample begins and how many samples
  it has given (so that a shard's "no sample" check still holds across a resume);
- the shuffle buffer: its generator's state, whether the source has run dry (the buffer is
  then being emptied in a drawn order), and each buffered sample as (shard, byte of its first
  header), not its bytes;
- the run of failures :class:`NoProgress` counts.

A stream built from that state (``state=``) reads the buffered samples again from their
shards (raw bytes, ``reread`` of them; none is decoded) and goes on reading the current shard
from its byte, so it yields exactly the batches the saved stream would have yielded next and
decodes only the samples those batches hold.

Every random choice draws from a ``numpy.random.Generator`` seeded by
``microturn.schemas.seeds.seed_from`` of (seed, epoch[, rank, worker]).
"""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
from webdataset.shardlists import split_by_node, split_by_worker

from microturn.schemas.sample import decode_sample
from microturn.schemas.seeds import seed_from
from microturn.trainer.batch import build_sequence, collate
from microturn.trainer.shard_reader import ReadLimits, SamplePosition, ShardError, iter_samples, open_shard_at, seekable


class StreamConfig(Protocol):
    """The settings a stream reads, read-only (``data.LoaderConfig`` has them all)."""

    @property
    def batch_size(self) -> int: ...

    @property
    def max_len(self) -> int: ...

    @property
    def pack(self) -> bool: ...

    @property
    def shuffle_shards(self) -> bool: ...

    @property
    def buffer(self) -> int: ...

    @property
    def resampled(self) -> bool: ...

    @property
    def seed(self) -> int: ...

    @property
    def max_text_per_chunk(self) -> int: ...

    @property
    def max_background_per_chunk(self) -> int: ...

    @property
    def allow_pipe(self) -> bool: ...

    @property
    def max_member_bytes(self) -> int: ...

    @property
    def max_sample_bytes(self) -> int: ...

    @property
    def user_text_dropout(self) -> float: ...

__all__ = ["COUNTERS", "WORK", "Counters", "NoProgress", "ShardStream", "StreamConfig"]

# What ``ShardLoader.stats`` reports: decoded samples and every kind of loss.
COUNTERS = ("samples", "skipped", "shard_errors", "bad_members", "split", "pieces", "dropped_chunks", "text_cut",
            "background_cut")
# How much work the stream did: raw samples taken from tars (``read``, re-reads included), of
# them read again to refill a restored shuffle buffer (``reread``), and decode attempts
# (``decoded``: every sample handed to decode_sample, whether it decoded or not).
WORK = ("read", "reread", "decoded")


class Counters:
    """Counts shared with DataLoader workers (``multiprocessing.Value``), so that what workers
    skip reaches the parent's ``stats``."""

    def __init__(self):
        ctx = multiprocessing.get_context()
        self.values = {name: ctx.Value("q", 0) for name in COUNTERS + WORK}

    def add(self, name: str, n: int = 1) -> None:
        if n:
            with self.values[name].get_lock():
                self.values[name].value += n

    def snapshot(self, names: tuple[str, ...] = COUNTERS + WORK) -> dict[str, int]:
        return {name: int(self.values[name].value) for name in names}

    def restore(self, counts: dict[str, int]) -> None:
        """Set the counts of :data:`COUNTERS` to ``counts`` (a :meth:`snapshot`; a name it lacks
        starts at 0). Those of :data:`WORK` stay: they count this process's work."""
        for name in COUNTERS:
            v = self.values[name]
            with v.get_lock():
                v.value = int(counts.get(name, 0))


class NoProgress:
    """Gives up on a resampled stream that cannot yield a sample.

    Every failure (a shard that does not open or read on, a shard with no sample, a sample that
    does not decode) is recorded with its shard; a decoded sample clears the record. When the
    failures since the last good sample have come from every shard, and there are more than
    twice the shards plus twice the shuffle buffer of them (so that the buffer has turned over),
    no good sample is coming: a ``ValueError`` ends the stream instead of drawing forever.
    """

    def __init__(self, shards: list[str], buffer: int, enabled: bool):
        self.all = set(shards)
        self.limit = 2 * len(self.all) + 2 * max(buffer, 1)
        self.enabled = enabled
        self.bad: set[str] = set()
        self.count = 0

    def good(self) -> None:
        self.bad.clear()
        self.count = 0

    def failed(self, url: str, exn: BaseException) -> None:
        self.bad.add(url)
        self.count += 1
        if self.enabled and self.count > self.limit and self.bad >= self.all:
            raise ValueError(f"{self.count} failures in a row from all {len(self.all)} shard(s) and no sample read "
                             f"(last: {type(exn).__name__}: {exn}); check that the shards are readable tars") from exn


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _quiet(message: str) -> None:
    """Messages of a re-read: the first reading counted and warned about them already."""


class ShardStream:
    """One pass (or, resampled, an endless stream) of batches in one process (see the module
    docstring); ``state`` continues a saved stream."""

    def __init__(self, shards: list[str], tokenizer, cfg: StreamConfig, counters: Counters, *, epoch: int,
                 rank: int, worker: int, state: dict | None = None):
        self.shards, self.tokenizer, self.cfg, self.counters = shards, tokenizer, cfg, counters
        self.epoch = epoch
        self.limits = ReadLimits(max_member_bytes=cfg.max_member_bytes, max_sample_bytes=cfg.max_sample_bytes)
        self.progress = NoProgress(shards, cfg.buffer, enabled=cfg.resampled)
        self.source_rng: np.random.Generator | None = None
        self.order: list[str] = []
        if cfg.resampled:
            self.source_rng = np.random.default_rng(seed_from("loader/resample", cfg.seed, epoch, rank, worker))
        else:
            order = list(shards)
            if cfg.shuffle_shards:
                # The same permutation on every rank (no rank in the seed), so the node split stays disjoint.
                perm = np.random.default_rng(seed_from("loader/shard-order", cfg.seed, epoch)).permutation(len(order))
                order = [order[int(i)] for i in perm]
            self.order = [item["url"] for item in split_by_worker(split_by_node({"url": u} for u in order))]
        self.index = 0  # next shard of ``order``
        self.url: str | None = None  # the shard being read
        self.offset = 0  # where its next sample begins
        self.in_shard = 0  # samples it has given
        self.shuffle_rng = np.random.default_rng(seed_from("loader/buffer", cfg.seed, epoch, rank, worker))
        self.buffer: list[tuple[tuple[str, int], dict]] = []  # ((shard, byte), raw sample)
        self.draining = False
        self.open_batch = 0  # samples in the batch being built: 0 between batches
        if state is not None:
            self._restore(state)

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The stream's place between two batches, as JSON-ready values."""
        assert self.open_batch == 0, "state() between batches only"
        source = ({"rng": self.source_rng.bit_generator.state} if self.source_rng is not None
                  else {"index": self.index})
        return {"source": source,
                "shard": None if self.url is None else {"url": self.url, "offset": self.offset,
                                                        "samples": self.in_shard},
                "buffer": {"rng": self.shuffle_rng.bit_generator.state, "draining": self.draining,
                           "samples": [[url, at] for (url, at), _ in self.buffer]},
                "progress": {"bad": sorted(self.progress.bad), "count": self.progress.count}}

    def _restore(self, state: dict) -> None:
        try:
            if self.source_rng is not None:
                self.source_rng.bit_generator.state = state["source"]["rng"]
            else:
                self.index = int(state["source"]["index"])
            shard = state["shard"]
            if shard is not None:
                self.url, self.offset, self.in_shard = str(shard["url"]), int(shard["offset"]), int(shard["samples"])
            buf = state["buffer"]
            self.shuffle_rng.bit_generator.state = buf["rng"]
            self.draining = bool(buf["draining"])
            refs = [(str(url), int(at)) for url, at in buf["samples"]]
            self.progress.bad = set(state["progress"]["bad"])
            self.progress.count = int(state["progress"]["count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"loader state is malformed ({type(exc).__name__}: {exc})") from None
        self.buffer = self._reread(refs)

    def _reread(self, refs: list[tuple[str, int]]) -> list[tuple[tuple[str, int], dict]]:
        """The raw samples at ``refs``, in that order: each shard read forward, opened once when
        it can seek (a pipe is opened again for each sample)."""
        found: dict[tuple[str, int], dict] = {}
        for url in dict.fromkeys(url for url, _ in refs):
            stream = None
            try:
                for at in sorted({at for u, at in refs if u == url}):
                    if stream is not None and seekable(stream):
                        stream.seek(at)
                    else:
                        if stream is not None:
                            stream.close()
                        stream = open_shard_at(url, at, allow_pipe=self.cfg.allow_pipe)
                    raw = next(iter_samples(stream, url, self.limits, on_member=_quiet, on_sample=_quiet, start=at),
                               None)
                    if raw is None:
                        raise ShardError(f"no sample at byte {at}")
                    found[(url, at)] = raw
                    self.counters.add("read")
                    self.counters.add("reread")
            except (OSError, ShardError) as exc:
                raise ValueError(f"cannot restore the loader's shuffle buffer from {url!r}: {type(exc).__name__}: "
                                 f"{exc}; the shards changed since the checkpoint") from None
            finally:
                if stream is not None:
                    stream.close()
        return [(ref, found[ref]) for ref in refs]

    # -- stages --------------------------------------------------------------------------------

    def _next_url(self) -> str | None:
        if self.source_rng is not None:
            return self.shards[int(self.source_rng.integers(len(self.shards)))]
        if self.index >= len(self.order):
            return None
        self.index += 1
        return self.order[self.index - 1]

    def _raw(self) -> Iterator[tuple[tuple[str, int], dict]]:
        """((shard, byte), raw sample) of each shard in turn; every failure counted, warned, recorded."""
        counters = self.counters

        def bad_member(message: str) -> None:
            counters.add("bad_members")
            _warn(f"skipped a tar member: {message}")

        def bad_sample(message: str) -> None:
            counters.add("skipped")
            _warn(f"skipped a sample: {message}")

        while True:
            if self.url is None:
                url = self._next_url()
                if url is None:
                    return
                self.url, self.offset, self.in_shard = url, 0, 0
            url = self.url
            position = SamplePosition()
            try:
                with open_shard_at(url, self.offset, allow_pipe=self.cfg.allow_pipe) as stream:
                    for raw in iter_samples(stream, url, self.limits, on_member=bad_member, on_sample=bad_sample,
                                            start=self.offset, position=position):
                        self.in_shard += 1
                        self.offset = position.end
                        counters.add("read")
                        yield (url, position.start), raw
                if self.in_shard == 0:
                    raise ShardError("the shard holds no sample")
            except GeneratorExit:
                raise
            except Exception as exn:  # a missing, unreadable or malformed shard must not end the epoch
                counters.add("shard_errors")
                _warn(f"skipped a shard: {url!r}: {type(exn).__name__}: {exn}"
                      + (f" (after {self.in_shard} sample(s))" if self.in_shard else ""))
                self.progress.failed(url, exn)
            self.url = None

    def _shuffled(self) -> Iterator[dict]:
        """Buffer shuffle: fill ``buffer`` samples, then emit a random one for each new one; when
        the source runs dry, the rest in a drawn order."""
        size = self.cfg.buffer
        if size <= 1:
            for _, raw in self._raw():
                yield raw
            return
        if not self.draining:
            for item in self._raw():
                if len(self.buffer) < size:
                    self.buffer.append(item)
                    continue
                i = int(self.shuffle_rng.integers(size))
                self.buffer[i], item = item, self.buffer[i]
                yield item[1]
            self.buffer = [self.buffer[int(i)] for i in self.shuffle_rng.permutation(len(self.buffer))]
            self.draining = True
        while self.buffer:
            yield self.buffer.pop(0)[1]

    def _keeps_user_text(self, raw: dict) -> bool:
        """Whether the sample keeps its user words under ``user_text_dropout``: a draw keyed by
        (seed, epoch, sample key), so a resumed or re-read stream makes the same choice without
        saving any state (a resampled run's window keeps its choice for the epoch)."""
        p = self.cfg.user_text_dropout
        if p <= 0.0:
            return True
        draw = seed_from("loader/user-text-dropout", self.cfg.seed, self.epoch, str(raw.get("__key__", "")))
        return draw / (1 << 63) >= p

    def _pieces(self, raw: dict) -> list:
        """The sample's pieces of at most ``max_len`` positions (see ``Sequence.pieces``); [] when
        it does not decode."""
        cfg, counters = self.cfg, self.counters
        counters.add("decoded")
        try:
            seq = build_sequence(decode_sample(raw), self.tokenizer, max_text_per_chunk=cfg.max_text_per_chunk,
                                 max_background_per_chunk=cfg.max_background_per_chunk, warn=False,
                                 user_text=self._keeps_user_text(raw))
        except Exception as exn:  # untrusted bytes: npy, JSON and H.264 readers raise many types
            counters.add("skipped")
            _warn(f"skipped a sample: {type(exn).__name__}: {exn} (sample {raw.get('__key__')!r} of "
                  f"{raw.get('__url__')!r})")
            self.progress.failed(str(raw.get("__url__")), exn)
            return []
        self.progress.good()
        pieces, dropped = seq.pieces(cfg.max_len)
        counters.add("samples")
        counters.add("text_cut", seq.text_cut)
        counters.add("background_cut", seq.background_cut)
        counters.add("dropped_chunks", dropped)
        if len(pieces) > 1 or dropped:
            counters.add("split")
            counters.add("pieces", len(pieces))
        return pieces

    def batches(self) -> Iterator[dict]:
        """Batches of ``batch_size`` samples (the last of a pass may hold fewer)."""
        cfg = self.cfg
        batch: list = []
        for raw in self._shuffled():
            pieces = self._pieces(raw)
            if not pieces:
                continue
            batch += pieces
            self.open_batch += 1
            if self.open_batch == cfg.batch_size:
                self.open_batch = 0
                yield collate(batch, max_len=cfg.max_len, pack=cfg.pack, counts={})
                batch = []
        if batch:
            self.open_batch = 0
            yield collate(batch, max_len=cfg.max_len, pack=cfg.pack, counts={})
