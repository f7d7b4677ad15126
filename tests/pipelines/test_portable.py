"""Ingest, synthesize and shard on Beam's portable path write the DirectRunner's bytes.

The portable path is the PortableRunner submitting each job to a local job service, with the user
code in an external pool of SDK worker processes (:mod:`microturn.testing.portable`): the Runner
API / Fn API route that Flink, Spark and Dataflow take, where every DoFn, its inputs and outputs
cross a process boundary. Each stage runs through its ``run(argv)`` entry point, once on the
in-process DirectRunner and once on that path with two workers, and every file of the two outputs
must be the same, byte for byte (no file is run-specific: the stage marker holds the stage and
schema version only, and the lock file is removed when a run ends). The shard stage reads the
DirectRunner outputs of the other two, as a cluster run of the whole chain would.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

import pytest

from media_corpus import SAMPLE_STM, speech
from microturn.pipelines.ingest.run import run as ingest_run
from microturn.pipelines.shard.run import run as shard_run
from microturn.pipelines.synthesize.run import run as synthesize_run
from microturn.pipelines.tables import read_table
from microturn.synth.templates import bundled_dialogues
from microturn.testing.files import tree
from microturn.testing.portable import LocalPortable, PortableStartError, WorkerWatch, portable_runner, watch_workers

pytestmark = pytest.mark.slow

WORKERS = 2


@pytest.fixture(scope="module")
def cluster():
    with portable_runner(WORKERS) as running:
        yield running


def on_both(stage: Callable, argv: list[str], root, cluster: LocalPortable) -> tuple[str, str, WorkerWatch, int]:
    """Run ``stage`` on the DirectRunner and on the portable path; return both outputs, what the
    worker watch saw and how many workers the pool started for the portable run."""
    direct, portable = str(root / "direct"), str(root / "portable")
    stage([*argv, "--output", direct], print_summary=False)
    before = cluster.started_workers()
    with watch_workers(cluster) as watch:
        stage([*argv, "--output", portable, *cluster.flags], print_summary=False)
    return direct, portable, watch, cluster.started_workers() - before


def assert_same_files(direct: str, portable: str) -> None:
    a, b = tree(direct), tree(portable)
    assert sorted(a) == sorted(b)
    assert [name for name in a if a[name] != b[name]] == []
    assert len(a) > 2, sorted(a)  # more than the stage marker: the run made something


def assert_used_the_workers(watch: WorkerWatch, started: int) -> None:
    assert started >= WORKERS, started
    assert watch.max_alive >= WORKERS, watch  # at the same time, not one after the other


@pytest.fixture(scope="module")
def ingested(cluster, tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    speech(str(media / "a.wav"), start=6.5, dur=10)
    speech(str(media / "b.flac"), start=17, dur=10, ar=22050)
    shutil.copyfile(SAMPLE_STM, media / "a.stm")  # words, through forced alignment
    (media / "empty.wav").write_bytes(b"")  # a reject
    return on_both(ingest_run, ["--input", str(media / "*")], tmp_path_factory.mktemp("ingest"), cluster)


@pytest.fixture(scope="module")
def synthesized(cluster, tmp_path_factory):
    dialogues = sorted(bundled_dialogues(), key=lambda d: sum(len(t.text) for t in d.turns))[:2]
    scripts = tmp_path_factory.mktemp("scripts") / "s.jsonl"
    lines = [json.dumps(d.to_dict()) for d in dialogues] + ['{"id": "broken", ']  # a reject
    scripts.write_text("\n".join(lines) + "\n")
    argv = ["--scripts", str(scripts), "--seed", "7"]
    return on_both(synthesize_run, argv, tmp_path_factory.mktemp("synthesize"), cluster)


@pytest.fixture(scope="module")
def sharded(cluster, ingested, synthesized, tmp_path_factory):
    # The smallest shards (64 KiB, buckets of 4) so that the train split spreads over several
    # buckets, each packed by whichever worker gets it.
    argv = ["--input", ingested[0], "--input", synthesized[0], "--window-chunks", "50", "--shard-bytes", "64KiB"]
    return on_both(shard_run, argv, tmp_path_factory.mktemp("shard"), cluster)


def test_the_shard_run_spread_its_train_split_over_several_buckets(sharded):
    from microturn.pipelines.shard.plan import bucket_count

    shards = read_table(sharded[0], "shards").to_pylist()
    train = [s for s in shards if s["split"] == "train"]
    assert bucket_count(sum(s["bytes"] for s in train), bucket_bytes=4 * (64 << 10)) >= 2, train


@pytest.mark.parametrize("stage", ["ingested", "synthesized", "sharded"])
def test_the_portable_path_writes_the_direct_runners_bytes_with_two_workers(stage, request):
    direct, portable, watch, started = request.getfixturevalue(stage)
    assert_same_files(direct, portable)
    assert_used_the_workers(watch, started)


def test_both_services_stop_when_the_body_fails():
    with pytest.raises(RuntimeError, match="the body failed"), portable_runner(1) as running:
        groups = [running.job_service.pid, running.worker_pool.pid]
        raise RuntimeError("the body failed")
    for group in groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)


def test_a_service_that_does_not_start_in_time_is_a_clear_error():
    with pytest.raises(PortableStartError, match="did not accept connections in time"), \
            portable_runner(1, timeout_s=0):
        pass
