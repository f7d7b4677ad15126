"""VAP scoring of duplex items (``microturn.pipelines.duplex.vap``) on speech-like sound that
silero detects, with known answers: a model that answers the user's yield and keeps quiet through
the user's pause scores 1, one that does the reverse scores 0, a silent one 0.5; backchannels near
the reference's; events after the reference's own speech and items without ``reference.wav`` are
counted, not scored; the section reaches the duplex report.

Shape suffixes follow microturn.schemas.legend: N audio samples at 16 kHz, T frames of the 50 ms grid.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile

from microturn.pipelines.duplex.audio import SAMPLE_RATE
from microturn.pipelines.duplex.score import score_items
from microturn.pipelines.duplex.vap import score_vap, voice_activity_T
from microturn.schemas.vap import VapConfig
from microturn.testing.speechlike import place

# The user yields at 4 s and the reference answers at 4.8 s (a shift), or the user pauses 4-4.8 s
# and goes on (a hold); silero ends each stretch up to 0.2 s late, which leaves a silence of
# ~0.6 s, over VAP's 0.25 s minimum, after over 3 s of context.
USER_YIELDS = [(0.5, 4.0)]
REFERENCE_ANSWERS = [(4.8, 7.5)]
USER_HOLDS = [(0.5, 4.0), (4.8, 7.5)]
ANSWER = [(4.6, 7.5)]  # the model starts 0.6 s after the user's end: inside the 1 s window


def _item(root, name: str, *, user, model, reference=None, seconds: float = 8.0, files=()) -> str:
    folder = os.path.join(str(root), name)
    os.makedirs(folder)
    streams = [("input.wav", user, 0), ("output.wav", model, 20)]
    if reference is not None:
        streams.append(("reference.wav", reference, 10))
    for file, spans, seed in streams:
        soundfile.write(os.path.join(folder, file), place(seconds, spans, seed=seed), SAMPLE_RATE)
    for file, content in files:
        with open(os.path.join(folder, file), "w", encoding="utf-8") as f:
            json.dump(content, f)
    return folder


def test_voice_activity_grid_reads_frame_centres():
    active_T = voice_activity_T([(0.06, 0.2), (0.3, 0.32)], 8, 20.0)
    # Centres 0.025, 0.075, 0.125, 0.175, 0.225, 0.275, 0.325, 0.375 s.
    assert active_T.tolist() == [False, True, True, True, False, False, False, False]


def test_a_model_that_answers_yields_and_waits_through_pauses(tmp_path):
    shift = _item(tmp_path, "shift", user=USER_YIELDS, reference=REFERENCE_ANSWERS, model=ANSWER)
    hold = _item(tmp_path, "hold", user=USER_HOLDS, reference=[], model=[])
    report = score_vap([shift, hold])
    assert report["items"] == 2 and report["scored_items"] == 2 and report["skipped_without_reference"] == 0
    assert report["shift_hold"] == {"n_shift": 1, "n_hold": 1, "shift_accuracy": 1.0, "hold_accuracy": 1.0,
                                    "balanced_accuracy": 1.0, "auc": 1.0, "n_after_reference": 0}
    # The window of shift prediction opens 0.5 s before the silence: the answer at 4.6 s is in it.
    assert report["shift_prediction"]["n_shift"] == 1 and report["shift_prediction"]["n_hold"] == 1
    assert report["shift_prediction"]["balanced_accuracy"] == 1.0


def test_a_model_that_does_the_reverse_scores_zero_and_a_silent_one_half(tmp_path):
    shift = _item(tmp_path, "shift", user=USER_YIELDS, reference=REFERENCE_ANSWERS, model=[])
    talks_over_pause = _item(tmp_path, "hold", user=USER_HOLDS, reference=[], model=[(4.3, 5.5)])
    reverse = score_vap([shift, talks_over_pause])["shift_hold"]
    assert reverse["shift_accuracy"] == 0.0 and reverse["hold_accuracy"] == 0.0
    assert reverse["balanced_accuracy"] == 0.0 and reverse["auc"] == 0.0
    quiet = _item(tmp_path, "quiet", user=USER_HOLDS, reference=[], model=[])
    silent = score_vap([shift, quiet])["shift_hold"]
    assert silent["balanced_accuracy"] == 0.5 and silent["auc"] == 0.5  # all scores 0: ties


def test_backchannel_prediction(tmp_path):
    # The user talks 11 s; the reference says something short at 5.0-5.5 s; the model does at 4.8 s.
    spans = {"user": [(0.5, 11.5)], "reference": [(5.0, 5.5)], "seconds": 12.0}
    good = _item(tmp_path, "good", model=[(4.8, 5.3)], **spans)
    section = score_vap([good])["backchannel_prediction"]
    # Negatives: the user alone from ~5.6 s to ~11.55 s, less 1 s / 2 s pads: 0.5 s regions from ~6.6 s.
    assert section["n_backchannel"] == 1 and section["n_negative"] >= 4
    assert section["balanced_accuracy"] == 1.0 and section["auc"] == 1.0
    # A model that talks at 8 s instead misses the backchannel and fires on a negative.
    late = _item(tmp_path, "late", model=[(8.0, 8.4)], **spans)
    late_section = score_vap([late])["backchannel_prediction"]
    assert late_section["backchannel_accuracy"] == 0.0 and late_section["negative_accuracy"] < 1.0
    # The user talks through: no mutual silence, so no shift or hold.
    assert score_vap([late])["shift_hold"]["n_shift"] == 0


def test_events_after_the_reference_and_items_without_it_are_counted(tmp_path):
    # The reference speaks first and the user answers: a shift, but not the model's turn to take.
    theirs = _item(tmp_path, "theirs", user=[(4.8, 7.5)], reference=[(0.5, 4.0)], model=[])
    fdb = _item(tmp_path, "fdb", user=USER_YIELDS, model=ANSWER)
    report = score_vap([theirs, fdb])
    assert report["skipped_without_reference"] == 1 and report["scored_items"] == 1
    section = report["shift_hold"]
    assert section["n_after_reference"] == 1 and section["n_shift"] == 0 and section["n_hold"] == 0
    assert section["balanced_accuracy"] is None and section["auc"] is None and section["shift_accuracy"] is None


def test_stereo_items_and_the_duplex_report(tmp_path):
    # A session's conversation.wav (user, model) and a smooth turn-taking annotation: found by the
    # scorer's item search and scored into its "vap" section.
    folder = _item(tmp_path, "sst", user=USER_YIELDS, reference=REFERENCE_ANSWERS, model=ANSWER,
                   files=[("turn_taking.json", [{"timestamp": [4.0, 4.8]}])])
    user_N, _ = soundfile.read(os.path.join(folder, "input.wav"), dtype="float32")
    model_N, _ = soundfile.read(os.path.join(folder, "output.wav"), dtype="float32")
    os.remove(os.path.join(folder, "input.wav"))
    os.remove(os.path.join(folder, "output.wav"))
    soundfile.write(os.path.join(folder, "conversation.wav"), np.stack([user_N, model_N], axis=1), SAMPLE_RATE)
    report, _ = score_items(str(tmp_path))
    assert report["vap"]["shift_hold"]["n_shift"] == 1 and report["vap"]["shift_hold"]["shift_accuracy"] == 1.0
    assert report["vap"]["frame_hz"] == 20.0


def test_the_chunk_grid_and_length_check(tmp_path):
    shift = _item(tmp_path, "shift", user=USER_YIELDS, reference=REFERENCE_ANSWERS, model=ANSWER)
    section = score_vap([shift], config=VapConfig(frame_hz=5))["shift_hold"]
    assert section["n_shift"] == 1 and section["shift_accuracy"] == 1.0
    short = _item(tmp_path, "short", user=USER_YIELDS, model=ANSWER)
    soundfile.write(os.path.join(short, "reference.wav"), place(7.0, [(4.8, 6.5)]), SAMPLE_RATE)
    with pytest.raises(ValueError, match="reference.wav lasts 7.000 s"):
        score_vap([short])
