"""Scoring items in Full-Duplex-Bench's layout end to end: item discovery and task detection, word
sources (output.json, timeline.jsonl, VAD only), stereo conversations, backchannel JSD against a
reference, v1.5 intervals, every loud error, and ``microturn eval duplex`` itself.

Speech is :mod:`microturn.testing.speechlike` sound (silero finds it: checked first); silence is
zeros. Where a figure depends on silero's boundaries (30 ms pad, up to ~200 ms after an offset),
the test reads the boundaries silero gives and works the figure out from them by hand.

Shape suffixes follow microturn.schemas.legend: N audio samples.
"""

from __future__ import annotations

import json
import math
import os
import statistics

import numpy as np
import pytest
import soundfile

from microturn.cli.evaluate import main as eval_main
from microturn.pipelines.duplex.audio import SAMPLE_RATE, merge_segments, speech_segments
from microturn.pipelines.duplex.layout import find_items
from microturn.pipelines.duplex.score import score_items
from microturn.testing.speechlike import place

TOTAL_S = 8.0


def _write(folder, name, data) -> None:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    if name.endswith(".wav"):
        soundfile.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    elif name.endswith(".jsonl"):
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in data)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(data if isinstance(data, str) else json.dumps(data))


def _item(folder, *, user, model, annotation=None, words=None, timeline=None, total_s=TOTAL_S, seed=0):
    """An item: input.wav / output.wav with speech over the given spans, its annotation and words."""
    _write(folder, "input.wav", place(total_s, user, seed=seed))
    _write(folder, "output.wav", place(total_s, model, seed=seed + 5))
    if annotation is not None:
        _write(folder, *annotation)
    if words is not None:
        _write(folder, "output.json", {"text": " ".join(w[0] for w in words),
                                       "chunks": [{"text": t, "timestamp": [s, e]} for t, s, e in words]})
    if timeline is not None:
        _write(folder, "timeline.jsonl", [{"chunk": ms // 200, "start_ms": ms, "text": text} for ms, text in timeline])


def _turn(t):
    return ("turn_taking.json", [{"text": "and you?", "timestamp": [t, t + 0.5]}])


def _interrupt(start, end):
    return ("interrupt.json", [{"context": "tell me", "interrupt": "wait", "timestamp": [start, end]}])


def _segments(path):
    data_N, _ = soundfile.read(path, dtype="float32")
    return speech_segments(data_N)


def test_silero_finds_the_test_speech_and_not_the_silence():
    wave_N = place(TOTAL_S, [(1.0, 3.0), (4.5, 6.0)])
    segments = speech_segments(wave_N)
    assert len(segments) == 2
    for (start, end), (s, e) in zip([(1.0, 3.0), (4.5, 6.0)], segments, strict=True):
        assert start - 0.06 <= s <= start + 0.02 and end - 0.02 <= e <= end + 0.25
    assert speech_segments(np.zeros(round(TOTAL_S * SAMPLE_RATE), np.float32)) == []


# ------------------------------------------------------------------ smooth turn-taking, pause, interruption


def test_smooth_turn_taking_with_output_json_words(tmp_path):
    # User talks 1.0-3.0 s and yields at 3.0; the model's words start at 3.6 and span 1.2 s: TOR 1,
    # latency 3.6 - 3.0 = 0.6 s. A second item answers with 2 words in 0.5 s: TOR 0, no latency.
    _item(str(tmp_path / "a"), user=[(1.0, 3.0)], model=[(3.6, 4.8)], annotation=_turn(3.0),
          words=[("well", 3.6, 4.0), ("I", 4.1, 4.2), ("think", 4.3, 4.8)])
    _item(str(tmp_path / "b"), user=[(1.0, 3.0)], model=[(3.6, 4.1)], annotation=_turn(3.0),
          words=[("uh", 3.6, 3.8), ("huh", 3.9, 4.1)], seed=1)
    report, rows = score_items(str(tmp_path), extra={})
    section = report["smooth_turn_taking"]
    assert section["n"] == 2 and section["tor"] == 0.5
    assert section["latency_s"] == pytest.approx(0.6)
    assert section["words"] == {"output.json": 2}
    assert [r["tor"] for r in rows] == [1, 0] and rows[1]["latency_s"] is None
    # v1.5 response gap of each item: the user's merged end to the model's first start after it.
    gaps = []
    for row, name in zip(rows, "ab", strict=True):
        user = merge_segments(_segments(str(tmp_path / name / "input.wav")), 0.6)
        model = merge_segments(_segments(str(tmp_path / name / "output.wav")), 0.5)
        assert len(user) == len(model) == 1 and model[0][0] > user[0][1]
        gap = round(model[0][0], 3) - round(user[0][1], 3)
        assert row["response_intervals"] == [[round(user[0][1], 3), round(model[0][0], 3)]]
        assert row["response_latency_s"] == pytest.approx(gap) and 0.3 < gap < 0.7
        gaps.append(gap)
    assert section["response_latency_s"] == pytest.approx(sum(gaps) / 2)
    assert "stop_latency_s" not in section


def test_negative_latency_is_zero_in_the_mean(tmp_path):
    # The model's first word (2.5 s) is before the turn end (3.0 s): latency 0; other item 1.0 s.
    _item(str(tmp_path / "a"), user=[(1.0, 3.0)], model=[(2.5, 4.0)], annotation=_turn(3.0),
          words=[("so", 2.5, 3.0), ("yes", 3.2, 4.0)])
    _item(str(tmp_path / "b"), user=[(1.0, 3.0)], model=[(4.0, 5.5)], annotation=_turn(3.0),
          words=[("right", 4.0, 5.5)])
    report, _ = score_items(str(tmp_path), extra={})
    assert report["smooth_turn_taking"]["latency_s"] == pytest.approx((0.0 + 1.0) / 2)


def test_pause_and_interruption_with_timeline_words(tmp_path):
    # Pause item: the model says 5 words in one 200 ms chunk... and one more later: 3.0 -> 3.4 s,
    # under 1 s but 6 words > 3: TOR 1 (pause handling has no latency).
    _item(str(tmp_path / "p"), user=[(1.0, 2.0), (2.8, 4.0)], model=[(3.0, 3.4)],
          annotation=("pause.json", [{"timestamp": [2.0, 2.8]}]),
          timeline=[(2800, ""), (3000, "one two three four five"), (3200, "six")])
    # Interruption 2.0-3.0 s. Words of chunks ending at or before 3.0 s are cut (the 2800 ms chunk
    # ends at 3.0); the 3400 ms chunk's 2 words and the 4400 ms chunk's word remain:
    # span 3.4 -> 4.6 = 1.2 s: TOR 1, latency 3.4 - 3.0 = 0.4 s.
    _item(str(tmp_path / "i"), user=[(2.0, 3.0)], model=[(0.5, 2.4), (3.4, 4.6)],
          annotation=_interrupt(2.0, 3.0),
          timeline=[(600, "let me tell"), (2800, "you"), (3400, "oh sorry"), (4400, "go")])
    report, rows = score_items(str(tmp_path), extra={})
    by = {r["item"]: r for r in rows}
    assert by["p"]["words"] == "timeline.jsonl" and by["p"]["n_words"] == 6 and by["p"]["tor"] == 1
    assert "latency_s" not in by["p"]
    assert by["i"]["n_words"] == 3 and by["i"]["tor"] == 1 and by["i"]["latency_s"] == pytest.approx(0.4)
    assert report["pause_handling"] == {"n": 1, "tor": 1.0, "words": {"timeline.jsonl": 1}}
    section = report["user_interruption"]
    assert section["tor"] == 1.0 and section["latency_s"] == pytest.approx(0.4)
    # v1.5: the model (0.5-~2.4) talks over the user (2.0-~3.0): one overlap from the user's
    # start to the model's end, its length the stop latency.
    user = merge_segments(_segments(str(tmp_path / "i" / "input.wav")), 0.6)
    model = merge_segments(_segments(str(tmp_path / "i" / "output.wav")), 0.5)
    assert len(user) == 1 and len(model) == 2
    overlap = [round(user[0][0], 3), round(model[0][1], 3)]
    assert by["i"]["stop_intervals"] == [overlap]
    assert section["stop_latency_s"] == pytest.approx(overlap[1] - overlap[0])
    assert 0.3 < section["stop_latency_s"] < 0.7
    gap = [round(user[0][1], 3), round(model[1][0], 3)]
    assert by["i"]["response_intervals"] == [gap]
    assert section["response_latency_s"] == pytest.approx(gap[1] - gap[0])


def test_yield_rate_counts_the_items_where_the_model_falls_silent_within_600_ms(tmp_path):
    """microturn's own interruption figures, the interrupt running 2.0-4.0 s: the model's speech
    on at 2.0 s ends (its merged VAD end, read from silero) ~0.3 s or ~1.5 s after it; in the
    third it was silent (no barge-in on the model: left out of the rate); in the fourth it starts
    at 2.3 s, inside the first 0.6 s, and talks on to 3.5 s; in the fifth it stops at once and
    starts a new turn at 3.0 s, which is not a failure to stop."""
    spans = {"quick": [(0.5, 2.3)], "slow": [(0.5, 3.5)], "silent": [(0.5, 1.0)], "starts": [(2.3, 3.5)],
             "back": [(0.5, 2.1), (3.0, 4.5)]}
    for name, model in spans.items():
        _item(str(tmp_path / name), user=[(2.0, 4.0)], model=model, annotation=_interrupt(2.0, 4.0),
              timeline=[(600, "so")])
    report, rows = score_items(str(tmp_path), extra={})
    by = {r["item"]: r for r in rows}
    for name in spans:
        merged = merge_segments(_segments(str(tmp_path / name / "output.wav")), 0.5)
        ends = [e for s, e in merged if s < 2.6 and e > 2.0]
        assert by[name]["yield_s"] == (pytest.approx(round(max(ends) - 2.0, 3)) if ends else None), name
    assert by["quick"]["yield_s"] <= 0.6 < by["slow"]["yield_s"]
    assert by["starts"]["yield_s"] > 1.2 and by["back"]["yield_s"] <= 0.6
    assert [by[n]["yielded"] for n in spans] == [1, 0, None, 0, 1]
    section = report["user_interruption"]
    assert section["yield_n"] == 4 and section["yield_rate"] == 0.5
    assert section["yield_s"] == pytest.approx(statistics.median(by[n]["yield_s"] for n in ("quick", "slow",
                                                                                           "starts", "back")))


def test_vad_only_rule_when_no_words(tmp_path):
    # Smooth: the model speaks 4.0-6.0 s (>= 1 s): TOR 1, latency = its VAD start - 3.0.
    _item(str(tmp_path / "s"), user=[(1.0, 3.0)], model=[(4.0, 6.0)], annotation=_turn(3.0))
    # Pause: only a 0.4 s sound: TOR 0.
    _item(str(tmp_path / "p"), user=[(1.0, 2.0), (3.0, 4.0)], model=[(2.2, 2.6)],
          annotation=("pause.json", [{"timestamp": [2.0, 3.0]}]), seed=2)
    # Interruption at 2.0-3.0: only the model's speech after 3.0 counts; its 0.3-2.8 s speech leaves
    # at most silero's short tail there and nothing follows: TOR 0.
    _item(str(tmp_path / "i"), user=[(2.0, 3.0)], model=[(0.3, 2.8)], annotation=_interrupt(2.0, 3.0), seed=3)
    report, rows = score_items(str(tmp_path), extra={})
    by = {r["item"]: r for r in rows}
    assert {r["words"] for r in rows} == {"vad"} and by["s"]["n_words"] is None
    start = _segments(str(tmp_path / "s" / "output.wav"))[0][0]
    assert by["s"]["tor"] == 1 and by["s"]["latency_s"] == pytest.approx(start - 3.0)
    assert 0.9 < by["s"]["latency_s"] < 1.1
    assert by["p"]["tor"] == 0 and by["i"]["tor"] == 0 and by["i"]["latency_s"] is None
    assert report["user_interruption"]["latency_s"] is None  # nothing to average: null, not 0
    assert report["pause_handling"]["words"] == {"vad": 1}


def test_stereo_conversation_wav(tmp_path):
    folder = str(tmp_path / "c")
    stereo_NC = np.stack([place(TOTAL_S, [(1.0, 3.0)]), place(TOTAL_S, [(3.5, 5.5)], seed=4)], axis=1)
    _write(folder, "conversation.wav", stereo_NC)
    _write(folder, *_turn(3.0))
    _write(folder, "output.json", {"text": "hi there", "chunks": [{"text": "hi", "timestamp": [3.5, 4.0]},
                                                                   {"text": "there", "timestamp": [4.2, 5.5]}]})
    report, rows = score_items(str(tmp_path), extra={})
    assert report["smooth_turn_taking"]["tor"] == 1.0
    assert report["smooth_turn_taking"]["latency_s"] == pytest.approx(0.5)
    # The channels were told apart: a response gap from the user's end (~3.0) to the model (~3.5).
    (gap,) = rows[0]["response_intervals"]
    assert 2.95 < gap[0] < 3.3 and 3.4 < gap[1] < 3.55


# ------------------------------------------------------------------ backchannel


def _jsd_by_hand(p, q) -> float:
    p, q = np.asarray(p, float) / np.sum(p), np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2
    kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)  # noqa: E731
    return math.sqrt((kl(p, m) + kl(q, m)) / 2)


def test_backchannel_frequency_and_jsd(tmp_path):
    # 4 s of output with two short sounds (0.5-0.8, 2.0-2.3 s) and no words: two backchannels.
    total = 4.0
    reference = [0.0, 1.0, 1.0, 0.0, 1.0]
    _item(str(tmp_path / "b"), user=[(0.2, 3.8)], model=[(0.5, 0.8), (2.0, 2.3)], total_s=total,
          annotation=("backchannel.json", {"window_s": 0.2, "distribution": reference, "backchannels": []}),
          words=[])
    report, rows = score_items(str(tmp_path), extra={})
    # Silero's segments rounded to 0.1 s (return_seconds), binned by hand.
    found = [(round(s, 1), round(e, 1)) for s, e in _segments(str(tmp_path / "b" / "output.wav"))]
    assert len(found) == 2 and all(e - s < 1 for s, e in found)
    assert rows[0]["backchannels"] == [list(f) for f in found] and rows[0]["tor"] == 0
    counts = np.zeros(int(total / 0.2) + 1)  # 21 windows
    for s, e in found:
        for w in range(int(s / 0.2), int(e / 0.2) + 1):
            counts[w] += 1
    x_ref, x_pred = np.linspace(0, 1, 5), np.linspace(0, 1, 21)
    resampled = [np.interp(x, x_ref, reference) for x in x_pred]  # interior points: linear
    section = report["backchannel"]
    assert section["frequency"] == pytest.approx(2 / total)
    assert section["jsd"] == pytest.approx(_jsd_by_hand(counts + 1e-10, resampled), rel=1e-9)
    assert section["tor"] == 0.0 and section["jsd_n"] == 1 and section["words"] == {"output.json": 1}


def test_backchannel_long_segment_and_reference_file_for_unannotated_items(tmp_path):
    # Full-Duplex-Bench's ICC layout: folders named by number, no annotation file; a 4 s answer
    # (> 3 s) is a turn: TOR 1, no backchannel, frequency 0, JSD 1.
    _item(str(tmp_path / "1"), user=[(0.5, 7.5)], model=[(1.0, 5.0)])
    ref = tmp_path / "gt.json"
    ref.write_text(json.dumps({"1": [0.2, 0.3, 0.5]}))
    report, rows = score_items(str(tmp_path), task="backchannel", backchannel_reference=str(ref), extra={})
    assert report == {"backchannel": {"n": 1, "tor": 1.0, "frequency": 0.0, "jsd": 1.0, "jsd_n": 1,
                                      "words": {"vad": 1}}}
    # Without any reference distribution the JSD is unknown: null, not 0.
    report, rows = score_items(str(tmp_path), task="backchannel", extra={})
    assert report["backchannel"]["jsd"] is None and report["backchannel"]["jsd_n"] == 0 and rows[0]["jsd"] is None
    # A reference file that does not name the item is an error naming it.
    ref.write_text(json.dumps({"2": [0.2, 0.3]}))
    with pytest.raises(ValueError, match="no distribution for item '1'"):
        score_items(str(tmp_path), task="backchannel", backchannel_reference=str(ref), extra={})


# ------------------------------------------------------------------ discovery, tasks, errors


def _minimal(folder, annotation=None, *, user_s=2.0, model_s=2.0, output=True):
    _write(folder, "input.wav", np.zeros(round(user_s * SAMPLE_RATE), np.float32))
    if output:
        _write(folder, "output.wav", np.zeros(round(model_s * SAMPLE_RATE), np.float32))
    if annotation is not None:
        _write(folder, *annotation)


def test_task_detection_recursive_and_task_filter(tmp_path):
    _minimal(str(tmp_path / "x" / "smooth"), _turn(1.0))
    _minimal(str(tmp_path / "x" / "pause"), ("pause.json", [{"timestamp": [0.5, 1.0]}]))
    _minimal(str(tmp_path / "y" / "deep" / "int"), _interrupt(0.5, 1.0))
    _minimal(str(tmp_path / "y" / "bc"), ("backchannel.json", {"distribution": [1, 1]}))
    items = find_items(str(tmp_path))
    assert [(i.rel, i.task) for i in items] == [
        ("x/pause", "pause_handling"), ("x/smooth", "smooth_turn_taking"),
        ("y/bc", "backchannel"), ("y/deep/int", "user_interruption")]
    assert items[3].event_start_s == 0.5 and items[3].event_s == 1.0 and items[2].distribution == (1.0, 1.0)
    assert [i.rel for i in find_items(str(tmp_path), task="pause_handling")] == ["x/pause"]
    report, _ = score_items(str(tmp_path), extra={"vap": lambda items: {"n_items": len(items)}})
    assert sorted(report) == ["backchannel", "pause_handling", "smooth_turn_taking", "user_interruption", "vap"]
    assert report["vap"] == {"n_items": 4}
    # Silent answers everywhere: no turn, no backchannel.
    assert report["smooth_turn_taking"]["tor"] == 0.0 and report["smooth_turn_taking"]["latency_s"] is None
    assert report["backchannel"]["jsd"] == 1.0 and report["backchannel"]["frequency"] == 0.0
    # Tasks without items are absent.
    only, _ = score_items(str(tmp_path), task="pause_handling", extra={})
    assert sorted(only) == ["pause_handling"]


def _one(root, annotation=None, extra=(), **kw):
    """An item ``root/a`` of silence with ``annotation`` and ``extra`` (name, content) files."""
    _minimal(os.path.join(root, "a"), annotation, **kw)
    for name, content in extra:
        _write(os.path.join(root, "a"), name, content)


_NULL_START = {"chunks": [{"text": "x", "timestamp": [None, 1.0]}]}


@pytest.mark.parametrize(("make", "match"), [
    (lambda root: None, "does not exist"),
    (lambda root: os.makedirs(root), "holds no item"),
    (lambda root: _one(root, _turn(1.0), output=False), "has no output.wav"),
    (lambda root: _one(root, _turn(1.0), model_s=2.21), "equally long"),
    (lambda root: _one(root), "task is unknown"),
    (lambda root: _one(root, _turn(1.0), [_interrupt(0, 1)]), "holds turn_taking.json and interrupt.json"),
    (lambda root: _one(root, ("turn_taking.json", "{not json")), "turn_taking.json is not readable JSON"),
    (lambda root: _one(root, ("turn_taking.json", [{"text": "x"}])), r"turn_taking.json: event 0 needs"),
    (lambda root: _one(root, ("interrupt.json", [{"timestamp": [1.0, "x"]}])),
     r"interrupt.json: timestamp\[1\] must be a finite number"),
    (lambda root: _one(root, ("pause.json", {"timestamp": [1, 2]})), "pause.json: expected a list"),
    (lambda root: _one(root, ("backchannel.json", {"window_s": 0.5, "distribution": [1, 1]})), "window_s is 0.5"),
    (lambda root: _one(root, ("backchannel.json", {"distribution": [1]})), "at least 2 numbers"),
    (lambda root: _one(root, ("backchannel.json", {"distribution": [0, 0]})), "all its values are 0"),
    (lambda root: _one(root, _turn(1.0), [("output.json", {"chunks": [{"text": "x"}]})]),
     r"output.json: chunks\[0\] needs \"timestamp\""),
    (lambda root: _one(root, _turn(1.0), [("timeline.jsonl", [{"text": "x"}])]),
     r"timeline.jsonl line 1: needs a number \"start_ms\""),
    (lambda root: _one(root, _turn(1.0), [("output.json", _NULL_START)]),
     "output.json: the first word chunk has a null start"),
])
def test_loud_errors(tmp_path, make, match):
    root = str(tmp_path / "items")
    make(root)
    with pytest.raises(ValueError, match=match):
        score_items(root, extra={})


def test_unknown_task_and_mono_conversation(tmp_path):
    _minimal(str(tmp_path / "a"), _turn(1.0))
    with pytest.raises(ValueError, match="unknown task 'turn_taking'"):
        find_items(str(tmp_path), task="turn_taking")
    folder = str(tmp_path / "m")
    _write(folder, "conversation.wav", np.zeros(SAMPLE_RATE, np.float32))
    _write(folder, *_turn(0.5))
    with pytest.raises(ValueError, match="conversation.wav has 1 channel"):
        score_items(str(tmp_path), extra={})


def test_one_chunk_of_length_difference_is_accepted(tmp_path):
    _minimal(str(tmp_path / "a"), _turn(1.0), model_s=2.2)  # 200 ms longer: one session chunk
    report, _ = score_items(str(tmp_path), extra={})
    assert report["smooth_turn_taking"]["n"] == 1


# ------------------------------------------------------------------ the command


def test_cli_end_to_end(tmp_path, capsys):
    root = str(tmp_path / "items")
    _item(os.path.join(root, "a"), user=[(1.0, 3.0)], model=[(3.6, 4.8)], annotation=_turn(3.0),
          words=[("well", 3.6, 4.0), ("I", 4.1, 4.2), ("think", 4.3, 4.8)])
    _minimal(os.path.join(root, "b"), ("pause.json", [{"timestamp": [0.5, 1.0]}]))
    rows_path = str(tmp_path / "rows.jsonl")
    assert eval_main(["duplex", root, "--json", "--per-item", rows_path]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["smooth_turn_taking"]["n"] == 1 and report["smooth_turn_taking"]["tor"] == 1.0
    assert report["smooth_turn_taking"]["latency_s"] == pytest.approx(0.6)
    assert report["pause_handling"] == {"n": 1, "tor": 0.0, "words": {"vad": 1}}
    with open(rows_path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert [(r["item"], r["task"], r["words"]) for r in rows] == [
        ("a", "smooth_turn_taking", "output.json"), ("b", "pause_handling", "vad")]
    assert eval_main(["duplex", root]) == 0
    table = capsys.readouterr().out
    assert "smooth_turn_taking" in table and "latency_s=0.600" in table and "words: vad: 1" in table
    # Errors: one line on stderr, status 2.
    assert eval_main(["duplex", str(tmp_path / "missing"), "--json"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        eval_main(["duplex", root, "--task", "turn_taking"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert eval_main(["duplex", root, "--backchannel-reference", str(tmp_path / "nope.json")]) == 2
    assert "--backchannel-reference" in capsys.readouterr().err
