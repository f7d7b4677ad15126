"""Laying spoken turns out on one timeline: gaps, pauses, overlaps, backchannels, interruptions.

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples at 16 kHz.

Input: the script's turns, each already spoken by the TTS (audio plus exact word times), and a
:class:`~microturn.synth.timing.TimingModel` with a random generator. Output: for every turn the
pieces of audio placed at integer-millisecond positions, its words at absolute times, and the
scripted events. The rules:

- A turn's phrases (runs of words the TTS spoke without a break of ``phrase_break_ms``) are kept
  as spoken; the silence between phrases is replaced by a pause drawn from the model, except after
  a question inside a turn, where the speaker latches on (:data:`LATCH_MS` at most): a rising
  or falling end followed by a long silence is the cue of a yielded turn, so it is not where a
  speaker holds.
- A turn gets about ``pause_rate`` pauses per minute of speech: when its phrase breaks fall short,
  more are opened at word boundaries after a comma (that the TTS spoke without a break) or after
  a continuation word ("and", "but", "so", "because", "um", ...; :data:`CONTINUATION_WORDS`),
  the places where a listener hears that the speaker is not done. The text of a turn is spoken
  with its inner sentence ends as commas (:func:`speakable`), so the TTS gives them continuation
  intonation and only the turn's end falls (".") or rises ("?").
- A change of speaker starts after a transition drawn from the model: a gap, or an overlap into
  the end of the previous turn. A speaker never overlaps their own voice.
- Backchannel turns are placed over the speaker's pauses (a pause is opened at a word boundary
  when the turn has none to spare), starting a sampled delay into the pause, and kept inside the
  speaker's turn so that the record's statistics count them as backchannels.
- An interruption starts at a word onset in the last two thirds of the current turn;
  the interrupted speaker goes on for a sampled reaction time and stops there, mid-word if need
  be (a cut-off: the word keeps its text and ends at the cut; a fragment under
  :data:`MIN_FRAGMENT_MS` is not begun), and yields; the words they did not get to say are dropped.
- A timed request is answered by the responder starting exactly at each target time, counted
  from the end of the request.
- A visual request is answered at each cue: the cue is put on the 10 fps frame grid (the first
  frame that shows it), and the responder starts a reaction drawn from the timing model's
  ``cue_reaction`` later, whatever else is said (there is no audio cue to wait for); the turns
  written after the request follow its last answer. The cues go to :attr:`Layout.scene_cues`,
  from which the scene video is drawn.
- A delegation's result arrives ``after_ms`` after the delegation turn ends; the speaker brings
  it up (the ``mention``) after the first turn of another speaker that ends once it has arrived,
  a gap drawn from the timing model after that turn (never over it; at most
  :data:`MAX_MENTION_GAP_MS`), and the script goes on
  after the mention. A result that arrives after the last such turn is brought up after the
  last turn.
- A simultaneous turn renders the turn before it while that turn is spoken: sentence k of the
  rendering starts ``lag_ms`` (drawn from :data:`LAG_MS` when the script gives none) after
  sentence k of the source starts, or later when its previous sentence is still being said;
  with different sentence counts the whole rendering trails the source's start by the lag.
  The rendering does not take the floor: the source speaker's next turn follows their own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from microturn.schemas.dialogue import Dialogue, TurnSpec
from microturn.synth.timing import TimingModel
from microturn.synth.tts import Speech

SAMPLES_PER_MS = 16

# espeak-ng puts 0-60 ms between words inside a phrase and 200-700 ms at commas and sentence ends
# (measured at rates 140-220 wpm); 120 ms separates the two with room on both sides.
PHRASE_BREAK_MS = 120
# A speaker who just spoke (a backchannel, a finished turn) needs this long before speaking again;
# 80 ms is about the shortest articulatory reset between two utterances of one talker.
MIN_SELF_GAP_MS = 80
# An overlapping start may not reach further back than this share of the previous turn, so that
# a sampled 900 ms overlap does not swallow a 600 ms answer whole.
MAX_OVERLAP_SHARE = 0.5
# An interrupted speaker stops when the sampled reaction time is up, inside a word if need be:
# overlapped talk is dropped within one to two syllables of the overlap onset (Schegloff 2000,
# Language in Society 29:1), often in a cut-off word. Waiting for the word's end instead made
# the realised reactions of 300 generated dialogues 566 ms at the median for a sampled 402 ms
# (59% within 600 ms). A word that would be cut to less than 60 ms (a phone or so: no audible
# word) is not begun: the speaker stops at the end of the word before (when that is after the
# onset). A stop in the silence between words ends the turn with the word before it.
MIN_FRAGMENT_MS = 60
# An interruption comes after the first third of the words of the turn it interrupts: an
# interruption needs something to interrupt.
INTERRUPT_FROM = 1 / 3
# A backchannel starts no later than this into the pause it responds to (it may then run over the
# speaker's next phrase, as listeners' tokens often do).
BACKCHANNEL_MAX_DELAY_MS = 600
# A listener token with a comma in it ("mm, right") is said in one breath: its parts are joined by
# this short pause instead of a phrase pause drawn from the model (median 450 ms), which would
# stretch it past the 1 s that the statistics allow a backchannel.
BACKCHANNEL_JOIN_MS = 80
# After a question inside a turn ("Six in the morning? That's brutal.") the speaker goes on
# within this long (espeak-ng leaves 200-390 ms after "?" at 210-150 wpm): under the 150 ms that
# counts as a pause (timing_fit.PAUSE_MIN_MS), so a silence after a question is always a yield.
LATCH_MS = 120
# Words after which a speaker is audibly not done: conjunctions that open a clause and hesitation
# fillers. A pause after one of them is a hold.
CONTINUATION_WORDS = frozenset({"and", "but", "so", "because", "or", "then", "um", "uh", "er",
                                "if", "when", "that", "which", "like"})
# A simultaneous rendering trails its source by 1-3 s: simultaneous interpreters keep an
# ear-voice span of about 2-3 s (Gile 1995; Christoffels & de Groot 2004 report ~2-3 s), and a
# shadower repeating the same language can follow closer; uniform over 1-3 s covers both.
LAG_MS = (1000, 3000)
# A delegated result is brought up within this long of the user's yield (or of its arrival, when
# that comes later): the gap drawn from the timing model, capped, so the delay is bounded. 1.5 s
# is past 99% of the default gap distribution (log-normal, median 230 ms, sigma 0.7: p99 1.2 s)
# and well inside the evaluation's 10 s mention window (pipelines.duplex.score_behaviours).
MAX_MENTION_GAP_MS = 1500
# Cue times lie on the frame grid of the scene video: 10 fps, one frame per 100 ms.
FRAME_MS = 100
# Tokens ending in "." that are not a sentence end.
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "e.g.", "i.e."})


def speakable(text: str, *, ends_turn: bool = True) -> str:
    """``text`` as the TTS should say it inside one turn: every sentence end but the last ("."
    or "!" followed by more words) becomes a comma, so that espeak-ng speaks it with its
    continuation tune (a comma ends a clause with a level or slightly rising pitch and a
    100-200 ms break; a full stop falls and breaks for 210-380 ms, at 210-150 wpm) and only the
    turn's own end sounds final. With ``ends_turn`` False (the same speaker's next scripted turn
    follows after a pause) the last one becomes a comma too. Questions keep their "?"; "..."
    and abbreviations are kept. The number of whitespace tokens is unchanged."""
    tokens = text.split()
    out = []
    for k, tok in enumerate(tokens):
        inner = k < len(tokens) - 1 or not ends_turn
        if (inner and tok[-1:] in ".!" and not tok.endswith("..") and tok.lower() not in _ABBREVIATIONS
                and "." not in tok[:-1]):
            tok = tok[:-1] + ","
        out.append(tok)
    return " ".join(out)


def _boundary(token: str) -> str:
    """What the end of ``token`` says about the speaker's next move: "final" (a sentence or
    question end: the turn could end here), "clause" (a comma, semicolon, colon or dash: more
    to come), "continuation" (a continuation word) or "word"."""
    if token.endswith(("?", ".", "!")) and not token.endswith(".."):
        return "final"
    if token.endswith((",", ";", ":", "-", "\u2014", "..")):
        return "clause"
    if token.strip("\"'()").lower() in CONTINUATION_WORDS:
        return "continuation"
    return "word"


@dataclass(frozen=True, slots=True)
class Phrase:
    """Words spoken without a break: audio and words relative to the phrase start.

    ``keep_ms``: the silence that follows this phrase inside its turn when the speaker latches on
    (after a question); None when a pause drawn from the timing model follows.
    """

    wave_N: np.ndarray
    words: tuple[tuple[str, int, int], ...]
    keep_ms: int | None = None

    @property
    def duration_ms(self) -> int:
        return self.wave_N.size // SAMPLES_PER_MS


@dataclass(slots=True)
class PlacedTurn:
    """One turn on the timeline: audio pieces and words at absolute times (ms)."""

    speaker: str
    act: str
    pieces: list[tuple[int, np.ndarray]] = field(default_factory=list)
    words: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def start_ms(self) -> int:
        return self.pieces[0][0]

    @property
    def end_ms(self) -> int:
        start, wave_N = self.pieces[-1]
        return start + wave_N.size // SAMPLES_PER_MS

    def pauses(self) -> list[tuple[int, int]]:
        """Silences between the pieces of this turn, as (start_ms, end_ms)."""
        out = []
        for (s0, w0), (s1, _) in pairwise(self.pieces):
            out.append((s0 + w0.size // SAMPLES_PER_MS, s1))
        return out

    def truncate(self, stop_ms: int) -> None:
        """Stop speaking at ``stop_ms``: later words and audio are dropped; a word spoken across
        it is cut off there (its audio faded out, its end moved to ``stop_ms``)."""
        kept = []
        for start, wave_N in self.pieces:
            if start >= stop_ms:
                break
            end = start + wave_N.size // SAMPLES_PER_MS
            if end > stop_ms:
                wave_N = fade_out(wave_N[: (stop_ms - start) * SAMPLES_PER_MS])
            kept.append((start, wave_N))
        assert kept, "truncate before the turn starts"
        self.pieces = kept
        self.words = [(t, ws, min(we, stop_ms)) for t, ws, we in self.words if ws < stop_ms]


@dataclass(frozen=True, kw_only=True)
class TimedEvent:
    """A scripted event of the layout (interruption, timed instruction) at ``t_ms``."""

    type: str
    speaker: str
    t_ms: int
    payload: dict


@dataclass(frozen=True, kw_only=True)
class Layout:
    """All placed turns (script order; timed responses follow their request) and scripted events.

    ``scene_cues``: what the scene video must show, one dict per cue of every visual request, in
    time order: the :class:`~microturn.schemas.dialogue.CueSpec` fields with the absolute,
    frame-aligned ``t_ms`` instead of ``after_ms`` (and without ``responses``).
    """

    turns: tuple[PlacedTurn, ...]
    events: tuple[TimedEvent, ...]
    transitions_ms: tuple[int, ...]  # what the model asked for at each change of speaker
    scene_cues: tuple[dict, ...] = ()

    @property
    def end_ms(self) -> int:
        return max(t.end_ms for t in self.turns)


def start_after(prev: PlacedTurn, offset_ms: int, earliest_ms: int) -> int:
    """Start of a turn that follows ``prev`` by a sampled transition ``offset_ms`` (negative:
    overlap), no deeper into ``prev`` than ``MAX_OVERLAP_SHARE`` of it, inside its last phrase
    (an overlap is terminal: a start in the speaker's last pause would make that pause a
    silence the speaker yields, while they go on), and not before the new speaker may speak
    again (``earliest_ms``)."""
    floor = prev.start_ms + math.ceil(MAX_OVERLAP_SHARE * (prev.end_ms - prev.start_ms))
    floor = max(floor, prev.pieces[-1][0] + 1)
    return max(prev.end_ms + offset_ms, floor, earliest_ms)


def fade_out(wave_N: np.ndarray, ms: int = 10) -> np.ndarray:
    """A copy of ``wave_N`` whose last ``ms`` fade linearly to zero (no click at a cut)."""
    n = min(wave_N.size, ms * SAMPLES_PER_MS)
    out = wave_N.copy()
    if n:
        out[-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return out


def phrases(speech: Speech, *, break_ms: int = PHRASE_BREAK_MS) -> list[Phrase]:
    """Cut a spoken turn into phrases at the silences of at least ``break_ms`` between words.

    Each phrase runs from its first word's start to its last word's end, so that the pause later
    put between phrases is exactly the silence between their words.
    """
    words = speech.words
    if not words:
        raise ValueError("a spoken turn without words cannot be laid out")
    groups: list[list] = [[words[0]]]
    for prev, word in pairwise(words):
        if word.start_ms - prev.end_ms >= break_ms:
            groups.append([])
        groups[-1].append(word)
    out = []
    for k, group in enumerate(groups):
        s, e = group[0].start_ms, group[-1].end_ms
        wave_N = speech.wave_N[s * SAMPLES_PER_MS: e * SAMPLES_PER_MS]
        keep = None
        if k < len(groups) - 1 and _boundary(group[-1].text) == "final":
            keep = min(LATCH_MS, groups[k + 1][0].start_ms - e)
        out.append(Phrase(wave_N=wave_N, words=tuple((w.text, w.start_ms - s, w.end_ms - s) for w in group),
                          keep_ms=keep))
    return out


def _split_after(p: Phrase, k: int) -> tuple[Phrase, Phrase]:
    """``p`` cut between its words ``k`` and ``k + 1``; the silence between them is dropped (the
    layout puts a pause there)."""
    cut = p.words[k][2]  # end of the word before the break
    nxt = p.words[k + 1][1]
    left = Phrase(wave_N=p.wave_N[: cut * SAMPLES_PER_MS], words=p.words[: k + 1])
    right = Phrase(wave_N=p.wave_N[nxt * SAMPLES_PER_MS:],
                   words=tuple((t, s - nxt, e - nxt) for t, s, e in p.words[k + 1:]), keep_ms=p.keep_ms)
    return left, right


def open_holds(parts: list[Phrase], extra: int, rng: np.random.Generator) -> list[Phrase]:
    """Open up to ``extra`` more pauses in a turn, at word boundaries inside its phrases where the
    speaker is audibly not done: after a comma the TTS spoke without a break first, then after a
    continuation word; in random order within each kind. Never after the turn's last word."""
    if extra <= 0:
        return list(parts)
    cands = []  # (priority, tie-break, phrase index, word index)
    order = rng.permutation(sum(max(0, len(p.words) - 1) for p in parts))
    n = 0
    for i, p in enumerate(parts):
        for k in range(len(p.words) - 1):
            kind = _boundary(p.words[k][0])
            if kind in ("clause", "continuation"):
                cands.append((0 if kind == "clause" else 1, int(order[n]), i, k))
            n += 1
    chosen = sorted(cands)[:extra]
    cuts: dict[int, list[int]] = {}
    for _, _, i, k in chosen:
        cuts.setdefault(i, []).append(k)
    out: list[Phrase] = []
    for i, p in enumerate(parts):
        # Cut from the last boundary back, so the earlier word indices stay valid.
        tail: list[Phrase] = []
        for k in sorted(cuts.get(i, []), reverse=True):
            p, right = _split_after(p, k)
            tail.insert(0, right)
        out += [p, *tail]
    return out


def _split_for_backchannels(parts: list[Phrase], needed: int) -> list[Phrase]:
    """Open word-boundary breaks in a turn until it has ``needed`` pauses (if it has the words)."""
    parts = list(parts)
    while len(parts) - 1 < needed:
        # Split the longest phrase with 2+ words at the word boundary nearest its middle where
        # the speaker is audibly not done (after a comma or a continuation word), else at its
        # middle: a listener's token comes in the speaker's pause either way, but the speaker's
        # going on after it should be heard coming.
        cand = [i for i, p in enumerate(parts) if len(p.words) >= 2]
        if not cand:
            break
        i = max(cand, key=lambda k: (parts[k].duration_ms, -k))
        p = parts[i]
        mid = len(p.words) // 2 - 1
        holds = [k for k in range(len(p.words) - 1) if _boundary(p.words[k][0]) in ("clause", "continuation")]
        k = min(holds, key=lambda k: (abs(k - mid), k)) if holds else mid
        parts[i: i + 1] = list(_split_after(p, k))
    return parts


class _Planner:
    def __init__(self, timing: TimingModel, rng: np.random.Generator):
        self.timing, self.rng = timing, rng
        self.turns: list[PlacedTurn] = []
        self.events: list[TimedEvent] = []
        self.transitions: list[int] = []
        self.last_main: PlacedTurn | None = None
        self.own_end: dict[str, int] = {}
        self.scene_cues: list[dict] = []
        self.pending: list[dict] = []  # delegated results not yet brought up

    # -- placing -------------------------------------------------------------------------
    def place(self, speaker: str, act: str, parts: Sequence[Phrase], start_ms: int) -> PlacedTurn:
        turn = PlacedTurn(speaker=speaker, act=act)
        t = max(0, start_ms)
        for k, part in enumerate(parts):
            if k:
                before = parts[k - 1]
                if act == "backchannel":
                    t += BACKCHANNEL_JOIN_MS
                elif before.keep_ms is not None:
                    t += before.keep_ms
                else:
                    t += self.timing.sample_pause(self.rng)
            turn.pieces.append((t, part.wave_N))
            turn.words.extend((w, t + s, t + e) for w, s, e in part.words)
            t += part.duration_ms
        self.turns.append(turn)
        self.own_end[speaker] = max(self.own_end.get(speaker, 0), turn.end_ms)
        return turn

    def earliest(self, speaker: str) -> int:
        return self.own_end.get(speaker, -MIN_SELF_GAP_MS) + MIN_SELF_GAP_MS

    def next_start(self, speaker: str) -> int:
        prev = self.last_main
        if prev is None:
            return int(self.timing.gap.sample(self.rng))  # lead-in silence before the first turn
        if prev.speaker == speaker:
            return max(prev.end_ms + self.timing.sample_pause(self.rng), self.earliest(speaker))
        offset = self.timing.sample_transition(self.rng)
        self.transitions.append(offset)
        return start_after(prev, offset, self.earliest(speaker))

    # -- acts ----------------------------------------------------------------------------
    def holds(self, parts: list[Phrase]) -> list[Phrase]:
        """``parts`` with pauses opened (:func:`open_holds`) until the turn has about
        ``pause_rate`` pauses per minute of its speech: a Poisson number of them, with the
        expected count less the pauses its phrase breaks already make."""
        if not any(_boundary(w[0]) in ("clause", "continuation") for p in parts for w in p.words[:-1]):
            return parts  # nowhere to open one: draw nothing, so the generator's stream is unchanged
        speech_ms = sum(p.duration_ms for p in parts)
        have = sum(1 for p in parts[:-1] if p.keep_ms is None)
        want = self.timing.pause_rate * speech_ms / 60_000 - have
        extra = int(self.rng.poisson(want)) if want > 0 else 0
        return open_holds(parts, extra, self.rng)

    def main_turn(self, spec: TurnSpec, parts: list[Phrase], backchannels: list[tuple[TurnSpec, list[Phrase]]]):
        if spec.act != "backchannel":
            parts = self.holds(parts)
        if backchannels:
            parts = _split_for_backchannels(parts, len(backchannels))
        turn = self.place(spec.speaker, spec.act, parts, self.next_start(spec.speaker))
        self.last_main = turn
        self._backchannels(turn, backchannels)
        return turn

    def _backchannels(self, turn: PlacedTurn, backchannels) -> None:
        pauses = turn.pauses()
        for k, (spec, parts) in enumerate(backchannels):
            dur = sum(p.duration_ms for p in parts) + BACKCHANNEL_JOIN_MS * (len(parts) - 1)
            if pauses:
                # Spread the backchannels over the pauses, in order.
                p0, p1 = pauses[min(len(pauses) - 1, (k * len(pauses)) // len(backchannels))]
                delay = min(self.timing.sample_backchannel_delay(self.rng), BACKCHANNEL_MAX_DELAY_MS, max(0, p1 - p0))
                start = max(p0 + delay, self.earliest(spec.speaker))
                latest = turn.end_ms - dur - 1
                if start > latest:
                    start = max(p0, self.earliest(spec.speaker))
            else:
                start = latest = -1
            if not pauses or start > latest:
                # No room inside the turn: the token becomes a short reply after it.
                start = max(turn.end_ms + int(self.timing.gap.sample(self.rng)), self.earliest(spec.speaker))
            self.place(spec.speaker, "backchannel", parts, int(start))

    def interruption(self, spec: TurnSpec, parts: list[Phrase]) -> PlacedTurn:
        prev = self.last_main
        cands = []
        if prev is not None and prev.speaker != spec.speaker and len(prev.words) >= 2:
            first = max(1, math.ceil(INTERRUPT_FROM * len(prev.words)))
            floor = self.earliest(spec.speaker)
            floor = max(floor, max((t.end_ms for t in self.turns if t.act == "backchannel"
                                    and t.start_ms >= prev.start_ms), default=0))
            cands = [w[1] for w in prev.words[first:] if w[1] >= floor]
        if not cands:
            # Nothing to cut into: an ordinary (overlapping when the model says so) transition.
            return self.main_turn(spec, parts, [])
        assert prev is not None  # candidates are only found among prev's words
        parts = self.holds(parts)
        onset = int(cands[int(self.rng.integers(len(cands)))])
        reaction = self.timing.sample_reaction(self.rng)
        stop = onset + max(1, reaction)
        said = [(ws, we) for _, ws, we in prev.words if ws < stop]  # the onset's word at least
        if said[-1][1] <= stop:
            stop = said[-1][1]  # in the silence after a word: the turn ends with that word
        elif stop - said[-1][0] < MIN_FRAGMENT_MS and len(said) >= 2 and said[-2][1] > onset:
            stop = said[-2][1]  # a fragment too short to be heard as a word is not begun
        if stop < prev.end_ms:
            prev.truncate(stop)
            self.own_end[prev.speaker] = prev.end_ms
        turn = self.place(spec.speaker, "interruption", parts, onset)
        self.transitions.append(onset - prev.end_ms)
        self.events.append(TimedEvent(type="interruption", speaker=spec.speaker, t_ms=onset, payload={
            "interrupted": prev.speaker, "overlap_ms": prev.end_ms - onset, "reaction_ms": reaction,
            "scripted": True}))
        self.last_main = turn
        return turn

    def timed(self, request: PlacedTurn, spec: TurnSpec, responses: list[list[Phrase]]) -> None:
        timed = spec.timed
        assert timed is not None
        said_at = request.end_ms
        for k, (target, text, parts) in enumerate(zip(timed.targets_ms, timed.responses, responses, strict=True)):
            due = said_at + target
            start = max(due, self.earliest(timed.responder))
            if start != due:
                warnings.warn(f"timed response {k} ({text!r}) starts {start - due} ms after its target: "
                              "the previous response was still being spoken", stacklevel=3)
            turn = self.place(timed.responder, "timed_response", parts, start)
            self.events.append(TimedEvent(type="timed_instruction", speaker=request.speaker, t_ms=said_at, payload={
                "index": k, "target_ms": due, "delay_ms": target, "response": text,
                "responder": timed.responder, "response_start_ms": turn.start_ms}))
            self.last_main = turn


    # -- visual cues, background results, simultaneous speech ---------------------------------
    def visual(self, request: PlacedTurn, spec: TurnSpec, answers: list[list[Phrase]]) -> None:
        visual = spec.visual
        assert visual is not None
        end = request.end_ms
        k = 0
        for index, cue in enumerate(visual.cues):
            start = frame_ceil(end + cue.after_ms)
            scene = {"kind": cue.kind, "t_ms": start, "shape": cue.shape, "colour": cue.colour,
                     "to_colour": cue.to_colour, "text": cue.text, "count": cue.count, "period_ms": cue.period_ms}
            self.scene_cues.append(scene)
            if cue.kind == "repeat":
                assert cue.count is not None and cue.period_ms is not None
                # Repetition r is seen done on the last frame of its bounce, one frame before the
                # next one lifts (microturn.synth.scene.cue_times draws it so).
                reps = [start + r * cue.period_ms - FRAME_MS for r in range(1, cue.count + 1)]
                times = list(zip(reps, range(1, cue.count + 1), strict=True))
                if len(cue.responses) == 1:
                    times = times[-1:]
            else:
                times = [(start, None)]
            what = cue.text if cue.kind == "text" else f"{cue.colour} {cue.shape}"
            for (t, rep), text in zip(times, cue.responses, strict=True):
                due = t + max(1, self.timing.sample_cue_reaction(self.rng))
                begin = max(due, self.earliest(visual.responder))
                if begin != due:
                    warnings.warn(f"visual answer {text!r} starts {begin - due} ms after its reaction time: the "
                                  "previous answer was still being spoken", stacklevel=3)
                turn = self.place(visual.responder, "visual_response", answers[k], begin)
                k += 1
                self.events.append(TimedEvent(type="visual_cue", speaker=visual.responder, t_ms=t, payload={
                    "index": index, "cue": cue.kind, "object": what, "answer": text, "request_end_ms": end,
                    "response_start_ms": turn.start_ms, "response_end_ms": turn.end_ms,
                    "delay_ms": turn.start_ms - t, "rep": rep, "count": cue.count, "requester": spec.speaker}))
                self.last_main = turn

    def delegate(self, turn: PlacedTurn, spec: TurnSpec, mention: list[Phrase]) -> None:
        background = spec.background
        assert background is not None
        self.pending.append({"speaker": spec.speaker, "spec": background, "parts": mention,
                             "delegated_ms": turn.end_ms, "arrival_ms": turn.end_ms + background.after_ms})

    def mention_due(self, final: bool = False) -> None:
        """Bring up every pending result that has arrived by the end of the last main turn, when
        that turn is another speaker's (they have yielded); with ``final``, all that remain."""
        prev = self.last_main
        for item in list(self.pending):
            yielded = prev is not None and prev.speaker != item["speaker"] and prev.act != "simultaneous"
            if not final and not (prev is not None and yielded and item["arrival_ms"] <= prev.end_ms):
                continue
            self.pending.remove(item)
            after = max(t.end_ms for t in self.turns)
            if yielded and not final:
                assert prev is not None
                after = prev.end_ms
            gap = min(int(self.timing.gap.sample(self.rng)), MAX_MENTION_GAP_MS)
            start = max(max(after, item["arrival_ms"]) + gap, self.earliest(item["speaker"]))
            turn = self.place(item["speaker"], "background_mention", item["parts"], start)
            spec = item["spec"]
            payload = {"result": spec.result, "mention": spec.mention, "delegated_ms": item["delegated_ms"],
                       "arrival_ms": item["arrival_ms"], "mention_ms": turn.start_ms, "mention_end_ms": turn.end_ms,
                       "yield_ms": prev.end_ms if yielded and prev is not None else None,
                       "delay_ms": turn.start_ms - item["arrival_ms"]}
            for phase, t in (("arrival", item["arrival_ms"]), ("mention", turn.start_ms)):
                self.events.append(TimedEvent(type="background_result", speaker=item["speaker"], t_ms=t,
                                              payload={"phase": phase, **payload}))
            self.last_main = turn
            prev = turn

    def simultaneous(self, spec: TurnSpec, source_spec: TurnSpec, speech: Speech, language: str) -> None:
        source = self.last_main
        if source is None or source.speaker == spec.speaker:
            raise ValueError(f"a simultaneous turn by {spec.speaker!r} needs a turn of another speaker before it")
        lag = spec.lag_ms if spec.lag_ms is not None else int(self.rng.integers(LAG_MS[0], LAG_MS[1] + 1))
        mine = sentence_spans(spec.text, [(w.start_ms, w.end_ms) for w in speech.words])
        theirs = sentence_spans(source_spec.text, [(ws, we) for _, ws, we in source.words])
        if len(mine) != len(theirs) or not theirs:
            mine = [(0, len(speech.words) - 1)]
            theirs = [(0, len(source.words) - 1)]
        texts = spec.text.split()
        source_texts = source_spec.text.split()
        turn = PlacedTurn(speaker=spec.speaker, act="simultaneous")
        floor = self.earliest(spec.speaker)
        for (a, b), (c, d) in zip(mine, theirs, strict=True):
            s0, e0 = speech.words[a].start_ms, speech.words[b].end_ms
            src_start, src_end = source.words[c][1], source.words[d][2]
            start = max(src_start + lag, floor)
            turn.pieces.append((start, speech.wave_N[s0 * SAMPLES_PER_MS: e0 * SAMPLES_PER_MS]))
            turn.words.extend((w.text, start + w.start_ms - s0, start + w.end_ms - s0) for w in speech.words[a: b + 1])
            floor = start + (e0 - s0) + MIN_SELF_GAP_MS
            self.events.append(TimedEvent(type="simultaneous", speaker=spec.speaker, t_ms=start, payload={
                "source_speaker": source.speaker, "source_start_ms": src_start, "source_end_ms": src_end,
                "end_ms": start + (e0 - s0), "lag_ms": start - src_start, "text": " ".join(texts[a: b + 1]),
                "source_text": " ".join(source_texts[c: d + 1]), "language": language}))
        self.turns.append(turn)
        self.own_end[spec.speaker] = max(self.own_end.get(spec.speaker, 0), turn.end_ms)


def frame_ceil(t_ms: int) -> int:
    """The start of the first video frame at or after ``t_ms`` (frames every :data:`FRAME_MS`)."""
    return -(-t_ms // FRAME_MS) * FRAME_MS


def sentence_spans(text: str, words: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Word index ranges ``(first, last)`` of the sentences of ``text``, whose whitespace tokens
    are ``words``: a sentence ends at a token ending in ".", "?" or "!" (not "..." or an
    abbreviation). Empty when the token count and ``words`` disagree (a truncated turn)."""
    tokens = text.split()
    if len(tokens) != len(words) or not tokens:
        return []
    spans, first = [], 0
    for k, tok in enumerate(tokens):
        if k == len(tokens) - 1 or (_boundary(tok) == "final" and tok.lower() not in _ABBREVIATIONS):
            spans.append((first, k))
            first = k + 1
    return spans


def lay_out(dialogue: Dialogue, spoken: Sequence[Speech], responses: dict[int, list[Speech]],
            timing: TimingModel, rng: np.random.Generator, *, break_ms: int = PHRASE_BREAK_MS) -> Layout:
    """Place every turn of ``dialogue`` on one timeline.

    ``spoken[i]`` is the speech of ``dialogue.turns[i]``; ``responses[i]`` the speeches of the
    timed responses of turn ``i`` (a timed request), of its answers in cue order (a visual
    request: one per response of each cue), or ``[mention]`` (a delegation). Draws from ``rng`` in script order, so the
    same inputs and generator state give the same layout.
    """
    if len(spoken) != len(dialogue.turns):
        raise ValueError(f"{dialogue.id}: {len(spoken)} spoken turns for {len(dialogue.turns)} script turns")
    plan = _Planner(timing, rng)
    turns = dialogue.turns
    i = 0
    while i < len(turns):
        spec = turns[i]
        j = i + 1
        if spec.act == "simultaneous":
            language = dialogue.speaker(spec.speaker).language or dialogue.language
            plan.simultaneous(spec, turns[i - 1], spoken[i], language)
            i = j
            continue
        plan.mention_due()
        parts = phrases(spoken[i], break_ms=break_ms)
        if spec.act == "interruption":
            turn = plan.interruption(spec, parts)
        elif spec.act == "backchannel":
            # A backchannel with no turn of another speaker before it to sit in (after a timed
            # response, or after another backchannel's fallback): a short reply.
            turn = plan.main_turn(spec, parts, [])
        else:
            bcs = []
            while j < len(turns) and turns[j].act == "backchannel" and turns[j].speaker != spec.speaker:
                bcs.append((turns[j], phrases(spoken[j], break_ms=break_ms)))
                j += 1
            turn = plan.main_turn(spec, parts, bcs)
        if spec.act == "timed_request":
            plan.timed(turn, spec, [phrases(s, break_ms=break_ms) for s in responses[i]])
        elif spec.act == "visual_request":
            plan.visual(turn, spec, [phrases(s, break_ms=break_ms) for s in responses[i]])
        elif spec.act == "delegation":
            plan.delegate(turn, spec, phrases(responses[i][0], break_ms=break_ms))
        i = j
    plan.mention_due()
    plan.mention_due(final=True)
    cues = sorted(plan.scene_cues, key=lambda c: c["t_ms"])
    return Layout(turns=tuple(plan.turns), events=tuple(plan.events), transitions_ms=tuple(plan.transitions),
                  scene_cues=tuple(cues))
