"""Gather-GEMV MoE kernels against the PyTorch reference, under the Triton interpreter in fp32.

Shape suffixes follow microturn.schemas.legend: U tokens, J top-k, E experts, D model width,
I expert hidden width. tests/conftest.py turns the Triton interpreter on before any import.
The interpreter runs every program serially (about 10 ms each), so sizes stay small and the one
U=64 batch that two tests need is computed once.
"""

import functools
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from moe_cases import NUM_EXPERTS, bad_inputs, compiled_env, make_case, rel_error

from microturn.kernels import moe_gemv, moe_reference

# fp32 with a different summation order than the reference: measured about 3e-7 relative error.
FP32_REL_TOL = 1e-5
SHAPES_DF = [(37, 53), (64, 96)]  # prime D and I (ragged tiles), and a tile-friendlier pair


@functools.cache
def _batch_64():
    """The U=64, D=37, I=53, J=2 case and its kernel output, shared by two tests."""
    case = make_case(64, 37, 53, 2, seed=64)
    return case, moe_gemv(*case)


@pytest.mark.parametrize("model_dim, hidden", SHAPES_DF)
@pytest.mark.parametrize("num_tokens", [1, 2, 7, 64])
def test_matches_reference_over_batch_sizes(num_tokens, model_dim, hidden):
    if (num_tokens, model_dim, hidden) == (64, 37, 53):
        case, y_UD = _batch_64()
    else:
        case = make_case(num_tokens, model_dim, hidden, 2, seed=num_tokens + model_dim)
        y_UD = moe_gemv(*case)
    assert y_UD.shape == (num_tokens, model_dim) and y_UD.dtype == torch.float32
    assert rel_error(y_UD, moe_reference(*case)) <= FP32_REL_TOL


@pytest.mark.parametrize("model_dim, hidden", SHAPES_DF)
@pytest.mark.parametrize("top_k", [1, NUM_EXPERTS])
def test_matches_reference_over_top_k(top_k, model_dim, hidden):
    case = make_case(7, model_dim, hidden, top_k, seed=10 * top_k + model_dim)
    assert rel_error(moe_gemv(*case), moe_reference(*case)) <= FP32_REL_TOL


def test_all_tokens_routed_to_one_expert():
    ids_UJ = np.full((7, 1), 2)
    case = make_case(7, 37, 53, 1, seed=3, ids_UJ=ids_UJ)
    assert rel_error(moe_gemv(*case), moe_reference(*case)) <= FP32_REL_TOL


def test_unused_experts_and_int32_ids():
    # Experts 1 and 3 receive no token; ids in int32 exercise the other accepted id dtype.
    ids_UJ = np.array([[0, 2], [2, 0], [0, 2], [2, 0], [0, 2]])
    x_UD, ids64_UJ, *rest = make_case(5, 37, 53, 2, seed=4, ids_UJ=ids_UJ)
    ids32_UJ = ids64_UJ.to(torch.int32)
    y_UD = moe_gemv(x_UD, ids32_UJ, *rest)
    assert rel_error(y_UD, moe_reference(x_UD, ids64_UJ, *rest)) <= FP32_REL_TOL


def test_empty_batch_returns_empty_output():
    x_UD, ids_UJ, weights_UJ, *experts = make_case(1, 37, 53, 2, seed=5)
    y_UD = moe_gemv(x_UD[:0], ids_UJ[:0], weights_UJ[:0], *experts)
    assert y_UD.shape == (0, 37)


def test_each_token_alone_equals_its_row_in_the_batch():
    # Bitwise on any machine: U only sets the grid, and each program reduces one token's row in a
    # fixed order whatever U is, so no BLAS blocking or batch shape enters the sums.
    (x_UD, ids_UJ, weights_UJ, *experts), y_UD = _batch_64()
    for token in range(x_UD.shape[0]):
        rows = slice(token, token + 1)
        alone_1D = moe_gemv(x_UD[rows], ids_UJ[rows], weights_UJ[rows], *experts)
        assert torch.equal(alone_1D, y_UD[rows]), f"token {token} differs alone vs in the U=64 batch"


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_tokens=st.integers(2, 6))
def test_batch_permutation_permutes_rows_bitwise(seed, num_tokens):
    x_UD, ids_UJ, weights_UJ, *experts = make_case(num_tokens, 37, 53, 2, seed=seed)
    order_U = torch.from_numpy(np.random.default_rng(seed).permutation(num_tokens))
    y_UD = moe_gemv(x_UD, ids_UJ, weights_UJ, *experts)
    shuffled_UD = moe_gemv(x_UD[order_U], ids_UJ[order_U], weights_UJ[order_U], *experts)
    assert torch.equal(shuffled_UD, y_UD[order_U])


@pytest.mark.parametrize("validate", [False, True])
@pytest.mark.parametrize("moe", [moe_gemv, moe_reference], ids=["moe_gemv", "moe_reference"])
def test_bad_inputs_raise(moe, validate):
    # Metadata is checked the same way with and without validate (ids: tests/kernels/test_moe_validate.py).
    for label, args, error in bad_inputs():
        with pytest.raises(error):
            moe(*args, validate=validate)
            pytest.fail(f"{label}: no {error.__name__}")


# Runs in a fresh interpreter without TRITON_INTERPRET so that the compiled kernels are tested.
_GPU_CHECK = """
import torch
from microturn.kernels import moe_gemv, moe_reference
gen = torch.Generator(device="cuda").manual_seed(0)
for U, D, I, E, J in [(64, 37, 53, 4, 2), (64, 1024, 2816, 8, 2)]:
    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, device="cuda") * scale).to(torch.bfloat16)
    x = rand(U, D)
    wg, wu = rand(E, I, D, scale=D ** -0.5), rand(E, I, D, scale=D ** -0.5)
    wd = rand(E, D, I, scale=I ** -0.5)
    ids = torch.rand(U, E, generator=gen, device="cuda").argsort(dim=1)[:, :J]
    w = torch.rand(U, J, generator=gen, device="cuda").softmax(dim=1)
    y = moe_gemv(x, ids, w, wg, wu, wd)
    ref = moe_reference(x, ids, w, wg, wu, wd).float()
    rel = float((y.float() - ref).norm() / ref.norm())
    # bf16 keeps 8 mantissa bits: one output rounding is at most 2**-9 relative (about 2e-3).
    assert rel <= 1e-2, (U, D, I, rel)
    for t in range(U):
        alone = moe_gemv(x[t:t + 1], ids[t:t + 1], w[t:t + 1], wg, wu, wd)
        assert torch.equal(alone, y[t:t + 1]), (D, I, t)
print("ok")
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to run the compiled kernels")
def test_compiled_bf16_on_gpu():
    result = subprocess.run([sys.executable, "-c", _GPU_CHECK], env=compiled_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-4000:]
