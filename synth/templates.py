"""Template generator of dialogue scripts.

Makes any number of varied, valid :class:`~microturn.schemas.dialogue.Dialogue` scripts from the
bundled scripts (``synth/data/*.jsonl``) and the slot templates of ``synth/data/templates.toml``
(read and checked by :mod:`microturn.synth.template_text`):

- conversations: a bundled dialogue (possibly cropped) with its names, places, days, dishes,
  times and party sizes swapped consistently, or a new one chained from shuffled template
  exchanges with filled slots; then listener backchannels after long turns, the occasional
  interruption, fresh voices, pitch and rate for both speakers, and fillers ("um", "uh")
  inside some long turns;
- time-aware dialogues (with probability ``timed_share``): a user asks the model to say when N
  seconds have passed, to count at an interval, or to remind them of something, with the target
  times and spelled-out responses that the request implies.

Dialogue ``i`` of seed ``s`` depends only on ``(s, i)``, so ``generate(n)`` is a prefix of
``generate(n + k)`` and the same arguments always give the same JSON.

Run as ``python -m microturn.synth.templates --n 100 --seed 0 --output dialogues.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.resources
import os
import re
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from microturn.schemas.dialogue import (
    MAX_TEXT_CHARS,
    Dialogue,
    ScriptError,
    SpeakerSpec,
    TimedSpec,
    TurnSpec,
    read_dialogues,
)
from microturn.schemas.numbers import cardinal
from microturn.synth.template_text import bundled_template_text

BUNDLED_FILES = ("dialogues.jsonl", "timed.jsonl")
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

# Time-aware requests: single targets 3-20 s, counting every 2-5 s for 2-5 counts.
TARGET_S = (3, 20)
COUNT_STEP_S = (2, 5)
COUNT_N = (2, 5)
TIMED_PREAMBLE_P = 0.5
TIMED_CLOSING_P = 0.7

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
    """The bundled scripts, ``dialogues.jsonl`` then ``timed.jsonl``, in file order."""
    return list(_bundled())


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


def generate(n: int, *, seed: int = 0, timed_share: float = 0.15, language: str = "en",
             interruption_share: float = INTERRUPT_P) -> list[Dialogue]:
    """``n`` varied dialogue scripts with ids ``gen-{seed}-{i:05d}``; a share ``timed_share`` of
    them (in expectation) are time-aware. The templates are English, so ``language`` must be an
    English tag ("en", "en-GB", ...); it is recorded on every dialogue. A share
    ``interruption_share`` of the other conversations (in expectation, where a turn is long
    enough to cut into) gets one extra interruption; the draw is made whatever the share, so a
    dialogue that gets none is the same whatever the share."""
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
    bases = [d for d in _bundled() if all(t.timed is None for t in d.turns)]
    out = []
    for i in range(n):
        # One stream per dialogue, so dialogue i does not depend on n or on the dialogues before it.
        rng = np.random.default_rng([seed, i])
        did = f"gen-{seed}-{i:05d}"
        if rng.random() < timed_share:
            out.append(_timed(rng, did, language))
        else:
            out.append(_conversation(rng, did, language, bases, float(interruption_share)))
    return out


def write_jsonl(dialogues: Iterable[Dialogue], path: str | os.PathLike) -> None:
    """Write one canonical JSON line per dialogue (UTF-8, "\\n" line ends)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for dialogue in dialogues:
            f.write(dialogue.to_json() + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--n``, ``--seed``, ``--timed-share``, ``--language``, ``--output``
    (stdout when omitted); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m microturn.synth.templates",
                                     description="Generate dialogue scripts (JSONL) from the "
                                                 "bundled templates.")
    parser.add_argument("--n", type=int, required=True, help="number of dialogues")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timed-share", type=float, default=0.15, help="share of time-aware dialogues")
    parser.add_argument("--interruption-share", type=float, default=INTERRUPT_P,
                        help="share of conversations with one extra interruption")
    parser.add_argument("--language", default="en")
    parser.add_argument("--output", help="JSONL file to write; stdout when omitted")
    args = parser.parse_args(argv)
    try:
        dialogues = generate(args.n, seed=args.seed, timed_share=args.timed_share, language=args.language,
                             interruption_share=args.interruption_share)
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
