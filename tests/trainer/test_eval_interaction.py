"""``microturn eval interaction``: a trained run, the cascade and the reference speaker on three
hand-made items (microturn.testing.duplex_items), end to end with real files.

* Each system's tree holds every item with output.wav as long as input.wav; the model's has the
  session's timeline (one line per 200 ms chunk) and settings.
* The scores: the reference's latencies are its scripted words' (smooth turn-taking 0.5 s,
  after the interrupt 0.6 s); the cascade answers 0.7 s after the user's VAD end (plus the
  fixed answer's first word's offset) and holds through the 0.5 s pause.
* --json prints {system: report}; report.json holds the same reports; report.html one timeline
  per item; the folder is marked as this command's and a rerun replaces the earlier trees.
* Bad input is exit status 2 and one line, with nothing written.

Shape suffixes follow microturn.schemas.legend: N audio samples.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from microturn.cli.evaluate import main
from microturn.pipelines.duplex.audio import read_mono_N, speech_segments
from microturn.pipelines.duplex.cascade import spoken_response
from microturn.testing.duplex_items import ITEMS, write_items
from session_runs import trained_run_dir

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SYSTEMS = ("model", "cascade", "reference")


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("duplex-items"))
    write_items(root)
    # The first item carries the user's words (as `eval items` writes them); the others do not.
    with open(os.path.join(root, sorted(ITEMS)[0], "transcription.json"), "w", encoding="utf-8") as f:
        json.dump({"text": "hello there", "chunks": [{"text": "hello", "timestamp": [0.5, 0.9]},
                                                     {"text": "there", "timestamp": [1.0, 1.4]}]}, f)
    return root


@pytest.fixture(scope="module")
def run(items, tmp_path_factory) -> dict:
    """The command run once over the items with every system."""
    out = str(tmp_path_factory.mktemp("interaction") / "out")
    checkpoint = trained_run_dir()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # capsys is per test; this fixture is per module
        rc = main(["interaction", "--checkpoint", checkpoint, "--items", items, "--output", out, "--seed", "0",
                   "--json", "--no-progress"])
    return {"rc": rc, "out": out, "stdout": buf.getvalue(), "checkpoint": checkpoint}


def test_json_is_all_of_standard_output_in_a_fresh_process(items, tmp_path):
    """DeepSpeed notes its accelerator on standard output once per process, when the model is
    first built; a script reading ``--json`` must still get one object (bench/turn_taking_curve.py)."""
    proc = subprocess.run([sys.executable, "-m", "microturn.cli.main", "eval", "interaction", "--checkpoint",
                           trained_run_dir(), "--items", items, "--output", str(tmp_path / "out"), "--systems",
                           "model", "--json", "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert set(report) == {"model"}
    assert report["model"]["smooth_turn_taking"]["n"] >= 1


def test_every_system_answers_every_item(run, items):
    assert run["rc"] == 0, run["stdout"]
    for system in SYSTEMS:
        for rel in ITEMS:
            folder = os.path.join(run["out"], system, rel)
            n = read_mono_N(os.path.join(folder, "input.wav")).size
            assert read_mono_N(os.path.join(folder, "output.wav")).size == n
            assert os.path.exists(os.path.join(folder, "reference.wav"))
    for rel in ITEMS:
        folder = os.path.join(run["out"], "model", rel)
        with open(os.path.join(folder, "timeline.jsonl")) as f:
            lines = [json.loads(line) for line in f]
        assert [line["chunk"] for line in lines] == list(range(30))  # 6 s of 200 ms chunks
        with open(os.path.join(folder, "session.json")) as f:
            settings = json.load(f)
        assert settings["config"]["seed"] == 0
        # The user's words reach the session when the item has them, and only then.
        assert (settings["user_text"] is not None) == (rel == sorted(ITEMS)[0]), rel
        assert not os.path.exists(os.path.join(folder, "output.json"))  # its words are its timeline's
        assert os.path.exists(os.path.join(run["out"], "cascade", rel, "output.json"))
    with open(os.path.join(run["out"], "_microturn_stage.json")) as f:
        assert json.load(f)["stage"] == "eval-interaction"


def test_scores_of_the_baselines_are_their_known_answers(run, items):
    reports = json.loads(run["stdout"])
    assert sorted(reports) == sorted(SYSTEMS)
    ref, cascade = reports["reference"], reports["cascade"]
    assert ref["smooth_turn_taking"]["n"] == 1 and ref["smooth_turn_taking"]["tor"] == 1
    assert ref["smooth_turn_taking"]["latency_s"] == pytest.approx(0.5)  # first word 3.0 s, turn end 2.5 s
    assert ref["user_interruption"]["tor"] == 1
    assert ref["user_interruption"]["latency_s"] == pytest.approx(0.6)  # "oh" at 3.8 s, interrupt end 3.2 s
    assert ref["pause_handling"]["tor"] == 0  # the reference stays silent
    first_word_s = spoken_response().words[0][1]
    for task, rel, event_s in (("smooth_turn_taking", "smooth_turn_taking/a-0", 2.5),
                               ("user_interruption", "user_interruption/c-0", 3.2)):
        user_end = speech_segments(read_mono_N(os.path.join(items, rel, "input.wav")))[-1][1]
        assert cascade[task]["tor"] == 1
        assert cascade[task]["latency_s"] == pytest.approx(user_end + 0.7 + first_word_s - event_s, abs=2e-3)
    assert cascade["pause_handling"]["tor"] == 0  # 0.5 s pause < 0.7 s timeout; the item ends with the turn
    assert set(reports["model"]) >= {"smooth_turn_taking", "pause_handling", "user_interruption"}
    # VAP on each system's tree: every item holds reference.wav, copied beside the system's answer.
    assert {system: report["vap"]["scored_items"] for system, report in reports.items()} == dict.fromkeys(SYSTEMS, 3)


def test_reports_and_page_are_written(run):
    with open(os.path.join(run["out"], "report.json")) as f:
        written = json.load(f)
    assert written["reports"] == json.loads(run["stdout"])
    for system in SYSTEMS:  # the scorer's per-item rows, one per item, saying where words came from
        rows = {row["item"]: row for row in written["items"][system]}
        assert sorted(rows) == sorted(ITEMS)
        expected = {"model": "timeline.jsonl", "cascade": "output.json", "reference": "output.json"}[system]
        assert {row["words"] for row in rows.values()} == {expected}
    with open(os.path.join(run["out"], "report.html"), encoding="utf-8") as f:
        page = f.read()
    assert page.count('<img class="timeline" src="data:image/png;base64,') == len(ITEMS)
    assert "http://" not in page and "https://" not in page


def test_a_rerun_replaces_the_earlier_trees(run, items, capsys):
    out = run["out"]
    assert main(["interaction", "--items", items, "--output", out, "--systems", "cascade", "--no-progress"]) == 0
    assert sorted(os.listdir(out)) == ["_microturn_stage.json", "cascade", "report.html", "report.json"]
    printed = capsys.readouterr().out
    assert "smooth_turn_taking" in printed and "cascade" in printed and "model" not in printed.split("wrote")[0]
    assert "\nvap\n" in printed and "shift_hold" in printed


def test_bad_input_is_one_line_and_nothing_written(items, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")

    def fails(*argv: str, match: str) -> None:
        assert main(["interaction", "--items", items, "--no-progress", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err

    fails("--output", str(foreign), "--systems", "cascade", match="did not write")
    assert os.listdir(foreign) == ["notes.txt"]
    fails("--output", str(tmp_path / "a"), "--systems", "model", match="give --checkpoint")
    fails("--output", str(tmp_path / "a"), "--systems", "model", "--checkpoint", str(tmp_path),
          match="no complete checkpoint")
    fails("--output", str(tmp_path / "a"), "--systems", "cascade", "--seed", "3", match="--systems leaves it out")
    fails("--output", os.path.join(items, "x"), "--systems", "cascade", match="overlaps --items")
    bare = tmp_path / "bare" / "one"
    bare.mkdir(parents=True)
    with open(os.path.join(items, "pause_handling/b-0/input.wav"), "rb") as f:
        (bare / "input.wav").write_bytes(f.read())
    (bare / "pause.json").write_text(json.dumps([{"timestamp": [1.8, 2.3]}]))
    assert main(["interaction", "--items", str(tmp_path / "bare"), "--output", str(tmp_path / "b"),
                 "--systems", "reference", "--no-progress"]) == 2
    assert "no reference.wav" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
    with pytest.raises(SystemExit) as exc:
        main(["interaction", "--items", items, "--output", str(tmp_path / "c"), "--systems", "model,oracle"])
    assert exc.value.code == 2


@pytest.mark.parametrize("transcript, match", [
    ("{not json", "transcription.json"),
    (json.dumps({"chunks": [{"text": "hi"}]}), "transcription.json"),
    (json.dumps({"chunks": [{"text": "hi", "timestamp": [-1.0, 0.2]}]}), "starts at -1.0 s"),
    (json.dumps({"chunks": [{"text": "hi", "timestamp": ["nan", 0.2]}]}), "starts at nan s"),
])
def test_a_malformed_transcript_stops_the_command_before_any_item_is_answered(tmp_path, capsys, transcript,
                                                                                match):
    root = str(tmp_path / "items")
    write_items(root)
    last = sorted(ITEMS)[-1]  # the last item: a check made only while answering would come too late
    with open(os.path.join(root, last, "transcription.json"), "w", encoding="utf-8") as f:
        f.write(transcript)
    out = tmp_path / "out"
    assert main(["interaction", "--checkpoint", trained_run_dir(), "--items", root, "--output", str(out),
                 "--systems", "model", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and last in err[0], err
    assert not out.exists()
