"""The synthesize pipeline end to end on the real espeak-ng backend and the DirectRunner."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import soundfile as sf

from microturn.pipelines.synthesize.run import main as synthesize_main
from microturn.pipelines.synthesize.run import parse_args, run
from microturn.pipelines.tables import read_table
from microturn.schemas.dialogue import MAX_TEXT_CHARS
from microturn.synth.templates import bundled_dialogues, dialogue_kind

pytestmark = pytest.mark.slow


def good_dialogues(n: int = 3) -> list[dict]:
    """The shortest bundled conversations and timed dialogue, as script dicts (the newer kinds have
    tests of their own)."""
    ds = bundled_dialogues()
    timed = [d for d in ds if dialogue_kind(d) == "timed"]
    plain = sorted((d for d in ds if dialogue_kind(d) == "dialogue"), key=lambda d: sum(len(t.text) for t in d.turns))
    picked = [*plain[: n - 1], min(timed, key=lambda d: sum(len(t.text) for t in d.turns))]
    return [d.to_dict() for d in picked]


BAD_LINES = {
    "invalid_json": '{"id": "broken", "speakers": ',
    "unknown_speaker": json.dumps({"id": "u", "speakers": {"A": {}, "B": {}},
                                   "turns": [{"speaker": "C", "text": "hello"}]}),
    "empty_text": json.dumps({"id": "e", "speakers": {"A": {}, "B": {}}, "turns": [{"speaker": "A", "text": "  "}]}),
    "text_too_long": json.dumps({"id": "l", "speakers": {"A": {}, "B": {}},
                                 "turns": [{"speaker": "A", "text": "word " * (MAX_TEXT_CHARS // 4)}]}),
    "unsupported_voice": json.dumps({"id": "v", "speakers": {"A": {"voice": "en-nowhere"}, "B": {}},
                                     "turns": [{"speaker": "A", "text": "hello there"}]}),
    "unsupported_language": json.dumps({"id": "g", "language": "xx", "speakers": {"A": {}, "B": {}},
                                        "turns": [{"speaker": "A", "text": "hello there"}]}),
}


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    root = tmp_path_factory.mktemp("scripts")
    path = root / "mixed.jsonl"
    lines = [json.dumps(d) for d in good_dialogues()]
    lines[1:1] = BAD_LINES.values()
    lines.append(lines[0])  # the same dialogue twice: one conversation, one duplicate reject
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def out(scripts, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth") / "out")
    run(["--scripts", scripts, "--output", out, "--seed", "7"], print_summary=False)
    return out


def files_digest(root: str) -> dict[str, str]:
    digests = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def test_bad_scripts_are_rejected_with_reasons_and_the_rest_complete(out):
    convs = read_table(out, "conversations").to_pylist()
    assert len(convs) == 3 and {c["origin"] for c in convs} == {"synthetic"}
    rejects = read_table(out, "rejects").to_pylist()
    kinds = sorted(r["error_type"] for r in rejects)
    assert kinds == sorted([*BAD_LINES, "duplicate"]), rejects
    assert all(r["input"].startswith(os.path.dirname(r["input"])) and ":" in r["input"] for r in rejects)
    assert {r["stage"] for r in rejects} == {"parse", "dedupe"}


def test_records_stems_and_exact_words(out):
    convs = read_table(out, "conversations").to_pylist()
    words = read_table(out, "words").to_pylist()
    segs = read_table(out, "segments").to_pylist()
    for c in convs:
        assert c["channel_layout"] == "per_speaker" and c["channels"] == len(c["speakers"]) == 2
        assert c["backends"] and dict(c["backends"])["tts"].startswith("espeak-ng")
        prov = json.loads(c["provenance"])
        assert prov["seed"] == 7 and prov["timing"]["gap"]["family"] and prov["dialogue_sha256"]
        assert c["split"] in ("train", "valid", "test") and c["conversation_id"].startswith("s-")
        stems = []
        for name in c["audio_files"]:
            wave, sr = sf.read(os.path.join(out, c["media_dir"], name), dtype="float32")
            assert sr == 16_000 and wave.ndim == 1
            assert abs(wave.size / 16 - c["duration_ms"]) <= 1
            stems.append(wave)
        # No leakage: wherever one speaker's words are, the other's stream is silent unless the
        # other speaker is also talking then.
        spans = {s: [(w["start_ms"], w["end_ms"]) for w in words if w["conversation_id"] == c["conversation_id"]
                     and w["speaker"] == s] for s in c["speakers"]}
        segspans = {s: [(g["start_ms"], g["end_ms"]) for g in segs if g["conversation_id"] == c["conversation_id"]
                        and g["speaker"] == s] for s in c["speakers"]}
        for i, spk in enumerate(c["speakers"]):
            other = stems[1 - i]
            for s, e in spans[spk]:
                if any(a < e and s < b for a, b in segspans[c["speakers"][1 - i]]):
                    continue
                assert np.abs(other[s * 16: e * 16]).max(initial=0) < 1e-3
            # and each word is audible in its own stream
            loud = [np.sqrt(np.mean(stems[i][s * 16: e * 16] ** 2)) for s, e in spans[spk]]
            assert np.median(loud) > 0.01
    for w in words:
        assert w["score"] == 1.0 and 0 <= w["start_ms"] < w["end_ms"]
    assert {e["type"] for e in read_table(out, "events").to_pylist()} >= {"turn_end", "timed_instruction"}


def test_timed_responses_land_on_their_targets(out):
    events = [e for e in read_table(out, "events").to_pylist() if e["type"] == "timed_instruction"]
    assert events
    words = read_table(out, "words").to_pylist()
    for e in events:
        p = json.loads(e["payload"])
        assert p["response_start_ms"] == p["target_ms"] == e["t_ms"] + p["delay_ms"]
        first = min(w["start_ms"] for w in words if w["conversation_id"] == e["conversation_id"]
                    and w["speaker"] == p["responder"] and w["start_ms"] >= p["target_ms"])
        assert first == p["target_ms"]  # the answer's first word starts exactly on time


def test_same_seed_same_bytes_on_another_runner_and_other_seed_differs(scripts, out, tmp_path):
    again = str(tmp_path / "again")
    run(["--scripts", scripts, "--output", again, "--seed", "7", "--direct_running_mode=multi_threading",
         "--direct_num_workers=2"], print_summary=False)
    assert files_digest(again) == files_digest(out)
    other = str(tmp_path / "other")
    run(["--scripts", scripts, "--output", other, "--seed", "8"], print_summary=False)
    a = {k: v for k, v in files_digest(out).items() if k.endswith(".flac")}
    b = {k: v for k, v in files_digest(other).items() if k.endswith(".flac")}
    assert a and b and set(a.values()).isdisjoint(b.values())


def test_remix_and_stats(out, tmp_path, capsys):
    convs = read_table(out, "conversations").to_pylist()
    remixed = str(tmp_path / "remix")
    run(["--remix", out, "--output", remixed, "--seed", "1"], print_summary=False)
    rows = read_table(remixed, "conversations").to_pylist()
    assert len(rows) == len(convs) and {r["origin"] for r in rows} == {"remix"}
    assert {json.loads(r["provenance"])["remix_of"] for r in rows} == {c["conversation_id"] for c in convs}
    src_words = {c["conversation_id"]: sorted(w["text"] for w in read_table(out, "words").to_pylist()
                                                 if w["conversation_id"] == c["conversation_id"]) for c in convs}
    new_words = read_table(remixed, "words").to_pylist()
    for r in rows:
        src = json.loads(r["provenance"])["remix_of"]
        mine = sorted(w["text"] for w in new_words if w["conversation_id"] == r["conversation_id"])
        assert mine == src_words[src]  # per-speaker sources lose no word
    png = str(tmp_path / "hist.png")
    assert synthesize_main(["stats", remixed, "--against", out, "--plot", png]) == 0
    text = capsys.readouterr().out
    assert "median gap" in text and "overlap ratio" in text and remixed in text
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 10_000


def test_cli_flags_and_config(tmp_path):
    cfg = tmp_path / "synth.toml"
    cfg.write_text('seed = 3\nnoise_snr_db = 20.0\nscripts = ["a.jsonl"]\n')
    c, beam_args = parse_args(["--config", str(cfg), "--output", "o", "--seed", "5", "--runner", "DirectRunner"])
    assert c.seed == 5 and c.noise_snr_db == 20.0 and c.scripts == ("a.jsonl",) and beam_args == ["--runner",
                                                                                                    "DirectRunner"]
    cfg.write_text("sede = 3\n")
    with pytest.raises(ValueError, match="unknown key"):
        parse_args(["--config", str(cfg), "--output", "o", "--generate", "1"])
    with pytest.raises(ValueError, match="nothing to synthesize"):
        parse_args(["--output", "o"])
    with pytest.raises(ValueError, match="reverb"):
        parse_args(["--output", "o", "--generate", "1", "--reverb-rt60-s", "9"])
    assert parse_args(["--output", "o", "--generate", "1"])[0].interruption_share == 0.3
    assert parse_args(["--output", "o", "--generate", "1", "--interruption-share", "1"])[0].interruption_share == 1.0
    cfg.write_text("generate = 2\ninterruption_share = 0.5\n")
    assert parse_args(["--config", str(cfg), "--output", "o"])[0].interruption_share == 0.5
    with pytest.raises(ValueError, match="--interruption-share"):
        parse_args(["--output", "o", "--generate", "1", "--interruption-share", "1.2"])


def test_kinds_flag_and_config_key(tmp_path, capsys):
    """--kinds (comma-separated) and the config's `kinds` choose what --generate makes; a bad or
    stray value is an error naming the valid kinds before any work."""
    assert parse_args(["--output", "o", "--generate", "3"])[0].kinds == ()
    cfg, _ = parse_args(["--output", "o", "--generate", "3", "--kinds", "visual, background"])
    assert cfg.kinds == ("visual", "background")
    toml = tmp_path / "synth.toml"
    toml.write_text('generate = 4\nkinds = ["simultaneous"]\n')
    assert parse_args(["--config", str(toml), "--output", "o"])[0].kinds == ("simultaneous",)
    assert parse_args(["--config", str(toml), "--output", "o", "--kinds", "timed"])[0].kinds == ("timed",)
    valid = "the kinds are dialogue, timed, visual, background, simultaneous"
    with pytest.raises(ValueError, match=rf"--kinds: unknown kind 'visaul' \(did you mean 'visual'\?\); {valid}"):
        parse_args(["--output", "o", "--generate", "3", "--kinds", "visaul"])
    with pytest.raises(ValueError, match=rf"--kinds: an empty kind name \(a stray comma\?\); {valid}"):
        parse_args(["--output", "o", "--generate", "3", "--kinds", "visual,"])
    with pytest.raises(ValueError, match="--kinds visual chooses what --generate makes; give --generate N too"):
        parse_args(["--output", "o", "--scripts", "a.jsonl", "--kinds", "visual"])
    toml.write_text('scripts = ["a.jsonl"]\nkinds = ["visual"]\n')
    with pytest.raises(ValueError, match="give --generate N too"):
        parse_args(["--config", str(toml), "--output", "o"])
    toml.write_text('generate = 2\nkinds = ["visual", "backgruond"]\n')
    with pytest.raises(ValueError, match=r"did you mean 'background'\?"):
        parse_args(["--config", str(toml), "--output", "o"])
    toml.write_text('generate = 2\nkinds = "visual"\n')
    with pytest.raises(ValueError, match="kinds must be a list of strings"):
        parse_args(["--config", str(toml), "--output", "o"])
    toml.write_text('generate = 2\nkind = ["visual"]\n')
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['kind'\]"):
        parse_args(["--config", str(toml), "--output", "o"])
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        synthesize_main(["--generate", "2", "--kinds", "visaul", "--output", str(out)])
    message = str(exc.value)
    assert message.startswith("microturn synthesize: error: --kinds: unknown kind 'visaul'") and valid in message
    assert not out.exists()  # refused before any work


def test_remix_of_a_mixed_channel_record_has_no_leakage(out, tmp_path):
    """A record with one mixed channel (as ingest writes for a phone call) remixes into streams
    where no speaker's stream holds audio while the other speaker talks in the source."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from microturn.schemas import schema_for

    src = str(tmp_path / "mixed-src")
    conv = read_table(out, "conversations").to_pylist()[0]
    cid = conv["conversation_id"]
    stems = [sf.read(os.path.join(out, conv["media_dir"], f), dtype="float32")[0] for f in conv["audio_files"]]
    os.makedirs(os.path.join(src, conv["media_dir"]))
    sf.write(os.path.join(src, conv["media_dir"], "mix.flac"), (stems[0] + stems[1]) / 2, 16_000, subtype="PCM_16")
    rows = {"conversations": [{**conv, "channels": 1, "channel_layout": "mixed", "audio_files": ["mix.flac"],
                               "origin": "real", "provenance": None}],
            "segments": [{**r, "channel": 0} for r in read_table(out, "segments").to_pylist()
                         if r["conversation_id"] == cid],
            "words": [r for r in read_table(out, "words").to_pylist() if r["conversation_id"] == cid]}
    for table, data in rows.items():
        os.makedirs(os.path.join(src, table))
        pq.write_table(pa.Table.from_pylist(data, schema=schema_for(table)),
                       os.path.join(src, table, "part-00000-of-00001.parquet"))
    remixed = str(tmp_path / "remix-mixed")
    run(["--remix", src, "--output", remixed], print_summary=False)
    (row,) = read_table(remixed, "conversations").to_pylist()
    segs = read_table(remixed, "segments").to_pylist()
    assert row["channel_layout"] == "per_speaker" and row["channels"] == 2
    waves = [sf.read(os.path.join(remixed, row["media_dir"], f), dtype="float32")[0] for f in row["audio_files"]]
    for i, spk in enumerate(row["speakers"]):
        other = row["speakers"][1 - i]
        mine = [(g["start_ms"], g["end_ms"]) for g in segs if g["speaker"] == spk]
        for g in segs:
            if g["speaker"] != other:
                continue
            # Where only the other speaker talks, this stream is silent.
            s, e = g["start_ms"], g["end_ms"]
            free = [(max(s, a), min(e, b)) for a, b in mine if a < e and s < b]
            if not free:
                assert np.abs(waves[i][s * 16: e * 16]).max(initial=0) < 1e-3
    assert len(read_table(remixed, "words")) <= len(rows["words"])


def test_corrupt_and_empty_files_cost_only_themselves(tmp_path):
    tiny = json.dumps({"id": "tiny", "speakers": {"A": {}, "B": {}},
                       "turns": [{"speaker": "A", "text": "Hello there."}, {"speaker": "B", "text": "Hi."}]})
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "corrupt.jsonl").write_bytes(b"\xff\xfe\x00garbage\n" + tiny.encode() + b"\n")
    out = str(tmp_path / "out")
    run(["--scripts", str(tmp_path / "empty.jsonl"), "--scripts", str(tmp_path / "corrupt.jsonl"),
         "--output", out], print_summary=False)
    assert [c["source_uri"] for c in read_table(out, "conversations").to_pylist()] == [
        f"{tmp_path / 'corrupt.jsonl'}:2"]
    assert sorted((r["error_type"], r["input"]) for r in read_table(out, "rejects").to_pylist()) == [
        ("EmptyFile", str(tmp_path / "empty.jsonl")), ("invalid_utf8", f"{tmp_path / 'corrupt.jsonl'}:1")]


def test_the_same_timing_file_at_another_path_gives_the_same_bytes(tmp_path):
    from microturn.synth.timing import DEFAULT_TIMING

    model = DEFAULT_TIMING.to_dict()
    model["gap"]["params"] = [270.0, 0.7]  # not the default model: a file of one's own
    digests = []
    for where in ("a", "b/deeper"):
        path = tmp_path / where / "timing.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(model))
        out = str(tmp_path / f"out-{len(digests)}")
        run(["--generate", "1", "--timing", str(path), "--output", out], print_summary=False)
        digests.append(files_digest(out))
        rows = read_table(out, "conversations").to_pylist()
        assert all(str(tmp_path) not in json.dumps(r, default=str) for r in rows)
    assert digests[0] == digests[1]


def test_bad_sources_and_timing_files_are_clear_errors(tmp_path):
    from microturn.synth.timing import DEFAULT_TIMING

    with pytest.raises(ValueError, match="no conversation records"):
        run(["--remix", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")])
    bad = DEFAULT_TIMING.to_dict()
    bad["gap"] = 3
    for name, text in (("missing.json", None), ("junk.json", "{not json"), ("typed.json", json.dumps(bad))):
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match="--timing"):
            run(["--generate", "1", "--timing", str(tmp_path / name), "--output", str(tmp_path / "o")])
