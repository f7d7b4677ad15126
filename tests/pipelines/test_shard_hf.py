"""Shards load in Hugging Face ``datasets`` with no code of ours: `microturn shard` over records
of every kind (a real mixed call, a per-speaker call without a license, one with video, and
synthesized visual-cue, background-result, simultaneous, timed and plain dialogues) → each tar
holds one member set, the card points the loader at the tars, and ``datasets`` 5.2 (in the
interop environment) loads every sample of every config and split, normal and streaming,
with every JSON member exactly as written."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import yaml

from microturn.pipelines import media
from microturn.pipelines.shard.run import run as shard_run
from microturn.pipelines.synthesize.run import run as synthesize_run
from microturn.pipelines.tables import read_table
from microturn.testing.files import tree
from microturn.testing.interop import interop_python
from microturn.testing.records import real_call, two_streams, write_records

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2] / "synth" / "data"
# One bundled script of each kind: events of every type, background words, and a video.
SCRIPTS = ("visual.jsonl", "background.jsonl", "simultaneous.jsonl", "timed.jsonl", "dialogues.jsonl")
SPLITS = "train=0.5,test=0.5"


def _normalised_video(tmp: Path, seconds: float) -> str:
    src, out = str(tmp / "src.mp4"), str(tmp / "norm.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", src], check=True)
    stream = media.probe(src).video
    assert stream is not None
    media.normalise_video(src, out, stream=stream)
    return out


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    unlicensed = two_streams("s-00000000000000f2", seconds=14.0, seed=3)
    unlicensed["conversation"] = {**unlicensed["conversation"], "license": None}
    records = write_records(str(root / "rec"), [
        real_call(), unlicensed, two_streams("s-00000000000000f1", seconds=12.0)],
        video={"s-00000000000000f1": _normalised_video(root, 12.0)})
    scripts = root / "scripts.jsonl"
    scripts.write_text("".join((DATA / name).read_text(encoding="utf-8").splitlines(keepends=True)[0]
                               for name in SCRIPTS), encoding="utf-8")
    synth = str(root / "synth")
    synthesize_run(["--scripts", str(scripts), "--output", synth, "--seed", "3"], print_summary=False)
    out = root / "shards"
    shard_run(["--input", records, "--input", synth, "--output", str(out), "--window-chunks", "50",
               "--splits", SPLITS, "--patch-budget", "12"], print_summary=False)
    return out


def _expected(out: Path) -> dict[str, dict[str, int]]:
    """config → split → samples, from the samples table."""
    counts = Counter(("video" if s["has_video"] else "audio", s["split"])
                     for s in read_table(str(out), "samples").to_pylist())
    exp: dict[str, dict[str, int]] = {}
    for (config, split), n in sorted(counts.items()):
        exp.setdefault(config, {})[split] = n
    return exp


def _front_matter(out: Path) -> dict:
    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, sep, _ = text[4:].partition("\n---\n")
    assert sep
    return yaml.safe_load(head)


def test_the_fixture_has_both_configs_and_several_splits(sharded):
    exp = _expected(sharded)
    assert set(exp) == {"audio", "video"}
    assert sum(len(splits) for splits in exp.values()) >= 3, exp
    kinds = Counter(e["type"] for rel in glob.glob(str(sharded / "*" / "*.tar"))
                    for m, data in _members(Path(rel)) if m.endswith(".events.json") for e in json.loads(data))
    assert {"turn_end", "visual_cue", "background_result", "simultaneous", "timed_instruction"} <= set(kinds), kinds


def _members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]  # type: ignore[union-attr]


def test_every_tar_holds_one_member_set(sharded):
    tars = sorted(glob.glob(str(sharded / "*" / "*.tar")))
    assert tars
    for path in tars:
        per_key: dict[str, set[str]] = {}
        for name, _ in _members(Path(path)):
            key, _, field = name.partition(".")
            per_key.setdefault(key, set()).add(field)
        sets = {frozenset(v) for v in per_key.values()}
        assert len(sets) == 1, (path, sets)
        assert ("video.mp4" in next(iter(sets))) == ("-video-" in os.path.basename(path)), path


def test_the_card_points_at_the_tars_only_and_counts_the_samples(sharded):
    meta = _front_matter(sharded)
    exp = _expected(sharded)
    shards = read_table(str(sharded), "shards").to_pylist()
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert list(configs) == ["audio", "video"] and configs["audio"]["default"] is True
    for name, config in configs.items():
        assert [f["split"] for f in config["data_files"]] == sorted(exp[name])
        for f in config["data_files"]:
            matched = sorted(os.path.relpath(p, sharded) for p in glob.glob(str(sharded / f["path"])))
            want = sorted(s["path"] for s in shards if s["split"] == f["split"]
                          and ("-video-" in s["path"]) == (name == "video"))
            assert matched == want and all(p.endswith(".tar") for p in matched), (name, f, matched)
    infos = {i["config_name"]: i for i in meta["dataset_info"]}
    for name, info in infos.items():
        assert {s["name"]: s["num_examples"] for s in info["splits"]} == exp[name]
        columns = [f["name"] for f in info["features"]]
        assert columns[-2:] == ["__key__", "__url__"] and ("video.mp4" in columns) == (name == "video")
    assert "<!-- microturn shard: dataset card" in (sharded / "README.md").read_text(encoding="utf-8")


# Runs in the interop environment: loads every config and split normally and streaming, checks
# each example against the tars, and prints the figures as one JSON line.
_LOAD = r"""
import glob, io, json, os, sys, tarfile
import numpy as np
import datasets

datasets.disable_progress_bars()
root, cache = sys.argv[1], sys.argv[2]
truth = {}
for path in glob.glob(os.path.join(root, "*", "*.tar")):
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            key, _, field = m.name.partition(".")
            data = tf.extractfile(m).read()
            if field.endswith(".npy"):
                data = np.load(io.BytesIO(data), allow_pickle=False)
            elif field.endswith("json"):
                data = json.loads(data)
            truth.setdefault(key, {})[field] = data

def check(ds):
    n = bad = 0
    for ex in ds:
        n += 1
        want = truth[ex["__key__"].rpartition("/")[2]]
        k = ex["json"]["chunks"]
        ok = set(ex) - {"__key__", "__url__"} == set(want)
        ok = ok and all(ex[f] == want[f] for f in ("json", "words.json", "events.json"))
        for f in ("user.dmel.npy", "model.dmel.npy", "model.logmel.npy", "user.labels.npy", "model.labels.npy"):
            a = np.asarray(ex[f], dtype=want[f].dtype)
            ok = ok and a.shape == want[f].shape and np.array_equal(a, want[f])
        ok = ok and want["user.dmel.npy"].shape == (4 * k, 80) and want["user.labels.npy"].shape == (k,)
        if "video.mp4" in want:
            ok = ok and ex["video.mp4"] == want["video.mp4"]
        bad += not ok
    return n, bad

out = {"configs": {}, "plain": {}, "bad": 0}
for config in ("audio", "video"):
    for streaming in (False, True):
        loaded = datasets.load_dataset(root, config, streaming=streaming, cache_dir=cache)
        for split, ds in loaded.items():
            n, bad = check(ds)
            out["configs"].setdefault(config, {}).setdefault(split, []).append(n)
            out["bad"] += bad
    features = datasets.load_dataset_builder(root, config, cache_dir=cache).info.features
    suffix = "-video-[0-9]*.tar" if config == "video" else "-[0-9]*.tar"
    files = {split: sorted(glob.glob(os.path.join(root, split, split + suffix)))
             for split in out["configs"][config]}
    for streaming in (False, True):
        loaded = datasets.load_dataset("webdataset", data_files=files, features=features, streaming=streaming,
                                       cache_dir=cache)
        for split, ds in loaded.items():
            n, bad = check(ds)
            out["plain"].setdefault(config, {}).setdefault(split, []).append(n)
            out["bad"] += bad
default = datasets.load_dataset(root, cache_dir=cache)
out["default"] = {split: len(ds) for split, ds in default.items()}
out["default_config"] = next(iter(default.values())).config_name
print(json.dumps(out))
"""


def test_datasets_loads_every_sample_of_every_config_normally_and_streaming(sharded, tmp_path):
    python = interop_python()
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run([python, "-c", _LOAD, str(sharded), str(tmp_path / "cache")], capture_output=True,
                          text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    exp = _expected(sharded)
    # Each (config, split) loaded normally and streaming, through the card and through the
    # generic WebDataset builder with the card's features: the samples table's count every time.
    assert got["configs"] == {c: {s: [n, n] for s, n in splits.items()} for c, splits in exp.items()}
    assert got["plain"] == got["configs"]
    assert got["bad"] == 0  # every example equals its tar members (JSON exactly, arrays and clip bytes)
    assert got["default_config"] == "audio" and got["default"] == exp["audio"]


def test_a_rerun_on_other_workers_gives_the_same_bytes_and_a_readme_the_stage_did_not_write_is_kept(sharded,
                                                                                                     tmp_path):
    again = tmp_path / "again"
    inputs = ["--input", str(sharded.parent / "rec"), "--input", str(sharded.parent / "synth")]
    shard_run([*inputs, "--output", str(again), "--window-chunks", "50", "--splits", SPLITS, "--patch-budget", "12",
               "--direct_num_workers=2", "--direct_running_mode=multi_processing"], print_summary=False)
    assert tree(again) == tree(sharded)  # tars of both sets, manifests, tables and the card
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "README.md").write_text("# my notes\n", encoding="utf-8")
    with pytest.raises(ValueError, match="README.md that shard did not write"):
        shard_run([*inputs, "--output", str(theirs)], print_summary=False)
    assert tree(theirs) == {"README.md": b"# my notes\n"}
