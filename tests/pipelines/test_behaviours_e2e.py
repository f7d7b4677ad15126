"""Visual-cue, background-result and simultaneous-speech dialogues end to end: synthesize (real
espeak-ng, real ffmpeg, the DirectRunner) -> shard -> catalog, and a bad script of each kind
rejected without stopping the others."""

from __future__ import annotations

import glob
import json
import math
import os
import tarfile
from collections import defaultdict

import av
import duckdb
import numpy as np
import pytest

from microturn.pipelines.catalog.build import build_catalog
from microturn.pipelines.shard.run import run as shard_run
from microturn.pipelines.synthesize.run import run as synthesize_run
from microturn.pipelines.tables import read_table
from microturn.schemas.sample import CHUNK_MS, Label, decode_sample

pytestmark = pytest.mark.slow

VISUAL = {
    "id": "visual", "license": "Apache-2.0",
    "speakers": {"U": {"role": "user"}, "M": {"role": "model", "voice": "en-gb"}},
    "turns": [
        {"speaker": "U", "text": "Tell me when the red circle shows up, and count the bounces of the blue square.",
         "act": "visual_request", "cues": [
             {"kind": "appear", "after_ms": 2000, "shape": "circle", "colour": "red", "responses": ["There it is."]},
             {"kind": "repeat", "after_ms": 4000, "shape": "square", "colour": "blue", "count": 2,
              "period_ms": 1200, "responses": ["one", "two"]}]},
        {"speaker": "U", "text": "Thanks."}],
}
BACKGROUND = {
    "id": "background", "license": "Apache-2.0",
    "speakers": {"U": {"role": "user"}, "M": {"role": "model"}},
    "turns": [
        {"speaker": "U", "text": "When does the museum open on Sunday?"},
        {"speaker": "M", "text": "Let me look that up.", "act": "delegation",
         "result": "Museum hours Sunday: 10:00 to 18:00.", "mention": "Okay, it opens at ten on Sunday.",
         "after_ms": 1500},
        {"speaker": "U", "text": "Great, and meanwhile I was thinking we could have lunch by the river."},
        {"speaker": "M", "text": "That sounds lovely."}],
}
SIMULTANEOUS = {
    "id": "simultaneous", "license": "Apache-2.0",
    "speakers": {"U": {"role": "user"}, "M": {"role": "model", "voice": "fr-fr", "language": "fr"}},
    "turns": [
        {"speaker": "U", "text": "Good morning everyone. Thank you for coming today."},
        {"speaker": "M", "text": "Bonjour à tous. Merci d'être venus aujourd'hui.", "act": "simultaneous"}],
}
# Two cues on one object: a viewer could not tell them apart, so the script is refused.
BAD_VISUAL = {**VISUAL, "id": "bad-visual", "turns": [
    {"speaker": "U", "text": "Tell me twice.", "act": "visual_request", "cues": [
        {"kind": "appear", "after_ms": 1000, "shape": "circle", "colour": "red", "responses": ["one"]},
        {"kind": "move", "after_ms": 3000, "shape": "circle", "colour": "red", "responses": ["two"]}]}]}
# A rendering with nothing before it to render.
BAD_SIMULTANEOUS = '{"id": "bad-sim", "speakers": {"U": {}, "M": {}}, "turns": [' \
    '{"speaker": "M", "text": "Bonjour.", "act": "simultaneous"}]}'


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("behaviours")
    scripts = root / "scripts.jsonl"
    lines = [json.dumps(d, ensure_ascii=False) for d in (VISUAL, BAD_VISUAL, BACKGROUND, SIMULTANEOUS)]
    scripts.write_text("\n".join([*lines, BAD_SIMULTANEOUS]) + "\n", encoding="utf-8")
    out, shards = str(root / "out"), str(root / "shards")
    synthesize_run(["--scripts", str(scripts), "--output", out, "--seed", "5"], print_summary=False)
    shard_run(["--input", out, "--output", shards, "--window-chunks", "75"], print_summary=False)
    catalog = str(root / "catalog.duckdb")
    build_catalog([out, shards], catalog)
    return out, shards, catalog


def _by_id(out):
    convs = read_table(out, "conversations").to_pylist()
    return {json.loads(c["provenance"])["dialogue_id"]: c for c in convs}


def test_bad_scripts_are_rejected_and_the_others_complete(pipeline):
    out, _, _ = pipeline
    assert set(_by_id(out)) == {"visual", "background", "simultaneous"}
    rejects = read_table(out, "rejects").to_pylist()
    assert sorted((r["stage"], r["error_type"], r["input"].rsplit(":", 1)[-1]) for r in rejects) == [
        ("parse", "bad_act", "2"), ("parse", "bad_act", "5")], rejects
    messages = " ".join(r["message"] for r in rejects)
    assert "'bad-visual'" in messages and "could not tell which one is meant" in messages
    assert "'bad-sim'" in messages and "cannot open with act 'simultaneous'" in messages


def test_only_the_visual_dialogue_carries_a_video_of_its_whole_length(pipeline):
    out, _, _ = pipeline
    convs = _by_id(out)
    assert [k for k, c in convs.items() if c["has_video"]] == ["visual"]
    c = convs["visual"]
    assert c["video_file"] == "video.mp4" and dict(c["backends"])["video"] == "microturn-scene"
    with av.open(str(os.path.join(out, c["media_dir"], c["video_file"])), "r") as f:
        stream = f.streams.video[0]
        frames = sum(1 for _ in f.decode(stream))
        assert (stream.width, stream.height) == (320, 240)
    assert frames == math.ceil(c["duration_ms"] / 100)


def test_events_of_each_behaviour_are_recorded(pipeline):
    out, _, _ = pipeline
    ids = {c["conversation_id"]: k for k, c in _by_id(out).items()}
    events = defaultdict(list)
    for e in read_table(out, "events").to_pylist():
        events[(ids[e["conversation_id"]], e["type"])].append({**e, "payload": json.loads(e["payload"])})
    cues = events[("visual", "visual_cue")]
    assert [e["payload"]["answer"] for e in cues] == ["There it is.", "one", "two"]
    assert all(e["speaker"] == "M" and e["t_ms"] % 100 == 0 and e["payload"]["delay_ms"] > 0 for e in cues)
    arrival, mention = events[("background", "background_result")]
    assert (arrival["payload"]["phase"], mention["payload"]["phase"]) == ("arrival", "mention")
    assert mention["t_ms"] >= arrival["t_ms"] and mention["payload"]["yield_ms"] <= mention["t_ms"]
    rendered = events[("simultaneous", "simultaneous")]
    assert len(rendered) == 2 and all(1000 <= e["payload"]["lag_ms"] for e in rendered)
    assert all(e["payload"]["language"] == "fr" for e in rendered)


def _samples(shards):
    out = []
    for tar in sorted(glob.glob(os.path.join(shards, "*", "*.tar"))):
        groups: dict[str, dict[str, bytes]] = defaultdict(dict)
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                key, _, field = m.name.partition(".")
                f = t.extractfile(m)
                assert f is not None
                groups[key][field] = f.read()
        out += [decode_sample(fields) for fields in groups.values()]
    return out


def test_samples_carry_the_bits_the_background_stream_and_the_video(pipeline):
    out, shards, _ = pipeline
    ids = {c["conversation_id"]: k for k, c in _by_id(out).items()}
    seen = defaultdict(int)
    for s in _samples(shards):
        kind, model = ids[s["meta"]["conversation_id"]], s["meta"]["model_speaker"]
        labels = s["labels"]
        assert labels["model"].dtype == np.uint16
        bits = {flag: [bool((labels[r] & flag).any()) for r in ("user", "model")]
                for flag in (Label.CUE_RESPONSE, Label.BACKGROUND, Label.SIMULTANEOUS)}
        # The behaviour's bit is on the stream of the speaker who does it, and nowhere else.
        for flag, owner in ((Label.CUE_RESPONSE, "visual"), (Label.BACKGROUND, "background"),
                            (Label.SIMULTANEOUS, "simultaneous")):
            seen[flag] += bits[flag][1]
            assert not bits[flag][0] or model == "U"
            assert not any(bits[flag]) or kind == owner
        # A rendering overlaps on purpose: never an interruption.
        assert not ((labels["model"] | labels["user"]) & Label.INTERRUPT).any() or kind != "simultaneous"
        background = s["words"]["background"]
        if kind == "background" and model == "M" and s["meta"]["window"] == 0:
            assert [b["text"] for b in background] == ["Museum hours Sunday: 10:00 to 18:00."]
            assert background[0]["chunk"] == background[0]["start_ms"] // CHUNK_MS
        elif kind != "background" or model != "M":
            assert background == []
        assert (s["video_KPFHWC"] is not None) == (kind == "visual")
        if kind == "visual":
            assert s["video_KPFHWC"].shape[1:] == (48, 2, 40, 40, 3)
    assert all(seen[f] for f in (Label.CUE_RESPONSE, Label.BACKGROUND, Label.SIMULTANEOUS)), seen


def test_the_catalog_counts_hours_per_task_type(pipeline):
    _, _, catalog = pipeline
    with duckdb.connect(catalog, read_only=True) as db:
        rows = db.sql("SELECT task_type, conversations, with_video, items FROM task_types ORDER BY 1").fetchall()
    assert rows == [("background_result", 1, 0, 1), ("simultaneous", 1, 0, 2), ("visual_cue", 1, 1, 3)]
