"""The expert-id range check of every MoE entry point: a ValueError naming the ids with
``validate=True``; by default a device-side assert that reads nothing on the host (a RuntimeError
on CPU), so a decode step does not wait for the device and can be captured in a CUDA graph.

Shape suffixes follow microturn.schemas.legend: U tokens, J top-k, E experts, D model width,
I expert hidden width. tests/conftest.py turns the Triton interpreter on before any import.
"""

import functools
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from moe_cases import NUM_EXPERTS, bad_ids, bad_inputs, compiled_env, make_case
from torch.utils._python_dispatch import TorchDispatchMode

from microturn.kernels import check_moe_inputs, launch, moe_decode, moe_gemv, moe_grouped, moe_reference

ENTRY_POINTS = {
    "check_moe_inputs": check_moe_inputs,
    "checked_sizes": functools.partial(launch.checked_sizes, "moe_gemv"),
    "moe_reference": moe_reference,
    "moe_gemv": moe_gemv,
    "moe_grouped": moe_grouped,
    "moe_decode": moe_decode,  # off CUDA: DEFAULT_THRESHOLD, so gemv for U = 3
    "moe_decode-grouped": functools.partial(moe_decode, threshold=0),
}
# moe_reference is the ground truth, not a decode path: its per-expert nonzero() reads counts.
LAUNCHERS = [name for name in ENTRY_POINTS if name != "moe_reference"]
BAD_IDS = bad_ids()
ID_LABELS = [label for label, _, _ in BAD_IDS]

# What Tensor.item(), int(t), float(t) and bool(t) dispatch to: on CUDA, a device-to-host copy.
HOST_READ = "aten._local_scalar_dense.default"


@pytest.mark.parametrize("case", range(len(BAD_IDS)), ids=ID_LABELS)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_validate_names_out_of_range_ids(entry, case):
    _, args, (lowest, highest) = BAD_IDS[case]
    with pytest.raises(ValueError, match=rf"0\.\.{NUM_EXPERTS - 1}, got values in {lowest}\.\.{highest}$"):
        ENTRY_POINTS[entry](*args, validate=True)


@pytest.mark.parametrize("case", range(len(BAD_IDS)), ids=ID_LABELS)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_default_device_assert_refuses_out_of_range_ids(entry, case):
    _, args, _ = BAD_IDS[case]
    with pytest.raises(RuntimeError, match=rf"expert id outside 0\.\.{NUM_EXPERTS - 1}"):
        ENTRY_POINTS[entry](*args)


@pytest.mark.parametrize("validate", [1, "yes", None])
def test_validate_must_be_a_bool(validate):
    with pytest.raises(TypeError, match="validate must be a bool"):
        check_moe_inputs(*make_case(2, 37, 53, 2, seed=1), validate=validate)


@pytest.mark.parametrize("entry", ["moe_gemv", "moe_grouped"])
def test_in_range_ids_give_the_same_output_either_way(entry):
    case = make_case(5, 37, 53, 2, seed=2)
    assert torch.equal(ENTRY_POINTS[entry](*case), ENTRY_POINTS[entry](*case, validate=True))


@settings(max_examples=40, deadline=None)
@given(ids=st.lists(st.integers(-3, NUM_EXPERTS + 2), min_size=6, max_size=6))
def test_both_checks_refuse_exactly_the_out_of_range_ids(ids):
    x_UD, _, weights_UJ, *experts = make_case(3, 37, 53, 2, seed=3)
    ids_UJ = torch.tensor(ids).reshape(3, 2)
    in_range = all(0 <= i < NUM_EXPERTS for i in ids)
    outcomes = []
    for validate in (False, True):
        try:
            check_moe_inputs(x_UD, ids_UJ, weights_UJ, *experts, validate=validate)
            outcomes.append(None)
        except (RuntimeError, ValueError) as error:
            outcomes.append(type(error))
    assert outcomes == ([None, None] if in_range else [RuntimeError, ValueError])


def _meta(args):
    return tuple(t.to("meta") for t in args)


def test_default_checks_read_no_value():
    # A meta tensor has shape, dtype and strides but no data: any host read of a value raises.
    case = make_case(3, 37, 53, 2, seed=4)
    check_moe_inputs(*_meta(case))
    sizes = launch.checked_sizes("moe_gemv", *_meta(case))
    assert (sizes.tokens, sizes.top_k, sizes.experts) == (3, 2, NUM_EXPERTS)
    with pytest.raises((RuntimeError, NotImplementedError)):  # the meta read proves the probe can fail
        check_moe_inputs(*_meta(case), validate=True)
    for label, args, error in bad_inputs():
        if all(isinstance(t, torch.Tensor) for t in args):  # metadata faults are found without values
            with pytest.raises(error):
                check_moe_inputs(*_meta(args))
                pytest.fail(f"{label}: no {error.__name__}")


class _RecordOps(TorchDispatchMode):
    """Every aten op dispatched at the top level while active (not the ops inside them)."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("entry", LAUNCHERS)
def test_default_launch_reads_nothing_on_the_host(entry):
    case = make_case(3, 37, 53, 2, seed=5)
    ENTRY_POINTS[entry](*case)  # compile and warm up outside the recording
    with _RecordOps() as default:
        ENTRY_POINTS[entry](*case)
    assert HOST_READ not in default.ops
    assert not {"aten.min.default", "aten.max.default", "aten.aminmax.default"} & set(default.ops)
    assert "aten._assert_async.msg" in default.ops
    with _RecordOps() as validated:  # the recorder does see a host read when there is one
        ENTRY_POINTS[entry](*case, validate=True)
    assert HOST_READ in validated.ops


# Runs in a fresh interpreter without TRITON_INTERPRET so that the compiled kernels are tested.
# torch's sync debug mode "error" raises at any synchronising call (item(), a blocking copy to the
# host); a CUDA graph capture refuses one too.
_GPU_CHECK = """
import torch
from microturn.kernels import moe_decode, moe_gemv, moe_grouped
gen = torch.Generator(device="cuda").manual_seed(0)
U, D, I, E, J = 8, 256, 512, 8, 2
def rand(*shape, scale=1.0):
    return (torch.randn(*shape, generator=gen, device="cuda") * scale).to(torch.bfloat16)
x, wd = rand(U, D), rand(E, D, I, scale=I ** -0.5)
wg, wu = rand(E, I, D, scale=D ** -0.5), rand(E, I, D, scale=D ** -0.5)
ids = torch.rand(U, E, generator=gen, device="cuda").argsort(dim=1)[:, :J]
w = torch.rand(U, J, generator=gen, device="cuda").softmax(dim=1).to(torch.bfloat16)
args = (x, ids, w, wg, wu, wd)
kernels = [moe_gemv, moe_grouped, lambda *a: moe_decode(*a, threshold=4)]
eager = [k(*args) for k in kernels]  # compiles outside the checks
torch.cuda.synchronize()
torch.cuda.set_sync_debug_mode("error")
for k in kernels:
    k(*args)
try:
    moe_gemv(*args, validate=True)
    raise SystemExit("validate=True did not synchronise")
except RuntimeError as error:
    assert "synchroniz" in str(error), error
torch.cuda.set_sync_debug_mode("default")
for k, ref in zip(kernels, eager):
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        k(*args)
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        out = k(*args)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, ref)
print("ok")
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to run the compiled kernels")
def test_compiled_default_path_never_synchronises_and_graph_captures():
    result = subprocess.run([sys.executable, "-c", _GPU_CHECK], env=compiled_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-4000:]
