"""Choosing the evaluation events of one conversation for one role assignment (pure functions, ms).

A role assignment names one speaker ``model`` (the reference: what the evaluated system stands
in for) and everyone else ``user``, as the shard stage does
(:func:`microturn.pipelines.shard.samples.model_speakers`). Turns are relabelled to the two
roles and analysed with the record contract's definitions (:func:`microturn.schemas.turns.split_backchannels`:
main turns with a role's consecutive turns merged, and backchannels left out of them).

Each chosen event becomes a :class:`Plan`: the window of the conversation the item covers, where
the user stream is silenced, and the Full-Duplex-Bench annotation (times in seconds from the
window start). Rules and thresholds, per task:

- ``smooth_turn_taking``: a user main turn followed by a model main turn that starts at most
  :data:`MAX_RESPONSE_GAP_MS` after the user's turn end (it may start before the end: synthetic
  and real transitions overlap by a few hundred ms) and is not an interruption of the user (no
  ``interruption`` event by the model inside the user's turn). The turn end is the end of the
  user's last segment of the turn (the diarization's or the script's end of speech). Window:
  from the user's turn start (at most ``context_ms`` before the turn end) to
  :data:`RESPONSE_WINDOW_MS` after it; the user stream is silent after the turn end, as in
  Full-Duplex-Bench's Candor items (the user's turn, then silence). ``timestamp`` =
  [turn end, the reference's response start] (the second is the smaller where the reference's
  reply overlapped the end of the user's turn).
- ``pause_handling``: a user main turn holding silences of the user of
  [:data:`PAUSE_MIN_MS`, :data:`PAUSE_MAX_MS`) between its words (between segments where the
  turn has no word timings) during which the model is silent too (no model segment, not even a
  backchannel, overlaps it: a pause taken while the other still talks, as in a barge-in, is no
  test of holding back). One item per turn, window from the first pause's start minus
  ``context_ms`` (not before the turn start) to the user's turn end; ``pause.json`` lists every
  such pause in the window.
- ``user_interruption``: an ``interruption`` event by a user speaker at a time the model speaks
  (inside one of the model's segments). The interrupting turn is the user main turn that holds
  the event's time; it ends at that turn's end. Window: ``context_ms`` before the interrupt to
  :data:`RESPONSE_WINDOW_MS` after the interrupting turn's end; the user stream is silent after
  the interrupting turn (Full-Duplex-Bench's items end with the user's interruption). ``context``
  holds the user's words in the window before the interrupt, ``interrupt`` the words of the
  interrupting turn.
- ``backchannel``: a user main turn of at least :data:`BACKCHANNEL_MIN_TURN_MS` inside which the
  model backchannels (``backchannel`` events by the model). Window: the user's turn.
  ``backchannel.json`` holds the reference's backchannels and their distribution over 0.2 s
  windows of the item with Full-Duplex-Bench's binning (:func:`backchannel_distribution`).

Events are the record's ``events`` rows; a conversation without any events row gets the ones the
record contract derives from its segments (:func:`microturn.schemas.turns.turn_events`), as
ingest and synthesize write them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from microturn.pipelines.duplex.tasks import TURN_TAKING_TASKS
from microturn.pipelines.shard.streams import intervals_union
from microturn.schemas.turns import Turn, split_backchannels, turn_events

TASKS = TURN_TAKING_TASKS
ANNOTATION_FILE = {"smooth_turn_taking": "turn_taking.json", "pause_handling": "pause.json",
                   "user_interruption": "interrupt.json", "backchannel": "backchannel.json"}

# 4 s after the user yields: Full-Duplex-Bench's takeover rule needs 1 s of model speech, and
# reported response latencies run 0.4-1.2 s (cascades up to ~1.5 s), so 4 s holds the reply's
# start and at least 2.5 s of it.
RESPONSE_WINDOW_MS = 4000
# A reply that starts more than 3 s after the turn end is no longer an answer to that turn
# (conversational gaps have a median of ~200 ms; 3 s is past their 99th percentile).
MAX_RESPONSE_GAP_MS = 3000
# The item must hold at least 1 s after the event: the takeover rule's minimum model speech.
MIN_AFTER_MS = 1000
# Pauses inside a turn: 500 ms is over twice the median turn-transition gap (~200 ms), so a
# listener could take it for a turn end; silero (100 ms minimum silence) sees it as a silence.
# From 3 s on the speaker has in effect yielded and come back: not a pause inside one turn.
PAUSE_MIN_MS = 500
PAUSE_MAX_MS = 3000
# Backchannel items: the user holds the floor for at least 3 s (listener tokens come every few
# seconds of a speaker's turn; shorter turns give a distribution of one or two bins).
BACKCHANNEL_MIN_TURN_MS = 3000
BIN_S = 0.2  # Full-Duplex-Bench's backchannel window


@dataclass(frozen=True, kw_only=True)
class RoleView:
    """One conversation seen under one role assignment (all times integer ms)."""

    model: str
    users: frozenset[str]
    duration_ms: int
    segments: tuple[Turn, ...]  # the record's, original speakers
    main: tuple[Turn, ...]  # role-relabelled main turns (speaker "user" or "model")
    words: tuple[tuple[str | None, str, int, int], ...]  # speaker, text, start_ms, end_ms; sorted
    events: tuple[dict, ...]  # type, speaker, t_ms, payload (a dict)

    def user_words(self) -> list[tuple[str, int, int]]:
        return [(t, s, e) for spk, t, s, e in self.words if spk in self.users]

    def model_spans(self) -> list[tuple[int, int]]:
        return intervals_union([(t.start_ms, t.end_ms) for t in self.segments if t.speaker == self.model])

    def user_spans(self) -> list[tuple[int, int]]:
        return intervals_union([(t.start_ms, t.end_ms) for t in self.segments if t.speaker in self.users])


@dataclass(frozen=True, kw_only=True)
class Plan:
    """One item to write: its window, where the user stream falls silent, its annotation."""

    task: str
    model: str
    start_ms: int
    end_ms: int
    silence_from_ms: int | None  # user stream zeroed from here to the window end (absolute ms)
    annotation: Any  # the annotation file's JSON value (a list or an object), s from the window start
    events: dict = field(default_factory=dict)  # absolute ms, for item.json
    video: bool = False  # the item holds input.mp4, the conversation's video over the window
    # The reference stream only over these spans (absolute ms; silent elsewhere, words kept where
    # they start inside one); None: the model-role speaker's whole stream over the window.
    reference_spans: tuple[tuple[int, int], ...] | None = None


def role_view(*, model: str, speakers: Sequence[str], duration_ms: int, segments: Sequence[Turn],
              words: Sequence[tuple[str | None, str, int, int]], events: Sequence[Mapping]) -> RoleView:
    """The :class:`RoleView` of ``model`` against everyone else in ``speakers``."""
    users = frozenset(speakers) - {model}
    relabelled = [Turn("model" if t.speaker == model else "user", t.start_ms, t.end_ms, t.channel) for t in segments]
    main, _ = split_backchannels(relabelled)
    if events:
        evs = [{"type": e["type"], "speaker": e.get("speaker"), "t_ms": int(e["t_ms"]),
                "payload": _payload(e.get("payload"))} for e in events]
    else:
        evs = [{"type": e.type, "speaker": e.speaker, "t_ms": e.t_ms, "payload": dict(e.payload)}
               for e in turn_events(list(segments))]
    evs.sort(key=lambda e: (e["t_ms"], e["type"], e["speaker"] or ""))
    return RoleView(model=model, users=users, duration_ms=duration_ms, segments=tuple(segments), main=tuple(main),
                    words=tuple(sorted(words, key=lambda w: (w[2], w[3], w[1], w[0] or ""))), events=tuple(evs))


def _payload(raw: object) -> dict:
    if isinstance(raw, str) and raw:
        value = json.loads(raw)
        return value if isinstance(value, dict) else {}
    return dict(raw) if isinstance(raw, Mapping) else {}


def _s(ms: int) -> float:
    return ms / 1000


def _text(words: Sequence[tuple[str, int, int]], lo_ms: int, hi_ms: int) -> str:
    """Words starting in [lo, hi)."""
    return " ".join(t for t, s, _ in words if lo_ms <= s < hi_ms)


def smooth_turn_taking(view: RoleView, *, context_ms: int) -> list[Plan]:
    """Plans of the user-to-model turn changes (rules in the module docstring)."""
    interrupts = [e["t_ms"] for e in view.events if e["type"] == "interruption" and e["speaker"] == view.model]
    words = view.user_words()
    plans = []
    for prev, nxt in zip(view.main, view.main[1:], strict=False):
        if prev.speaker != "user" or nxt.speaker != "model":
            continue
        end = prev.end_ms
        if nxt.start_ms - end > MAX_RESPONSE_GAP_MS or nxt.end_ms <= end:
            continue
        if any(prev.start_ms <= t < end for t in interrupts):
            continue
        start = max(prev.start_ms, end - context_ms, 0)
        stop = min(view.duration_ms, end + RESPONSE_WINDOW_MS)
        if stop - end < MIN_AFTER_MS or nxt.start_ms >= stop:
            continue
        response = max(nxt.start_ms, start)
        plans.append(Plan(task="smooth_turn_taking", model=view.model, start_ms=start, end_ms=stop,
                          silence_from_ms=end,
                          annotation=[{"text": _text(words, start, end),
                                       "timestamp": [_s(end - start), _s(response - start)]}],
                          events={"turn_start_ms": prev.start_ms, "turn_end_ms": end,
                                  "response_start_ms": nxt.start_ms}))
    return plans


def turn_pauses(view: RoleView, turn: Turn) -> list[tuple[int, int]]:
    """The user's silences inside ``turn`` of [PAUSE_MIN_MS, PAUSE_MAX_MS): gaps between the
    user's words overlapping it, or between its segments when no word of the user does."""
    # Words overlapping the turn, cut to it: an aligner's word may start a few ms before the
    # diarization's segment (the sample call's first "Hello?" starts 6 ms early).
    inside = [(max(s, turn.start_ms), min(e, turn.end_ms)) for _, s, e in view.user_words()
              if s < turn.end_ms and e > turn.start_ms]
    if not inside:
        inside = [(max(s, turn.start_ms), min(e, turn.end_ms)) for s, e in view.user_spans()
                  if s < turn.end_ms and e > turn.start_ms]
    spans = intervals_union(inside)
    return [(a[1], b[0]) for a, b in zip(spans, spans[1:], strict=False) if PAUSE_MIN_MS <= b[0] - a[1] < PAUSE_MAX_MS]


def pause_handling(view: RoleView, *, context_ms: int) -> list[Plan]:
    """Plans of user turns with pauses (rules in the module docstring)."""
    model_spans = view.model_spans()
    plans = []
    for turn in view.main:
        if turn.speaker != "user":
            continue
        pauses = [(s, e) for s, e in turn_pauses(view, turn)
                  if e < turn.end_ms and not any(ms < e and me > s for ms, me in model_spans)]
        if not pauses:
            continue
        start = max(turn.start_ms, pauses[0][0] - context_ms, 0)
        plans.append(Plan(task="pause_handling", model=view.model, start_ms=start, end_ms=turn.end_ms,
                          silence_from_ms=None,
                          annotation=[{"timestamp": [_s(s - start), _s(e - start)]} for s, e in pauses],
                          events={"turn_start_ms": turn.start_ms, "turn_end_ms": turn.end_ms,
                                  "pauses_ms": [[s, e] for s, e in pauses]}))
    return plans


def user_interruption(view: RoleView, *, context_ms: int) -> list[Plan]:
    """Plans of the user's barge-ins on the model (rules in the module docstring)."""
    model_spans = view.model_spans()
    words = view.user_words()
    plans: list[Plan] = []
    seen: set[int] = set()
    for e in view.events:
        t = e["t_ms"]
        if e["type"] != "interruption" or e["speaker"] not in view.users or t in seen:
            continue
        if not any(s <= t < end for s, end in model_spans):
            continue
        turn = next((u for u in view.main if u.speaker == "user" and u.start_ms <= t < u.end_ms), None)
        if turn is None:
            continue
        seen.add(t)
        start = max(0, t - context_ms)
        stop = min(view.duration_ms, turn.end_ms + RESPONSE_WINDOW_MS)
        if stop - turn.end_ms < MIN_AFTER_MS:
            continue
        plans.append(Plan(task="user_interruption", model=view.model, start_ms=start, end_ms=stop,
                          silence_from_ms=turn.end_ms,
                          annotation=[{"context": _text(words, start, t), "interrupt": _text(words, t, turn.end_ms),
                                       "timestamp": [_s(t - start), _s(turn.end_ms - start)]}],
                          events={"interrupt_start_ms": t, "interrupt_end_ms": turn.end_ms}))
    return plans


def backchannel_distribution(spans_s: Sequence[tuple[float, float]], duration_s: float) -> list[float]:
    """Full-Duplex-Bench's backchannel distribution: ``int(duration / 0.2) + 1`` bins; each
    backchannel [s, e] adds 1 to bins ``int(s / 0.2)`` .. ``int(e / 0.2)`` (inclusive, cut to the
    last bin); every bin gets 1e-10; the whole is normalised to sum 1."""
    n = int(duration_s / BIN_S) + 1
    counts = [0.0] * n
    for s, e in spans_s:
        for b in range(max(0, int(s / BIN_S)), min(n - 1, int(e / BIN_S)) + 1):
            counts[b] += 1.0
    counts = [c + 1e-10 for c in counts]
    total = sum(counts)
    return [c / total for c in counts]


def backchannel(view: RoleView, *, context_ms: int) -> list[Plan]:
    """Plans of long user turns with the model's backchannels (rules in the module docstring).
    ``context_ms`` is unused: the window is the user's turn."""
    del context_ms
    bcs = sorted({(e["t_ms"], e["t_ms"] + int(e["payload"].get("duration_ms") or 0)) for e in view.events
                  if e["type"] == "backchannel" and e["speaker"] == view.model})
    plans = []
    for turn in view.main:
        if turn.speaker != "user" or turn.end_ms - turn.start_ms < BACKCHANNEL_MIN_TURN_MS:
            continue
        inside = [(s, min(e, turn.end_ms)) for s, e in bcs if turn.start_ms <= s < turn.end_ms]
        if not inside:
            continue
        start = turn.start_ms
        spans = [(_s(s - start), _s(e - start)) for s, e in inside]
        plans.append(Plan(task="backchannel", model=view.model, start_ms=start, end_ms=turn.end_ms,
                          silence_from_ms=None,
                          annotation={"window_s": BIN_S, "backchannels": [list(x) for x in spans],
                                      "distribution": backchannel_distribution(spans, _s(turn.end_ms - start))},
                          events={"turn_start_ms": turn.start_ms, "turn_end_ms": turn.end_ms,
                                  "backchannels_ms": [[s, e] for s, e in inside]}))
    return plans


SELECTORS = {"smooth_turn_taking": smooth_turn_taking, "pause_handling": pause_handling,
             "user_interruption": user_interruption, "backchannel": backchannel}
