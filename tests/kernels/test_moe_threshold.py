"""The dispatcher's measured threshold: the crossover rule, a real measurement under the Triton
interpreter, and the once-per-process cache.

Shape suffixes follow microturn.schemas.legend: U tokens, J top-k, E experts, D model width,
I expert hidden width. tests/conftest.py turns the Triton interpreter on before any import.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from moe_cases import bad_ids, bad_inputs, make_case

from microturn.kernels import DEFAULT_THRESHOLD, crossover, dispatch, measure_threshold, moe_decode, moe_gemv
from microturn.kernels import threshold as threshold_mod

GRID = (1, 2, 4, 8, 16, 32, 64)


@pytest.mark.parametrize(
    "gemv_s, grouped_s, expected",
    [
        ([1, 2, 3, 4, 5, 6, 7], [9, 9, 9, 9, 9, 9, 9], 64),  # gemv always faster
        ([5, 5, 5, 5, 5, 5, 5], [1, 1, 1, 1, 1, 1, 1], 0),  # grouped always faster
        ([1, 2, 4, 8, 16, 32, 64], [6, 6, 6, 6, 6, 6, 6], 4),  # crosses between 4 and 8
        ([1, 1, 9, 1, 9, 9, 9], [5, 5, 5, 5, 5, 5, 5], 2),  # the first crossing counts, not a later dip
        ([3, 3, 3, 3, 3, 3, 3], [3, 3, 3, 3, 3, 3, 3], 64),  # a tie keeps gemv (batch invariant)
    ],
)
def test_crossover(gemv_s, grouped_s, expected):
    assert crossover(GRID, gemv_s, grouped_s) == expected


@given(st.lists(st.tuples(st.floats(1e-6, 1.0), st.floats(1e-6, 1.0)), min_size=len(GRID), max_size=len(GRID)))
def test_crossover_invariants(times):
    gemv_s, grouped_s = zip(*times, strict=True)
    U = crossover(GRID, gemv_s, grouped_s)
    assert U == 0 or U in GRID
    upto = GRID.index(U) + 1 if U else 0
    # gemv is no slower at every U up to the threshold, and slower at the next grid point.
    assert all(g <= h for g, h in zip(gemv_s[:upto], grouped_s[:upto], strict=True))
    if upto < len(GRID):
        assert grouped_s[upto] < gemv_s[upto]


@pytest.mark.parametrize(
    "grid, gemv_s, grouped_s",
    [((), (), ()), ((1, 2), (1,), (1, 1)), ((2, 1), (1, 1), (1, 1)), ((0, 1), (1, 1), (1, 1))],
    ids=["empty", "length-mismatch", "decreasing", "zero-batch"],
)
def test_crossover_rejects_bad_grid(grid, gemv_s, grouped_s):
    with pytest.raises(ValueError):
        crossover(grid, gemv_s, grouped_s)


def test_measure_threshold_times_both_kernels_under_the_interpreter():
    *_, w_gate_EID, w_up_EID, w_down_EDI = make_case(1, 37, 53, 2, seed=3)
    found = measure_threshold(w_gate_EID, w_up_EID, w_down_EDI, 2, grid=(1, 2, 3), repeats=1)
    assert found in (0, 1, 2, 3)


@pytest.mark.parametrize("top_k", [0, 5, 1.5, True])
def test_measure_threshold_rejects_bad_top_k(top_k):
    *_, w_gate_EID, w_up_EID, w_down_EDI = make_case(1, 37, 53, 2, seed=3)
    with pytest.raises(ValueError, match="top_k"):
        measure_threshold(w_gate_EID, w_up_EID, w_down_EDI, top_k, grid=(1,), repeats=1)


def test_measured_threshold_is_measured_once_per_shape(monkeypatch):
    calls = []

    def fake_measure(w_gate_EID, w_up_EID, w_down_EDI, top_k):
        calls.append((tuple(w_gate_EID.shape), top_k))
        return 3

    monkeypatch.setattr(threshold_mod, "measure_threshold", fake_measure)
    threshold_mod.forget_measured()
    top2, top1 = make_case(1, 37, 53, 2, seed=3), make_case(1, 37, 53, 1, seed=3)
    assert [threshold_mod.measured_threshold(*top2) for _ in range(3)] == [3, 3, 3]
    threshold_mod.measured_threshold(*top1)  # another top-k is another measurement
    assert calls == [((4, 53, 37), 2), ((4, 53, 37), 1)]
    threshold_mod.forget_measured()
    threshold_mod.measured_threshold(*top2)
    assert len(calls) == 3
    threshold_mod.forget_measured()


def test_dispatcher_uses_the_fallback_off_cuda(monkeypatch):
    def refuse(*args):
        raise AssertionError("no measurement off CUDA")

    monkeypatch.setattr(dispatch, "measured_threshold", refuse)
    calls = []
    monkeypatch.setattr(dispatch, "moe_gemv", lambda *a, **k: calls.append("gemv") or moe_gemv(*a, **k))
    moe_decode(*make_case(DEFAULT_THRESHOLD, 37, 53, 2, seed=4))
    assert calls == ["gemv"]


def _bad_calls(validate):
    """bad_inputs() and bad_ids() with the error each raises under ``validate``."""
    id_error = ValueError if validate else RuntimeError  # RuntimeError: the device-side assert on CPU
    return [*bad_inputs(), *((label, args, id_error) for label, args, _ in bad_ids())]


@pytest.mark.parametrize("validate", [False, True])
def test_dispatcher_checks_inputs_before_measuring(monkeypatch, validate):
    monkeypatch.setattr(dispatch, "measured_threshold", lambda *a, **k: pytest.fail("measured bad inputs"))
    for label, args, error in _bad_calls(validate):
        with pytest.raises(error):
            moe_decode(*args, validate=validate)
            pytest.fail(f"{label}: no {error.__name__}")


@pytest.mark.parametrize("validate", [False, True])
def test_measured_threshold_checks_inputs_before_measuring(monkeypatch, validate):
    monkeypatch.setattr(threshold_mod, "measure_threshold", lambda *a: pytest.fail("measured bad inputs"))
    threshold_mod.forget_measured()
    for label, args, error in _bad_calls(validate):
        with pytest.raises(error):
            threshold_mod.measured_threshold(*args, validate=validate)
            pytest.fail(f"{label}: no {error.__name__}")
