"""The KV cache and its attention window (``trainer.kv_cache``): eviction keeps exactly what the
window still allows, the mask is the window and causality over held and new positions, stored
keys and values follow their positions through eviction and growth, and misuse is refused.

Shape suffixes follow microturn.schemas.legend: B rows, G key/value heads, L positions,
Q head width.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microturn.trainer.kv_cache import AttentionWindow, KVCache

PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cache(window: AttentionWindow, capacity: int = 4, batch: int = 1) -> KVCache:
    return KVCache(layers=2, kv_heads=1, head_dim=2, window=window, batch=batch, capacity=capacity)


def _windows():
    return st.builds(AttentionWindow, chunks=st.none() | st.integers(1, 5), sink_chunks=st.integers(0, 2))


# Feeds: per chunk, how many forwards and how many positions each (as a session feeds a
# chunk's inputs, then a token at a time).
_FEEDS = st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3), min_size=1, max_size=12)


@PROPS
@given(window=_windows(), feeds=_FEEDS, capacity=st.integers(1, 8))
def test_the_cache_holds_exactly_what_the_window_allows_and_masks_it(window, feeds, capacity):
    cache = _cache(window, capacity)
    fed_time: list[int] = []  # chunk of every position ever fed, in order
    for chunk, sizes in enumerate(feeds):
        for size in sizes:
            time_BL = torch.full((1, size), chunk)
            mask_B1LL = cache.reserve(time_BL)
            # Eviction: the held positions are the fed ones some query of this chunk may see.
            expected = [(i, t) for i, t in enumerate(fed_time)
                        if window.chunks is None or t > chunk - window.chunks or t < window.sink_chunks]
            held = cache.length
            assert cache.time_L[:held].tolist() == [t for _, t in expected]
            assert mask_B1LL.shape == (1, 1, size, held + size) and mask_B1LL.dtype == torch.bool
            # Mask: a new query sees every held key (all allowed), and the new ones up to itself.
            assert mask_B1LL[0, 0, :, :held].all()
            assert torch.equal(mask_B1LL[0, 0, :, held:], torch.ones(size, size, dtype=torch.bool).tril())
            # Values follow their positions through eviction and growth: each layer stores the
            # global index of the position as its key (and its negative as its value).
            index = torch.arange(len(fed_time), len(fed_time) + size, dtype=torch.float32)
            for layer in cache.layers:
                k_BGLQ = index.view(1, 1, size, 1).expand(1, 1, size, 2)
                keys, values = layer.append(k_BGLQ, -k_BGLQ)
                assert keys[0, 0, :, 0].tolist() == [float(i) for i, _ in expected] + index.tolist()
                assert torch.equal(values, -keys)
            cache.commit()
            fed_time += [chunk] * size
        if window.chunks is not None:
            # Bounded: at most the window's chunks, the sink's and the one being fed.
            assert len(set(cache.time_L[:cache.length].tolist())) <= window.chunks + window.sink_chunks + 1
    assert cache.capacity >= cache.length and cache.pending == 0


@PROPS
@given(window=_windows(), query=st.lists(st.integers(0, 20), min_size=1, max_size=6),
       key=st.lists(st.integers(0, 20), min_size=1, max_size=6))
def test_allowed_is_the_window_and_the_sink_and_keep_agrees(window, query, key):
    q_L, k_L = torch.tensor(query), torch.tensor(key)
    allowed_LL = window.allowed(q_L, k_L)
    assert allowed_LL.shape == (len(query), len(key))
    for i, q in enumerate(query):
        for j, k in enumerate(key):
            visible = window.chunks is None or q - window.chunks < k or k < window.sink_chunks
            assert bool(allowed_LL[i, j]) == visible
    # keep(first) is what some query of chunk >= first may see: for a window it is the keys
    # a query of chunk `first` sees (later queries see no earlier key).
    first = min(query)
    assert torch.equal(window.keep(k_L, first), window.allowed(torch.tensor([first]), k_L)[0])


def test_rows_decoded_together_share_one_mask():
    cache = _cache(AttentionWindow(chunks=2, sink_chunks=0), batch=3)
    mask_B1LL = cache.reserve(torch.zeros((3, 2), dtype=torch.long))
    assert mask_B1LL.shape == (3, 1, 2, 2)
    for layer in cache.layers:
        keys, _ = layer.append(torch.ones(3, 1, 2, 2), torch.ones(3, 1, 2, 2))
        assert keys.shape == (3, 1, 2, 2)
    cache.commit()
    assert cache.length == 2
    with pytest.raises(ValueError, match=r"\[3, L\]"):
        cache.reserve(torch.zeros((1, 2), dtype=torch.long))


def test_memory_stops_growing_under_a_window():
    cache = _cache(AttentionWindow(chunks=3, sink_chunks=1), capacity=2)
    sizes = []
    for chunk in range(60):
        cache.reserve(torch.full((1, 5), chunk))
        for layer in cache.layers:
            layer.append(torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2))
        cache.commit()
        sizes.append(cache.nbytes())
    assert cache.length <= (3 + 1) * 5  # the window's 3 chunks and the sink's
    assert sizes[-1] == sizes[10] > 0


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="positive"):
        KVCache(layers=0, kv_heads=1, head_dim=2, window=AttentionWindow())
    with pytest.raises(ValueError):
        AttentionWindow(chunks=0)
    with pytest.raises(ValueError):
        AttentionWindow(sink_chunks=-1)
    cache = _cache(AttentionWindow())
    with pytest.raises(ValueError, match="time_BL"):
        cache.reserve(torch.zeros(3, dtype=torch.long))
    cache.reserve(torch.full((1, 2), 5))
    with pytest.raises(RuntimeError, match="commit"):
        cache.reserve(torch.full((1, 1), 5))
    for layer in cache.layers:
        layer.append(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    cache.commit()
    with pytest.raises(ValueError, match="before the cached chunk 5"):
        cache.reserve(torch.full((1, 1), 4))
