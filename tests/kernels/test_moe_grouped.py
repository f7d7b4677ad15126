"""Expert-grouped MoE kernels and the U-threshold dispatcher against the PyTorch reference, under
the Triton interpreter in fp32.

Shape suffixes follow microturn.schemas.legend: U tokens, J top-k, E experts, D model width,
I expert hidden width. tests/conftest.py turns the Triton interpreter on before any import.
The grouped kernels run one program per (expert, tile), so with E = 4 and one tile of D = 37 and
I = 53 a call is 8 interpreted programs (about 0.15 s).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from moe_cases import NUM_EXPERTS, bad_ids, bad_inputs, make_case, rel_error

from microturn.kernels import DEFAULT_THRESHOLD, dispatch, moe_decode, moe_gemv, moe_grouped, moe_reference

# fp32 with a different summation order than the reference: measured about 2.6e-7 relative error.
FP32_REL_TOL = 1e-5
MODEL_DIM, HIDDEN = 37, 53  # primes: every tile is ragged


def _make_case(num_tokens, top_k, seed, ids_UJ=None, model_dim=MODEL_DIM, hidden=HIDDEN):
    return make_case(num_tokens, model_dim, hidden, top_k, seed, ids_UJ)


@pytest.mark.parametrize("top_k", [1, 2, NUM_EXPERTS])
@pytest.mark.parametrize("num_tokens", [1, 7, 33])
def test_matches_reference(num_tokens, top_k):
    case = _make_case(num_tokens, top_k, seed=100 * num_tokens + top_k)
    y_UD = moe_grouped(*case)
    assert y_UD.shape == (num_tokens, MODEL_DIM) and y_UD.dtype == torch.float32
    assert rel_error(y_UD, moe_reference(*case)) <= FP32_REL_TOL


def test_multiple_tiles_in_every_dimension():
    # U*J = 80 routes over 4 experts (> BLOCK_R = 32 per expert) and D, I above one 64-wide tile.
    case = _make_case(40, 2, seed=8, model_dim=67, hidden=131)
    assert rel_error(moe_grouped(*case), moe_reference(*case)) <= FP32_REL_TOL


def test_all_tokens_routed_to_one_expert():
    # 33 routes on expert 2: two route tiles, the second holding one route.
    case = _make_case(33, 1, seed=3, ids_UJ=np.full((33, 1), 2))
    assert rel_error(moe_grouped(*case), moe_reference(*case)) <= FP32_REL_TOL


def test_unused_experts_and_int32_ids():
    # Experts 1 and 3 receive no token; int32 ids exercise the other accepted id dtype.
    ids_UJ = np.array([[0, 2], [2, 0], [0, 2], [2, 0], [0, 2], [2, 0], [0, 2]])
    x_UD, ids64_UJ, *rest = _make_case(7, 2, seed=4, ids_UJ=ids_UJ)
    y_UD = moe_grouped(x_UD, ids64_UJ.to(torch.int32), *rest)
    assert rel_error(y_UD, moe_reference(x_UD, ids64_UJ, *rest)) <= FP32_REL_TOL


def test_empty_batch_returns_empty_output():
    x_UD, ids_UJ, weights_UJ, *experts = _make_case(1, 2, seed=5)
    assert moe_grouped(x_UD[:0], ids_UJ[:0], weights_UJ[:0], *experts).shape == (0, MODEL_DIM)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_tokens=st.integers(2, 9))
def test_deterministic_and_batch_permutation_equivariant(seed, num_tokens):
    x_UD, ids_UJ, weights_UJ, *experts = _make_case(num_tokens, 2, seed=seed)
    y_UD = moe_grouped(x_UD, ids_UJ, weights_UJ, *experts)
    assert torch.equal(moe_grouped(x_UD, ids_UJ, weights_UJ, *experts), y_UD)
    # Reordering tokens changes which routes share a tile, so rows match within tolerance only.
    order_U = torch.from_numpy(np.random.default_rng(seed).permutation(num_tokens))
    shuffled_UD = moe_grouped(x_UD[order_U], ids_UJ[order_U], weights_UJ[order_U], *experts)
    assert rel_error(shuffled_UD, y_UD[order_U]) <= FP32_REL_TOL


def _recording(kernel, calls):
    def wrapped(*args, **kwargs):
        calls.append(kernel.__name__)
        return kernel(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize(
    "num_tokens, threshold, expected",
    [(7, 7, "moe_gemv"), (7, 6, "moe_grouped"), (1, 0, "moe_grouped"), (DEFAULT_THRESHOLD + 1, None, "moe_grouped")],
)
def test_dispatcher_picks_path_by_threshold(monkeypatch, num_tokens, threshold, expected):
    calls = []
    monkeypatch.setattr(dispatch, "moe_gemv", _recording(moe_gemv, calls))
    monkeypatch.setattr(dispatch, "moe_grouped", _recording(moe_grouped, calls))
    case = _make_case(num_tokens, 2, seed=num_tokens)
    y_UD = moe_decode(*case) if threshold is None else moe_decode(*case, threshold=threshold)
    assert calls == [expected]
    assert rel_error(y_UD, moe_reference(*case)) <= FP32_REL_TOL


def test_dispatcher_default_sends_small_batches_to_gemv_with_equal_results(monkeypatch):
    calls = []
    monkeypatch.setattr(dispatch, "moe_gemv", _recording(moe_gemv, calls))
    case = _make_case(2, 2, seed=9)
    y_UD = moe_decode(*case)
    assert calls == ["moe_gemv"] and torch.equal(y_UD, moe_gemv(*case))
    assert rel_error(moe_grouped(*case), y_UD) <= FP32_REL_TOL


@pytest.mark.parametrize("threshold, error", [(-1, ValueError), (2.5, TypeError), (True, TypeError)])
def test_dispatcher_rejects_bad_threshold(threshold, error):
    with pytest.raises(error):
        moe_decode(*_make_case(1, 1, seed=1), threshold=threshold)


@pytest.mark.parametrize("validate", [False, True])
@pytest.mark.parametrize("threshold", [None, 0, 100], ids=["grouped", "decode-grouped", "decode-gemv"])
def test_bad_inputs_raise_like_moe_gemv(threshold, validate):
    def run(args):
        if threshold is None:
            return moe_grouped(*args, validate=validate)
        return moe_decode(*args, threshold=threshold, validate=validate)

    # Out-of-range ids: a ValueError naming them with validate, the device-side assert without.
    id_error = ValueError if validate else RuntimeError
    for label, args, error in [*bad_inputs(), *((label, args, id_error) for label, args, _ in bad_ids())]:
        with pytest.raises(error) as grouped_info:
            run(args)
            pytest.fail(f"{label}: no {error.__name__}")
        with pytest.raises(error) as gemv_info:
            moe_gemv(*args, validate=validate)
        assert str(grouped_info.value) == str(gemv_info.value), label


def test_batches_past_32_bit_offsets_are_refused():
    # U*J*D just reaches 2**31; stride-0 views keep the inputs a few bytes.
    *_, w_gate_EID, w_up_EID, w_down_EDI = _make_case(1, 2, seed=5)
    num_tokens = -(-(2**31) // (2 * max(MODEL_DIM, HIDDEN)))
    x_UD = torch.zeros(1, MODEL_DIM).expand(num_tokens, MODEL_DIM)
    ids_UJ = torch.tensor([[0, 1]]).expand(num_tokens, 2)
    weights_UJ = torch.full((1, 2), 0.5).expand(num_tokens, 2)
    with pytest.raises(ValueError, match="split the batch"):
        moe_grouped(x_UD, ids_UJ, weights_UJ, w_gate_EID, w_up_EID, w_down_EDI)
