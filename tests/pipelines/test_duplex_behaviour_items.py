"""``microturn eval items`` for the behaviour tasks (visual_cue, repetition, background_result,
simultaneous) on a hand-built record: which role gives items, the annotation times, the video
clip, and the reference system scoring (near-)perfectly on its own items.

The record (30 s, speakers A and B on their own channels, speech-like sound that silero finds
where the segments say; events by B as the synthesizer writes them):

- A asks to watch (0.5-2.0 s); cues show at 4.0 and 7.0 s, B answers at 4.7 and 7.6 s;
- A asks to count (9.0-10.5 s); three repetitions end at 12, 13 and 14 s, B counts "One."
  "Two." "Three." 0.6 s after each;
- B delegates (15.5-16.8 s); A talks 17.5-19.5 s across the arrival at 18.0 s; B mentions the
  result at 20.0 s, after A yields;
- A speaks two sentences (22.0-23.2, 23.6-25.0 s); B renders them 1.5 and 1.6 s behind.

The video: 10 fps 320x240 frames whose colour spells the frame number (R: k mod 20, G: k div
20, steps of 10), so a clip's frames can be traced back to the conversation's.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from microturn.cli.evaluate import main as eval_main
from microturn.pipelines.duplex.items import ItemsConfig, build_items
from microturn.pipelines.duplex.items_behaviours import TASKS, background_result, repetition, simultaneous, visual_cue
from microturn.pipelines.duplex.items_select import role_view
from microturn.pipelines.duplex.score import score_items
from microturn.pipelines.duplex.systems import find_items, prepare_item, write_reference
from microturn.pipelines.shard.video import probe_video
from microturn.schemas.turns import Turn, turn_events, turn_stats
from microturn.testing.records import _conversation, write_records
from microturn.testing.speechlike import place
from microturn.trainer.session_media import VideoFrames

CID = "s-00000000000000e7"
DURATION_MS = 30_000
SEGMENTS = {"A": [(500, 2000), (9000, 10500), (17500, 19500), (22000, 23200), (23600, 25000)],
            "B": [(4700, 5500), (7600, 8400), (12600, 13050), (13600, 14050), (14600, 15050), (15500, 16800),
                  (20000, 21500), (23500, 24500), (25200, 26300)]}
# One segment per placed turn, as the synthesizer writes them: the rendering is one turn.
TURNS = {"A": [(500, 2000), (9000, 10500), (17500, 19500), (22000, 25000)],
         "B": [(4700, 5500), (7600, 8400), (12600, 13050), (13600, 14050), (14600, 15050), (15500, 16800),
               (20000, 21500), (23500, 26300)]}
WORDS = [("A", "Tell me when the red circle shows up.", 500, 2000), ("B", "There it is.", 4700, 5500),
         ("B", "It turned blue.", 7600, 8400), ("A", "Count the bounces out loud.", 9000, 10500),
         ("B", "One.", 12600, 13050), ("B", "Two.", 13600, 14050), ("B", "Three.", 14600, 15050),
         ("B", "Let me look that up.", 15500, 16800), ("A", "Sure, and what about the hotel?", 17500, 19500),
         ("B", "The flight leaves at nine.", 20000, 21500), ("A", "The train is late.", 22000, 23200),
         ("A", "We wait here.", 23600, 25000), ("B", "Le train est en retard.", 23500, 24500),
         ("B", "Nous attendons ici.", 25200, 26300)]
RESULT = "The flight to Oslo leaves at nine from gate four."


def _words(cid: str) -> list[dict]:
    rows = []
    for speaker, text, start, end in WORDS:
        tokens = text.split()
        step = (end - start) // len(tokens)
        rows += [{"conversation_id": cid, "speaker": speaker, "text": t, "start_ms": start + i * step,
                  "end_ms": start + (i + 1) * step, "score": 1.0} for i, t in enumerate(tokens)]
    return rows


def _event(cid: str, kind: str, t_ms: int, payload: dict, speaker: str = "B") -> dict:
    return {"conversation_id": cid, "type": kind, "speaker": speaker, "t_ms": t_ms,
            "payload": json.dumps(payload, sort_keys=True)}


def _behaviour_events(cid: str) -> list[dict]:
    events = []
    for index, (t, cue, obj, answer, (s, e)) in enumerate([
            (4000, "appear", "red circle", "There it is.", (4700, 5500)),
            (7000, "colour", "red circle", "It turned blue.", (7600, 8400))]):
        events.append(_event(cid, "visual_cue", t, {
            "index": index, "cue": cue, "object": obj, "answer": answer, "request_end_ms": 2000,
            "response_start_ms": s, "response_end_ms": e, "delay_ms": s - t, "rep": None, "count": None,
            "requester": "A"}))
    for rep, (t, answer, (s, e)) in enumerate([(12000, "One.", (12600, 13050)), (13000, "Two.", (13600, 14050)),
                                               (14000, "Three.", (14600, 15050))], 1):
        events.append(_event(cid, "visual_cue", t, {
            "index": 0, "cue": "repeat", "object": "green square", "answer": answer, "request_end_ms": 10500,
            "response_start_ms": s, "response_end_ms": e, "delay_ms": s - t, "rep": rep, "count": 3,
            "requester": "A"}))
    background = {"result": RESULT, "mention": "The flight leaves at nine.", "delegated_ms": 16800,
                  "arrival_ms": 18000, "mention_ms": 20000, "mention_end_ms": 21500, "yield_ms": 19500,
                  "delay_ms": 2000}
    events += [_event(cid, "background_result", 18000, {"phase": "arrival", **background}),
               _event(cid, "background_result", 20000, {"phase": "mention", **background})]
    for (s, e), (src_s, src_e), text, source in [
            ((23500, 24500), (22000, 23200), "Le train est en retard.", "The train is late."),
            ((25200, 26300), (23600, 25000), "Nous attendons ici.", "We wait here.")]:
        events.append(_event(cid, "simultaneous", s, {
            "source_speaker": "A", "source_start_ms": src_s, "source_end_ms": src_e, "end_ms": e,
            "lag_ms": s - src_s, "text": text, "source_text": source, "language": "fr"}))
    return events


def behaviour_record(cid: str = CID) -> dict:
    """The record of the module notes (split test)."""
    turns = sorted((Turn(spk, s, e, "AB".index(spk)) for spk, spans in TURNS.items() for s, e in spans),
                   key=lambda t: (t.start_ms, t.speaker))
    audio = {f"{spk}.flac": place(DURATION_MS / 1000, [(s / 1000, e / 1000) for s, e in spans], seed=3 * i)
             for i, (spk, spans) in enumerate(SEGMENTS.items())}
    conv = _conversation(cid, duration_ms=DURATION_MS, speakers=["A", "B"], layout="per_speaker",
                         files=["A.flac", "B.flac"], turns=turns, origin="synthetic", license="Apache-2.0")
    conv["split"] = "test"
    conv["stats"] = turn_stats(turns, DURATION_MS).as_row()
    derived = [{"conversation_id": cid, "type": e.type, "speaker": e.speaker, "t_ms": e.t_ms,
                "payload": json.dumps(e.payload, sort_keys=True)} for e in turn_events(turns)]
    return {"conversation": conv, "segments": [{"conversation_id": cid, "speaker": t.speaker, "start_ms": t.start_ms,
                                                "end_ms": t.end_ms, "channel": t.channel} for t in turns],
            "words": _words(cid), "events": derived + _behaviour_events(cid), "audio": audio}


def frame_colour(k: int) -> tuple[int, int]:
    """The (R, G) of conversation frame ``k`` (module notes)."""
    return 40 + (k % 20) * 10, 40 + (k // 20) * 10


def frame_number(frame_HWC: np.ndarray) -> int:
    """The conversation frame a decoded frame shows (its mean colour, to the nearest step)."""
    r, g = frame_HWC[..., 0].mean(), frame_HWC[..., 1].mean()
    return round((r - 40) / 10) + 20 * round((g - 40) / 10)


def write_video(path: str, seconds: float) -> None:
    """10 fps 320x240 H.264 of numbered colour frames, piped to ffmpeg (an argument list, no shell)."""
    frames = []
    for k in range(round(seconds * 10)):
        r, g = frame_colour(k)
        frames.append(np.broadcast_to(np.array([r, g, 128], np.uint8), (240, 320, 3)))
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", "320x240", "-r", "10", "-i", "pipe:", "-c:v", "libx264", "-preset", "veryfast", "-crf", "10",
                    "-pix_fmt", "yuv420p", "-y", "file:" + os.path.abspath(path)],
                   input=np.stack(frames).tobytes(), check=True)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("behaviour-records")
    video = str(root / "video.mp4")
    write_video(video, DURATION_MS / 1000)
    return write_records(str(root / "records"), [behaviour_record()], video={CID: video})


@pytest.fixture(scope="module")
def items(records, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("behaviour-items") / "items")
    build_items(ItemsConfig(records=(records,), output=out))
    return out


def _item(items: str, task: str) -> tuple[str, dict, dict]:
    (line,) = [json.loads(x) for x in open(os.path.join(items, "items.jsonl"), encoding="utf-8")
               if json.loads(x)["task"] == task]
    folder = os.path.join(items, line["path"])
    (name,) = [n for n in os.listdir(folder) if n.endswith(".json") and n not in
               ("item.json", "reference.json", "transcription.json")]
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return folder, line, json.load(f)


def test_the_default_tasks_are_those_present_and_only_the_responder_gives_behaviour_items(items):
    lines = [json.loads(x) for x in open(os.path.join(items, "items.jsonl"), encoding="utf-8")]
    behaviour = [x for x in lines if x["task"] in TASKS[4:]]
    assert sorted(x["task"] for x in behaviour) == sorted(TASKS[4:])  # one item each
    assert {x["reference_speaker"] for x in behaviour} == {"B"} and {x["user_speaker"] for x in behaviour} == {"A"}
    assert {json.loads(open(os.path.join(items, x["path"], "item.json")).read())["layout_version"]
            for x in lines} == {2}
    # Under the other role assignment (A as the model) the same events give nothing.
    rec = behaviour_record()
    turns = [Turn(s["speaker"], s["start_ms"], s["end_ms"], s["channel"]) for s in rec["segments"]]
    words = [(w["speaker"], w["text"], w["start_ms"], w["end_ms"]) for w in rec["words"]]
    for model, expected in (("A", 0), ("B", 1)):
        view = role_view(model=model, speakers=["A", "B"], duration_ms=DURATION_MS, segments=turns, words=words,
                         events=rec["events"])
        for select in (visual_cue, repetition, background_result, simultaneous):
            assert len(select(view, context_ms=8000)) == expected, (model, select.__name__)


def test_visual_cue_annotation_window_and_silenced_user(items):
    folder, line, data = _item(items, "visual_cue")
    # From the request turn's start (0.5 s) to 1 s after the last cue's 3 s window (11.0 s), whole chunks.
    assert (line["window_start_ms"], line["window_end_ms"]) == (500, 11_100)
    assert data["request_end_s"] == 1.5
    assert [(c["t_s"], c["cue"], c["object"], c["answer"]) for c in data["cues"]] == [
        (3.5, "appear", "red circle", "There it is."), (6.5, "colour", "red circle", "It turned blue.")]
    import soundfile

    inp, rate = soundfile.read(os.path.join(folder, "input.wav"), dtype="float32")
    assert rate == 16_000 and inp.size == 10_600 * 16
    assert np.abs(inp[:1500 * 16]).max() > 0.05 and not inp[1500 * 16:].any()  # silent after the request


def test_input_mp4_is_the_conversations_video_over_the_window(items):
    for task in ("visual_cue", "repetition"):
        folder, line, _ = _item(items, task)
        start, end = line["window_start_ms"], line["window_end_ms"]
        width, height, _, frames = probe_video(os.path.join(folder, "input.mp4"))
        assert (width, height) == (320, 240) and frames == (end - start) // 100  # 10 fps over the item
        # Decoded as the session decodes it: frame i of the clip is conversation frame start/100 + i.
        with VideoFrames(os.path.join(folder, "input.mp4")) as video:
            for chunk in range((end - start) // 200):
                pair = video.next_chunk()
                assert pair is not None and pair.shape == (2, 240, 320, 3)
                assert [frame_number(f) for f in pair] == [start // 100 + 2 * chunk, start // 100 + 2 * chunk + 1]
    for task in ("background_result", "simultaneous"):
        assert not os.path.exists(os.path.join(_item(items, task)[0], "input.mp4"))


def test_repetition_annotation_and_the_reference_kept_to_the_answers(items):
    folder, line, data = _item(items, "repetition")
    assert line["window_start_ms"] == 9000
    # After the request the reference holds only the answers to the request's cues: B's
    # delegation turn (15.5-16.8 s) inside the window answers nothing the item holds.
    assert line["reference_kept_ms"] == [[9000, 10500], [12600, 13050], [13600, 14050], [14600, 15050]]
    import soundfile

    ref, _ = soundfile.read(os.path.join(folder, "reference.wav"), dtype="float32")
    assert np.abs(ref[(12600 - 9000) * 16:(13050 - 9000) * 16]).max() > 0.05
    assert not ref[(15050 - 9000) * 16:].any()
    with open(os.path.join(folder, "reference.json"), encoding="utf-8") as f:
        assert json.load(f)["text"] == "One. Two. Three."
    assert data == {"request_end_s": 1.5, "count": 3, "reps_s": [3.0, 4.0, 5.0], "aloud": True,
                    "object": "green square", "answers": ["One.", "Two.", "Three."]}


def test_background_annotation_keeps_the_users_speech(items):
    folder, line, data = _item(items, "background_result")
    start = line["window_start_ms"]
    assert start == 8800 and line["user_silenced_from_ms"] is None
    assert data["arrival_s"] == 9.2 and data["delegated_s"] == 8.0 and data["result"] == RESULT
    assert data["user_speech_s"] == [[0.2, 1.7], [8.7, 10.7], [13.2, 13.8]]
    assert data["yield_s"] == 10.7 and data["reference_mention_s"] == 11.2


def test_simultaneous_annotation(items):
    folder, line, data = _item(items, "simultaneous")
    assert line["window_start_ms"] == 21_000 and line["user_silenced_from_ms"] == 25_000
    # B's mention of the result (20.0-21.5 s) runs into the window: no part of this rendering.
    assert line["reference_kept_ms"] == [[23_500, 24_500], [25_200, 26_300]]
    import soundfile

    ref, _ = soundfile.read(os.path.join(folder, "reference.wav"), dtype="float32")
    assert not ref[:(23_500 - 21_000) * 16].any() and np.abs(ref[(23_500 - 21_000) * 16:]).max() > 0.05
    assert data["language"] == "fr"
    assert [(g["source_start_s"], g["source_end_s"], g["start_s"], g["text"]) for g in data["segments"]] == [
        (1.0, 2.2, 2.5, "Le train est en retard."), (2.6, 4.0, 4.2, "Nous attendons ici.")]


def test_the_reference_scores_its_own_items_perfectly(items, tmp_path):
    """The scorer and the items agree: the true second speaker hits every cue, counts right, mentions
    the result after the user yields and renders every sentence 1-3 s behind."""
    tree = str(tmp_path / "reference")
    for item in find_items(items):
        if item.task in TASKS[4:]:
            dest = os.path.join(tree, item.rel)
            write_reference(item, dest, prepare_item(item, dest))
    report, rows = score_items(tree)
    assert report["visual_cue"]["hit_rate"] == 1.0 and report["visual_cue"]["early_rate"] == 0.0
    assert report["visual_cue"]["latency_s"] == pytest.approx(0.65, abs=0.06)
    assert report["repetition"]["count_accuracy"] == 1.0 and report["repetition"]["rep_hit_rate"] == 1.0
    section = report["background_result"]
    assert (section["mention_rate"], section["over_user_share"], section["false_mention_rate"]) == (1.0, 0.0, 0.0)
    assert section["delay_s"] == pytest.approx(2.0, abs=0.06)
    section = report["simultaneous"]
    assert section["rendered_share"] == 1.0 and section["lag_in_range_share"] == 1.0
    assert section["lag_s"] == pytest.approx(1.55, abs=0.06)
    assert {r["words"] for r in rows} == {"output.json"}


def test_tasks_on_the_cli_and_a_visual_record_without_video(records, items, tmp_path, capsys):
    assert eval_main(["items", "--records", records, "--output", str(tmp_path / "o"), "--tasks", "repetition",
                      "simultaneous"]) == 0
    printed = capsys.readouterr().out
    assert "repetition" in printed and "simultaneous" in printed and "visual_cue" not in printed
    # The same item from another run: the same bytes, video included.
    rel = _item(items, "repetition")[1]["path"]
    for name in ("input.mp4", "input.wav", "repetition.json", "item.json"):
        with open(os.path.join(items, rel, name), "rb") as a, open(tmp_path / "o" / rel / name, "rb") as b:
            assert a.read() == b.read(), name
    bare = write_records(str(tmp_path / "bare"), [behaviour_record()])
    assert eval_main(["items", "--records", bare, "--output", str(tmp_path / "p"), "--tasks", "visual_cue"]) == 2
    assert "has events of a visual task but no video" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "p")
    # Without the visual tasks the same record gives its other items.
    summary = build_items(ItemsConfig(records=(bare,), output=str(tmp_path / "q"), tasks=("background_result",)))
    assert summary.items_per_task == {"background_result": 1}


def test_eval_interaction_reports_the_behaviour_sections(records, tmp_path, capsys):
    """The cascade (audio only) and the reference answer the behaviour items; the text tables,
    report.json and report.html hold a section per behaviour task, and `eval duplex` prints them."""
    items = str(tmp_path / "items")
    build_items(ItemsConfig(records=(records,), output=items, tasks=TASKS[4:]))
    out = str(tmp_path / "out")
    assert eval_main(["interaction", "--items", items, "--output", out, "--systems", "cascade,reference",
                      "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for task in TASKS[4:]:
        assert task in printed
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        reports = json.load(f)["reports"]
    assert reports["reference"]["visual_cue"]["hit_rate"] == 1.0
    # The cascade answers 0.7 s after the user's speech ends, whatever the video shows: the
    # request ends 1.5 s into the item, so its answer comes before the first cue (3.5 s).
    assert reports["cascade"]["visual_cue"]["early_rate"] > 0
    page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    for metric in ("hit_rate", "count_accuracy", "mention_rate", "lag_in_range_share", "said_count"):
        assert metric in page
    assert eval_main(["duplex", os.path.join(out, "reference")]) == 0
    printed = capsys.readouterr().out
    assert "visual_cue" in printed and "hit_rate=1.000" in printed and "rendered_share=1.000" in printed


# The synthesizer warns of what it adjusts (an answer waiting for the previous one to end when
# counting fast, a word espeak gave no time for): ordinary in generated dialogues.
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_reference_scores_near_perfectly_on_synthesized_behaviour_dialogues(tmp_path):
    """The synthesizer's own events (``--kinds visual,background,simultaneous``) through items and
    scorer: the true second speaker hits every cue, counts right, mentions every result without
    talking over the user and renders every sentence. Only the lag can leave 1-3 s: the
    synthesizer starts a sentence's rendering after the previous one ends, which can put it over
    3 s behind its source."""
    from microturn.pipelines.synthesize.run import run as synthesize

    records = str(tmp_path / "synth")
    synthesize(["--generate", "8", "--kinds", "visual,background,simultaneous", "--output", records, "--seed", "3"],
               print_summary=False)
    items = str(tmp_path / "items")
    summary = build_items(ItemsConfig(records=(records,), output=items, splits="test=1", tasks=TASKS[4:]))
    assert summary.items_per_task["visual_cue"] and summary.items_per_task["background_result"]
    assert summary.items_per_task["simultaneous"]
    tree = str(tmp_path / "reference")
    for item in find_items(items):
        dest = os.path.join(tree, item.rel)
        write_reference(item, dest, prepare_item(item, dest))
    report, _ = score_items(tree, extra={})
    assert (report["visual_cue"]["hit_rate"], report["visual_cue"]["early_rate"]) == (1.0, 0.0)
    if "repetition" in report:
        assert report["repetition"]["count_accuracy"] == 1.0 and report["repetition"]["rep_hit_rate"] == 1.0
    section = report["background_result"]
    assert (section["mention_rate"], section["over_user_share"], section["false_mention_rate"]) == (1.0, 0.0, 0.0)
    section = report["simultaneous"]
    assert section["rendered_share"] == 1.0 and section["lag_in_range_share"] >= 0.8
