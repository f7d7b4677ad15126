"""Two processes with expert parallelism (ep_size 2, gloo, ZeRO 2) train as one process does,
on one node (``--nproc_per_node 2``) and on two (two ``torchrun --nnodes 2`` launchers, one process
each, meeting at a c10d rendezvous on 127.0.0.1, as on a cluster; see the README).

Each process holds 2 of the 4 experts of every MoE layer and exchanges tokens all-to-all; the
per-step losses must match those of one process holding all experts (see ep_worker.py for why
the two runs see the same data). They match within a tolerance, not bitwise: the two layouts
run GEMMs of other shapes (each process multiplies its own experts' tokens, and ZeRO 2 sums
gradients across processes), and how a BLAS library blocks a GEMM, hence the order in which it
adds, depends on the shape and the machine. A rerun with the same layout is bitwise the same."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch

from microturn.trainer.session import Session, SessionConfig
from microturn.trainer.trained_run import load_trained_run
from session_runs import user_audio
from trainer_shards import train_shards

WORKER = os.path.join(os.path.dirname(__file__), "ep_worker.py")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# fp32 keeps 24 bits (one rounding is 6e-8 relative). Over 4 steps at lr 3e-3 the two layouts'
# sums differ by a few roundings per GEMM and Adam carries them into the weights. Measured: a
# relative 1.1e-7 at step 4 on another x86 machine (4.429034233093262 against 4.4290337562561035),
# 0 on the 2-core machine of this suite. 1e-5 leaves ~90x that, while a real fault of expert
# parallelism (a token sent to the wrong expert, a gradient reduced over the wrong group) moves
# the loss by 1e-3 or more after one update.
REL_TOL = 1e-5


@pytest.fixture(scope="module")
def ep_runs(tmp_path_factory):
    """Folder of the same 4 steps trained by one process (twice) and by two with ep_size 2:
    ``{one,again,two}.json`` (losses) and ``{one,two}-run/`` (their checkpoints)."""
    tmp = tmp_path_factory.mktemp("ep")
    shard = train_shards()[0]
    steps = "4"
    _run([sys.executable, WORKER, shard, str(tmp / "one.json"), "1", "2", steps, "same", str(tmp / "one-run")])
    _run([sys.executable, WORKER, shard, str(tmp / "again.json"), "1", "2", steps])
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
          WORKER, shard, str(tmp / "two.json"), "2", "2", steps, "same", str(tmp / "two-run")])
    return tmp


def test_two_processes_with_ep_size_2_give_the_losses_of_one(ep_runs):
    one, again, two = (json.loads((ep_runs / f"{n}.json").read_text()) for n in ("one", "again", "two"))
    assert one["world"] == again["world"] == 1 and two["world"] == 2
    assert len(one["losses"]) == len(two["losses"]) == 4
    assert again["losses"] == one["losses"]  # the same layout: bitwise
    rel = [abs(a - b) / abs(a) for a, b in zip(one["losses"], two["losses"], strict=True)]
    print(f"largest relative difference, 1 vs 2 processes: {max(rel):.3g}")
    assert max(rel) <= REL_TOL, (one["losses"], two["losses"], rel)
    assert len(set(one["losses"])) > 1  # the steps did update the model


def test_a_checkpoint_of_two_expert_parallel_processes_loads_in_one(ep_runs):
    # Each process saved its own 2 experts of every MoE layer, numbered by global id: loaded
    # whole in one process, they are the 4 experts the one-process run trained.
    two = load_trained_run(str(ep_runs / "two-run"))
    one = load_trained_run(str(ep_runs / "one-run"))
    assert two.train.ep_size == 2 and one.train.ep_size == 1 and two.step == 4
    assert set(two.state_dict) == set(one.state_dict)
    # Adam divides each gradient by its own scale, so the layouts' rounding differences reach
    # the weights as differences of up to lr x their relative size: measured 2.3e-7 at most (on
    # weights of std 0.02). An expert saved under another id, or not saved, differs by the
    # init's 0.02 scale; 1e-5 sits between.
    for name, value in one.state_dict.items():
        torch.testing.assert_close(two.state_dict[name], value, rtol=0, atol=1e-5, msg=name)
    # A session steps on the two-process checkpoint; what it fed, run teacher-forced through the
    # one-process weights, gives its hidden states (teacher-forced, so a near tie of a greedy
    # choice cannot make the two runs feed different positions).
    session = Session(two, SessionConfig(flow_steps=1, max_text_per_chunk=2), record=True)
    assert [session.step(a).chunk for a in user_audio(3)] == [0, 1, 2]
    reference = Session(one, SessionConfig(flow_steps=1)).model
    with torch.no_grad():
        h_LD = reference.hidden(session.recorded_batch())[0][0]
    torch.testing.assert_close(session.recorded_hidden(), h_LD, rtol=1e-4, atol=1e-4)


def test_a_rank_without_video_trains_beside_one_with_video(tmp_path):
    # Rank 0's batch has video and rank 1's has none, as with real shards: ZeRO 2 reduces
    # gradients in buckets, so both ranks must produce a gradient for every parameter (the hMLP
    # stem included) or gloo fails on a size mismatch.
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
          WORKER, ",".join(train_shards()), str(tmp_path / "mixed.json"), "2", "1", "3", "mixed"])
    mixed = json.loads((tmp_path / "mixed.json").read_text())
    assert mixed["world"] == 2 and mixed["video"] is True
    assert len(mixed["losses"]) == 3 and all(math.isfinite(x) for x in mixed["losses"])


def test_processes_with_different_row_counts_are_padded_to_the_largest(tmp_path):
    # Packing, and samples split over rows, give the processes batches of different row counts;
    # the all-to-all needs equal token counts, so the loop pads every process to the largest
    # count (rank 0: 1 row, rank 1: 2 rows). Unpadded, gloo fails on a size mismatch.
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
          WORKER, train_shards()[0], str(tmp_path / "uneven.json"), "2", "1", "2", "uneven"])
    uneven = json.loads((tmp_path / "uneven.json").read_text())
    assert uneven["world"] == 2 and uneven["rows"] == 2
    assert len(uneven["losses"]) == 2 and all(math.isfinite(x) for x in uneven["losses"])


def _two_nodes(args: list[str], tmp) -> None:
    """Two launchers, one "node" each, with one process per node, meeting at a c10d rendezvous on
    127.0.0.1 (a free port): the ranks of a 2-node job, whose all-to-all and gradient reduction
    cross the nodes. ``args``: what each launcher runs (a script and its arguments, or ``-m``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    port, procs = _port(), []
    for node in (0, 1):
        log = open(tmp / f"node{node}.log", "w")  # noqa: SIM115 - closed below, after the process
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
               "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
               "--rdzv_id", f"microturn-test-{port}", *args]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    try:
        codes = [proc.wait(timeout=300) for proc, _ in procs]
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = "".join((tmp / f"node{n}.log").read_text()[-2000:] for n in (0, 1))
    assert codes == [0, 0], logs


def test_two_nodes_at_a_c10d_rendezvous_give_the_losses_of_one_process(ep_runs, tmp_path):
    _two_nodes([WORKER, train_shards()[0], str(tmp_path / "nodes.json"), "2", "2", "4", "same",
                str(tmp_path / "nodes-run")], tmp_path)
    one, nodes = (json.loads(p.read_text()) for p in (ep_runs / "one.json", tmp_path / "nodes.json"))
    assert nodes["world"] == 2
    rel = [abs(a - b) / abs(a) for a, b in zip(one["losses"], nodes["losses"], strict=True)]
    assert max(rel) <= REL_TOL, (one["losses"], nodes["losses"], rel)
    # Each node saved its own experts; loaded whole, they are the one-process run's.
    saved, reference = load_trained_run(str(tmp_path / "nodes-run")), load_trained_run(str(ep_runs / "one-run"))
    assert saved.train.ep_size == 2 and set(saved.state_dict) == set(reference.state_dict)
    for name, value in reference.state_dict.items():
        torch.testing.assert_close(saved.state_dict[name], value, rtol=0, atol=1e-5, msg=name)


def test_the_train_command_on_two_nodes_trains_and_checkpoints(ep_runs, tmp_path):
    # The command a cluster runs on each node (README, "Training on many nodes"), on real shards.
    out = tmp_path / "run"
    _two_nodes(["-m", "microturn.trainer", "--config", "tiny-cpu", "--shards",
                os.path.join(os.path.dirname(train_shards()[0]), "*.tar"), "--output", str(out), "--no-progress",
                "train.ep_size=2", "train.zero_stage=2", "train.steps=3", "train.ckpt_every=3"], tmp_path)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [m["step"] for m in metrics][-1] == 3 and all(math.isfinite(m["loss"]) for m in metrics)
    run = load_trained_run(str(out))
    assert run.step == 3 and run.train.ep_size == 2
    assert set(run.state_dict) == set(load_trained_run(str(ep_runs / "one-run")).state_dict)  # all 4 experts
