"""A synthesized visual-cue dialogue and its scene agree: every answer's cue time is a frame the
scene generator shows the cue on (real espeak-ng speech, the default timing model)."""

from __future__ import annotations

import numpy as np
import pytest

from microturn.schemas.dialogue import parse_dialogue
from microturn.synth.engine import scene_spec, synthesize_dialogue
from microturn.synth.mix import MixConfig
from microturn.synth.scene import cue_times, render_frames, scene_events
from microturn.synth.timing import DEFAULT_TIMING
from microturn.synth.tts import get_tts

VISUAL = {
    "id": "v1", "speakers": {"A": {"role": "user"}, "B": {"role": "model", "voice": "en-gb"}},
    "turns": [
        {"speaker": "A", "text": "Can you watch the screen for me?"},
        {"speaker": "B", "text": "Sure, I'm watching."},
        {"speaker": "A", "text": "Tell me when the red circle shows up, and count the bounces of the blue square.",
         "act": "visual_request", "cues": [
             {"kind": "appear", "after_ms": 2000, "shape": "circle", "colour": "red", "responses": ["There it is."]},
             {"kind": "repeat", "after_ms": 4500, "shape": "square", "colour": "blue", "count": 3,
              "period_ms": 1200, "responses": ["one", "two", "three"]},
             {"kind": "colour", "after_ms": 10000, "shape": "diamond", "colour": "green", "to_colour": "yellow",
              "responses": ["Now it's yellow."]},
             {"kind": "text", "after_ms": 13000, "text": "GATE 12", "responses": ["It says gate twelve."]}]},
        {"speaker": "A", "text": "Thanks, that's all."}],
}


@pytest.fixture(scope="module")
def conversation():
    tts = get_tts("espeak-ng")
    return synthesize_dialogue(parse_dialogue(VISUAL), tts=tts, timing=DEFAULT_TIMING, mix=MixConfig(), seed=3)


def test_every_answer_follows_a_frame_that_shows_its_cue(conversation):
    spec = scene_spec(conversation, seed=11)
    assert spec is not None and spec.duration_ms == conversation.duration_ms
    events = [e for e in conversation.events if e["type"] == "visual_cue"]
    assert len(events) == 6
    for e in events:
        p = e["payload"]
        times = cue_times(spec, p["index"])
        expected = times[p["rep"] - 1] if p["rep"] is not None else times[0]
        assert e["t_ms"] == expected, p
        assert p["response_start_ms"] > e["t_ms"]
    shown = {(ev.cue, ev.t_ms) for ev in scene_events(spec) if ev.cue is not None}
    assert {(e["payload"]["index"], e["t_ms"]) for e in events if e["payload"]["rep"] is None} <= shown


def test_the_frame_before_an_appearance_differs_from_the_frame_at_it(conversation):
    spec = scene_spec(conversation, seed=11)
    assert spec is not None
    t = next(e["t_ms"] for e in conversation.events if e["type"] == "visual_cue" and e["payload"]["cue"] == "appear")
    k = t // 100
    frames = [f for i, f in enumerate(render_frames(spec)) if i in (k - 1, k)]
    changed = np.abs(frames[1].astype(int) - frames[0].astype(int)).sum(axis=-1) > 60
    assert changed.sum() > 500  # a 44-56 px shape came into view


def test_a_dialogue_without_visual_requests_has_no_scene():
    tts = get_tts("espeak-ng")
    plain = parse_dialogue({"id": "p", "speakers": {"A": {}, "B": {}},
                            "turns": [{"speaker": "A", "text": "Hello."}, {"speaker": "B", "text": "Hi."}]})
    conv = synthesize_dialogue(plain, tts=tts, timing=DEFAULT_TIMING, mix=MixConfig(), seed=0)
    assert conv.scene_cues == () and scene_spec(conv, seed=0) is None
