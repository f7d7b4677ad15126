"""The key/value cache of a live session, and the attention window that bounds it.

A session feeds the model a few new positions at a time (a chunk's inputs, then each token it
says). Every block keeps the rotated keys and values of the positions it has seen, so a new
position costs one pass over the new positions plus attention over the held ones, instead of a
forward of the whole prefix.

Window. With ``AttentionWindow(chunks=W, sink_chunks=S)`` a query of chunk t attends to the keys
of chunks t - W + 1 .. t and to those of the first S chunks of the sequence (an attention sink,
Xiao et al. 2024, "Efficient Streaming Language Models with Attention Sinks": the first positions
collect attention mass that a model needs somewhere, and dropping them hurts more than dropping
any other old position). Positions outside every window still to come are evicted, so the cache
holds at most ``(W + S + 1)`` chunks of positions and a step's cost stops growing once the
session is W chunks long. Exactness: with a window, step-by-step decoding equals a teacher-forced
forward under the same window (``InteractionModel.hidden(..., window=)``), not a forward with
full attention; for a session no longer than W chunks the two coincide. ``chunks=None`` keeps
everything (exact against full attention; memory and cost grow with the session).

Storage is preallocated and doubled when full (amortised O(1) per position), and eviction moves
the kept positions to the front once per call that starts a chunk, so a step copies at most
the window, never the whole history.

Shape suffixes follow :mod:`microturn.schemas.legend`: B rows (sequences decoded together),
G key/value heads, L positions, Q head width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from microturn.schemas.config import setting, validate


@dataclass(frozen=True, kw_only=True)
class AttentionWindow:
    """Which earlier chunks a query may attend to (see the module notes).

    Attributes:
        chunks: W, the chunks a query sees counting its own (None: all).
        sink_chunks: S, the first chunks of the sequence every query also sees (0: none).
    """

    chunks: int | None = setting(None, ge=1)
    sink_chunks: int = setting(1, ge=0)

    def __post_init__(self) -> None:
        validate(self)

    def allowed(self, query_time: torch.Tensor, key_time: torch.Tensor) -> torch.Tensor:
        """bool [..., Lq, Lk]: the window allows query (chunk ``query_time[..., i]``) to see key
        (chunk ``key_time[..., j]``). Causality is not part of it."""
        q = query_time.unsqueeze(-1)
        k = key_time.unsqueeze(-2)
        if self.chunks is None:
            return torch.ones(torch.broadcast_shapes(q.shape, k.shape), dtype=torch.bool, device=q.device)
        return (k > q - self.chunks) | (k < self.sink_chunks)

    def keep(self, key_time: torch.Tensor, first_query_time: int) -> torch.Tensor:
        """bool [L]: the keys some query of chunk ``first_query_time`` or later may still see."""
        if self.chunks is None:
            return torch.ones_like(key_time, dtype=torch.bool)
        return (key_time > first_query_time - self.chunks) | (key_time < self.sink_chunks)


class LayerCache:
    """The keys and values of one attention layer (owned by a :class:`KVCache`)."""

    def __init__(self, owner: KVCache) -> None:
        self._owner = owner
        shape = (owner.batch, owner.kv_heads, owner.capacity, owner.head_dim)
        self.k_BGLQ = torch.zeros(shape, dtype=owner.dtype, device=owner.device)
        self.v_BGLQ = torch.zeros(shape, dtype=owner.dtype, device=owner.device)

    def _resize(self, capacity: int, keep_L: torch.Tensor | None) -> None:
        held = self._owner.length
        shape = (self.k_BGLQ.shape[0], self.k_BGLQ.shape[1], capacity, self.k_BGLQ.shape[3])
        k_BGLQ = self.k_BGLQ.new_zeros(shape)
        v_BGLQ = self.v_BGLQ.new_zeros(shape)
        if keep_L is None:
            k_BGLQ[:, :, :held] = self.k_BGLQ[:, :, :held]
            v_BGLQ[:, :, :held] = self.v_BGLQ[:, :, :held]
        else:
            kept = int(keep_L.shape[0])
            k_BGLQ[:, :, :kept] = self.k_BGLQ[:, :, keep_L]
            v_BGLQ[:, :, :kept] = self.v_BGLQ[:, :, keep_L]
        self.k_BGLQ, self.v_BGLQ = k_BGLQ, v_BGLQ

    def append(self, k_BGLQ: torch.Tensor, v_BGLQ: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions' keys and values after the held ones; returns all of them
        (views of the storage, held then new)."""
        start = self._owner.length
        end = start + k_BGLQ.shape[2]
        assert end == start + self._owner.pending  # reserve() made room for exactly these
        self.k_BGLQ[:, :, start:end] = k_BGLQ
        self.v_BGLQ[:, :, start:end] = v_BGLQ
        return self.k_BGLQ[:, :, :end], self.v_BGLQ[:, :, :end]


class KVCache:
    """Keys and values of every layer for B sequences decoded in step (one row each), with the
    chunk of every held position for the window.

    Use: ``mask = cache.reserve(time_BL)`` before a forward of new positions (evicts what the
    window no longer needs, makes room, returns the attention mask [B, 1, new, held + new]), each
    layer's ``cache.layers[i].append(k, v)`` during it, ``cache.commit()`` after.
    """

    def __init__(self, *, layers: int, kv_heads: int, head_dim: int, window: AttentionWindow,
                 batch: int = 1, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 capacity: int = 256) -> None:
        if layers < 1 or kv_heads < 1 or head_dim < 1 or batch < 1 or capacity < 1:
            raise ValueError(f"KVCache sizes must be positive, got layers={layers}, kv_heads={kv_heads}, "
                             f"head_dim={head_dim}, batch={batch}, capacity={capacity}")
        self.batch, self.kv_heads, self.head_dim = batch, kv_heads, head_dim
        self.dtype, self.device, self.capacity = dtype, torch.device(device), capacity
        self.window = window
        self.length = 0  # held positions
        self.pending = 0  # new positions of the forward in progress
        self.time_L = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.layers = [LayerCache(self) for _ in range(layers)]

    def _resize(self, capacity: int, keep_L: torch.Tensor | None = None) -> None:
        for layer in self.layers:
            layer._resize(capacity, keep_L)
        time_L = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        if keep_L is None:
            time_L[:self.length] = self.time_L[:self.length]
        else:
            time_L[:keep_L.shape[0]] = self.time_L[keep_L]
            self.length = int(keep_L.shape[0])
        self.time_L, self.capacity = time_L, capacity

    def reserve(self, time_BL: torch.Tensor) -> torch.Tensor:
        """Prepare for the new positions whose chunks are ``time_BL`` [B, L] (every row the same
        times; non-decreasing, and not before the held positions). Returns the bool attention
        mask [B, 1, L, held + L]."""
        if time_BL.dim() != 2 or time_BL.shape[0] != self.batch:
            raise ValueError(f"time_BL must be [{self.batch}, L], got shape {tuple(time_BL.shape)}")
        if self.pending:
            raise RuntimeError("KVCache.reserve called twice without commit()")
        time_L = time_BL[0].to(self.device)
        new = int(time_L.shape[0])
        first = int(time_L[0]) if new else 0
        held_L = self.time_L[:self.length]
        if self.length and first < int(held_L[-1]):
            raise ValueError(f"new positions start at chunk {first}, before the cached chunk {int(held_L[-1])}")
        keep_L = self.window.keep(held_L, first)
        if not bool(keep_L.all()):
            kept_L = keep_L.nonzero().squeeze(1)
            self._resize(self.capacity, kept_L)  # copies the kept positions to the front
        if self.length + new > self.capacity:
            self._resize(max(2 * self.capacity, self.length + new))
        self.time_L[self.length:self.length + new] = time_L
        self.pending = new
        all_L = self.time_L[:self.length + new]
        mask_LL = self.window.allowed(time_L, all_L)
        causal_LL = torch.ones(new, self.length + new, dtype=torch.bool, device=self.device).tril(self.length)
        return (mask_LL & causal_LL).expand(self.batch, 1, new, self.length + new)

    def commit(self) -> None:
        """The forward of the reserved positions is done: they are held from now on."""
        self.length += self.pending
        self.pending = 0

    def nbytes(self) -> int:
        """Bytes of key/value storage allocated (capacity, not only what is held)."""
        return sum(layer.k_BGLQ.nbytes + layer.v_BGLQ.nbytes for layer in self.layers)
