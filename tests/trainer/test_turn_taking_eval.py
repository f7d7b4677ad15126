"""Shift/hold scoring of ``microturn eval model``: events from hand-built VOICED labels with known
answers, the model's and the endpointer's decisions, the scores and their bootstrap, and one run
of ``eval model`` on the trained tiny run (tests/trainer/session_runs.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from microturn.schemas.sample import Label
from microturn.trainer.turn_taking_eval import (
    ScoredEvent,
    bootstrap_interval,
    calibrate,
    collect_events,
    endpointer_shift,
    model_score,
    render_lines,
    score,
    user_events,
    voiced_K,
)

K = 25  # chunks of a window: 15 of VAP context, then room for 1 s on each side of a silence


def _track(*spans: tuple[int, int]) -> np.ndarray:
    """bool [K]: True over each [start, end) chunk span."""
    out = np.zeros(K, bool)
    for a, b in spans:
        out[a:b] = True
    return out


def _labels(voiced: np.ndarray) -> np.ndarray:
    """uint16 [K] label bits with VOICED where ``voiced`` and other bits set everywhere (one of
    them above the low byte, as labels have since schema version 3), which the events must not read."""
    return (np.where(voiced, int(Label.VOICED), 0) | int(Label.TURN_START) | int(Label.BACKGROUND)).astype(np.uint16)


# The user talks chunks 0-16, then a silence of 2 chunks: the model answers (a shift) ...
SHIFT_USER, SHIFT_MODEL = _track((0, 17)), _track((19, K))
# ... or the user goes on after one silent chunk (a hold) ...
HOLD1_USER, HOLD1_MODEL = _track((0, 17), (18, K)), _track()
# ... or after two (a hold the endpointer calls a shift).
HOLD2_USER, HOLD2_MODEL = _track((0, 17), (19, K)), _track()


def test_events_are_the_silences_after_user_speech_with_vap_context_inside_the_window():
    (shift,) = user_events(SHIFT_USER, SHIFT_MODEL)
    assert (shift.kind, shift.start, shift.end, shift.speaker_before, shift.speaker_after) == ("shift", 17, 19, 0, 1)
    (hold,) = user_events(HOLD1_USER, HOLD1_MODEL)
    assert (hold.kind, hold.start, hold.end) == ("hold", 17, 18)
    # The model spoke before the silence: its own shift, not a decision after user speech.
    assert user_events(SHIFT_MODEL[::-1], SHIFT_USER[::-1]) == []
    assert user_events(SHIFT_MODEL, SHIFT_USER) == []
    # Under 3 s (15 chunks) of context before the silence: no event.
    early_user, early_model = _track((0, 14)), _track((16, K))
    assert user_events(early_user, early_model) == []
    # The answer lasts under 1 s (5 chunks) before the window ends: no event.
    assert user_events(_track((0, 17)), _track((19, 23))) == []
    # The user's VOICED bits come from the label bits, whatever else is set.
    assert voiced_K(_labels(SHIFT_USER)).tolist() == SHIFT_USER.tolist()
    with pytest.raises(ValueError, match="one length"):
        user_events(SHIFT_USER, SHIFT_MODEL[:-1])


def test_the_model_decides_on_the_silence_chunks_and_the_endpointer_on_the_second():
    speak_K = np.linspace(0.0, 0.96, K)  # rises chunk by chunk
    (shift,) = user_events(SHIFT_USER, SHIFT_MODEL)
    (hold1,) = user_events(HOLD1_USER, HOLD1_MODEL)
    (hold2,) = user_events(HOLD2_USER, HOLD2_MODEL)
    # P(a word starts in chunk 17 or 18): neither chunk alone says as much.
    assert model_score(shift, speak_K) == pytest.approx(1 - (1 - speak_K[17]) * (1 - speak_K[18]))
    assert model_score(hold1, speak_K) == pytest.approx(speak_K[17])  # chunk 18 is the user's again
    assert model_score(shift, speak_K, chunks=1) == pytest.approx(speak_K[17])
    unread_K = speak_K.copy()
    unread_K[18] = math.nan
    assert model_score(shift, unread_K) is None
    assert endpointer_shift(shift, SHIFT_USER) is True
    assert endpointer_shift(hold1, HOLD1_USER) is False
    assert endpointer_shift(hold2, HOLD2_USER) is True


def _meta(conversation: str = "c", model_speaker: str = "B", window: int = 0) -> dict:
    return {"conversation_id": conversation, "model_speaker": model_speaker, "offset_ms": window * K * 200,
            "chunks": K}


def test_collect_counts_an_event_once_and_leaves_out_unread_ones():
    speak_K = np.full(K, 0.8)
    shift = (_labels(SHIFT_USER), _labels(SHIFT_MODEL), speak_K)
    hold = (_labels(HOLD1_USER), _labels(HOLD1_MODEL), np.full(K, 0.1))
    unread = np.full(K, math.nan)
    events, counts = collect_events([
        (_meta(), *shift),
        (_meta(), *shift),  # the same window read twice: one event
        (_meta(model_speaker="C"), *shift),  # another speaker as the model: another decision
        (_meta(window=1), *hold),
        (_meta(window=2), _labels(SHIFT_USER), _labels(SHIFT_MODEL), unread),
    ])
    assert counts == {"duplicates": 1, "unread": 1}
    # The shift's silence is 2 chunks (P 0.8 in each: 1 - 0.2 * 0.2), the hold's one.
    assert [(e.shift, e.endpointer) for e in events] == [(True, True), (True, True), (False, False)]
    assert [e.model for e in events] == pytest.approx([0.96, 0.96, 0.1])


def test_scores_of_known_events():
    # Shifts score 0.9, 0.6, 0.2 and holds 0.1, 0.7: at 0.5, 2 of 3 shifts and 1 of 2 holds are
    # right (BA 7/12); 4 of the 6 (shift, hold) pairs are ordered right (AUC 2/3).
    events = [ScoredEvent(shift=shift, model=value, endpointer=rule) for shift, value, rule in (
        (True, 0.9, True), (True, 0.6, True), (True, 0.2, False), (False, 0.1, False), (False, 0.7, True))]
    result = score(events, resamples=200)
    assert (result["n_shift"], result["n_hold"]) == (3, 2)
    assert result["model"]["balanced_accuracy"]["value"] == pytest.approx(7 / 12)
    assert result["model"]["auc"]["value"] == pytest.approx(2 / 3)
    assert result["endpointer"]["balanced_accuracy"]["value"] == pytest.approx(7 / 12)
    low, high = result["model"]["auc"]["ci95"]
    assert 0 <= low <= 2 / 3 <= high <= 1
    json.dumps(result)  # JSON-ready
    lines = render_lines({**result, "unread": 0, "duplicates": 0})
    assert "3 shifts, 2 holds" in lines[0] and "AUC 0.667 [" in "\n".join(lines)
    assert "endpointer  balanced accuracy 0.583 [" in lines[4] and "threshold 0.5 (fixed)" in lines[3]
    # One class only: the figures are undefined, not a number.
    one = score(events[:3], resamples=50)
    assert one["model"]["auc"] == {"value": None, "ci95": None}
    assert "n/a (one class only)" in "\n".join(render_lines({**one, "unread": 0}))
    none = render_lines({**score([], resamples=10), "unread": 2})
    assert len(none) == 1 and "0 shifts, 0 holds; left out 2 with unread chunks" in none[0]


def test_bootstrap_is_seeded_and_skips_one_class_draws():
    rng = np.random.default_rng(7)
    labels = rng.random(60) < 0.3
    values = labels + rng.normal(0, 0.8, 60)
    from microturn.schemas.vap import auc

    first = bootstrap_interval(labels, values, auc, resamples=300, seed=3)
    assert first == bootstrap_interval(labels, values, auc, resamples=300, seed=3)
    assert first != bootstrap_interval(labels, values, auc, resamples=300, seed=4)
    value = auc(labels, values)
    assert first is not None and value is not None and first[0] < value < first[1]
    # Two events, one of each class: most draws hold one class; those are skipped, not scored.
    assert bootstrap_interval([True, False], [1.0, 0.0], auc, resamples=100, seed=0) == (1.0, 1.0)
    assert bootstrap_interval([True, True], [1.0, 0.0], auc, resamples=10) is None
    with pytest.raises(ValueError, match="one length"):
        bootstrap_interval([True], [1.0, 0.0], auc)


def _marks(model, samples: list[dict], *, max_len: int, pack: bool) -> dict[str, dict[int, float]]:
    import torch

    from microturn.trainer.batch import build_sequence, collate
    from microturn.trainer.evaluate import _read_marks
    from microturn.trainer.tokenizer import ByteTokenizer

    batch = collate([build_sequence(s, ByteTokenizer()) for s in samples], max_len=max_len, pack=pack,
                    counts={})
    speak: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        _read_marks(model, batch, model(batch).hidden_BLD, speak)
    return speak


def test_marks_are_read_by_sample_and_chunk_before_the_chunks_own_model_audio():
    from microturn.trainer.model import InteractionModel
    from session_runs import tiny_config
    from test_batch import _sample

    model = InteractionModel(tiny_config(), seed=0, dropless=True).eval()
    a = _sample("a", 3, None, {"user": [(0, 10, "hi")], "model": [(1, 0, "yo")]}, seed=1)
    b = _sample("b", 2, None, {"user": [], "model": [(0, 0, "ok")]}, seed=2)
    alone = {**_marks(model, [a], max_len=10_000, pack=False), **_marks(model, [b], max_len=10_000, pack=False)}
    assert {k: sorted(v) for k, v in alone.items()} == {"a": [0, 1, 2], "b": [0, 1]}
    # Packed in one row, one per row, or split into pieces of whole chunks: each (sample, chunk)
    # keeps its value (pieces attend within themselves, so the split one only where it starts).
    for max_len, pack in ((10_000, True), (10_000, False)):
        got = _marks(model, [a, b], max_len=max_len, pack=pack)
        assert {k: pytest.approx(v, abs=1e-6) for k, v in alone.items()} == got
    split = _marks(model, [a, b], max_len=40, pack=True)
    assert sorted(split["a"]) == [0, 1, 2] and split["a"][0] == pytest.approx(alone["a"][0], abs=1e-6)
    # The model's own text and audio of chunk 1 come after its MODEL_MARK: its value is unchanged;
    # the user's audio of chunk 1 comes before it.
    def flipped_chunk_1(dmel_TM: np.ndarray) -> np.ndarray:
        out_TM = dmel_TM.copy()
        out_TM[4:8] = 15 - out_TM[4:8]  # frames 4-7: chunk 1
        return out_TM

    other_model = {**a, "dmel": {**a["dmel"], "model": flipped_chunk_1(a["dmel"]["model"])},
                   "words": {**a["words"], "model": []}}  # its one word "yo" starts in chunk 1
    changed = _marks(model, [other_model], max_len=10_000, pack=False)["a"]
    assert changed[1] == pytest.approx(alone["a"][1], abs=1e-6) and changed[2] != alone["a"][2]
    other_user = {**a, "dmel": {**a["dmel"], "user": flipped_chunk_1(a["dmel"]["user"])}}
    assert _marks(model, [other_user], max_len=10_000, pack=False)["a"][1] != alone["a"][1]


def test_eval_model_reports_shift_hold_on_the_trained_run(capsys, tmp_path):
    from microturn.cli.evaluate import main
    from microturn.schemas.sample import npy_load
    from microturn.trainer.data import glob_shards
    from microturn.trainer.shard_reader import ReadLimits, iter_samples, open_shard
    from session_runs import trained_run_dir
    from trainer_shards import shard_dir

    # The events of the shards counted here straight from the labels, without the model.
    expected = {"shift": 0, "hold": 0}
    keys: list[str] = []
    limits = ReadLimits(max_member_bytes=1 << 26, max_sample_bytes=1 << 27)
    for url in glob_shards(shard_dir()):
        with open_shard(url) as stream:
            for raw in iter_samples(stream, url, limits, on_member=print, on_sample=print):
                keys.append(raw["__key__"])
                user, model = (voiced_K(npy_load(raw[f"{r}.labels.npy"])) for r in ("user", "model"))
                for event in user_events(user, model):
                    expected[event.kind] += 1
    assert expected["shift"] > 0  # the shards hold shifts (the synthetic calls' answers)
    assert main(["model", "--checkpoint", trained_run_dir(), "--shards", shard_dir()]) == 0
    out = capsys.readouterr().out
    assert f"{expected['shift']} shifts, {expected['hold']} holds" in out, out
    assert "P(a model word starts in the silence's first 2 chunks)" in out and "endpointer" in out, out
    assert "read without the user's words" not in out
    # --json: the same figures as one object a script reads.
    assert main(["model", "--checkpoint", trained_run_dir(), "--shards", shard_dir(), "--json"]) == 0
    # (its last line: loggers that DeepSpeed made while pytest held stdout still write there;
    # in a process the whole of stdout is the object, tests/pipelines/test_json_stdout.py)
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    tt = data["turn_taking"]
    assert (tt["n_shift"], tt["n_hold"]) == (expected["shift"], expected["hold"]) and data["text"] > 0
    assert tt["threshold"] == 0.5 and set(tt["model"]) == {"balanced_accuracy", "auc"}
    # Without the user's words: the same events (labels, not text, make them), read from audio alone.
    assert main(["model", "--checkpoint", trained_run_dir(), "--shards", shard_dir(), "--without-user-text"]) == 0
    bare = capsys.readouterr().out
    assert "read without the user's words" in bare and f"{expected['shift']} shifts, {expected['hold']} holds" in bare
    # A shard cut short: its labels are read up to the cut and the rest of the shards still are.
    from microturn.trainer.evaluate import _windows

    first = glob_shards(shard_dir())[0]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(open(first, "rb").read()[:3000])
    read = [meta["key"] for meta, *_ in _windows([str(cut), *glob_shards(shard_dir())],
                                                  {k: {0: 0.5} for k in keys})]
    assert sorted(read) == sorted(keys)


def test_calibration_picks_the_threshold_of_best_balanced_accuracy_on_its_own_events():
    def ev(shift, p):
        return ScoredEvent(shift=shift, model=p, endpointer=False)

    # Shifts read 0.3 and 0.4, holds 0.1 and 0.35: 0.2 (between 0.1 and 0.3) and 0.375 (between
    # 0.35 and 0.4) both give BA 0.75; the lower wins the tie. 0.5 would call every shift a hold.
    events = [ev(True, 0.3), ev(True, 0.4), ev(False, 0.1), ev(False, 0.35)]
    threshold, info = calibrate(events)
    assert threshold == pytest.approx(0.2)
    assert info == {"events": 4, "n_shift": 2, "n_hold": 2, "balanced_accuracy": pytest.approx(0.75)}
    threshold, info = calibrate([ev(True, 0.3), ev(False, 0.1)])
    assert threshold == pytest.approx(0.2) and info["balanced_accuracy"] == 1.0
    with pytest.raises(ValueError, match="needs both"):
        calibrate([ev(True, 0.3)])
