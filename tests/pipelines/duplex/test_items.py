"""``microturn eval items`` on records made by the synthesize stage (espeak-ng, DirectRunner) and
on the pyannote sample call (one mixed channel): event times against the records, the two
streams, determinism, split filtering and loud errors."""

from __future__ import annotations

import glob
import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from microturn.cli.evaluate import main as eval_main
from microturn.pipelines import media
from microturn.pipelines.duplex.items import ItemsConfig, build_items
from microturn.pipelines.duplex.items_select import PAUSE_MIN_MS, TASKS
from microturn.pipelines.shard.streams import build_stream
from microturn.pipelines.synthesize.run import run as synthesize
from microturn.pipelines.tables import read_table
from microturn.schemas.ids import split_of
from microturn.schemas.turns import Turn
from microturn.testing.records import real_call, two_streams, write_records

PCM16 = 1 / 32768  # one quantisation step of the items' wavs

# Two short scripted dialogues: the first (made a test conversation) has a listener backchannel,
# a turn with sentence pauses, a change of speaker and a barge-in; the second (train) must give
# no item to the test split.
DIALOGUES = [
    {"id": "eval-a", "speakers": {"A": {}, "B": {}}, "turns": [
        {"speaker": "A", "text": "So I was thinking we could leave on Friday morning. Before the traffic gets bad "
                                 "on the highway, you know."},
        {"speaker": "B", "text": "mm-hmm", "act": "backchannel"},
        {"speaker": "A", "text": "Or on Saturday, if that is easier for you and your sister."},
        {"speaker": "B", "text": "Friday works for me."},
        {"speaker": "A", "text": "Great, then we will pack the car on Thursday evening and leave very early."},
        {"speaker": "B", "text": "Wait, I have a meeting on Thursday.", "act": "interruption"},
        {"speaker": "A", "text": "Oh, then we pack on Friday."}]},
    {"id": "eval-b", "speakers": {"A": {}, "B": {}}, "turns": [
        {"speaker": "A", "text": "Did you bring the map?"},
        {"speaker": "B", "text": "Yes, it is in the car."},
        {"speaker": "A", "text": "Good."}]},
]


def _set_splits(out: str, splits: dict[str, str]) -> None:
    """Give the synthesized conversations the splits the tests need (their own are a hash of the id)."""
    for path in glob.glob(os.path.join(out, "conversations", "*.parquet")):
        table = pq.read_table(path)
        rows = table.to_pylist()
        for r in rows:
            r["split"] = splits[r["source_uri"].rsplit(":", 1)[1]]
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("items-records")
    scripts = root / "dialogues.jsonl"
    scripts.write_text("".join(json.dumps(d) + "\n" for d in DIALOGUES))
    out = str(root / "synth")
    synthesize(["--scripts", str(scripts), "--output", out, "--seed", "5"], print_summary=False)
    _set_splits(out, {"1": "test", "2": "train"})  # source_uri is "<scripts>:<line>"
    return out


@pytest.fixture(scope="module")
def tables(records) -> dict:
    return {t: read_table(records, t).to_pylist() for t in ("conversations", "segments", "words", "events")}


@pytest.fixture(scope="module")
def items(records, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("items") / "items")
    build_items(ItemsConfig(records=(records,), output=out))
    return out


def _items(root: str, task: str) -> list[tuple[str, dict]]:
    folders = sorted(glob.glob(os.path.join(root, task, "*")))
    return [(f, json.load(open(os.path.join(f, "item.json"), encoding="utf-8"))) for f in folders]


def _wav(folder: str, name: str) -> np.ndarray:
    data, rate = sf.read(os.path.join(folder, name), dtype="float32")
    assert rate == 16000 and data.ndim == 1
    return data


def _channel(records: str, tables: dict, cid: str, speaker: str) -> np.ndarray:
    conv = next(c for c in tables["conversations"] if c["conversation_id"] == cid)
    return media.read_flac(os.path.join(records, conv["media_dir"], f"{speaker}.flac"))


def _test_conversation(tables: dict) -> str:
    (cid,) = [c["conversation_id"] for c in tables["conversations"] if c["split"] == "test"]
    return cid


def test_every_task_gives_items_with_the_files_of_the_layout(items, tables):
    cid = _test_conversation(tables)
    lines = [json.loads(x) for x in open(os.path.join(items, "items.jsonl"), encoding="utf-8")]
    assert {x["task"] for x in lines} == set(TASKS)
    annotation = {"smooth_turn_taking": "turn_taking.json", "pause_handling": "pause.json",
                  "user_interruption": "interrupt.json", "backchannel": "backchannel.json"}
    for x in lines:
        folder = os.path.join(items, x["path"])
        assert sorted(os.listdir(folder)) == sorted(["input.wav", "reference.wav", "reference.json", "item.json",
                                                     "transcription.json", annotation[x["task"]]])
        assert x["conversation_id"] == cid and x["split"] == "test" and x["source"] == "synthetic"
        assert x["path"] == f"{x['task']}/{cid}-{x['path'].rsplit('-', 1)[1]}"
        inp, ref = _wav(folder, "input.wav"), _wav(folder, "reference.wav")
        assert inp.shape == ref.shape == ((x["window_end_ms"] - x["window_start_ms"]) * 16,)
    with open(os.path.join(items, "_microturn_stage.json"), encoding="utf-8") as f:
        assert json.load(f)["stage"] == "eval-items"


def test_smooth_turn_taking_turn_end_is_the_users_last_segment_end_and_input_is_silent_after(items, tables, records):
    cid = _test_conversation(tables)
    found = _items(items, "smooth_turn_taking")
    assert found
    for folder, item in found:
        user, model = item["user_speaker"], item["reference_speaker"]
        ws = item["window_start_ms"]
        ((entry,),) = [json.load(open(os.path.join(folder, "turn_taking.json"), encoding="utf-8"))]
        t_end = item["events"]["turn_end_ms"]
        assert entry["timestamp"][0] == pytest.approx((t_end - ws) / 1000)
        # The turn end is the end of a segment of the user, and the user's words of the turn end by then.
        user_segs = [s for s in tables["segments"] if s["conversation_id"] == cid and s["speaker"] == user]
        assert t_end in {s["end_ms"] for s in user_segs}
        assert not any(s["start_ms"] < t_end < s["end_ms"] for s in user_segs)
        last_word_end = max(w["end_ms"] for w in tables["words"] if w["conversation_id"] == cid
                            and w["speaker"] == user and w["end_ms"] <= t_end)
        assert t_end - last_word_end < 300
        # The reference takes the turn: its next segment starts at the annotation's second time.
        resp = item["events"]["response_start_ms"]
        assert resp in {s["start_ms"] for s in tables["segments"] if s["conversation_id"] == cid
                        and s["speaker"] == model}
        assert entry["timestamp"][1] == pytest.approx((resp - ws) / 1000)
        inp, ref = _wav(folder, "input.wav"), _wav(folder, "reference.wav")
        cut = (t_end - ws) * 16
        assert np.abs(inp[:cut]).max() > 0.05 and not inp[cut:].any()
        # reference.wav is the second speaker's own channel over the window, and it speaks after the end.
        channel = _channel(records, tables, cid, model)[ws * 16: item["window_end_ms"] * 16]
        np.testing.assert_allclose(ref[: channel.shape[0]], channel, atol=PCM16)
        assert np.abs(ref[(resp - ws) * 16:]).max() > 0.05
        # input.wav is the user's channel up to the turn end.
        np.testing.assert_allclose(inp[:cut], _channel(records, tables, cid, user)[ws * 16: t_end * 16], atol=PCM16)


def test_pauses_lie_between_the_users_words_inside_the_turn(items, tables):
    cid = _test_conversation(tables)
    found = _items(items, "pause_handling")
    assert found
    for folder, item in found:
        ws, we = item["window_start_ms"], item["window_end_ms"]
        assert we == item["events"]["turn_end_ms"]
        words = sorted((w["start_ms"], w["end_ms"]) for w in tables["words"]
                       if w["conversation_id"] == cid and w["speaker"] == item["user_speaker"])
        pauses = json.load(open(os.path.join(folder, "pause.json"), encoding="utf-8"))
        assert [[round(p["timestamp"][0] * 1000) + ws, round(p["timestamp"][1] * 1000) + ws] for p in pauses] \
            == item["events"]["pauses_ms"]
        for s, e in item["events"]["pauses_ms"]:
            assert e - s >= PAUSE_MIN_MS and ws <= s < e < we
            assert s in {w[1] for w in words} and e in {w[0] for w in words}
            assert not any(w[0] < e and w[1] > s for w in words)  # no word of the user inside
            # The reference is silent in the pause.
            assert not any(seg["start_ms"] < e and seg["end_ms"] > s
                           for seg in tables["segments"] if seg["conversation_id"] == cid
                           and seg["speaker"] == item["reference_speaker"])


def test_interruptions_are_the_records_events_while_the_reference_speaks(items, tables):
    cid = _test_conversation(tables)
    found = _items(items, "user_interruption")
    assert found
    for folder, item in found:
        ws = item["window_start_ms"]
        ((entry,),) = [json.load(open(os.path.join(folder, "interrupt.json"), encoding="utf-8"))]
        t0, t1 = item["events"]["interrupt_start_ms"], item["events"]["interrupt_end_ms"]
        assert entry["timestamp"] == pytest.approx([(t0 - ws) / 1000, (t1 - ws) / 1000])
        assert any(e["type"] == "interruption" and e["t_ms"] == t0 and e["speaker"] == item["user_speaker"]
                   for e in tables["events"] if e["conversation_id"] == cid)
        assert any(s["start_ms"] <= t0 < s["end_ms"] for s in tables["segments"]
                   if s["conversation_id"] == cid and s["speaker"] == item["reference_speaker"])
        user_words = [w for w in tables["words"]
                      if w["conversation_id"] == cid and w["speaker"] == item["user_speaker"]]
        assert entry["interrupt"] == " ".join(w["text"] for w in user_words if t0 <= w["start_ms"] < t1)
        assert entry["interrupt"].startswith("Wait")
        assert entry["context"] == " ".join(w["text"] for w in user_words if ws <= w["start_ms"] < t0)
        inp = _wav(folder, "input.wav")
        assert not inp[(t1 - ws) * 16:].any() and np.abs(inp[(t0 - ws) * 16:(t1 - ws) * 16]).max() > 0.05


def test_backchannels_and_their_distribution_follow_the_records(items, tables):
    cid = _test_conversation(tables)
    found = _items(items, "backchannel")
    assert found
    for folder, item in found:
        ws, we = item["window_start_ms"], item["window_end_ms"]
        data = json.load(open(os.path.join(folder, "backchannel.json"), encoding="utf-8"))
        events = [(e["t_ms"], e["t_ms"] + json.loads(e["payload"])["duration_ms"]) for e in tables["events"]
                  if e["conversation_id"] == cid and e["type"] == "backchannel"
                  and e["speaker"] == item["reference_speaker"] and ws <= e["t_ms"] < we]
        assert events
        np.testing.assert_allclose(data["backchannels"], [[(s - ws) / 1000, (e - ws) / 1000] for s, e in events])
        dist = np.array(data["distribution"])
        assert data["window_s"] == 0.2 and dist.shape == (int((we - ws) / 1000 / 0.2) + 1,)
        assert dist.sum() == pytest.approx(1.0)
        hot = {b for s, e in data["backchannels"] for b in range(int(s / 0.2), int(e / 0.2) + 1)}
        assert {int(i) for i in np.flatnonzero(dist > 1e-6)} == hot


def test_runs_are_byte_identical_and_a_rerun_replaces_its_own_output(records, items, tmp_path):
    def digest(root: str) -> dict[str, str]:
        return {os.path.relpath(os.path.join(d, n), root): hashlib.sha256(open(os.path.join(d, n), "rb").read())
                .hexdigest() for d, _, names in os.walk(root) for n in names}

    again = str(tmp_path / "again")
    build_items(ItemsConfig(records=(records,), output=again))
    assert digest(again) == digest(items)
    # A rerun into its own output with fewer tasks leaves only what that run made.
    build_items(ItemsConfig(records=(records,), output=again, tasks=("backchannel",)))
    assert {p.split(os.sep)[0] for p in digest(again)} == {"backchannel", "items.jsonl", "_microturn_stage.json"}


def test_only_the_chosen_split_gives_items(records, items, tables, tmp_path):
    train = [c["conversation_id"] for c in tables["conversations"] if c["split"] == "train"]
    assert len(train) == 1
    assert train[0] not in open(os.path.join(items, "items.jsonl"), encoding="utf-8").read()
    out = str(tmp_path / "train")
    summary = build_items(ItemsConfig(records=(records,), output=out, split="train"))
    assert summary.conversations_per_split == {"test": 1, "train": 1} and summary.conversations_used == 1
    lines = [json.loads(x) for x in open(os.path.join(out, "items.jsonl"), encoding="utf-8")]
    assert lines and {x["conversation_id"] for x in lines} == set(train) and {x["split"] for x in lines} == {"train"}


def test_max_per_conversation_keeps_a_seeded_subset_with_stable_names(records, items, tmp_path):
    every = {json.loads(x)["path"] for x in open(os.path.join(items, "items.jsonl"), encoding="utf-8")}
    picked = []
    for run in range(2):
        out = str(tmp_path / f"cap{run}")
        build_items(ItemsConfig(records=(records,), output=out, max_per_conversation=1, seed=3))
        picked.append({json.loads(x)["path"] for x in open(os.path.join(out, "items.jsonl"), encoding="utf-8")})
    assert picked[0] == picked[1] and picked[0] <= every
    assert sorted(p.split("/")[0] for p in picked[0]) == sorted({p.split("/")[0] for p in every})


def test_the_mixed_real_call_uses_the_shard_stages_gated_streams(tmp_path):
    rec = real_call()
    rec["conversation"]["split"] = "test"
    root = write_records(str(tmp_path / "call"), [rec])
    out = str(tmp_path / "items")
    summary = build_items(ItemsConfig(records=(root,), output=out))
    assert summary.items_per_task["smooth_turn_taking"] > 0 and summary.items_per_task["user_interruption"] > 0
    turns = [Turn(s["speaker"], s["start_ms"], s["end_ms"], s["channel"]) for s in rec["segments"]]
    mix = rec["audio"]["mix.flac"]
    lines = [json.loads(x) for x in open(os.path.join(out, "items.jsonl"), encoding="utf-8")]
    for x in lines:
        assert x["source"] == "real" and x["channel_layout"] == "mixed"
        assert x["user_stream"] == "diarization_gated_mixture"
        folder, ws, we = os.path.join(out, x["path"]), x["window_start_ms"], x["window_end_ms"]
        user = build_stream(frozenset(x["user_speakers"]), audio={0: mix}, segments=turns).wave_N[ws * 16: we * 16]
        ref = build_stream(frozenset([x["reference_speaker"]]), audio={0: mix}, segments=turns).wave_N[ws * 16: we * 16]
        stop = (x["user_silenced_from_ms"] or we) - ws
        np.testing.assert_allclose(_wav(folder, "input.wav")[: stop * 16], user[: stop * 16], atol=2 * PCM16)
        np.testing.assert_allclose(_wav(folder, "reference.wav"), ref, atol=2 * PCM16)


def test_bad_inputs_and_outputs_are_loud_errors(records, tmp_path, capsys):
    def fails(argv: list[str], message: str) -> None:
        assert eval_main(["items", *argv]) == 2
        assert message in capsys.readouterr().err

    out = str(tmp_path / "o")
    fails(["--records", str(tmp_path / "nowhere"), "--output", out], "does not exist")
    os.makedirs(tmp_path / "empty")
    fails(["--records", str(tmp_path / "empty"), "--output", out], "holds no conversations table")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    fails(["--records", records, "--output", str(tmp_path / "foreign")], "was not written by `microturn eval items`")
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    (tmp_path / "afile").write_text("x")
    fails(["--records", records, "--output", str(tmp_path / "afile")], "is a file")
    fails(["--records", records, "--output", out, "--split", "valid"], "no evaluation item")
    assert not os.path.exists(out)
    # A record whose media is gone: named, before the output is touched.
    rec = real_call()
    rec["conversation"]["split"] = "test"
    broken = write_records(str(tmp_path / "broken"), [rec])
    os.remove(os.path.join(broken, rec["conversation"]["media_dir"], "mix.flac"))
    fails(["--records", broken, "--output", out], "mix.flac does not exist")
    assert not os.path.exists(out)
    with pytest.raises(ValueError, match="unknown task"):
        ItemsConfig(records=(records,), output=out, tasks=("vap",))


def test_the_cli_prints_conversations_per_split_and_items_per_task(records, tmp_path, capsys):
    assert eval_main(["items", "--records", records, "--output", str(tmp_path / "o"), "--tasks",
                      "smooth_turn_taking", "--context-s", "3"]) == 0
    printed = capsys.readouterr().out
    assert "test: 1, train: 1" in printed and "smooth_turn_taking" in printed and "backchannel" not in printed
    for line in open(tmp_path / "o" / "items.jsonl", encoding="utf-8"):
        item = json.loads(line)
        assert item["events"]["turn_end_ms"] - item["window_start_ms"] <= 3000


def test_a_remix_takes_the_split_of_the_call_it_was_made_from(tmp_path):
    source = "c-00000000000000a1"
    assert split_of(source) == "train"
    remix = two_streams("r-00000000000000c3", seconds=12.0, origin="remix",
                        provenance=json.dumps({"remix_of": source}, sort_keys=True))
    remix["conversation"]["split"] = "test"  # its own column: the shard stage does not read it for a remix
    root = write_records(str(tmp_path / "remix"), [remix])
    with pytest.raises(ValueError, match=r"no evaluation item.*'train': 1"):
        build_items(ItemsConfig(records=(root,), output=str(tmp_path / "test")))
    summary = build_items(ItemsConfig(records=(root,), output=str(tmp_path / "train"), split="train"))
    assert summary.conversations_used == 1 and sum(summary.items_per_task.values()) > 0


def test_splits_computes_the_split_as_the_shard_stage_does(records, tables, tmp_path):
    """With the shard stage's --splits, a conversation's split is the shard stage's (a hash of its
    id at those ratios), not its column: ``test=1`` makes every conversation a test conversation."""
    out = str(tmp_path / "all")
    summary = build_items(ItemsConfig(records=(records,), output=out, splits="test=1"))
    assert summary.conversations_per_split == {"test": len(tables["conversations"])}
    assert summary.conversations_used == len(tables["conversations"])
    with pytest.raises(ValueError, match="not one of --splits"):
        ItemsConfig(records=(records,), output=out, splits="train=0.5,valid=0.5")
    with pytest.raises(ValueError, match="--splits"):
        ItemsConfig(records=(records,), output=out, splits="test=0.5")


def test_transcription_holds_the_user_words_heard_before_the_user_falls_silent(items):
    """transcription.json: the user's words starting in the window, before the stream is zeroed."""
    for line in open(os.path.join(items, "items.jsonl"), encoding="utf-8"):
        item = json.loads(line)
        with open(os.path.join(items, item["path"], "transcription.json"), encoding="utf-8") as f:
            chunks = json.load(f)["chunks"]
        heard_s = ((item["user_silenced_from_ms"] or item["window_end_ms"]) - item["window_start_ms"]) / 1000
        assert all(0 <= c["timestamp"][0] < heard_s for c in chunks), item["path"]
        if item["task"] in ("smooth_turn_taking", "backchannel"):
            assert chunks, f"{item['path']}: the user speaks in the window, so some words are heard"
