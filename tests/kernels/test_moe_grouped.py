"""Expert-grouped MoE kernels and the T-threshold dispatcher against the PyTorch reference, under
the Triton interpreter in fp32.

Shape legend: T tokens, K top-k, E experts, D model dim, F expert hidden dim.
The grouped kernels run one program per (expert, tile), so with E = 4 and one tile of D = 37 and
F = 53 a call is 8 interpreted programs (about 0.15 s).
"""

import os

# Must precede the first import of triton: @triton.jit picks the interpreter at decoration time.
os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from moe_cases import NUM_EXPERTS, bad_inputs, make_case, rel_error  # noqa: E402

from microturn.kernels import DEFAULT_THRESHOLD, dispatch, moe_decode, moe_gemv, moe_grouped, moe_reference  # noqa: E402

# fp32 with a different summation order than the reference: measured about 2.6e-7 relative error.
FP32_REL_TOL = 1e-5
MODEL_DIM, HIDDEN = 37, 53  # primes: every tile is ragged


def _make_case(num_tokens, top_k, seed, ids_TK=None, model_dim=MODEL_DIM, hidden=HIDDEN):
    return make_case(num_tokens, model_dim, hidden, top_k, seed, ids_TK)


@pytest.mark.parametrize("top_k", [1, 2, NUM_EXPERTS])
@pytest.mark.parametrize("num_tokens", [1, 7, 33])
def test_matches_reference(num_tokens, top_k):
    case = _make_case(num_tokens, top_k, seed=100 * num_tokens + top_k)
    y_TD = moe_grouped(*case)
    assert y_TD.shape == (num_tokens, MODEL_DIM) and y_TD.dtype == torch.float32
    assert rel_error(y_TD, moe_reference(*case)) <= FP32_REL_TOL


def test_multiple_tiles_in_every_dimension():
    # T*K = 80 routes over 4 experts (> BLOCK_T = 32 per expert) and D, F above one 64-wide tile.
    case = _make_case(40, 2, seed=8, model_dim=67, hidden=131)
    assert rel_error(moe_grouped(*case), moe_reference(*case)) <= FP32_REL_TOL


def test_all_tokens_routed_to_one_expert():
    # 33 routes on expert 2: two route tiles, the second holding one route.
    case = _make_case(33, 1, seed=3, ids_TK=np.full((33, 1), 2))
    assert rel_error(moe_grouped(*case), moe_reference(*case)) <= FP32_REL_TOL


def test_unused_experts_and_int32_ids():
    # Experts 1 and 3 receive no token; int32 ids exercise the other accepted id dtype.
    ids_TK = np.array([[0, 2], [2, 0], [0, 2], [2, 0], [0, 2], [2, 0], [0, 2]])
    x_TD, ids64_TK, *rest = _make_case(7, 2, seed=4, ids_TK=ids_TK)
    y_TD = moe_grouped(x_TD, ids64_TK.to(torch.int32), *rest)
    assert rel_error(y_TD, moe_reference(x_TD, ids64_TK, *rest)) <= FP32_REL_TOL


def test_empty_batch_returns_empty_output():
    x_TD, ids_TK, weights_TK, *experts = _make_case(1, 2, seed=5)
    assert moe_grouped(x_TD[:0], ids_TK[:0], weights_TK[:0], *experts).shape == (0, MODEL_DIM)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_tokens=st.integers(2, 9))
def test_deterministic_and_batch_permutation_equivariant(seed, num_tokens):
    x_TD, ids_TK, weights_TK, *experts = _make_case(num_tokens, 2, seed=seed)
    y_TD = moe_grouped(x_TD, ids_TK, weights_TK, *experts)
    assert torch.equal(moe_grouped(x_TD, ids_TK, weights_TK, *experts), y_TD)
    # Reordering tokens changes which routes share a tile, so rows match within tolerance only.
    order_T = torch.from_numpy(np.random.default_rng(seed).permutation(num_tokens))
    shuffled_TD = moe_grouped(x_TD[order_T], ids_TK[order_T], weights_TK[order_T], *experts)
    assert rel_error(shuffled_TD, y_TD[order_T]) <= FP32_REL_TOL


def _recording(kernel, calls):
    def wrapped(*args):
        calls.append(kernel.__name__)
        return kernel(*args)

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
    y_TD = moe_decode(*case) if threshold is None else moe_decode(*case, threshold=threshold)
    assert calls == [expected]
    assert rel_error(y_TD, moe_reference(*case)) <= FP32_REL_TOL


def test_dispatcher_default_sends_small_batches_to_gemv_with_equal_results(monkeypatch):
    calls = []
    monkeypatch.setattr(dispatch, "moe_gemv", _recording(moe_gemv, calls))
    case = _make_case(2, 2, seed=9)
    y_TD = moe_decode(*case)
    assert calls == ["moe_gemv"] and torch.equal(y_TD, moe_gemv(*case))
    assert rel_error(moe_grouped(*case), y_TD) <= FP32_REL_TOL


@pytest.mark.parametrize("threshold, error", [(-1, ValueError), (2.5, TypeError), (True, TypeError)])
def test_dispatcher_rejects_bad_threshold(threshold, error):
    with pytest.raises(error):
        moe_decode(*_make_case(1, 1, seed=1), threshold=threshold)


@pytest.mark.parametrize("threshold", [None, 0, 100], ids=["grouped", "decode-grouped", "decode-gemv"])
def test_bad_inputs_raise_like_moe_gemv(threshold):
    def run(args):
        return moe_grouped(*args) if threshold is None else moe_decode(*args, threshold=threshold)

    for label, args, error in bad_inputs():
        with pytest.raises(error) as grouped_info:
            run(args)
            pytest.fail(f"{label}: no {error.__name__}")
        with pytest.raises(error) as gemv_info:
            moe_gemv(*args)
        assert str(grouped_info.value) == str(gemv_info.value), label


def test_batches_past_32_bit_offsets_are_refused():
    # T*K*D just reaches 2**31; stride-0 views keep the inputs a few bytes.
    *_, w_gate_EFD, w_up_EFD, w_down_EDF = _make_case(1, 2, seed=5)
    num_tokens = -(-(2**31) // (2 * max(MODEL_DIM, HIDDEN)))
    x_TD = torch.zeros(1, MODEL_DIM).expand(num_tokens, MODEL_DIM)
    ids_TK = torch.tensor([[0, 1]]).expand(num_tokens, 2)
    weights_TK = torch.full((1, 2), 0.5).expand(num_tokens, 2)
    with pytest.raises(ValueError, match="split the batch"):
        moe_grouped(x_TD, ids_TK, weights_TK, w_gate_EFD, w_up_EFD, w_down_EDF)
