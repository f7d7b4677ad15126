"""Gather-GEMV MoE kernels against the PyTorch reference, under the Triton interpreter in fp32.

Shape legend: T tokens, K top-k, E experts, D model dim, F expert hidden dim.
The interpreter runs every program serially (about 10 ms each), so sizes stay small and the one
T=64 batch that two tests need is computed once.
"""

import os

# Must precede the first import of triton: @triton.jit picks the interpreter at decoration time.
os.environ["TRITON_INTERPRET"] = "1"

import functools  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from moe_cases import NUM_EXPERTS, bad_inputs, make_case, rel_error  # noqa: E402

from microturn.kernels import moe_gemv, moe_reference  # noqa: E402

# fp32 with a different summation order than the reference: measured about 3e-7 relative error.
FP32_REL_TOL = 1e-5
SHAPES_DF = [(37, 53), (64, 96)]  # prime D and F (ragged tiles), and a tile-friendlier pair


@functools.lru_cache(maxsize=None)
def _batch_64():
    """The T=64, D=37, F=53, K=2 case and its kernel output, shared by two tests."""
    case = make_case(64, 37, 53, 2, seed=64)
    return case, moe_gemv(*case)


@pytest.mark.parametrize("model_dim, hidden", SHAPES_DF)
@pytest.mark.parametrize("num_tokens", [1, 2, 7, 64])
def test_matches_reference_over_batch_sizes(num_tokens, model_dim, hidden):
    if (num_tokens, model_dim, hidden) == (64, 37, 53):
        case, y_TD = _batch_64()
    else:
        case = make_case(num_tokens, model_dim, hidden, 2, seed=num_tokens + model_dim)
        y_TD = moe_gemv(*case)
    assert y_TD.shape == (num_tokens, model_dim) and y_TD.dtype == torch.float32
    assert rel_error(y_TD, moe_reference(*case)) <= FP32_REL_TOL


@pytest.mark.parametrize("model_dim, hidden", SHAPES_DF)
@pytest.mark.parametrize("top_k", [1, NUM_EXPERTS])
def test_matches_reference_over_top_k(top_k, model_dim, hidden):
    case = make_case(7, model_dim, hidden, top_k, seed=10 * top_k + model_dim)
    assert rel_error(moe_gemv(*case), moe_reference(*case)) <= FP32_REL_TOL


def test_all_tokens_routed_to_one_expert():
    ids_TK = np.full((7, 1), 2)
    case = make_case(7, 37, 53, 1, seed=3, ids_TK=ids_TK)
    assert rel_error(moe_gemv(*case), moe_reference(*case)) <= FP32_REL_TOL


def test_unused_experts_and_int32_ids():
    # Experts 1 and 3 receive no token; ids in int32 exercise the other accepted id dtype.
    ids_TK = np.array([[0, 2], [2, 0], [0, 2], [2, 0], [0, 2]])
    x_TD, ids64_TK, *rest = make_case(5, 37, 53, 2, seed=4, ids_TK=ids_TK)
    ids32_TK = ids64_TK.to(torch.int32)
    y_TD = moe_gemv(x_TD, ids32_TK, *rest)
    assert rel_error(y_TD, moe_reference(x_TD, ids64_TK, *rest)) <= FP32_REL_TOL


def test_empty_batch_returns_empty_output():
    x_TD, ids_TK, weights_TK, *experts = make_case(1, 37, 53, 2, seed=5)
    y_TD = moe_gemv(x_TD[:0], ids_TK[:0], weights_TK[:0], *experts)
    assert y_TD.shape == (0, 37)


def test_each_token_alone_equals_its_row_in_the_batch():
    # Bitwise on any machine: T only sets the grid, and each program reduces one token's row in a
    # fixed order whatever T is, so no BLAS blocking or batch shape enters the sums.
    (x_TD, ids_TK, weights_TK, *experts), y_TD = _batch_64()
    for token in range(x_TD.shape[0]):
        rows = slice(token, token + 1)
        alone_1D = moe_gemv(x_TD[rows], ids_TK[rows], weights_TK[rows], *experts)
        assert torch.equal(alone_1D, y_TD[rows]), f"token {token} differs alone vs in the T=64 batch"


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_tokens=st.integers(2, 6))
def test_batch_permutation_permutes_rows_bitwise(seed, num_tokens):
    x_TD, ids_TK, weights_TK, *experts = make_case(num_tokens, 37, 53, 2, seed=seed)
    order_T = torch.from_numpy(np.random.default_rng(seed).permutation(num_tokens))
    y_TD = moe_gemv(x_TD, ids_TK, weights_TK, *experts)
    shuffled_TD = moe_gemv(x_TD[order_T], ids_TK[order_T], weights_TK[order_T], *experts)
    assert torch.equal(shuffled_TD, y_TD[order_T])


@pytest.mark.parametrize("moe", [moe_gemv, moe_reference], ids=["moe_gemv", "moe_reference"])
def test_bad_inputs_raise(moe):
    for label, args, error in bad_inputs():
        with pytest.raises(error):
            moe(*args)
            pytest.fail(f"{label}: no {error.__name__}")


# Runs in a fresh interpreter without TRITON_INTERPRET so that the compiled kernels are tested.
_GPU_CHECK = """
import torch
from microturn.kernels import moe_gemv, moe_reference
gen = torch.Generator(device="cuda").manual_seed(0)
for T, D, F, E, K in [(64, 37, 53, 4, 2), (64, 1024, 2816, 8, 2)]:
    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, device="cuda") * scale).to(torch.bfloat16)
    x = rand(T, D)
    wg, wu = rand(E, F, D, scale=D ** -0.5), rand(E, F, D, scale=D ** -0.5)
    wd = rand(E, D, F, scale=F ** -0.5)
    ids = torch.rand(T, E, generator=gen, device="cuda").argsort(dim=1)[:, :K]
    w = torch.rand(T, K, generator=gen, device="cuda").softmax(dim=1)
    y = moe_gemv(x, ids, w, wg, wu, wd)
    ref = moe_reference(x, ids, w, wg, wu, wd).float()
    rel = float((y.float() - ref).norm() / ref.norm())
    # bf16 keeps 8 mantissa bits: one output rounding is at most 2**-9 relative (about 2e-3).
    assert rel <= 1e-2, (T, D, F, rel)
    for t in range(T):
        alone = moe_gemv(x[t:t + 1], ids[t:t + 1], w[t:t + 1], wg, wu, wd)
        assert torch.equal(alone, y[t:t + 1]), (D, F, t)
print("ok")
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to run the compiled kernels")
def test_compiled_bf16_on_gpu():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", _GPU_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-4000:]
