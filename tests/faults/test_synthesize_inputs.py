"""Faults in synthesize's inputs: every bad script is one reject with a reason, the rest complete.

One real run (espeak-ng, Beam DirectRunner, in process) over script files the test writes: good
dialogues beside one bad dialogue per class of fault (lone surrogates, control characters, bidi
overrides, invalid UTF-8, non-objects, wrong types, sizes past every cap, text the TTS cannot
speak, empty turns), plus bad files (a FIFO, a corrupt .gz, a line over 1 MiB) and a file whose
name holds an ESC and a byte that is not UTF-8. No control character may reach any table.
"""

from __future__ import annotations

import gzip
import json
import os

import pytest

from microturn.pipelines.synthesize.run import run
from microturn.pipelines.tables import read_table
from microturn.schemas.dialogue import MAX_DIALOGUE_CHARS, MAX_LINE_BYTES, MAX_TEXT_CHARS, MAX_WORD_CHARS
from microturn.schemas.text import refused_char

pytestmark = pytest.mark.slow

TABLES = ("conversations", "segments", "words", "events", "rejects")


def dialogue(did: str, *texts, **extra) -> dict:
    turns = [{"speaker": "AB"[i % 2], "text": t} for i, t in enumerate(texts or ("hello there", "hi"))]
    return {"id": did, "speakers": {"A": {}, "B": {"voice": "en-gb"}}, "turns": turns, **extra}


def line(obj) -> bytes:
    return json.dumps(obj).encode()  # ASCII: "\ud800" stays an escape, as a JSON writer emits it


GOOD = [
    line(dialogue("good", "Shall we start at nine?", "Nine works for me.")),
    # Whitespace controls are whitespace: collapsed to one space, the dialogue is spoken.
    line(dialogue("good-ws", "first part\r\nsecond\tpart", "okay\x0bthen")),
    # A right-to-left mark (not an override) and NFD text are legitimate.
    line(dialogue("good-marks", "cafe\u0301 is open today\u200f", "great")),
]

# (error_type, stage, script line bytes)
BAD = [
    ("bad_text", "parse", line(dialogue("surrogate", "hello \ud800 there"))),
    ("bad_text", "parse", b'{"id": "low-surrogate", "speakers": {"A": {}, "B": {}}, '
                          b'"turns": [{"speaker": "A", "text": "\\udfff"}]}'),
    ("bad_text", "parse", line(dialogue("esc", "so \x1b[31mred\x1b[0m", "no"))),
    ("bad_text", "parse", line(dialogue("nul", "ok", "a\x00b"))),
    ("bad_text", "parse", line(dialogue("rlo", "abc \u202edcba"))),
    ("bad_text", "parse", line(dialogue("c1", "csi \x9b31m here"))),
    ("bad_text", "parse", line(dialogue("license-esc", license="MIT\x1b]0;owned\x07"))),
    ("bad_text", "parse", line(dialogue("timed-bell", "tell me when five seconds pass", "sure") | {
        "turns": [{"speaker": "A", "text": "tell me in five seconds", "act": "timed_request",
                   "targets_ms": [5000], "responses": ["now\x07"]}]})),
    ("unknown_field", "parse", line(dialogue("key-esc") | {"\x1b[2J\ud800": 1})),
    ("invalid_utf8", "read", b'{"id": "latin1", "speakers": {"A": {}, "B": {}}, '
                             b'"turns": [{"speaker": "A", "text": "caf\xe9"}]}'),
    ("invalid_json", "parse", b'{"id": "truncated", "speakers": '),
    ("invalid_json", "parse", b"[" * 100_000),  # nested too deeply for the parser
    ("invalid_json", "parse", b'{"id": ' + b"9" * 5000 + b"}"),  # past CPython's integer limit
    ("not_an_object", "parse", b"[1, 2, 3]"),
    ("not_an_object", "parse", b"null"),
    ("not_an_object", "parse", b'"just a string"'),
    ("bad_type", "parse", line(dialogue("text-int") | {"turns": [{"speaker": "A", "text": 5}]})),
    ("bad_type", "parse", line(dialogue("speakers-list") | {"speakers": ["A", "B"]})),
    ("bad_type", "parse", line(dialogue("pitch-str") | {"speakers": {"A": {"pitch": "high"}, "B": {}}})),
    ("bad_type", "parse", line(dialogue("turns-obj") | {"turns": {"speaker": "A", "text": "hi"}})),
    ("bad_id", "parse", line(dialogue("id\x1b[31m"))),
    ("text_too_long", "parse", line(dialogue("long-turn", "word " * (MAX_TEXT_CHARS // 4)))),
    ("text_too_long", "parse", line(dialogue("long-dialogue", *[" ".join(["word"] * 110)] * (
        MAX_DIALOGUE_CHARS // 549 + 1)))),
    ("word_too_long", "parse", line(dialogue("long-word", "see " + "x" * (MAX_WORD_CHARS + 1)))),
    ("empty_text", "parse", line(dialogue("blank", "   \t  ", "hi"))),
    ("missing_field", "parse", line(dialogue("no-turns") | {"turns": []})),
    ("unspeakable", "synthesize", line(dialogue("dots", "...", "hi"))),
    ("unspeakable", "synthesize", line(dialogue("marks-only", "\u0301\u0301", "hi"))),
    ("line_too_long", "read", b'{"id": "huge", "pad": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}'),
]


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-synth")
    scripts = root / "scripts"
    scripts.mkdir()
    # The BOM of a file saved by a Windows editor is not part of the first line.
    (scripts / "mixed.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join([GOOD[0], *[b for _, _, b in BAD],
                                                                          *GOOD[1:]]) + b"\n")
    # A file name with an ESC sequence and a byte that is not UTF-8 (undecodable names reach
    # Python as lone surrogates).
    odd = os.path.join(os.fsencode(scripts), b"odd\x1b[31m\xff.jsonl")
    with open(odd, "wb") as f:
        f.write(line(dialogue("odd-name", "from a strange file", "indeed")) + b"\n")
    # A compressed script file is read through Beam's decompressing reader.
    (scripts / "packed.jsonl.gz").write_bytes(gzip.compress(line(dialogue("packed", "zipped words", "yes")) + b"\n"))
    os.mkfifo(scripts / "fifo.jsonl")  # reading it would block forever
    os.symlink(root / "nowhere.jsonl", scripts / "broken.jsonl")
    (scripts / "folder.jsonl").mkdir()
    (scripts / "corrupt.jsonl.gz").write_bytes(gzip.compress(b"x" * 1000)[:30] + b"\x00garbage" * 10)
    out = str(root / "out")
    run(["--scripts", str(scripts / "*.jsonl*"), "--output", out, "--seed", "3"], print_summary=False)
    return out, str(scripts)


def test_each_bad_script_is_one_reject_and_the_good_ones_are_spoken(run_out):
    out, scripts = run_out
    convs = read_table(out, "conversations").to_pylist()
    prov = sorted(json.loads(c["provenance"])["dialogue_id"] for c in convs)
    assert prov == sorted(["good", "good-ws", "good-marks", "odd-name", "packed"])
    rejects = read_table(out, "rejects").to_pylist()
    mixed = os.path.join(scripts, "mixed.jsonl")
    by_input = {}
    for r in rejects:
        assert r["input"] not in by_input, f"two rejects for {r['input']}"
        by_input[r["input"]] = r
    for no, (error_type, stage, _) in enumerate(BAD, start=2):
        r = by_input.get(f"{mixed}:{no}")
        assert r is not None, f"no reject for line {no} ({error_type})"
        assert (r["error_type"], r["stage"]) == (error_type, stage), r
        assert r["message"], r
    for name in ("fifo.jsonl", "broken.jsonl", "folder.jsonl"):
        assert by_input[os.path.join(scripts, name)]["error_type"] == "NotAFile", name
    corrupt = [r for r in rejects if r["input"] == os.path.join(scripts, "corrupt.jsonl.gz")]
    assert len(corrupt) == 1 and corrupt[0]["stage"] == "read", rejects
    assert len(rejects) == len(BAD) + 4, sorted(by_input)


def test_a_strange_file_name_is_recorded_escaped(run_out):
    out, scripts = run_out
    (odd,) = [c for c in read_table(out, "conversations").to_pylist()
              if json.loads(c["provenance"])["dialogue_id"] == "odd-name"]
    assert odd["source_uri"] == os.path.join(scripts, "odd\\x1b[31m\\udcff.jsonl") + ":1"


def test_no_control_character_reaches_any_table(run_out):
    out, _ = run_out
    words = read_table(out, "words").to_pylist()
    assert {"first", "part", "second", "caf\u00e9"} <= {w["text"] for w in words}
    for table in TABLES:
        for row in read_table(out, table).to_pylist():
            for text in _strings(row):
                assert refused_char(text) is None, (table, row)


def test_remix_refuses_control_characters_in_a_source_table(run_out, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    out, _ = run_out
    source = str(tmp_path / "source")
    shutil.copytree(out, source)
    words_dir = os.path.join(source, "words")
    (part,) = [n for n in os.listdir(words_dir) if n.endswith(".parquet")]
    words = pq.read_table(os.path.join(words_dir, part))
    rows = words.to_pylist()
    tampered = rows[0]["conversation_id"]
    rows[0]["text"] = "\x1b[31mhello"
    pq.write_table(type(words).from_pylist(rows, schema=words.schema), os.path.join(words_dir, part))
    remixed = str(tmp_path / "remix")
    run(["--remix", source, "--output", remixed, "--seed", "1"], print_summary=False)
    (rej,) = read_table(remixed, "rejects").to_pylist()
    assert (rej["input"], rej["stage"], rej["error_type"]) == (tampered, "remix", "bad_text")
    assert "U+001B" in rej["message"]
    convs = read_table(remixed, "conversations").to_pylist()
    assert len(convs) == read_table(out, "conversations").num_rows - 1
    for table in TABLES:
        for row in read_table(remixed, table).to_pylist():
            for text in _strings(row):
                assert refused_char(text) is None, (table, row)
