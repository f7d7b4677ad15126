"""Template generator of dialogue scripts.

Makes any number of varied, valid :class:`~microturn.schemas.dialogue.Dialogue` scripts from the
bundled scripts (``synth/data/*.jsonl``) and the slot templates of ``synth/data/templates.toml``
(read and checked by :mod:`microturn.synth.template_text`):

- conversations: a bundled dialogue (possibly cropped) with its names, places, days, dishes,
  times and party sizes swapped consistently, or a new one chained from shuffled template
  exchanges with filled slots; then listener backchannels after long turns, the occasional
  interruption, fresh voices, pitch and rate for both speakers, and fillers ("um", "uh")
  inside some long turns;
- time-aware dialogues ("timed", with probability ``timed_share``): a user asks the model to say
  when N seconds have passed, to count at an interval, or to remind them of something, with the
  target times and spelled-out responses that the request implies;
- visual-cue dialogues ("visual"): the user asks the model to react to what it sees on a scripted
  scene (an object appears, disappears, changes colour, starts moving, bounces N times, words
  show up), 1-3 cues a request, answered once per cue or counting aloud;
- background dialogues ("background"): the user asks something to look up or work out, the model
  delegates it ("Let me look that up.") with the result that comes back and what it will say
  about it, and the conversation goes on until the user yields to the mention;
- simultaneous dialogues ("simultaneous"): the user speaks 2-4 passages, each rendered by the
  model while it is spoken, as a French, Spanish or German translation (a voice of that
  language) or as an English repetition (shadowing).

Which kind dialogue ``i`` is: see :func:`generate` (the mix, ``kinds`` and ``timed_share``).
Dialogue ``i`` of seed ``s`` depends only on ``(s, i)`` and the arguments, so ``generate(n)`` is
a prefix of ``generate(n + k)`` and the same arguments always give the same JSON;
:func:`dialogue_kind` tells the kind of any dialogue (bundled ones too).

Run as ``python -m microturn.synth.templates --n 100 --seed 0 --output dialogues.jsonl``
(``--kinds visual,background`` for some kinds only).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import importlib.resources
import os
import re
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from microturn.schemas import visual
from microturn.schemas.dialogue import (
    MAX_TEXT_CHARS,
    BackgroundSpec,
    CueSpec,
    Dialogue,
    ScriptError,
    SpeakerSpec,
    TimedSpec,
    TurnSpec,
    VisualSpec,
    read_dialogues,
)
from microturn.schemas.numbers import cardinal
from microturn.synth.names import KINDS
from microturn.synth.template_text import RENDER_LANGUAGES, bundled_template_text

# One file per kind, in the order of KINDS (bundled_dialogues() keeps it).
BUNDLED_FILES = ("dialogues.jsonl", "timed.jsonl", "visual.jsonl", "background.jsonl", "simultaneous.jsonl")
LICENSE = "Apache-2.0"  # the bundled scripts and templates are the project's own text

# espeak-ng English voices of its standard data (all listed by `espeak-ng --voices=en` in 1.51),
# each with no variant or one of its male (+m) and female (+f) variants: 6 x 7 = 42 voices.
_VOICE_BASES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
_VOICE_VARIANTS = ("", "+m1", "+m3", "+m5", "+f2", "+f3", "+f4")
VOICES = tuple(base + variant for base in _VOICE_BASES for variant in _VOICE_VARIANTS)
# espeak-ng's default pitch is 50 on 0-99; more than ~20 away from it the voices sound strained
# or cartoonish, so speakers vary within 30-70.
PITCH_RANGE = (30, 70)
# Words per minute: conversational English runs at roughly 150-200 wpm; espeak-ng defaults to 175.
RATE_RANGE = (145, 200)

# A turn of 12 words lasts ~4 s at 175 wpm, long enough that listeners usually acknowledge it
# part-way; shorter turns rarely draw a backchannel.
LONG_TURN_WORDS = 12
BACKCHANNEL_P = 0.5      # chance of a backchannel after a long turn
DROP_BACKCHANNEL_P = 0.15  # chance that a scripted backchannel is left out
RESAY_BACKCHANNEL_P = 0.5  # chance that a scripted backchannel gets another token
# Chance that a conversation gets one extra interruption (``generate(interruption_share=...)``):
# with 0.3, 300 generated dialogues held 101 interruptions, and a model learns to yield to a
# barge-in from each only once (as the interrupted speaker); recipes that teach yielding raise it.
INTERRUPT_P = 0.3
INTERRUPTED_MIN_WORDS = 8  # only turns long enough to be cut into (~3 s) are interrupted
# Speakers hesitate mid-turn: a filler ("um", "uh") inside a statement or question of 6+ words,
# where the layout may pause after it (a pause after a filler is a hold: the speaker is not done).
HESITATE_P = 0.25
HESITATE_MIN_WORDS = 6
FILLERS = ("um", "uh")
BUNDLED_BASE_P = 0.55    # share of conversations built on a bundled script (the rest: templates)
CROP_P = 0.3             # chance that a bundled script is cut to a window of its turns
MIN_CROP_TURNS = 8
OPENER_P = CLOSER_P = 0.7
EXCHANGES_PER_DIALOGUE = (2, 4)  # inclusive

# The kinds of dialogue the generator makes (see generate()): microturn.synth.names.KINDS.
# The default mix. "timed" takes timed_share (0.15 by default, as before the newer kinds came);
# the other kinds share the rest in proportion to these weights, which sum to 0.85 so that with
# the default timed_share they are the shares themselves: conversations 0.55, visual, background
# and simultaneous 0.10 each. Why: ordinary turn-taking (gaps, overlaps, backchannels,
# interruptions, fillers) is in every sample a model trains on and the conversations teach it,
# so they stay the majority; each special behaviour then still gets 30 examples in the 300
# dialogues of a bench run and 10,000 in a 100,000-dialogue corpus, and each new kind also
# carries some ordinary turns. The 0.55 of conversations is what remains, over half as before.
KIND_WEIGHTS = {"dialogue": 0.55, "visual": 0.10, "background": 0.10, "simultaneous": 0.10}
# The order of the kinds' bands on the first draw of a dialogue's stream: timed first and
# conversations last, so that with the default shares a dialogue drawn into either is exactly the
# one the generator made before the newer kinds existed (the newer kinds took the band
# 0.15-0.45, which used to make conversations).
_BANDS = ("timed", "visual", "background", "simultaneous", "dialogue")
TIMED_SHARE = 0.15

# Time-aware requests: single targets 3-20 s, counting every 2-5 s for 2-5 counts.
TARGET_S = (3, 20)
COUNT_STEP_S = (2, 5)
COUNT_N = (2, 5)
TIMED_PREAMBLE_P = 0.5
TIMED_CLOSING_P = 0.7

# Visual requests: 1-3 cues (one in two requests watches for one thing, the longest for three:
# a viewer holds three targets in mind easily, and a longer list is a test of memory, not of
# reacting). Each cue waits 2-15 s after the request, or after the previous cue is over: at
# least 2 s, so that the answer to one cue (a reaction of ~0.5-1 s and a few words) is said
# before the next, at most 15 s, so that a scene holds 1-3 cues in under a minute.
CUE_COUNTS, CUE_COUNT_P = (1, 2, 3), (0.5, 0.3, 0.2)
CUE_WAIT_MS = (2000, 15_000)
# A repeat (bounce) cue: 2-8 repetitions. Counted aloud, one every 1.0-2.0 s, long enough to say
# a number between two bounces (a spelled number up to eight is one or two syllables, ~0.3-0.5 s
# at 175 wpm, after a ~0.5 s reaction); counted silently, 0.5-1.5 s, fast but at least 5 frames
# of 10 fps video per bounce. Periods are whole frames (multiples of 100 ms).
REPEAT_COUNT = (2, 8)
ALOUD_PERIOD_MS = (1000, 2000)
SILENT_PERIOD_MS = (500, 1500)
COUNT_ALOUD_P = 0.5
VISUAL_PREAMBLE_P = 0.5
VISUAL_CHAT_P = 0.25      # a template exchange before the request, as in an ongoing conversation
VISUAL_CLOSING_P = 0.7
# Background requests: the result arrives 3-12 s after the delegation turn (a web search or a
# small computation by a tool-using model takes seconds), within the 1-2 exchanges of ordinary
# conversation that follow it (each ~8-15 s), so the model mostly has to hold the result until
# the user yields, and sometimes brings it up only after the last turn.
RESULT_AFTER_MS = (3000, 12_000)
BACKGROUND_EXCHANGES = (1, 2)
BACKGROUND_PREAMBLE_P = 0.5
BACKGROUND_ACK_P = 0.5
# Simultaneous dialogues: 2-4 passages, each rendered right after it is written. A rendering is a
# translation into one of RENDER_LANGUAGES or the English source again (shadowing), equally
# likely: three in four dialogues train interpreting, one in four repeating with a lag.
PASSAGES_PER_DIALOGUE = (2, 4)
RENDER_CHOICES = (*RENDER_LANGUAGES, "en")
# espeak-ng voices of those languages (`espeak-ng --voices=fr` etc. in 1.51), each with no
# variant or one of the English voices' variants: 2 x 7 French, 2 x 7 Spanish, 7 German.
LANGUAGE_VOICES = {
    "fr": tuple(b + v for b in ("fr-fr", "fr-be") for v in ("", "+m1", "+m3", "+m5", "+f2", "+f3", "+f4")),
    "es": tuple(b + v for b in ("es", "es-419") for v in ("", "+m1", "+m3", "+m5", "+f2", "+f3", "+f4")),
    "de": tuple("de" + v for v in ("", "+m1", "+m3", "+m5", "+f2", "+f3", "+f4")),
}

# The words: slot vocabularies and template exchanges, from synth/data/templates.toml (its
# comments say what each list is and which {slots} its texts may use).
_TEXT = bundled_template_text()
BACKCHANNELS = _TEXT.backchannels
INTERJECTIONS = _TEXT.interjections
# A bundled script's occurrences of any of these are swapped for others of the same kind,
# consistently within the dialogue; templates fill {name}, {place}, ... from them.
NAMES, PLACES, DAYS = _TEXT.names, _TEXT.places, _TEXT.days
DISHES, TIMES, PARTY_SIZES = _TEXT.dishes, _TEXT.times, _TEXT.party_sizes
_SWAP_POOLS = (NAMES, PLACES, DAYS, DISHES, TIMES, PARTY_SIZES)
OPENERS, CLOSERS, EXCHANGES = _TEXT.openers, _TEXT.closers, _TEXT.exchanges
WHEN_REQUESTS, WHEN_RESPONSES = _TEXT.when_requests, _TEXT.when_responses
COUNT_STEP_REQUESTS, COUNT_TO_REQUESTS = _TEXT.count_step_requests, _TEXT.count_to_requests
REMIND_REQUESTS, REMIND_RESPONSES, TASKS = _TEXT.remind_requests, _TEXT.remind_responses, _TEXT.tasks
TIMED_PREAMBLES, TIMED_CLOSINGS = _TEXT.timed_preambles, _TEXT.timed_closings
VISUAL_REQUESTS = {
    "appear": _TEXT.visual_appear_requests, "disappear": _TEXT.visual_disappear_requests,
    "colour": _TEXT.visual_colour_requests, "move": _TEXT.visual_move_requests,
    "count_aloud": _TEXT.visual_count_aloud_requests, "count_total": _TEXT.visual_count_total_requests,
    "text": _TEXT.visual_text_requests,
}
VISUAL_RESPONSES = {
    "appear": _TEXT.visual_appear_responses, "disappear": _TEXT.visual_disappear_responses,
    "colour": _TEXT.visual_colour_responses, "move": _TEXT.visual_move_responses,
    "count_total": _TEXT.visual_count_total_responses, "text": _TEXT.visual_text_responses,
}
VISUAL_CONNECTORS, SCREEN_TEXTS = _TEXT.visual_connectors, _TEXT.screen_texts
VENUES, WEATHER = _TEXT.venues, _TEXT.weather
DELEGATIONS, BACKGROUND_ACKS, MENTION_OPENERS = _TEXT.delegations, _TEXT.background_acks, _TEXT.mention_openers
BACKGROUND_TOPICS, PASSAGES = _TEXT.background_topics, _TEXT.passages


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[Dialogue, ...]:
    out: list[Dialogue] = []
    root = importlib.resources.files("microturn.synth") / "data"
    for name in BUNDLED_FILES:
        lines = (root / name).read_bytes().splitlines()
        for number, item in read_dialogues(lines):
            if isinstance(item, ScriptError):
                raise ValueError(f"bundled script synth/data/{name} line {number} is invalid: {item}")
            out.append(item)
    return tuple(out)


def bundled_dialogues() -> list[Dialogue]:
    """The bundled scripts of :data:`BUNDLED_FILES` (one file per kind, in the order of
    :data:`KINDS`), in file order."""
    return list(_bundled())


def dialogue_kind(dialogue: Dialogue) -> str:
    """The kind of ``dialogue`` (one of :data:`KINDS`), from its acts: "timed" with a timed
    request, "visual" with a visual request, "background" with a delegation, "simultaneous"
    with a rendering, else "dialogue" (in that order, for a script that mixes them)."""
    acts = {t.act for t in dialogue.turns}
    for act, kind in (("timed_request", "timed"), ("visual_request", "visual"), ("delegation", "background"),
                      ("simultaneous", "simultaneous")):
        if act in acts:
            return kind
    return "dialogue"


def check_kinds(kinds: Iterable[str] | None) -> tuple[str, ...]:
    """``kinds`` as :func:`generate` reads it: the named kinds in the order of :data:`KINDS`,
    repeats dropped; None gives all of them. Raises ValueError naming an unknown kind (with the
    nearest known one) and the valid kinds, or for an empty selection or a bare string."""
    if kinds is None:
        return KINDS
    if isinstance(kinds, (str, bytes)):
        raise ValueError(f"kinds must be a list of kind names such as ['visual', 'background'], not the "
                         f"string {kinds!r}; the kinds are {', '.join(KINDS)}")
    names = list(kinds)
    for name in names:
        if name == "":
            raise ValueError(f"an empty kind name (a stray comma?); the kinds are {', '.join(KINDS)}")
        if name not in KINDS:
            close = difflib.get_close_matches(str(name), KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown kind {name!r}{hint}; the kinds are {', '.join(KINDS)}")
    if not names:
        raise ValueError(f"kinds is empty; name at least one of {', '.join(KINDS)} (or give none for all)")
    return tuple(k for k in KINDS if k in names)


def kind_shares(kinds: Iterable[str] | None = None, *, timed_share: float = TIMED_SHARE) -> dict[str, float]:
    """The expected share of each selected kind (in the order of :data:`KINDS`; they sum to 1):
    "timed" gets ``timed_share`` and the other selected kinds the rest in proportion to
    :data:`KIND_WEIGHTS`; a selection of "timed" alone is all timed. Raises ValueError when the
    selection makes nothing (``kinds=["timed"]`` with ``timed_share`` 0)."""
    chosen = check_kinds(kinds)
    others = [k for k in chosen if k != "timed"]
    if "timed" not in chosen:
        total = sum(KIND_WEIGHTS[k] for k in others)
        return {k: KIND_WEIGHTS[k] / total for k in chosen}
    if not others:
        if timed_share == 0:
            raise ValueError("kinds ['timed'] with timed_share 0 makes nothing; raise timed_share or add kinds")
        return {"timed": 1.0}
    total = sum(KIND_WEIGHTS[k] for k in others)
    return {k: timed_share if k == "timed" else (1.0 - timed_share) * KIND_WEIGHTS[k] / total for k in chosen}


def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def _randint(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _speakers(rng: np.random.Generator, roles: tuple[str | None, str | None]) -> tuple:
    first, second = rng.choice(len(VOICES), size=2, replace=False)
    return tuple(
        (name, SpeakerSpec(voice=VOICES[int(v)], pitch=_randint(rng, PITCH_RANGE),
                           rate=_randint(rng, RATE_RANGE), role=role))
        for name, v, role in zip(("A", "B"), (first, second), roles, strict=True))


def _swap_slots(rng: np.random.Generator, turns: list[TurnSpec]) -> list[TurnSpec]:
    """Swap every slot word found in the texts for another of its kind, consistently."""
    joined = "\n".join(t.text for t in turns)
    mapping: dict[str, str] = {}
    for pool in _SWAP_POOLS:
        found = [w for w in pool if re.search(_slot_pattern(w), joined)]
        if found:
            chosen = rng.choice(len(pool), size=len(found), replace=False)
            mapping.update({w: pool[int(j)] for w, j in zip(found, chosen, strict=True)})
    if not mapping:
        return turns
    # Longest first so that "a quarter past eight" wins over any shorter entry inside it.
    keys = sorted(mapping, key=len, reverse=True)
    pattern = re.compile("|".join(_slot_pattern(k) for k in keys))

    def replace(match: re.Match) -> str:
        said = match.group(0)
        key = said if said in mapping else said[0].lower() + said[1:]
        new = mapping[key]
        return _capital(new) if said[0].isupper() else new

    return [dataclasses.replace(t, text=pattern.sub(replace, t.text)) for t in turns]


def _slot_pattern(word: str) -> str:
    # Lowercase entries may open a sentence ("Four people."), so their first letter matches either case.
    head = f"[{word[0]}{word[0].upper()}]" if word[0].islower() else re.escape(word[0])
    return rf"\b{head}{re.escape(word[1:])}\b"


def _template_turns(template: Sequence[tuple], x: str, y: str, slots: dict[str, str]) -> list[TurnSpec]:
    turns = []
    for entry in template:
        who, text = entry[0], entry[1].format(**slots)
        act = entry[2] if len(entry) > 2 else ("question" if text.endswith("?") else "statement")
        turns.append(TurnSpec(speaker=x if who == "X" else y, text=text, act=act))
    return turns


def _slot_values(rng: np.random.Generator) -> dict[str, str]:
    name, name2 = rng.choice(len(NAMES), size=2, replace=False)
    place, place2 = rng.choice(len(PLACES), size=2, replace=False)
    count = cardinal(_randint(rng, (2, 6)))
    return {
        "name": NAMES[int(name)], "name2": NAMES[int(name2)],
        "place": PLACES[int(place)], "place2": PLACES[int(place2)],
        "day": _pick(rng, DAYS), "dish": _pick(rng, DISHES), "time": _pick(rng, TIMES),
        "party": _pick(rng, PARTY_SIZES), "count": count, "Count": _capital(count),
        "few": cardinal(_randint(rng, (2, 4))),
        "minutes": cardinal(int(_pick(rng, (5, 10, 15, 20, 25, 30, 40)))),
    }


def _composed(rng: np.random.Generator) -> list[TurnSpec]:
    """Opener, 2-4 shuffled template exchanges and a closer, each opened by whoever spoke last's partner."""
    parts: list[Sequence[tuple]] = []
    if rng.random() < OPENER_P:
        parts.append(_pick(rng, OPENERS))
    k = _randint(rng, EXCHANGES_PER_DIALOGUE)
    parts.extend(EXCHANGES[int(j)] for j in rng.choice(len(EXCHANGES), size=k, replace=False))
    if rng.random() < CLOSER_P:
        parts.append(_pick(rng, CLOSERS))
    turns: list[TurnSpec] = []
    last = "B" if rng.random() < 0.5 else "A"
    for part in parts:
        x, y = ("A", "B") if last == "B" else ("B", "A")
        turns.extend(_template_turns(part, x, y, _slot_values(rng)))
        last = turns[-1].speaker
    return turns


def _from_bundled(rng: np.random.Generator, bases: Sequence[Dialogue]) -> list[TurnSpec]:
    turns = list(_pick(rng, bases).turns)
    if len(turns) > MIN_CROP_TURNS and rng.random() < CROP_P:
        length = _randint(rng, (MIN_CROP_TURNS, len(turns) - 1))
        start = int(rng.integers(0, len(turns) - length + 1))
        turns = turns[start:start + length]
    return _swap_slots(rng, turns)


def _other(speaker: str) -> str:
    return "B" if speaker == "A" else "A"


def _listen(rng: np.random.Generator, turns: list[TurnSpec]) -> list[TurnSpec]:
    """Vary scripted backchannels and add new ones after long turns."""
    out: list[TurnSpec] = []
    for i, turn in enumerate(turns):
        if turn.act == "backchannel":
            if rng.random() < DROP_BACKCHANNEL_P:
                continue
            if rng.random() < RESAY_BACKCHANNEL_P:
                turn = dataclasses.replace(turn, text=_pick(rng, BACKCHANNELS))
        out.append(turn)
        nxt = turns[i + 1] if i + 1 < len(turns) else None
        # Listeners acknowledge statements; a question wants an answer, not an "mm-hmm".
        if (nxt is not None and turn.act in ("statement", "interruption") and not turn.text.endswith("?")
                and nxt.act not in ("backchannel", "interruption")
                and len(turn.text.split()) >= LONG_TURN_WORDS and rng.random() < BACKCHANNEL_P):
            out.append(TurnSpec(speaker=_other(turn.speaker), text=_pick(rng, BACKCHANNELS),
                                act="backchannel"))
    return out


def _interrupt(rng: np.random.Generator, turns: list[TurnSpec], share: float) -> list[TurnSpec]:
    """With chance ``share``, turn one answer to a long turn into an interruption, opened by a
    short interjection."""
    if rng.random() >= share:
        return turns
    candidates = [i for i in range(1, len(turns))
                  if turns[i].act in ("statement", "question")
                  and turns[i - 1].act in ("statement", "question")
                  and turns[i - 1].speaker != turns[i].speaker
                  and len(turns[i - 1].text.split()) >= INTERRUPTED_MIN_WORDS]
    if not candidates:
        return turns
    i = _pick(rng, candidates)
    text = f"{_pick(rng, INTERJECTIONS)} {turns[i].text}"
    if len(text) > MAX_TEXT_CHARS:
        return turns
    return turns[:i] + [dataclasses.replace(turns[i], text=text, act="interruption")] + turns[i + 1:]


def _repair(turns: list[TurnSpec]) -> list[TurnSpec]:
    """After cropping and dropping: a backchannel or interruption must follow another speaker."""
    out: list[TurnSpec] = []
    for turn in turns:
        follows_other = bool(out) and out[-1].speaker != turn.speaker
        if turn.act == "backchannel" and not follows_other:
            continue
        if turn.act == "interruption" and not follows_other:
            turn = dataclasses.replace(turn, act="statement")
        out.append(turn)
    return out


def _hesitate(rng: np.random.Generator, turns: list[TurnSpec]) -> list[TurnSpec]:
    """Put a filler into some long statements and questions, after a word of the first two
    thirds that ends no clause (a filler comes mid-clause, before the word being searched for)."""
    out = []
    for turn in turns:
        words = turn.text.split()
        if (turn.act in ("statement", "question") and len(words) >= HESITATE_MIN_WORDS
                and rng.random() < HESITATE_P):
            spots = [k for k in range(1, (2 * len(words)) // 3) if words[k - 1][-1:].isalnum()]
            if spots:
                k = spots[int(rng.integers(len(spots)))]
                text = " ".join([*words[:k], _pick(rng, FILLERS), *words[k:]])
                if len(text) <= MAX_TEXT_CHARS:
                    turn = dataclasses.replace(turn, text=text)
        out.append(turn)
    return out


def _conversation(rng: np.random.Generator, did: str, language: str,
                  bases: Sequence[Dialogue], interruption_share: float) -> Dialogue:
    turns = _from_bundled(rng, bases) if rng.random() < BUNDLED_BASE_P else _composed(rng)
    turns = _repair(_interrupt(rng, _listen(rng, turns), interruption_share))
    speakers = _speakers(rng, (None, None))
    # Drawn last, so that everything above is what it was without fillers.
    turns = _hesitate(rng, turns)
    return Dialogue(id=did, speakers=speakers, turns=tuple(turns), language=language, license=LICENSE)


def _timed_request(rng: np.random.Generator) -> tuple[str, TimedSpec]:
    """A time-aware request by A and what B must say when."""
    kind = int(rng.integers(4))
    if kind == 0 or kind == 3:
        n = _randint(rng, TARGET_S)
        words = {"n": cardinal(n), "N": _capital(cardinal(n))}
        if kind == 0:
            text = _pick(rng, WHEN_REQUESTS).format(**words)
            response = _pick(rng, WHEN_RESPONSES).format(**words)
        else:
            asked, told = _pick(rng, TASKS)
            text = _pick(rng, REMIND_REQUESTS).format(task=asked, **words)
            response = _pick(rng, REMIND_RESPONSES).format(task=told, Task=_capital(told), **words)
        return text, TimedSpec(targets_ms=(n * 1000,), responses=(response,), responder="B")
    step, count = _randint(rng, COUNT_STEP_S), _randint(rng, COUNT_N)
    targets = tuple(step * 1000 * j for j in range(1, count + 1))
    if kind == 1:
        text = _pick(rng, COUNT_STEP_REQUESTS).format(k=cardinal(step), top=cardinal(step * count))
        said = [step * j for j in range(1, count + 1)]
    else:
        text = _pick(rng, COUNT_TO_REQUESTS).format(k=cardinal(step), c=cardinal(count))
        said = list(range(1, count + 1))
    responses = tuple(_capital(cardinal(v)) + "." for v in said)
    return text, TimedSpec(targets_ms=targets, responses=responses, responder="B")


def _timed(rng: np.random.Generator, did: str, language: str) -> Dialogue:
    turns: list[TurnSpec] = []
    if rng.random() < TIMED_PREAMBLE_P:
        turns.extend(_template_turns(_pick(rng, TIMED_PREAMBLES), "A", "B", {}))
    text, timed = _timed_request(rng)
    turns.append(TurnSpec(speaker="A", text=text, act="timed_request", timed=timed))
    if rng.random() < TIMED_CLOSING_P:
        turns.extend(_template_turns(_pick(rng, TIMED_CLOSINGS), "A", "B", {}))
    return Dialogue(id=did, speakers=_speakers(rng, ("user", "model")), turns=tuple(turns),
                    language=language, license=LICENSE)


def _lower_first(text: str) -> str:
    """``text`` to follow a connector: its first letter lower-cased, unless it opens with "I"."""
    first = text.split(" ", 1)[0]
    if first == "I" or first.startswith("I'"):
        return text
    return text[:1].lower() + text[1:]


def _visual_request(rng: np.random.Generator) -> tuple[str, VisualSpec]:
    """A visual request by A and the cues B answers: 1-3 cues of different kinds, objects of
    different colours (no two cues show the same shape and colour, which the scene requires)."""
    n = CUE_COUNTS[int(rng.choice(len(CUE_COUNTS), p=CUE_COUNT_P))]
    kinds = [visual.CUE_KINDS[int(j)] for j in rng.choice(len(visual.CUE_KINDS), size=n, replace=False)]
    colours = [visual.COLOURS[int(j)] for j in rng.permutation(len(visual.COLOURS))]
    texts: list[str] = []
    cues: list[CueSpec] = []
    ready_ms = 0  # when the previous cue is over (the end of the request for the first)
    for k, kind in enumerate(kinds):
        after_ms = ready_ms + _randint(rng, CUE_WAIT_MS)
        ready_ms = after_ms
        template = kind
        extra: dict = {}
        if kind == "text":
            screen, said = _pick(rng, SCREEN_TEXTS)
            slots = {"text": said, "Text": _capital(said)}
            extra["text"] = screen
        else:
            slots = {"colour": colours.pop(), "shape": _pick(rng, visual.SHAPES)}
            extra.update(colour=slots["colour"], shape=slots["shape"])
        if kind == "colour":
            slots["to_colour"] = extra["to_colour"] = colours.pop()
        if kind == "repeat":
            count = _randint(rng, REPEAT_COUNT)
            aloud = rng.random() < COUNT_ALOUD_P
            lo, hi = ALOUD_PERIOD_MS if aloud else SILENT_PERIOD_MS
            period = 100 * _randint(rng, (lo // 100, hi // 100))
            extra.update(count=count, period_ms=period)
            slots.update(count=cardinal(count), Count=_capital(cardinal(count)))
            ready_ms = after_ms + count * period
            template = "count_aloud" if aloud else "count_total"
            if aloud:
                responses = [_capital(cardinal(j)) + "." for j in range(1, count + 1)]
            else:
                responses = [_capital(_pick(rng, VISUAL_RESPONSES["count_total"]).format(**slots))]
        else:
            responses = [_capital(_pick(rng, VISUAL_RESPONSES[kind]).format(**slots))]
        request = _pick(rng, VISUAL_REQUESTS[template]).format(**slots)
        if k:
            request = _pick(rng, VISUAL_CONNECTORS).format(request=_lower_first(request), Request=request)
        texts.append(request)
        cues.append(CueSpec(kind=kind, after_ms=after_ms, responses=tuple(responses), **extra))
    return " ".join(texts), VisualSpec(cues=tuple(cues), responder="B")


def _turns_after(rng: np.random.Generator, turns: list[TurnSpec], exchange: Sequence[tuple]) -> list[TurnSpec]:
    """``exchange`` filled with fresh slots, opened by whoever did not speak last (A when none did)."""
    x, y = ("B", "A") if turns and turns[-1].speaker == "A" else ("A", "B")
    return _template_turns(exchange, x, y, _slot_values(rng))


def _visual(rng: np.random.Generator, did: str, language: str) -> Dialogue:
    turns: list[TurnSpec] = []
    if rng.random() < VISUAL_PREAMBLE_P:
        turns.extend(_turns_after(rng, turns, _pick(rng, OPENERS + TIMED_PREAMBLES)))
    if rng.random() < VISUAL_CHAT_P:
        turns.extend(_turns_after(rng, turns, _pick(rng, EXCHANGES)))
    text, spec = _visual_request(rng)
    turns.append(TurnSpec(speaker="A", text=text, act="visual_request", visual=spec))
    if rng.random() < VISUAL_CLOSING_P:
        # Spoken after the last answer, so the user (A) closes, as after a timed request.
        turns.extend(_template_turns(_pick(rng, CLOSERS + TIMED_CLOSINGS), "A", "B", _slot_values(rng)))
    return Dialogue(id=did, speakers=_speakers(rng, ("user", "model")), turns=tuple(turns),
                    language=language, license=LICENSE)


# Airline codes of the flight numbers in background results (text only, never spoken).
_AIRLINES = ("BA", "LH", "AF", "KL", "IB", "TP", "SK", "AZ", "EI", "LX")


def _clock(h: int, m: int) -> tuple[str, str]:
    """A time of day as said ("seven oh five", "six o'clock", 12-hour) and as written ("19:05")."""
    hour = cardinal(h % 12 or 12)
    said = f"{hour} o'clock" if m == 0 else f"{hour} oh {cardinal(m)}" if m < 10 else f"{hour} {cardinal(m)}"
    return said, f"{h:02d}:{m:02d}"


def _background_slots(rng: np.random.Generator) -> dict[str, str]:
    """Every slot of the background topics: words, numbers spelled ({sum}) and as digits ({sum_d})."""
    out: dict[str, str] = {}

    def number(name: str, value: int) -> None:
        out[name], out[f"{name}_d"] = cardinal(value), str(value)

    def clock(name: str, minutes: int) -> None:
        out[name], out[f"{name}_d"] = _clock((minutes // 60) % 24, minutes % 60)

    place, place2 = rng.choice(len(PLACES), size=2, replace=False)
    out.update(name=_pick(rng, NAMES), place=PLACES[int(place)], place2=PLACES[int(place2)], day=_pick(rng, DAYS),
               venue=_pick(rng, VENUES), weather=_pick(rng, WEATHER), dish=_pick(rng, DISHES))
    # Opening hours: from 7-11 in the morning to 4-10 in the evening, said as the hour alone.
    open_h, close_h = _randint(rng, (7, 11)), _randint(rng, (16, 22))
    out.update(open=cardinal(open_h), open_d=f"{open_h:02d}:00", close=cardinal(close_h - 12), close_d=f"{close_h}:00")
    # Clock times in 5-minute steps: a departure or appointment 6:00-21:55, the next one 15-60
    # minutes later, a sunset 16:00-21:55.
    start = 60 * _randint(rng, (6, 21)) + 5 * _randint(rng, (0, 11))
    clock("time", start)
    clock("time2", start + 5 * _randint(rng, (3, 12)))
    clock("sunset", 60 * _randint(rng, (16, 21)) + 5 * _randint(rng, (0, 11)))
    a, b = _randint(rng, (12, 99)), _randint(rng, (12, 99))
    x, y = _randint(rng, (3, 12)), _randint(rng, (11, 40))
    for name, value in (("a", a), ("b", b), ("sum", a + b), ("x", x), ("y", y), ("product", x * y),
                        ("grams", 125 * x)):  # a cup of flour weighs about 125 g
        number(name, value)
    # Euros to dollars at 1.05-1.25, the range of the last decade's rates.
    amount, rate = 10 * _randint(rng, (2, 40)), _randint(rng, (105, 125)) / 100
    number("amount", amount)
    number("converted", round(amount * rate))
    out["rate_d"] = f"{rate:.2f}"
    people, each = _randint(rng, (2, 8)), _randint(rng, (8, 45))
    percent, bill = int(_pick(rng, (10, 15, 20))), 20 * _randint(rng, (1, 10))  # whole tips: 20 x 5% steps
    miles = _randint(rng, (2, 60))
    for name, value in (("temp", _randint(rng, (4, 31))), ("delay", 5 * _randint(rng, (1, 11))),
                        ("km", _randint(rng, (40, 900))), ("platform", _randint(rng, (1, 14))),
                        ("people", people), ("each", each), ("total", people * each), ("percent", percent),
                        ("bill", bill), ("tip", bill * percent // 100), ("miles", miles),
                        ("miles_km", round(miles * 1.609344)), ("route", _randint(rng, (2, 99))),
                        ("gate", _randint(rng, (1, 40))), ("price", _randint(rng, (6, 25))),
                        ("walk", 5 * _randint(rng, (1, 8)))):
        number(name, value)
    out["flight_d"] = f"{_pick(rng, _AIRLINES)} {_randint(rng, (100, 999))}"
    return out


def _background(rng: np.random.Generator, did: str, language: str) -> Dialogue:
    turns: list[TurnSpec] = []
    if rng.random() < BACKGROUND_PREAMBLE_P:
        turns.extend(_turns_after(rng, turns, _pick(rng, OPENERS + TIMED_PREAMBLES)))
    topic = _pick(rng, BACKGROUND_TOPICS)
    slots = _background_slots(rng)
    request = _capital(_pick(rng, topic.requests).format(**slots))
    found = _pick(rng, topic.mentions).format(**slots)
    mention = _pick(rng, MENTION_OPENERS).format(found=found, Found=_capital(found))
    spec = BackgroundSpec(result=topic.result.format(**slots), mention=mention,
                          after_ms=_randint(rng, RESULT_AFTER_MS))
    turns.append(TurnSpec(speaker="A", text=request, act="question" if request.endswith("?") else "statement"))
    turns.append(TurnSpec(speaker="B", text=_pick(rng, DELEGATIONS), act="delegation", background=spec))
    if rng.random() < BACKGROUND_ACK_P:
        turns.append(TurnSpec(speaker="A", text=_pick(rng, BACKGROUND_ACKS)))
    # The conversation goes on: the model holds the result until the user yields a turn.
    k = _randint(rng, BACKGROUND_EXCHANGES)
    for j in rng.choice(len(EXCHANGES), size=k, replace=False):
        turns.extend(_turns_after(rng, turns, EXCHANGES[int(j)]))
    turns.extend(_turns_after(rng, turns, _pick(rng, CLOSERS)))
    return Dialogue(id=did, speakers=_speakers(rng, ("user", "model")), turns=tuple(turns),
                    language=language, license=LICENSE)


def _renderer_speakers(rng: np.random.Generator, render: str) -> tuple:
    """A (user, English) and B (model) who renders in ``render``: another English voice to
    shadow, or a voice of that language with ``language`` declared."""
    if render == "en":
        return _speakers(rng, ("user", "model"))
    voices = LANGUAGE_VOICES[render]
    return (("A", SpeakerSpec(voice=_pick(rng, VOICES), pitch=_randint(rng, PITCH_RANGE),
                              rate=_randint(rng, RATE_RANGE), role="user")),
            ("B", SpeakerSpec(voice=_pick(rng, voices), pitch=_randint(rng, PITCH_RANGE),
                              rate=_randint(rng, RATE_RANGE), role="model", language=render)))


def _simultaneous(rng: np.random.Generator, did: str, language: str) -> Dialogue:
    render = _pick(rng, RENDER_CHOICES)
    turns: list[TurnSpec] = []
    for j in rng.choice(len(PASSAGES), size=_randint(rng, PASSAGES_PER_DIALOGUE), replace=False):
        passage = PASSAGES[int(j)]
        turns.append(TurnSpec(speaker="A", text=passage.source, act="statement"))
        turns.append(TurnSpec(speaker="B", text=passage.rendering(render), act="simultaneous"))
    return Dialogue(id=did, speakers=_renderer_speakers(rng, render), turns=tuple(turns),
                    language=language, license=LICENSE)


def _band(u: float, shares: dict[str, float]) -> str:
    """The kind whose band of [0, 1) holds ``u``; bands in the order of :data:`_BANDS`."""
    acc, last = 0.0, ""
    for kind in _BANDS:
        share = shares.get(kind, 0.0)
        if share > 0:
            acc += share
            last = kind
            if u < acc:
                return kind
    return last  # u within float rounding of 1


def generate(n: int, *, seed: int = 0, timed_share: float = TIMED_SHARE, language: str = "en",
             interruption_share: float = INTERRUPT_P, kinds: Sequence[str] | None = None) -> list[Dialogue]:
    """``n`` varied dialogue scripts with ids ``gen-{seed}-{i:05d}``.

    Kinds (:data:`KINDS`): ``kinds`` selects some (None: all five; order and repeats do not
    matter; an unknown name is a ValueError). Their shares are :func:`kind_shares`: "timed" gets
    ``timed_share``, the other selected kinds the rest in proportion to :data:`KIND_WEIGHTS`
    (by default conversations 0.55, timed 0.15, visual, background and simultaneous 0.10 each).
    The first dialogues of every seed are one of each selected kind with a share above 0, in the
    order of :data:`KINDS`, so that any set of at least five (a demo, a smoke test) shows every
    kind; after that each dialogue's kind is drawn by the shares. The conversations and timed
    dialogues of the default mix are those the generator made before the newer kinds existed
    (from dialogue 5 on), and ``kinds=("dialogue", "timed")`` is that earlier mix itself (from
    dialogue 2 on).

    The templates are English, so ``language`` must be an English tag ("en", "en-GB", ...); it
    is recorded on every dialogue (a simultaneous rendering's speaker declares its own). A share
    ``interruption_share`` of the conversations (in expectation, where a turn is long enough to
    cut into) gets one extra interruption; the draw is made whatever the share, so a dialogue
    that gets none is the same whatever the share."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, share in (("timed_share", timed_share), ("interruption_share", interruption_share)):
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {share!r}")
    if not isinstance(language, str) or language.split("-")[0].lower() != "en":
        raise ValueError(f"the templates are English; language must be an English tag such as 'en' or "
                         f"'en-GB', got {language!r}")
    shares = kind_shares(kinds, timed_share=float(timed_share))
    first = [k for k in KINDS if shares.get(k, 0.0) > 0]
    bases = [d for d in _bundled() if dialogue_kind(d) == "dialogue"]
    out = []
    for i in range(n):
        # One stream per dialogue, so dialogue i does not depend on n or on the dialogues before it.
        rng = np.random.default_rng([seed, i])
        did = f"gen-{seed}-{i:05d}"
        # Drawn even where the kind is set, so the rest of the stream is what it would be anyway.
        u = float(rng.random())
        kind = first[i] if i < len(first) else _band(u, shares)
        if kind == "timed":
            out.append(_timed(rng, did, language))
        elif kind == "visual":
            out.append(_visual(rng, did, language))
        elif kind == "background":
            out.append(_background(rng, did, language))
        elif kind == "simultaneous":
            out.append(_simultaneous(rng, did, language))
        else:
            out.append(_conversation(rng, did, language, bases, float(interruption_share)))
    return out


def parse_kinds(text: str) -> tuple[str, ...]:
    """A comma-separated list of kinds ("visual,background") as :func:`check_kinds` reads it;
    ValueError naming the unknown kind and the valid ones."""
    return check_kinds([part.strip() for part in text.split(",")])


def write_jsonl(dialogues: Iterable[Dialogue], path: str | os.PathLike) -> None:
    """Write one canonical JSON line per dialogue (UTF-8, "\\n" line ends)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for dialogue in dialogues:
            f.write(dialogue.to_json() + "\n")


def _kinds_arg(text: str) -> tuple[str, ...]:
    try:
        return parse_kinds(text)
    except ValueError as exc:  # argparse shows an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--n``, ``--seed``, ``--timed-share``, ``--interruption-share``, ``--kinds``,
    ``--language``, ``--output`` (stdout when omitted); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m microturn.synth.templates",
                                     description="Generate dialogue scripts (JSONL) from the "
                                                 "bundled templates.")
    parser.add_argument("--n", type=int, required=True, help="number of dialogues")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timed-share", type=float, default=TIMED_SHARE, help="share of time-aware dialogues")
    parser.add_argument("--kinds", type=_kinds_arg, metavar="K1,K2",
                        help=f"comma-separated kinds to make (default: all of {','.join(KINDS)})")
    parser.add_argument("--interruption-share", type=float, default=INTERRUPT_P,
                        help="share of conversations with one extra interruption")
    parser.add_argument("--language", default="en")
    parser.add_argument("--output", help="JSONL file to write; stdout when omitted")
    args = parser.parse_args(argv)
    try:
        dialogues = generate(args.n, seed=args.seed, timed_share=args.timed_share, language=args.language,
                             interruption_share=args.interruption_share, kinds=args.kinds)
    except ValueError as exc:
        parser.error(str(exc))
    if args.output:
        write_jsonl(dialogues, args.output)
    else:
        for dialogue in dialogues:
            sys.stdout.write(dialogue.to_json() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
