"""bench/barge_in.py reads p_speak around each barge-in on the model from an eval interaction folder.

Hand-built folder: two interruption items the model was speaking at (one where it stops starting
words after the barge-in, one where it talks through), one it was silent at (yield_s None: not a
barge-in on it) and a smooth turn-taking item; the figures are known by construction.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "barge_in.py")


def _bench():
    spec = importlib.util.spec_from_file_location("barge_in_bench", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _item(out, name, start_s, p, texts, *, p_speak=True):
    folder = out / "model" / "user_interruption" / name
    folder.mkdir(parents=True)
    (folder / "interrupt.json").write_text(json.dumps([{"context": "a", "interrupt": "b",
                                                         "timestamp": [start_s, start_s + 2]}]))
    with open(folder / "timeline.jsonl", "w") as f:
        for k, (pk, text) in enumerate(zip(p, texts, strict=True)):
            row = {"chunk": k, "start_ms": 200 * k, "text": text, "voiced": True}
            if p_speak:
                row["p_speak"] = pk
            f.write(json.dumps(row) + "\n")


def _folder(tmp_path, *, p_speak=True):
    # Barge-in at 1.0 s: chunk 5. Before: chunks 2-4; after: chunks 6-8 (chunk 5 itself is skipped).
    _item(tmp_path, "yields", 1.0, [0, 0, 0.9, 0.8, 0.7, 0.5, 0.1, 0.0, 0.0, 0.0],
          ["", "", " a", " b", " c", " d", "", "", "", ""], p_speak=p_speak)
    _item(tmp_path, "talks", 1.05, [0, 0, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.3, 0.3],
          ["", "", " a", "", " c", " d", " e", " f", " g", ""], p_speak=p_speak)
    _item(tmp_path, "silent", 1.0, [0.0] * 10, [""] * 10, p_speak=p_speak)
    items = [{"item": "user_interruption/yields", "task": "user_interruption", "yield_s": 0.4},
             {"item": "user_interruption/talks", "task": "user_interruption", "yield_s": 3.1},
             {"item": "user_interruption/silent", "task": "user_interruption", "yield_s": None},
             {"item": "smooth_turn_taking/x", "task": "smooth_turn_taking", "latency_s": 0.1}]
    (tmp_path / "report.json").write_text(json.dumps({"items": {"model": items}, "reports": {}}))
    return str(tmp_path)


def test_p_speak_before_and_after_each_barge_in_on_the_model(tmp_path, capsys):
    bench = _bench()
    rows = bench.barge_ins(_folder(tmp_path), 3, 3)
    assert [r["item"] for r in rows] == ["user_interruption/yields", "user_interruption/talks"]
    assert [r["k0"] for r in rows] == [5, 5]
    assert rows[0]["p_before"] == [0.9, 0.8, 0.7] and rows[0]["p_after"] == [0.1, 0.0, 0.0]
    assert rows[1]["p_before"] == [0.6, 0.6, 0.6] and rows[1]["p_after"] == [0.6, 0.6, 0.3]
    assert [(r["words_before"], r["words_after"]) for r in rows] == [(3, 0), (2, 3)]
    bench.main(["--interaction", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("2 barge-ins on the model: p_speak before mean 0.700")
    assert "after mean 0.267" in last and "5 of 6 before, 3 of 6 after" in last


def test_a_timeline_without_p_speak_and_a_folder_without_barge_ins_are_errors(tmp_path):
    bench = _bench()
    with pytest.raises(SystemExit, match="no p_speak"):
        bench.main(["--interaction", _folder(tmp_path / "old", p_speak=False)])
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "report.json").write_text(json.dumps({"items": {"model": []}, "reports": {}}))
    with pytest.raises(SystemExit, match="no barge-in"):
        bench.main(["--interaction", str(tmp_path / "none")])
    with pytest.raises(SystemExit):
        bench.main(["--interaction", str(tmp_path / "none"), "--after", "0"])
