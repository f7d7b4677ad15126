"""Synthesize gives the same conversations whatever shares the run and whichever runner runs it.

The same short scripts (a file of three, plus ``--generate 2 --seed 5``) are synthesized in
process, in shuffled order, alone, and with two worker processes
(``--direct_running_mode=multi_processing --direct_num_workers=2``). Every conversation keeps
its id (a hash of what determines its bytes, never of its position), its rows and its media
bytes; the same inputs give byte-identical files on both runners. Only ``source_uri`` names
where a script was read (``path:line``), so it follows the line.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from microturn.pipelines.synthesize.run import run
from microturn.pipelines.tables import read_table

pytestmark = pytest.mark.slow

SCRIPTS = [
    {"id": "d1", "speakers": {"A": {}, "B": {"voice": "en-gb"}},
     "turns": [{"speaker": "A", "text": "Are you coming tonight?"}, {"speaker": "B", "text": "Yes, at eight."}]},
    {"id": "d2", "speakers": {"A": {"voice": "en-us+f3"}, "B": {}},
     "turns": [{"speaker": "A", "text": "The train is late again."},
               {"speaker": "B", "text": "mm-hmm", "act": "backchannel"},
               {"speaker": "A", "text": "Twenty minutes, they say."}]},
    {"id": "d3", "speakers": {"A": {}, "B": {"pitch": 30}},
     "turns": [{"speaker": "A", "text": "tell me when three seconds have passed", "act": "timed_request",
                "targets_ms": [3000], "responses": ["three seconds"]}]},
]
GENERATE = ["--generate", "2", "--seed", "5"]
MULTI = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def write(path, scripts) -> str:
    path.write_text("".join(json.dumps(s) + "\n" for s in scripts))
    return str(path)


def files(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def by_conversation(out: str) -> dict[str, dict]:
    """conversation id → its rows in every table (source_uri left out) and its media digests."""
    convs = {}
    for row in read_table(out, "conversations").to_pylist():
        row.pop("source_uri")
        convs[row["conversation_id"]] = {"row": row, "dialogue": json.loads(row["provenance"])["dialogue_id"]}
    for table in ("segments", "words", "events"):
        for row in read_table(out, table).to_pylist():
            convs[row["conversation_id"]].setdefault(table, []).append(row)
    media = files(os.path.join(out, "media"))
    for cid, conv in convs.items():
        conv["media"] = {k: v for k, v in media.items() if k.startswith(cid + os.sep)}
        assert conv["media"], cid
    assert read_table(out, "rejects").num_rows == 0
    return convs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    ordered = write(root / "ordered.jsonl", SCRIPTS)
    shuffled = write(root / "shuffled.jsonl", [SCRIPTS[2], SCRIPTS[0], SCRIPTS[1]])
    alone = write(root / "alone.jsonl", [SCRIPTS[1]])
    outs = {}
    for name, argv in {
        "batch": ["--scripts", ordered, *GENERATE],
        "batch_two_processes": ["--scripts", ordered, *GENERATE, *MULTI],
        "shuffled_two_processes": ["--scripts", shuffled, *GENERATE, *MULTI],
        "alone": ["--scripts", alone, "--seed", "5"],
    }.items():
        outs[name] = str(root / name)
        run([*argv, "--output", outs[name]], print_summary=False)
    return outs


def test_same_inputs_give_the_same_bytes_in_process_and_with_two_processes(runs):
    one, two = files(runs["batch"]), files(runs["batch_two_processes"])
    assert len(one) > 10 and one == two


def test_order_and_runner_do_not_change_any_conversation(runs):
    batch = by_conversation(runs["batch"])
    assert sorted(c["dialogue"] for c in batch.values()) == ["d1", "d2", "d3", "gen-5-00000", "gen-5-00001"]
    assert by_conversation(runs["shuffled_two_processes"]) == batch


def test_a_script_alone_gives_the_conversation_it_gives_in_a_batch(runs):
    alone = by_conversation(runs["alone"])
    (cid,) = alone
    assert alone[cid] == by_conversation(runs["batch"])[cid]
    (row,) = read_table(runs["alone"], "conversations").to_pylist()
    assert row["source_uri"].endswith("alone.jsonl:1")
