"""The behaviour tasks' scores on constructed streams (speech-like sound silero finds where it is
placed, onsets within 40 ms before each span), and the trained model's inputs on those items:
video frames and background text fed to ``Session.step``.

Shape suffixes follow microturn.schemas.legend: N audio samples.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile

from microturn.cli import eval_interaction
from microturn.pipelines.duplex.layout import find_items
from microturn.pipelines.duplex.score import score_item, score_items
from microturn.pipelines.duplex.score_behaviours import number_values, sentence_onsets
from microturn.schemas.sample import SAMPLE_RATE
from microturn.testing.speechlike import place

SECONDS = 12.0
TOL = 0.06  # silero's onsets lie up to 40 ms before the placed span (microturn.testing.speechlike)


def write_item(root: str, name: str, annotation_file: str, annotation: dict, *, user=(), model=(),
               words: list[tuple[str, float, float]] | None = None, transcript: list[str] | None = None) -> str:
    folder = os.path.join(root, name)
    os.makedirs(folder)
    for file, spans, seed in (("input.wav", user, 0), ("output.wav", model, 7)):
        soundfile.write(os.path.join(folder, file), place(SECONDS, list(spans), seed=seed), SAMPLE_RATE,
                        subtype="PCM_16")
    with open(os.path.join(folder, annotation_file), "w", encoding="utf-8") as f:
        json.dump(annotation, f)
    if words is not None:
        with open(os.path.join(folder, "output.json"), "w", encoding="utf-8") as f:
            json.dump({"text": " ".join(w for w, _, _ in words),
                       "chunks": [{"text": w, "timestamp": [s, e]} for w, s, e in words]}, f)
    if transcript is not None:
        with open(os.path.join(folder, "transcription.json"), "w", encoding="utf-8") as f:
            json.dump({"text": " ".join(transcript), "chunks": [{"text": w, "timestamp": [0.5, 0.8]}
                                                              for w in transcript]}, f)
    return folder


def rows_by_name(root: str) -> dict[str, dict]:
    return {item.name: score_item(item) for item in find_items(root)}


CUES = {"request_end_s": 1.5, "cues": [{"t_s": 3.0, "cue": "appear", "object": "red circle", "answer": "There."},
                                       {"t_s": 8.0, "cue": "move", "object": "red circle", "answer": "Moving."}]}


def test_visual_cue_hits_early_answers_and_silence(tmp_path):
    root = str(tmp_path)
    write_item(root, "answers", "visual_cue.json", CUES, model=[(3.6, 4.6), (8.7, 9.7)])
    # Speaks 0.8 s after the request (before the first cue shows) and again at 6.3 s (after the
    # first cue's 3 s window, before the second cue shows).
    write_item(root, "early", "visual_cue.json", CUES, model=[(2.3, 2.9), (6.3, 7.0)])
    write_item(root, "never", "visual_cue.json", CUES)
    # An acknowledgement within 0.5 s of the request is not early; an answer 3.5 s after is late.
    write_item(root, "late", "visual_cue.json", CUES, model=[(1.7, 1.95), (6.5, 7.5)])
    rows = rows_by_name(root)
    assert (rows["answers"]["hit_rate"], rows["answers"]["early_rate"]) == (1.0, 0.0)
    assert rows["answers"]["latency_s"] == pytest.approx(0.65, abs=TOL)
    assert (rows["early"]["hit_rate"], rows["early"]["early_rate"]) == (0.0, 1.0)
    assert (rows["never"]["hit_rate"], rows["never"]["early_rate"], rows["never"]["latency_s"]) == (0.0, 0.0, None)
    assert [c["hit"] for c in rows["late"]["cues"]] == [0, 0] and rows["late"]["early_rate"] == 0.5
    report, _ = score_items(root, extra={})
    assert report["visual_cue"]["n"] == 4 and report["visual_cue"]["n_cues"] == 8
    assert report["visual_cue"]["hit_rate"] == 0.25 and report["visual_cue"]["early_rate"] == 0.375


def test_an_answer_to_another_cue_of_the_request_is_not_early(tmp_path):
    # The request's repeat cue ends at 4.0 s (scored as a repetition item); its answer at 4.6 s
    # comes before this item's cue (8.0 s) but is no early answer to it.
    cues = {"request_end_s": 1.5, "cues": [{"t_s": 8.0}], "other_cues_s": [4.0]}
    write_item(str(tmp_path), "other", "visual_cue.json", cues, model=[(4.6, 5.4), (8.6, 9.4)])
    write_item(str(tmp_path), "plain", "visual_cue.json", {**cues, "other_cues_s": []},
               model=[(4.6, 5.4), (8.6, 9.4)])
    rows = rows_by_name(str(tmp_path))
    assert (rows["other"]["hit_rate"], rows["other"]["early_rate"]) == (1.0, 0.0)
    assert (rows["plain"]["hit_rate"], rows["plain"]["early_rate"]) == (1.0, 1.0)


def test_one_onset_answers_one_cue_only(tmp_path):
    close = {"request_end_s": 1.0, "cues": [{"t_s": 3.0}, {"t_s": 4.0}]}
    write_item(str(tmp_path), "one", "visual_cue.json", close, model=[(4.2, 5.0)])
    (row,) = rows_by_name(str(tmp_path)).values()
    assert [c["hit"] for c in row["cues"]] == [1, 0]


REPS = {"request_end_s": 1.0, "count": 3, "reps_s": [3.0, 4.0, 5.0], "aloud": True}


def test_repetition_counts_from_words_and_per_repetition_hits(tmp_path):
    root = str(tmp_path)
    counted = [("one", 3.5, 3.9), ("two", 4.5, 4.9), ("three", 5.5, 5.9)]
    write_item(root, "aloud", "repetition.json", REPS, model=[(3.5, 3.9), (4.5, 4.9), (5.5, 5.9)], words=counted)
    # Counts right, but only after the last repetition's 1.5 s window: no repetition is hit.
    slow = [("one", 6.6, 6.9), ("two", 7.2, 7.5), ("three", 7.8, 8.1)]
    write_item(root, "slow", "repetition.json", REPS, model=[(6.6, 8.1)], words=slow)
    # A number said before the first repetition ends, or 3 s after the last, answers no repetition.
    stray = [("five", 2.0, 2.4), *counted, ("four", 8.5, 8.9)]
    write_item(root, "stray", "repetition.json", REPS, model=[(2.0, 2.4), (3.5, 3.9), (4.5, 4.9), (5.5, 5.9),
                                                               (8.5, 8.9)], words=stray)
    once = {**REPS, "reps_s": [5.0], "aloud": False}
    write_item(root, "right", "repetition.json", once, model=[(5.6, 7.0)],
               words=[("It", 5.6, 5.8), ("bounced", 5.8, 6.2), ("3", 6.2, 6.5), ("times.", 6.5, 7.0)])
    write_item(root, "wrong", "repetition.json", once, model=[(5.6, 7.0)],
               words=[("one", 1.2, 1.4), ("I", 5.6, 5.8), ("saw", 5.8, 6.2), ("twenty", 6.2, 6.5), ("one", 6.5, 7.0)])
    write_item(root, "unknown", "repetition.json", REPS, model=[(3.5, 3.9), (4.5, 4.9), (5.5, 5.9)])
    rows = rows_by_name(root)
    assert (rows["aloud"]["said_count"], rows["aloud"]["count_correct"], rows["aloud"]["rep_hit_rate"]) == (3, 1, 1.0)
    assert (rows["slow"]["count_correct"], rows["slow"]["rep_hit_rate"]) == (1, 0.0)
    assert (rows["stray"]["said_count"], rows["stray"]["count_correct"]) == (3, 1)
    assert (rows["right"]["said_count"], rows["right"]["count_correct"], rows["right"]["rep_hit_rate"]) == (3, 1, None)
    assert (rows["wrong"]["said_count"], rows["wrong"]["count_correct"]) == (21, 0)  # "twenty one" is one number
    # No words: the count is unknown (None, not 0); the repetitions are timed on the voice's onsets.
    assert (rows["unknown"]["count_correct"], rows["unknown"]["rep_hit_rate"]) == (None, 1.0)
    report, _ = score_items(root, extra={})
    section = report["repetition"]
    assert (section["count_n"], section["count_accuracy"], section["n_aloud"]) == (5, 0.8, 4)
    assert section["rep_hit_rate"] == pytest.approx(9 / 12)


def test_sentence_onsets():
    chunks = [("Le", 1.0, 1.2), ("train.", 1.2, 1.6), ("Nous", 1.68, 1.9), ("attendons", 1.9, 2.4),
              ("ici", 3.0, 3.3), ("encore", 3.3, 3.6), ("ok", None, None)]
    # A sentence end, or a silence of 0.5 s and more (0.6 s before "ici"), starts a sentence.
    assert sentence_onsets(chunks) == [1.0, 1.68, 3.0]


def test_number_values():
    chunks = [("Twenty-one,", 0.0, 0.1), ("then", 0.1, 0.2), ("twenty", 0.2, 0.3), ("two", 0.3, 0.4),
              ("and", 0.4, 0.5), ("7.", 0.5, 0.6), ("thirty", 0.6, 0.7), ("x", 0.7, 0.8), ("one", 0.8, 0.9)]
    assert number_values(chunks) == [(0.0, 21), (0.2, 22), (0.5, 7), (0.6, 30), (0.8, 1)]


BACKGROUND = {"arrival_s": 4.0, "result": "The flight to Oslo leaves at nine.", "delegated_s": 1.0,
              "user_speech_s": [[3.0, 6.0]]}


def test_background_mention_delay_over_user_and_false_mentions(tmp_path):
    root = str(tmp_path)
    user = [(3.0, 6.0)]  # the user talks across the arrival and yields at 6.0 s
    write_item(root, "waits", "background.json", BACKGROUND, user=user, model=[(6.4, 8.0)])
    write_item(root, "over", "background.json", BACKGROUND, user=user, model=[(5.0, 6.5)])
    # Speaks (and names the result) before it arrives, then never again: no mention, a false one.
    write_item(root, "before", "background.json", BACKGROUND, user=user, model=[(1.5, 2.5)],
               words=[("Oslo", 1.5, 1.9), ("at", 1.9, 2.1), ("nine", 2.1, 2.5)], transcript=["flight?"])
    # Talks before the arrival without the result's words (the user's own word "flight" does not count).
    write_item(root, "chat", "background.json", BACKGROUND, user=user, model=[(1.5, 2.5), (6.5, 8.0)],
               words=[("the", 1.5, 1.9), ("flight", 1.9, 2.5), ("Oslo", 6.5, 7.0), ("nine", 7.0, 8.0)],
               transcript=["flight?"])
    # Holds the floor across the arrival and brings the result up in its next sentence (no pause
    # of 0.5 s for the voice to show an onset): the words' sentence start is the mention.
    write_item(root, "holds", "background.json", BACKGROUND, user=[(0.3, 1.0)], model=[(3.0, 7.0)],
               words=[("Any", 3.0, 3.5), ("time.", 3.5, 4.4), ("It", 4.6, 5.0), ("leaves", 5.0, 5.8),
                      ("at", 5.8, 6.2), ("nine.", 6.2, 7.0)])
    # The first onset after the user yields plus 10 s is too late to be a mention.
    write_item(root, "late", "background.json", {**BACKGROUND, "user_speech_s": [[3.0, 5.0]]}, user=[(0.2, 0.4)],
               model=[(4.0 - 0.5, 4.5)])
    rows = rows_by_name(root)
    assert rows["waits"]["mentioned"] == 1 and rows["waits"]["over_user"] == 0
    assert rows["waits"]["delay_s"] == pytest.approx(2.4, abs=TOL)
    assert rows["over"]["over_user"] == 1 and rows["over"]["delay_s"] == pytest.approx(1.0, abs=TOL)
    assert (rows["before"]["mentioned"], rows["before"]["false_mention"]) == (0, 1)
    assert rows["before"]["false_words"] == ["nine", "oslo"]
    assert (rows["chat"]["mentioned"], rows["chat"]["false_mention"]) == (1, 0)
    assert rows["late"]["mentioned"] == 0  # its only onset (3.5 s) is before the arrival
    assert rows["waits"]["false_mention"] is None  # no words: unknown
    assert (rows["holds"]["mentioned"], rows["holds"]["delay_s"], rows["holds"]["false_mention"]) == (1, 0.6, 0)
    report, _ = score_items(root, extra={})
    section = report["background_result"]
    assert section["mention_rate"] == pytest.approx(4 / 6) and section["over_user_share"] == 0.25
    assert (section["false_n"], section["false_mention_rate"]) == (3, pytest.approx(1 / 3))


RENDERING = {"segments": [{"source_start_s": 1.0, "source_end_s": 2.5, "text": "a", "source_text": "b"},
                          {"source_start_s": 3.0, "source_end_s": 4.5}], "language": "fr"}


def test_simultaneous_lags_and_rendered_share(tmp_path):
    root = str(tmp_path)
    write_item(root, "renders", "simultaneous.json", RENDERING, user=[(1.0, 2.5), (3.0, 4.5)],
               model=[(2.5, 3.8), (4.6, 5.8)])
    # Starts the second rendering 4 s after its source: rendered (speech overlaps its window), lag out of range.
    write_item(root, "behind", "simultaneous.json", RENDERING, user=[(1.0, 2.5), (3.0, 4.5)],
               model=[(1.3, 2.0), (7.0, 8.0)])
    write_item(root, "silent", "simultaneous.json", RENDERING, user=[(1.0, 2.5), (3.0, 4.5)])
    rows = rows_by_name(root)
    assert [s["lag_s"] for s in rows["renders"]["segments"]] == pytest.approx([1.5, 1.6], abs=TOL)
    assert (rows["renders"]["rendered_share"], rows["renders"]["lag_in_range_share"]) == (1.0, 1.0)
    assert [s["lag_s"] for s in rows["behind"]["segments"]] == pytest.approx([0.3, 4.0], abs=TOL)
    assert (rows["behind"]["rendered_share"], rows["behind"]["lag_in_range_share"]) == (1.0, 0.0)
    assert (rows["silent"]["rendered_share"], rows["silent"]["lag_s"], rows["silent"]["lag_n"]) == (0.0, None, 0)
    report, _ = score_items(root, extra={})
    assert report["simultaneous"]["n_segments"] == 6 and report["simultaneous"]["lag_n"] == 4
    assert report["simultaneous"]["lag_in_range_share"] == 0.5


@pytest.mark.parametrize("file, data, message", [
    ("visual_cue.json", {"request_end_s": 1.0, "cues": []}, "\"cues\" must be a non-empty list"),
    ("repetition.json", {"request_end_s": 1.0, "count": 0, "reps_s": [1.0], "aloud": False}, "count"),
    ("background.json", {"arrival_s": "soon", "result": "x"}, "arrival_s must be a finite number"),
    ("simultaneous.json", {"segments": [{"source_start_s": 2.0, "source_end_s": 1.0}]}, r"ends \(1.0 s\) before"),
])
def test_malformed_annotations_name_the_file(tmp_path, file, data, message):
    write_item(str(tmp_path), "bad", file, data)
    with pytest.raises(ValueError, match=message) as info:
        find_items(str(tmp_path))
    assert file in str(info.value)


class FakeSession:
    """What ``run_session`` reads of a session, recording each step's inputs."""

    def __init__(self, *, background_keyword: bool = True) -> None:
        from microturn.trainer.session import SessionConfig

        self.config = SessionConfig()
        self.model_cfg = SimpleNamespace(max_time=1000)
        self.vocoder = SimpleNamespace(delay_samples=0)
        self.run = SimpleNamespace(run_dir="fake-run", tag="step0", step=0)
        self.chunk = 0
        self.steps: list[dict] = []

    def reset(self) -> None:
        self.chunk = 0
        self.steps = []

    def step(self, user_audio_N, video_frames=None, user_text=None, background_text=None):
        self.steps.append({"video": None if video_frames is None else np.asarray(video_frames).shape,
                           "text": user_text, "background": background_text})
        out = SimpleNamespace(chunk=self.chunk, audio_N=np.zeros(3200, np.float32), compute_ms=1.0, text="",
                              voiced=False, p_speak=0.0, text_forced_end=False, positions=1)
        self.chunk += 1
        return out


class OldSession(FakeSession):
    def step(self, user_audio_N, video_frames=None, user_text=None):  # pyright: ignore[reportIncompatibleMethodOverride]
        return super().step(user_audio_N, video_frames, user_text)


def test_the_model_gets_the_video_frames_and_the_background_text_at_its_chunk(tmp_path):
    from test_duplex_behaviour_items import write_video

    root = str(tmp_path / "items")
    folder = write_item(root, "visual", "visual_cue.json", CUES)
    write_video(os.path.join(folder, "input.mp4"), SECONDS)
    background = write_item(root, "background", "background.json", {**BACKGROUND, "arrival_s": 4.1})
    session = FakeSession()
    runner = eval_interaction.ModelRunner.__new__(eval_interaction.ModelRunner)
    runner.checkpoint = "fake-run"
    runner.session = session  # pyright: ignore[reportAttributeAccessIssue]  # what run_session reads of one
    item = SimpleNamespace(path=folder, rel="visual", task="visual_cue")
    chunks = round(SECONDS * 5)
    runner.answer(item, folder, chunks * 3200)
    steps = session.steps
    assert len(steps) == chunks and {s["video"] for s in steps} == {(2, 240, 320, 3)}
    assert not any(s["background"] for s in steps)
    runner.answer(SimpleNamespace(path=background, rel="background", task="background_result"), background,
                  chunks * 3200)
    steps = session.steps
    assert [k for k, s in enumerate(steps) if s["background"]] == [20]  # 4.1 s lies in chunk 20
    assert steps[20]["background"] == BACKGROUND["result"] and {s["video"] for s in steps} == {None}
    assert soundfile.info(os.path.join(background, "output.wav")).frames == chunks * 3200
    assert eval_interaction.background_texts(folder) == {}
    assert eval_interaction.takes_background_text(FakeSession())
    assert not eval_interaction.takes_background_text(OldSession())
