"""Choosing the evaluation events of the interaction behaviours (pure functions, ms): visual cues,
repetition counting, background results and simultaneous speech.

Beside Full-Duplex-Bench's four tasks (:mod:`.items_select`), the records' events of the
behaviours the synthesizer scripts (``visual_cue``, ``background_result``, ``simultaneous``: the
events contract of :mod:`microturn.schemas.sample`) give four more tasks. An event gives an item
only for the role assignment whose model-role speaker is the event's speaker (the responder of a
cue, the speaker who delegated, the renderer): the reference stream is then the behaviour done
right and the user stream what prompted it. Per task (times absolute ms in the events, seconds
from the item's start in the annotation files):

- ``visual_cue`` (``visual_cue.json``): one item per visual request whose cues are not repeats,
  holding every cue event of the request (the responder's answer to each). Window: from the
  request turn's start (at most ``context_ms`` before the request's end) to
  :data:`TAIL_MS` after the later of the last cue's answer window (:data:`CUE_WINDOW_MS`) and
  the reference's last answer. The user stream is silent after the request's end: the answers
  have no audio cue, only the video (``input.mp4``); so the reference stream keeps, after the
  request's end, only the answers to the request's cues (talk the user's later speech prompted
  has no cause in the item). ``{"request_end_s", "cues": [{"t_s", "cue", "object", "answer",
  "index"}], "other_cues_s"}``: ``t_s`` the first video frame showing the cue; ``other_cues_s``
  the times of the request's repeat cues (scored as repetition items), whose answers are no
  early answers to these cues.
- ``repetition`` (``repetition.json``): one item per repeat cue, window and streams as for
  visual cues.
  ``{"request_end_s", "count", "reps_s", "aloud", "object", "answers"}``: ``reps_s`` the ends
  of the repetitions the reference answered (every one when it counts aloud, one answer per
  repetition; else only the last, after which it says the count), ``aloud`` whether it counts
  aloud (more than one answer).
- ``background_result`` (``background.json``): one item per delegation (its ``arrival`` and
  ``mention`` events). Window: ``context_ms`` before the end of the delegation turn to
  :data:`TAIL_MS` after the reference's mention ends; the user stream is whole (a mention must
  find a moment the user is not speaking). ``{"arrival_s", "result", "delegated_s",
  "user_speech_s": [[s, e], ...], "mention", "reference_mention_s", "yield_s"}``: ``result`` is
  the background text a system receives at ``arrival_s``; ``user_speech_s`` the user speakers'
  segments in the window (the records'); ``yield_s`` the end of the user turn the reference's
  mention followed (null when it followed none).
- ``simultaneous`` (``simultaneous.json``): one item per rendering turn (the model speaker's
  segment holding its segment events). Window: :data:`LEAD_MS` (at most ``context_ms``) before
  the source's first rendered sentence to :data:`TAIL_MS` after the later of the last source
  sentence's end plus :data:`RENDER_WINDOW_MS` and the reference's rendering end; the user
  stream is silent after the last source sentence (later speech is no part of what is
  rendered), and the reference stream holds only this rendering (the renderer's earlier
  renderings running into the window render sources the item does not hold).
  ``{"segments": [{"source_start_s", "source_end_s", "text", "source_text", "start_s", "end_s"}],
  "language"}``.

Windows of these tasks start on the 100 ms video frame grid and last whole 200 ms chunks (cut
down to whole chunks at the conversation's end), so ``input.mp4`` holds exactly two 10 fps frames
per chunk of ``input.wav`` and a system streaming 200 ms chunks sees the frames the
conversation's viewer saw at the same times. An event whose window cannot hold the reference's
answer (the conversation ends first) gives no item.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from microturn.pipelines.duplex import items_select
from microturn.pipelines.duplex.items_select import Plan, RoleView
from microturn.pipelines.duplex.layout import ANNOTATIONS
from microturn.pipelines.duplex.tasks import BEHAVIOUR_TASKS
from microturn.pipelines.shard.streams import intervals_union

__all__ = ["ANNOTATION_FILE", "BEHAVIOUR_TASKS", "CUE_WINDOW_MS", "LEAD_MS", "RENDER_WINDOW_MS", "SELECTORS",
           "TAIL_MS", "TASKS", "VIDEO_TASKS", "background_result", "repetition", "simultaneous",
           "tasks_present", "visual_cue"]

TASKS = items_select.TASKS + BEHAVIOUR_TASKS
ANNOTATION_FILE = {task: file for file, task in ANNOTATIONS.items()}
VIDEO_TASKS = ("visual_cue", "repetition")

# The scorer's window for an answer to a cue (score_behaviours.CUE_WINDOW_S): the synthesizer's
# cue reaction is lognormal with a 700 ms median (90% within 430-1140 ms), so 3 s holds every
# answer a viewer gives to what they just saw; the item holds it after every cue.
CUE_WINDOW_MS = 3000
# The scorer's window after a source sentence within which its rendering must be heard
# (score_behaviours.RENDER_WINDOW_S): renderings trail their source by 1-3 s (the synthesizer's
# default lag, an interpreter's ear-voice span of 2-3 s).
RENDER_WINDOW_MS = 3000
# Past the last answer window or the reference's last answer, whichever is later: silero closes a
# segment only after 100 ms of silence, and an answer up to 1 s later than the reference's still
# lies in the item (so its onset is measured, not cut off).
TAIL_MS = 1000
# Before a rendered source: 1 s of what preceded it, so that the source's start is an onset after
# silence or other speech (silero needs 250 ms of speech and 100 ms of silence to place one).
LEAD_MS = 1000
FRAME_MS = 100  # the 10 fps video grid
CHUNK_MS = 200  # a session chunk: two video frames


def _s(ms: int) -> float:
    return ms / 1000


def _ms(event: Mapping, key: str) -> int:
    """An integer ms time of ``event``'s payload; ``ValueError`` naming the event and the key."""
    value = event["payload"].get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"a {event['type']} event of speaker {event['speaker']} at {event['t_ms']} ms has "
                         f"{key}={value!r} in its payload; the events contract gives a time in ms")
    return int(value)


def _text(event: Mapping, key: str) -> str:
    value = event["payload"].get(key)
    return value if isinstance(value, str) else ""


def _window(first_ms: int, last_ms: int, duration_ms: int) -> tuple[int, int] | None:
    """``[start, end)`` from ``first_ms`` down to the frame grid, whole chunks up to ``last_ms``
    (fewer at the conversation's end); None when not one chunk fits."""
    start = max(0, first_ms) // FRAME_MS * FRAME_MS
    length = -(-(last_ms - start) // CHUNK_MS) * CHUNK_MS
    if start + length > duration_ms:
        length = (duration_ms - start) // CHUNK_MS * CHUNK_MS
    return (start, start + length) if length > 0 else None


def _turn_start(view: RoleView, speakers: Iterable[str], end_ms: int) -> int | None:
    """The start of the segment of ``speakers`` that ends at ``end_ms`` (or runs across it)."""
    who = set(speakers)
    starts = [t.start_ms for t in view.segments if t.speaker in who and t.start_ms < end_ms <= t.end_ms]
    return min(starts) if starts else None


def _model_events(view: RoleView, kind: str) -> list[dict]:
    return [e for e in view.events if e["type"] == kind and e["speaker"] == view.model]


def _cue_groups(view: RoleView, *, repeat: bool) -> list[tuple[tuple, list[dict]]]:
    """The model's visual_cue events grouped by request (and by cue, for repeats), in time order."""
    groups: dict[tuple, list[dict]] = {}
    for e in _model_events(view, "visual_cue"):
        if (e["payload"].get("cue") == "repeat") != repeat:
            continue
        key = (_ms(e, "request_end_ms"), str(e["payload"].get("requester")))
        if repeat:
            key += (int(e["payload"].get("index") or 0),)
        groups.setdefault(key, []).append(e)
    for events in groups.values():
        events.sort(key=lambda e: (e["t_ms"], int(e["payload"].get("index") or 0)))
    return sorted(groups.items(), key=lambda kv: (kv[0], kv[1][0]["t_ms"]))


def _request_spans(view: RoleView, start: int, request_end: int, requester: str) -> tuple[tuple[int, int], ...]:
    """The reference spans of a request's items: everything up to the request's end, then the
    answers to every cue of the request (module notes)."""
    answers = sorted((_ms(e, "response_start_ms"), _ms(e, "response_end_ms")) for e in _model_events(view, "visual_cue")
                     if _ms(e, "request_end_ms") == request_end and str(e["payload"].get("requester")) == requester)
    return ((start, request_end), *answers)


def _cue_window(view: RoleView, request_end: int, events: Sequence[dict], context_ms: int) -> tuple[int, int] | None:
    """The window of a request's cue items (module notes); None when it cannot hold the answers."""
    turn = _turn_start(view, view.users, request_end)
    first = request_end - context_ms if turn is None else max(turn, request_end - context_ms)
    answers_end = max(max(e["t_ms"] + CUE_WINDOW_MS, _ms(e, "response_end_ms")) for e in events)
    window = _window(first, answers_end + TAIL_MS, view.duration_ms)
    if window is None or window[0] > request_end or window[1] <= max(_ms(e, "response_start_ms") for e in events):
        return None
    return window


def visual_cue(view: RoleView, *, context_ms: int) -> list[Plan]:
    """Plans of the visual requests whose cues are not repeats (module notes)."""
    plans = []
    repeats = _cue_groups(view, repeat=True)
    for (request_end, requester), cues in _cue_groups(view, repeat=False):
        window = _cue_window(view, request_end, cues, context_ms)
        if window is None:
            continue
        start, end = window
        others = sorted(e["t_ms"] for key, reps in repeats if key[:2] == (request_end, requester) for e in reps)
        annotation = {"request_end_s": _s(request_end - start),
                      "cues": [{"t_s": _s(e["t_ms"] - start), "cue": _text(e, "cue"), "object": _text(e, "object"),
                                "answer": _text(e, "answer"), "index": int(e["payload"].get("index") or 0)}
                               for e in cues],
                      "other_cues_s": [_s(t - start) for t in others]}
        plans.append(Plan(task="visual_cue", model=view.model, start_ms=start, end_ms=end,
                          silence_from_ms=request_end, annotation=annotation, video=True,
                          reference_spans=_request_spans(view, start, request_end, requester),
                          events={"request_end_ms": request_end, "cues_ms": [e["t_ms"] for e in cues],
                                  "responses_ms": [[_ms(e, "response_start_ms"), _ms(e, "response_end_ms")]
                                                   for e in cues]}))
    return plans


def repetition(view: RoleView, *, context_ms: int) -> list[Plan]:
    """Plans of the repeat cues, one per cue (module notes)."""
    plans = []
    for (request_end, requester, _), reps in _cue_groups(view, repeat=True):
        count = reps[-1]["payload"].get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"a repeat visual_cue event of speaker {view.model} at {reps[-1]['t_ms']} ms has "
                             f"count={count!r}; the events contract gives the number of repetitions")
        window = _cue_window(view, request_end, reps, context_ms)
        if window is None:
            continue
        start, end = window
        annotation = {"request_end_s": _s(request_end - start), "count": count,
                      "reps_s": [_s(e["t_ms"] - start) for e in reps], "aloud": len(reps) > 1,
                      "object": _text(reps[0], "object"), "answers": [_text(e, "answer") for e in reps]}
        plans.append(Plan(task="repetition", model=view.model, start_ms=start, end_ms=end,
                          silence_from_ms=request_end, annotation=annotation, video=True,
                          reference_spans=_request_spans(view, start, request_end, requester),
                          events={"request_end_ms": request_end, "reps_ms": [e["t_ms"] for e in reps],
                                  "responses_ms": [[_ms(e, "response_start_ms"), _ms(e, "response_end_ms")]
                                                   for e in reps]}))
    return plans


def background_result(view: RoleView, *, context_ms: int) -> list[Plan]:
    """Plans of the delegations whose result arrives and is mentioned (module notes)."""
    groups: dict[tuple[int, int], dict[str, dict]] = {}
    for e in _model_events(view, "background_result"):
        phase = str(e["payload"].get("phase"))
        groups.setdefault((_ms(e, "delegated_ms"), _ms(e, "arrival_ms")), {})[phase] = e
    plans = []
    for (delegated, arrival), phases in sorted(groups.items()):
        if "arrival" not in phases or "mention" not in phases:
            continue
        e = phases["mention"]
        mention, mention_end = _ms(e, "mention_ms"), _ms(e, "mention_end_ms")
        window = _window(delegated - context_ms, mention_end + TAIL_MS, view.duration_ms)
        if window is None or not window[0] <= arrival < window[1] or mention >= window[1]:
            continue
        start, end = window
        users = intervals_union([(max(t.start_ms, start), min(t.end_ms, end)) for t in view.segments
                                 if t.speaker in view.users and t.start_ms < end and t.end_ms > start])
        yield_ms = e["payload"].get("yield_ms")
        annotation = {"arrival_s": _s(arrival - start), "result": _text(e, "result"),
                      "delegated_s": _s(delegated - start), "user_speech_s": [[_s(a - start), _s(b - start)]
                                                                            for a, b in users],
                      "mention": _text(e, "mention"), "reference_mention_s": _s(mention - start),
                      "yield_s": _s(int(yield_ms) - start) if isinstance(yield_ms, (int, float))
                      and not isinstance(yield_ms, bool) else None}
        plans.append(Plan(task="background_result", model=view.model, start_ms=start, end_ms=end,
                          silence_from_ms=None, annotation=annotation,
                          events={"delegated_ms": delegated, "arrival_ms": arrival, "mention_ms": mention,
                                  "mention_end_ms": mention_end}))
    return plans


def simultaneous(view: RoleView, *, context_ms: int) -> list[Plan]:
    """Plans of the model's rendering turns (module notes)."""
    mine = [t for t in view.segments if t.speaker == view.model]
    groups: dict[tuple[int, ...], list[dict]] = {}
    for e in _model_events(view, "simultaneous"):
        turn = next((t for t in mine if t.start_ms <= e["t_ms"] < t.end_ms), None)
        groups.setdefault((turn.start_ms, turn.end_ms) if turn else (e["t_ms"],), []).append(e)
    plans = []
    for _, segments in sorted(groups.items()):
        segments.sort(key=lambda e: e["t_ms"])
        first = min(_ms(e, "source_start_ms") for e in segments)
        source_end = max(_ms(e, "source_end_ms") for e in segments)
        rendered_end = max(_ms(e, "end_ms") for e in segments)
        window = _window(first - min(context_ms, LEAD_MS), max(source_end + RENDER_WINDOW_MS, rendered_end) + TAIL_MS,
                         view.duration_ms)
        if window is None or window[0] > first or window[1] <= segments[-1]["t_ms"]:
            continue
        start, end = window
        annotation = {"segments": [{"source_start_s": _s(_ms(e, "source_start_ms") - start),
                                    "source_end_s": _s(_ms(e, "source_end_ms") - start),
                                    "text": _text(e, "text"), "source_text": _text(e, "source_text"),
                                    "start_s": _s(e["t_ms"] - start), "end_s": _s(_ms(e, "end_ms") - start)}
                                   for e in segments],
                      "language": _text(segments[0], "language")}
        plans.append(Plan(task="simultaneous", model=view.model, start_ms=start, end_ms=end,
                          silence_from_ms=source_end, annotation=annotation,
                          reference_spans=tuple((e["t_ms"], _ms(e, "end_ms")) for e in segments),
                          events={"source_ms": [[_ms(e, "source_start_ms"), _ms(e, "source_end_ms")]
                                                for e in segments],
                                  "rendered_ms": [[e["t_ms"], _ms(e, "end_ms")] for e in segments]}))
    return plans


SELECTORS = {**items_select.SELECTORS, "visual_cue": visual_cue, "repetition": repetition,
             "background_result": background_result, "simultaneous": simultaneous}


def tasks_present(events: Iterable[Mapping]) -> tuple[str, ...]:
    """The tasks ``eval items`` makes by default: Full-Duplex-Bench's four (their events come from
    any conversation's turns) and each behaviour task whose events occur in ``events`` (rows of
    the records' ``events`` tables: ``type`` and ``payload``, a JSON string or a dict)."""
    import json

    found: set[str] = set(items_select.TASKS)
    for e in events:
        kind = e.get("type")
        if kind == "visual_cue":
            payload = e.get("payload")
            if isinstance(payload, str):
                payload = json.loads(payload or "{}")
            found.add("repetition" if isinstance(payload, Mapping) and payload.get("cue") == "repeat"
                      else "visual_cue")
        elif kind in ("background_result", "simultaneous"):
            found.add(str(kind))
    return tuple(t for t in TASKS if t in found)
