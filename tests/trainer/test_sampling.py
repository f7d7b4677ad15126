"""Choosing a class from logits (``trainer.sampling``): greedy is the argmax, a nucleus draw
never leaves the nucleus and always keeps the best class, draws are the same for the same
generator seed, and bad settings are refused.

Shape suffixes follow microturn.schemas.legend: U rows, V classes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from microturn.schemas.config import from_mapping
from microturn.trainer.sampling import SamplingConfig, choose

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_LOGITS = arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(2, 12)),
                 elements=st.floats(-8, 8, width=32))


def _nucleus(probs_V: np.ndarray, top_p: float) -> set[int]:
    """The smallest set of the most likely classes whose mass reaches top_p (ties: the first)."""
    order = np.argsort(-probs_V, kind="stable")
    kept, mass = set(), 0.0
    for v in order:
        kept.add(int(v))
        mass += float(probs_V[v])
        if mass >= top_p:
            break
    return kept


@PROPS
@given(logits=_LOGITS)
def test_greedy_is_the_argmax_whatever_the_generator(logits):
    logits_UV = torch.from_numpy(logits)
    got = choose(logits_UV, SamplingConfig(), torch.Generator().manual_seed(1))
    assert got.dtype == torch.int64 and torch.equal(got, logits_UV.argmax(-1))
    assert torch.equal(choose(logits_UV, SamplingConfig(temperature=0.1, top_p=0.2), None), got)


@PROPS
@given(logits=_LOGITS, top_p=st.floats(0.05, 0.95), temperature=st.floats(0.25, 4.0), seed=st.integers(0, 2**31))
def test_a_nucleus_draw_stays_in_the_nucleus(logits, top_p, temperature, seed):
    logits_UV = torch.from_numpy(logits)
    cfg = SamplingConfig(greedy=False, temperature=temperature, top_p=top_p)
    probs_UV = (logits_UV.float() / temperature).softmax(-1).numpy()
    # Classes within float rounding of the cut may go either way: keep the test to clear cases.
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):
        got = choose(logits_UV, cfg, gen)
        for u in range(logits.shape[0]):
            allowed = _nucleus(probs_UV[u], top_p - 1e-5) | _nucleus(probs_UV[u], top_p + 1e-5)
            assert int(got[u]) in allowed, (probs_UV[u], top_p, int(got[u]))


@PROPS
@given(logits=_LOGITS, seed=st.integers(0, 2**31))
@example(logits=np.array([[0.0, 1e-30]], dtype=np.float32), seed=0)  # distinct logits, equal probabilities
def test_a_tiny_top_p_keeps_only_the_best_class(logits, seed):
    logits_UV = torch.from_numpy(logits)
    # Ties are judged on the probabilities `choose` ranks, not on the logits: logits 0 and 1e-30
    # differ, but both give exp() = 1.0 in float32, so either class may be kept.
    probs_UV = logits_UV.float().softmax(-1)
    best = probs_UV.argmax(-1)
    top = probs_UV.max(-1, keepdim=True).values
    if int((probs_UV == top).sum()) != logits.shape[0]:
        return  # a tie for the best class: either may be kept
    got = choose(logits_UV, SamplingConfig(greedy=False, top_p=1e-6), torch.Generator().manual_seed(seed))
    assert torch.equal(got, best)


def test_draws_repeat_for_a_seed_and_cover_the_classes():
    logits_UV = torch.zeros(1, 5)
    cfg = SamplingConfig(greedy=False)

    def draws(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return [int(choose(logits_UV, cfg, gen)[0]) for _ in range(200)]

    first = draws(0)
    assert draws(0) == first and draws(1) != first
    assert set(first) == set(range(5))  # uniform logits: every class comes up in 200 draws
    # A low temperature concentrates the draws on the best class.
    sharp = SamplingConfig(greedy=False, temperature=0.05)
    gen = torch.Generator().manual_seed(0)
    logits_UV = torch.tensor([[0.0, 1.0, 0.5]])
    assert {int(choose(logits_UV, sharp, gen)[0]) for _ in range(50)} == {1}


@pytest.mark.parametrize("values, match", [
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_p": float("nan")}, "top_p"),
])
def test_invalid_settings_are_refused(values, match):
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**values)


def test_unknown_keys_and_bad_logits_are_refused():
    with pytest.raises((ValueError, TypeError), match="tempreature"):
        from_mapping(SamplingConfig, {"tempreature": 0.7}, where="session text")
    with pytest.raises(ValueError, match=r"\[U, V\]"):
        choose(torch.zeros(5), SamplingConfig(), None)
