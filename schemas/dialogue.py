"""Dialogue scripts: the text contract of dialogue synthesis, one dialogue per JSONL line.

A line looks like::

    {"id": "d1", "language": "en", "license": "Apache-2.0",
     "speakers": {"A": {"voice": "en-us", "pitch": 40, "rate": 160}, "B": {"voice": "en-gb"}},
     "turns": [{"speaker": "A", "text": "So I was thinking we could leave on Friday."},
               {"speaker": "B", "text": "mm-hmm", "act": "backchannel"},
               {"speaker": "A", "text": "Or on Saturday morning, if that's easier for you."},
               {"speaker": "B", "text": "Wait, Friday works.", "act": "interruption"},
               {"speaker": "A", "text": "tell me when ten seconds have passed",
                "act": "timed_request", "targets_ms": [10000], "responses": ["ten seconds"]}]}

What the script means to synthesis:
- turns are spoken in the order written; a ``backchannel`` is a listener token spoken inside the
  previous speaker's turn, an ``interruption`` starts before the previous speaker has finished;
- a ``timed_request`` asks another speaker (``responder``; by default the other one of exactly
  two) to say ``responses[i]`` at ``targets_ms[i]`` ms after the END of the request turn; the
  turns written after the request follow its last response;
- speaker names are labels local to the script; ``role`` ("user" / "model") pins a speaker to a
  stream of the micro-turn sample where it matters (time-aware dialogues).

Every value is checked when a dataclass is built (so hand-built dialogues obey the same rules as
parsed ones) and errors are :class:`ScriptError` with a stable ``reason`` code. Texts are
whitespace-normalised (NFC, stripped, runs of whitespace collapsed to one space), which also
guarantees that the canonical JSON of a dialogue never spans two lines. What remains may not hold
a control character, a lone surrogate or a bidirectional override (``bad_text``; the policy and
its reasons are in :mod:`microturn.schemas.text`), so no such character reaches a table or the TTS.

Size caps (numbers below): a text of :data:`MAX_TEXT_CHARS`, a word (whitespace token) of
:data:`MAX_WORD_CHARS`, :data:`MAX_TURNS` turns, :data:`MAX_DIALOGUE_CHARS` characters of speech
in all, 64 targets of a timed request; a JSON line of more than :data:`MAX_LINE_BYTES` is refused
by the readers before it is parsed.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import numbers
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from microturn.schemas.text import describe_char, refused_char, visible

ACTS = ("statement", "question", "backchannel", "interruption", "timed_request", "visual_request", "delegation",
        "simultaneous")
ROLES = ("user", "model")

# 600 characters is about 100 words: espeak-ng speaks that in ~35 s at its default 175 wpm
# (~6 characters per word with the space), longer than a whole 30 s training window (150 chunks
# of 200 ms). Conversational turns are far shorter (a few seconds on average in telephone
# speech), so a longer "turn" is almost always a pasted paragraph; the cap also bounds the TTS
# time and the audio buffer of one turn (35 s x 16 kHz x 4 B = 2.2 MB).
MAX_TEXT_CHARS = 600
# 400 turns at ~3 s per turn is a 20-minute conversation: its two 16 kHz float32 streams take
# ~150 MB while mixing, which a synthesis worker holds comfortably; longer scripts should be split.
MAX_TURNS = 400
# The longest English dictionary word has 45 letters (pneumonoultramicroscopicsilicovolcanoconiosis);
# 64 leaves room for punctuation around it. A longer token is a run-together paste, a hash or a
# URL, which espeak-ng spells out as ONE word: a 600-letter token became one 9.8 s "word", and
# 600 digits one 19 s word, in the words table.
MAX_WORD_CHARS = 64
# 24,000 characters is ~23 minutes of speech at espeak-ng's default 175 wpm (~6 characters a
# word, ~1,050 a minute), the MAX_TURNS budget of a 20-minute conversation; at its slowest rate
# (80 wpm) ~50 minutes, two 16 kHz float32 streams of ~380 MB while mixing. It bounds the TTS work
# of one script, whose timed requests could otherwise ask for 400 x 64 responses of 600 characters.
MAX_DIALOGUE_CHARS = 24_000
# One JSON line: MAX_DIALOGUE_CHARS of text written as 6-byte \uXXXX escapes is 144 kB, plus the
# keys of 400 turns (~60 bytes each) and 64 targets per timed turn; 1 MiB is ample, and a reader
# holds at most this much of a line that is not a dialogue.
MAX_LINE_BYTES = 1 << 20
MIN_SPEAKERS, MAX_SPEAKERS = 2, 8
# A timed request can ask for at most 10 minutes ahead (the cap of the contract), with at most
# 64 targets: counting every 10 s for 10 minutes needs 60; denser counting is not speech a
# listener could follow, and the cap bounds the TTS work of one turn.
MAX_TARGET_MS = 600_000
MAX_TARGETS = 64
# espeak-ng's own ranges: pitch 0-99 (default 50), rate 80-450 words per minute (default 175).
PITCH_RANGE = (0, 99)
RATE_RANGE = (80, 450)
MAX_LICENSE_CHARS = 128

REASONS = (
    "invalid_json", "not_an_object", "unknown_field", "missing_field", "bad_type", "bad_id",
    "too_few_speakers", "too_many_speakers", "unknown_speaker", "empty_text", "text_too_long",
    "too_many_turns", "bad_act", "bad_voice", "bad_role", "bad_timing", "bad_language", "bad_text",
    "word_too_long", "line_too_long",
)

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
# espeak-ng voice names: a lowercase language tag ("en", "en-gb-scotland", "en-029", "mb-en1")
# optionally followed by "+variant" ("en-us+f3", "en+Andy"); whether it is installed is the TTS's
# business.
_VOICE_RE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*(?:\+[A-Za-z0-9_]{1,32})?")
# BCP-47-like: a 2-3 letter primary language subtag and optional subtags ("en", "en-GB", "zh-Hant-TW").
_LANG_RE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")

_DIALOGUE_KEYS = ("id", "speakers", "turns", "language", "license")
_SPEAKER_KEYS = ("voice", "pitch", "rate", "role", "language")
_TURN_KEYS = ("speaker", "text", "act", "targets_ms", "responses", "responder", "cues", "result", "mention",
              "after_ms", "lag_ms")
# Keys that belong to one act only (``responder`` to both acts that are answered by another speaker).
_ACT_KEYS = {"timed_request": ("targets_ms", "responses", "responder"), "visual_request": ("cues", "responder"),
             "delegation": ("result", "mention", "after_ms"), "simultaneous": ("lag_ms",)}
_CUE_KEYS = ("kind", "after_ms", "shape", "colour", "to_colour", "text", "count", "period_ms", "responses")
# A visual request watches for at most 16 things: a counting set of 20 is one cue.
MAX_CUES = 16
# A rendering (interpreting, shadowing) trails its source by 0.5-5 s: simultaneous interpreters
# keep an ear-voice span of about 2-3 s, and under 0.5 s no source word has ended to be rendered.
LAG_RANGE_MS = (500, 5000)


class ScriptError(ValueError):
    """A dialogue script that breaks the contract.

    ``reason`` is a short stable code (one of :data:`REASONS`); ``detail`` says what is wrong and
    how to fix it; ``line``, ``dialogue_id``, ``turn`` (0-based index into ``turns``) and ``field``
    say where, when known. ``str(error)`` puts all of it on one line.
    """

    def __init__(self, reason: str, detail: str, *, line: int | None = None,
                 dialogue_id: str | None = None, turn: int | None = None,
                 field: str | None = None) -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.detail = detail
        self.line = line
        self.dialogue_id = dialogue_id
        self.turn = turn
        self.field = field
        super().__init__(reason, detail)

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.dialogue_id is not None:
            where.append(f"dialogue {self.dialogue_id!r}")
        path = f"turns[{self.turn}]" if self.turn is not None else ""
        if self.field:
            path = f"{path}.{self.field}" if path else self.field
        if path:
            where.append(path)
        prefix = ": ".join(where)
        text = f"{prefix}: {self.detail} ({self.reason})" if prefix else f"{self.detail} ({self.reason})"
        # Keys and names are quoted before they are checked: escape anything that could drive a
        # terminal or that UTF-8 cannot encode (the message lands in the rejects table).
        return visible(text)

    def __reduce__(self):
        # Keep the location when the error crosses a process boundary (multi-process runners).
        kwargs = {"line": self.line, "dialogue_id": self.dialogue_id, "turn": self.turn, "field": self.field}
        return (functools.partial(ScriptError, **kwargs), (self.reason, self.detail))

    def located(self, *, line: int | None = None, dialogue_id: str | None = None,
                turn: int | None = None, field_prefix: str | None = None) -> ScriptError:
        """A copy with the given location filled in where this error does not know it yet."""
        field = self.field
        if field_prefix:
            field = f"{field_prefix}.{field}" if field else field_prefix
        return ScriptError(
            self.reason, self.detail,
            line=self.line if self.line is not None else line,
            dialogue_id=self.dialogue_id if self.dialogue_id is not None else dialogue_id,
            turn=self.turn if self.turn is not None else turn,
            field=field,
        )


def _is_int(value: Any) -> bool:
    # JSON booleans are Python bools, which are ints; a pitch of `true` is a typo, not 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _norm_text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ScriptError("bad_type", f"must be a string, got {type(value).__name__}", field=field)
    if len(value) > 8 * MAX_TEXT_CHARS:  # before normalising a pasted book
        raise ScriptError("text_too_long", f"has {len(value)} characters, more than {MAX_TEXT_CHARS}; "
                          "split it into several turns", field=field)
    text = " ".join(unicodedata.normalize("NFC", value).split())
    bad = refused_char(text)
    if bad is not None:
        raise ScriptError("bad_text", f"holds {describe_char(bad[1])} at character {bad[0]}; control "
                          "characters, lone surrogates and bidirectional overrides are not allowed in "
                          "a script: remove it", field=field)
    if not text:
        raise ScriptError("empty_text", "is empty after whitespace normalisation; write what is said "
                          "or remove it", field=field)
    if len(text) > MAX_TEXT_CHARS:
        raise ScriptError("text_too_long", f"has {len(text)} characters, more than {MAX_TEXT_CHARS}; "
                          "split it into several turns", field=field)
    longest = max(text.split(" "), key=len)
    if len(longest) > MAX_WORD_CHARS:
        raise ScriptError("word_too_long", f"has a word of {len(longest)} characters ({longest[:20]!r}...), "
                          f"more than {MAX_WORD_CHARS}; put spaces between words, or spell out what is "
                          "to be said", field=field)
    return text


def _check_name(value: Any, field: str, what: str) -> None:
    if not isinstance(value, str):
        raise ScriptError("bad_type", f"{what} must be a string, got {type(value).__name__}", field=field)
    if not _NAME_RE.fullmatch(value):
        raise ScriptError("bad_id", f"{what} {value!r} must be 1-32 characters of A-Z a-z 0-9 _ -",
                          field=field)


def _as_tuple(value: Any, field: str) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ScriptError("bad_type", f"must be a list, got {type(value).__name__}", field=field)
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class SpeakerSpec:
    """How one speaker sounds: an espeak-ng voice name, pitch 0-99 and rate in words per minute;
    ``role`` is "user", "model" or None; ``language`` is the language this speaker speaks when it
    is not the dialogue's (an interpreter rendering the other speaker), None otherwise."""

    voice: str = "en-us"
    pitch: int = 50
    rate: int = 175
    role: str | None = None
    language: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.voice, str):
            raise ScriptError("bad_type", f"must be a string, got {type(self.voice).__name__}", field="voice")
        if not _VOICE_RE.fullmatch(self.voice):
            raise ScriptError("bad_voice", f"{self.voice!r} is not shaped like an espeak-ng voice name "
                              "(e.g. 'en-us', 'en-gb-scotland', 'en-us+f3')", field="voice")
        for name, (lo, hi) in (("pitch", PITCH_RANGE), ("rate", RATE_RANGE)):
            value = getattr(self, name)
            if not _is_int(value):
                raise ScriptError("bad_type", f"must be an integer, got {value!r}", field=name)
            if not lo <= value <= hi:
                raise ScriptError("bad_voice", f"{value} is outside espeak-ng's range {lo}..{hi}", field=name)
            object.__setattr__(self, name, int(value))
        if self.role is not None and self.role not in ROLES:
            raise ScriptError("bad_role", f"{self.role!r} is not a role; use one of {ROLES} or omit it",
                              field="role")
        if self.language is not None and (not isinstance(self.language, str) or not _LANG_RE.fullmatch(self.language)):
            raise ScriptError("bad_language", f"{self.language!r} is not a BCP-47-like language tag "
                              "(e.g. 'fr', 'de'); omit it for the dialogue's language", field="language")

    def to_dict(self) -> dict:
        """Canonical JSON object (sorted keys, role and language left out when None)."""
        out: dict[str, Any] = {"pitch": self.pitch, "rate": self.rate, "voice": self.voice}
        if self.role is not None:
            out["role"] = self.role
        if self.language is not None:
            out["language"] = self.language
        return dict(sorted(out.items()))


@dataclass(frozen=True, kw_only=True)
class TimedSpec:
    """What a timed request asks for: ``responder`` says ``responses[i]`` at ``targets_ms[i]`` ms
    after the end of the request turn (strictly increasing, 1 ms to 10 minutes)."""

    targets_ms: tuple[int, ...]
    responses: tuple[str, ...]
    responder: str

    def __post_init__(self) -> None:
        targets = _as_tuple(self.targets_ms, "targets_ms")
        responses = _as_tuple(self.responses, "responses")
        if not targets:
            raise ScriptError("bad_timing", "needs at least one target time", field="targets_ms")
        if len(targets) > MAX_TARGETS:
            raise ScriptError("bad_timing", f"has {len(targets)} targets, more than {MAX_TARGETS}; "
                              "split the request", field="targets_ms")
        for i, t in enumerate(targets):
            if not _is_int(t):
                raise ScriptError("bad_type", f"must be integer milliseconds, got {t!r}",
                                  field=f"targets_ms[{i}]")
            if not 0 < t <= MAX_TARGET_MS:
                raise ScriptError("bad_timing", f"{t} ms is outside 1..{MAX_TARGET_MS} (10 minutes after "
                                  "the request ends)", field=f"targets_ms[{i}]")
            if i and t <= targets[i - 1]:
                raise ScriptError("bad_timing", f"{t} ms does not come after {targets[i - 1]} ms; targets "
                                  "must be strictly increasing", field=f"targets_ms[{i}]")
        if len(responses) != len(targets):
            raise ScriptError("bad_timing", f"{len(responses)} responses for {len(targets)} targets; give "
                              "one response per target", field="responses")
        responses = tuple(_norm_text(r, f"responses[{i}]") for i, r in enumerate(responses))
        _check_name(self.responder, "responder", "responder")
        object.__setattr__(self, "targets_ms", tuple(int(t) for t in targets))
        object.__setattr__(self, "responses", responses)


def _check_ms(value: Any, field: str, lo: int, hi: int, what: str) -> int:
    if not _is_int(value):
        raise ScriptError("bad_type", f"must be integer milliseconds, got {value!r}", field=field)
    if not lo <= value <= hi:
        raise ScriptError("bad_timing", f"{value} ms is outside {lo}..{hi} ({what})", field=field)
    return int(value)


@dataclass(frozen=True, kw_only=True)
class CueSpec:
    """One thing a visual request watches for (vocabularies in :mod:`microturn.schemas.visual`).

    ``after_ms`` is when it happens on screen, counted from the END of the request turn (for
    ``repeat``: when the first repetition starts); ``responses`` is what the responder says at
    it: one answer, or for ``repeat`` either one answer after the last repetition or one per
    repetition (counting aloud). ``to_colour`` belongs to ``colour`` cues, ``text`` (what is shown,
    upper case) to ``text`` cues, ``count`` and ``period_ms`` (a multiple of the 100 ms frame
    time of 10 fps video) to ``repeat`` cues; the others take ``shape`` and ``colour``.
    """

    kind: str
    after_ms: int
    responses: tuple[str, ...]
    shape: str | None = None
    colour: str | None = None
    to_colour: str | None = None
    text: str | None = None
    count: int | None = None
    period_ms: int | None = None

    def __post_init__(self) -> None:
        from microturn.schemas import visual

        if self.kind == "text":
            for name in ("shape", "colour"):
                if getattr(self, name) is not None:
                    raise ScriptError("bad_timing", f"a 'text' cue shows words, not a shape: remove {name!r}",
                                      field=name)
        else:  # an object cue names its object, or takes the default red circle
            object.__setattr__(self, "shape", "circle" if self.shape is None else self.shape)
            object.__setattr__(self, "colour", "red" if self.colour is None else self.colour)
        if self.kind not in visual.CUE_KINDS:
            raise ScriptError("bad_act", f"{self.kind!r} is not a cue kind; use one of {visual.CUE_KINDS}",
                              field="kind")
        object.__setattr__(self, "after_ms", _check_ms(self.after_ms, "after_ms", 1, MAX_TARGET_MS,
                                                       "10 minutes after the request ends"))
        if self.kind != "text" and self.shape not in visual.SHAPES:
            raise ScriptError("bad_act", f"{self.shape!r} is not a shape; use one of {visual.SHAPES}", field="shape")
        for name in ("colour", "to_colour"):
            value = getattr(self, name)
            if (value is not None or (name == "colour" and self.kind != "text")) and value not in visual.COLOURS:
                raise ScriptError("bad_act", f"{value!r} is not a colour; use one of {visual.COLOURS}", field=name)
        own = _CUE_OWN.get(self.kind, ())
        for name in ("to_colour", "text", "count", "period_ms"):
            given = getattr(self, name) is not None
            if given and name not in own:
                owner = "/".join(k for k, v in _CUE_OWN.items() if name in v)
                raise ScriptError("bad_timing", f"{name!r} belongs to a {owner} cue, not a {self.kind!r} cue; "
                                  "remove it", field=name)
            if not given and name in own:
                raise ScriptError("missing_field", f"a {self.kind!r} cue needs {name!r}", field=name)
        if self.kind == "colour" and self.to_colour == self.colour:
            raise ScriptError("bad_timing", f"to_colour is the colour it already has ({self.colour!r}); name another",
                              field="to_colour")
        if self.text is not None:
            text = _norm_text(self.text, "text")
            bad = sorted(set(text) - visual.SCREEN_TEXT_CHARS)
            if bad or len(text) > visual.MAX_SCREEN_TEXT:
                raise ScriptError("bad_text", f"screen text {text!r} must be at most {visual.MAX_SCREEN_TEXT} "
                                  f"upper-case letters, digits, spaces and .,!?:-' ({bad or 'too long'})",
                                  field="text")
            object.__setattr__(self, "text", text)
        if self.count is not None:
            if not _is_int(self.count) or not 1 <= self.count <= visual.MAX_COUNT:
                raise ScriptError("bad_timing", f"count must be an integer in 1..{visual.MAX_COUNT}, got "
                                  f"{self.count!r}", field="count")
            object.__setattr__(self, "count", int(self.count))
        if self.period_ms is not None:
            lo, hi = visual.PERIOD_MS
            period = _check_ms(self.period_ms, "period_ms", lo, hi, "one repetition")
            if period % 100:
                raise ScriptError("bad_timing", f"period_ms {period} is not a multiple of 100 ms, the frame time of "
                                  "10 fps video; round it", field="period_ms")
            object.__setattr__(self, "period_ms", period)
        responses = _as_tuple(self.responses, "responses")
        allowed = {1, self.count} if self.kind == "repeat" and self.count is not None else {1}
        if len(responses) not in allowed:
            raise ScriptError("bad_timing", f"{len(responses)} responses; a {self.kind!r} cue takes "
                              f"{' or '.join(str(n) for n in sorted(allowed))}", field="responses")
        responses = tuple(_norm_text(r, f"responses[{i}]") for i, r in enumerate(responses))
        object.__setattr__(self, "responses", responses)

    def to_dict(self) -> dict:
        """Canonical JSON object (sorted keys, unset fields left out)."""
        out: dict[str, Any] = {"after_ms": self.after_ms, "kind": self.kind, "responses": list(self.responses)}
        if self.kind != "text":
            out.update(shape=self.shape, colour=self.colour)
        for name in ("to_colour", "text", "count", "period_ms"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return dict(sorted(out.items()))


_CUE_OWN = {"colour": ("to_colour",), "text": ("text",), "repeat": ("count", "period_ms")}


@dataclass(frozen=True, kw_only=True)
class VisualSpec:
    """What a visual request asks for: ``responder`` reacts to each of ``cues`` (1-16, their
    ``after_ms`` strictly increasing) when it shows on screen, with no cue from the requester."""

    cues: tuple[CueSpec, ...]
    responder: str

    def __post_init__(self) -> None:
        cues = _as_tuple(self.cues, "cues")
        if not 1 <= len(cues) <= MAX_CUES:
            raise ScriptError("bad_timing", f"{len(cues)} cues; a visual request watches for 1..{MAX_CUES}",
                              field="cues")
        for i, cue in enumerate(cues):
            if not isinstance(cue, CueSpec):
                raise ScriptError("bad_type", f"must be a CueSpec, got {type(cue).__name__}", field=f"cues[{i}]")
            if i and cue.after_ms <= cues[i - 1].after_ms:
                raise ScriptError("bad_timing", f"{cue.after_ms} ms does not come after {cues[i - 1].after_ms} ms; "
                                  "cues must be in time order", field=f"cues[{i}].after_ms")
        _check_name(self.responder, "responder", "responder")
        object.__setattr__(self, "cues", cues)


@dataclass(frozen=True, kw_only=True)
class BackgroundSpec:
    """A delegation: the speaker hands work to a background model; its ``result`` (text on the
    background stream) arrives ``after_ms`` after the END of the delegation turn, and the speaker
    brings it up by saying ``mention`` when the user has yielded."""

    result: str
    mention: str
    after_ms: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", _norm_text(self.result, "result"))
        object.__setattr__(self, "mention", _norm_text(self.mention, "mention"))
        object.__setattr__(self, "after_ms", _check_ms(self.after_ms, "after_ms", 1, MAX_TARGET_MS,
                                                       "10 minutes after the delegation ends"))


@dataclass(frozen=True, kw_only=True)
class TurnSpec:
    """One turn: who speaks, what, and which act it is (one of :data:`ACTS`). The act's own part
    is set exactly for its act: ``timed`` for "timed_request", ``visual`` for "visual_request",
    ``background`` for "delegation"; ``lag_ms`` (optional) for "simultaneous", a turn that renders
    the previous turn of another speaker while it is spoken, trailing it by ``lag_ms`` (drawn
    from 1-3 s by the layout when None)."""

    speaker: str
    text: str
    act: str = "statement"
    timed: TimedSpec | None = None
    visual: VisualSpec | None = None
    background: BackgroundSpec | None = None
    lag_ms: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.speaker, "speaker", "speaker name")
        object.__setattr__(self, "text", _norm_text(self.text, "text"))
        if self.act not in ACTS:
            raise ScriptError("bad_act", f"{self.act!r} is not an act; use one of {ACTS}", field="act")
        parts = (("timed", "timed_request", TimedSpec, "targets_ms and responses"),
                 ("visual", "visual_request", VisualSpec, "cues"),
                 ("background", "delegation", BackgroundSpec, "result, mention and after_ms"))
        for name, act, kind, needs in parts:
            value = getattr(self, name)
            if self.act == act:
                if value is None:
                    raise ScriptError("missing_field", f"a {act} turn needs {needs}",
                                      field=needs.split(",")[0].split()[0])
                if not isinstance(value, kind):
                    raise ScriptError("bad_type", f"must be a {kind.__name__}, got {type(value).__name__}", field=name)
            elif value is not None:
                raise ScriptError("bad_timing", f"{needs} are only allowed when act is {act!r} (act is {self.act!r})",
                                  field=needs.split(",")[0].split()[0])
        if self.responder == self.speaker:
            raise ScriptError("bad_timing", f"the responder {self.speaker!r} is the speaker who makes "
                              "the request; name another speaker", field="responder")
        if self.lag_ms is not None:
            if self.act != "simultaneous":
                raise ScriptError("bad_timing", f"lag_ms is only allowed when act is 'simultaneous' (act is "
                                  f"{self.act!r})", field="lag_ms")
            object.__setattr__(self, "lag_ms", _check_ms(self.lag_ms, "lag_ms", *LAG_RANGE_MS,
                                                         "behind the turn it renders"))

    @property
    def responder(self) -> str | None:
        """Who answers a timed or visual request; None for other acts."""
        spec = self.timed or self.visual
        return spec.responder if spec is not None else None

    def spoken_chars(self) -> int:
        """Characters of speech this turn makes anyone say (responses and mentions included)."""
        n = len(self.text)
        if self.timed is not None:
            n += sum(map(len, self.timed.responses))
        if self.visual is not None:
            n += sum(len(r) for cue in self.visual.cues for r in cue.responses)
        if self.background is not None:
            n += len(self.background.mention)
        return n

    def to_dict(self) -> dict:
        """Canonical JSON object: sorted keys, the act's fields flat on the turn."""
        out: dict[str, Any] = {"act": self.act, "speaker": self.speaker, "text": self.text}
        if self.timed is not None:
            out["responder"] = self.timed.responder
            out["responses"] = list(self.timed.responses)
            out["targets_ms"] = list(self.timed.targets_ms)
        if self.visual is not None:
            out["responder"] = self.visual.responder
            out["cues"] = [c.to_dict() for c in self.visual.cues]
        if self.background is not None:
            out.update(result=self.background.result, mention=self.background.mention,
                       after_ms=self.background.after_ms)
        if self.lag_ms is not None:
            out["lag_ms"] = self.lag_ms
        return dict(sorted(out.items()))


def _check_scene(turns: tuple[TurnSpec, ...]) -> None:
    """All visual requests of a dialogue share one scene: each cue's object must be one a viewer
    can tell apart from every other cue's (its own shape and colour, the colour it turns to
    included), or the answers would be ambiguous."""
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    for i, turn in enumerate(turns):
        for k, cue in enumerate(turn.visual.cues if turn.visual else ()):
            if cue.kind == "text" or cue.shape is None or cue.colour is None:
                continue  # words on screen, not an object (an object cue always has both set)
            for pair in {(cue.shape, cue.colour), (cue.shape, cue.to_colour or cue.colour)}:
                if pair in seen:
                    j, m = seen[pair]
                    raise ScriptError("bad_act", f"shows a {pair[1]} {pair[0]}, as turns[{j}].cues[{m}] does: a "
                                      "viewer could not tell which one is meant; give each cue's object its own "
                                      "shape and colour", turn=i, field=f"cues[{k}]")
                seen[pair] = (i, k)


@dataclass(frozen=True, kw_only=True)
class Dialogue:
    """A validated dialogue script. ``speakers`` keeps the order of the script (a mapping or a
    sequence of (name, SpeakerSpec) pairs is accepted and stored as a tuple of pairs)."""

    id: str
    speakers: tuple[tuple[str, SpeakerSpec], ...]
    turns: tuple[TurnSpec, ...]
    language: str = "en"
    license: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise ScriptError("bad_type", f"must be a string, got {type(self.id).__name__}", field="id")
        if not _ID_RE.fullmatch(self.id):
            raise ScriptError("bad_id", f"{self.id!r} must be 1-128 characters of A-Z a-z 0-9 . _ -",
                              field="id")
        did = self.id
        try:
            self._check(did)
        except ScriptError as exc:
            raise exc.located(dialogue_id=did) from None

    def _check(self, did: str) -> None:
        speakers = self.speakers.items() if isinstance(self.speakers, Mapping) else self.speakers
        speakers = _as_tuple(speakers, "speakers")
        names: list[str] = []
        speakers = tuple(tuple(p) if isinstance(p, list) else p for p in speakers)
        for pair in speakers:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], SpeakerSpec)):
                raise ScriptError("bad_type", "must hold (name, SpeakerSpec) pairs", field="speakers")
            _check_name(pair[0], f"speakers.{pair[0]}", "speaker name")
            if pair[0] in names:
                raise ScriptError("bad_id", f"speaker {pair[0]!r} is declared twice", field="speakers")
            names.append(pair[0])
        if len(names) < MIN_SPEAKERS:
            raise ScriptError("too_few_speakers", f"{len(names)} speaker(s) declared; a dialogue needs at "
                              f"least {MIN_SPEAKERS}", field="speakers")
        if len(names) > MAX_SPEAKERS:
            raise ScriptError("too_many_speakers", f"{len(names)} speakers declared; at most {MAX_SPEAKERS}",
                              field="speakers")
        models = [n for n, s in speakers if s.role == "model"]
        if len(models) > 1:
            raise ScriptError("bad_role", f"speakers {models} all have role 'model'; at most one speaker "
                              "is the model", field="speakers")
        object.__setattr__(self, "speakers", speakers)

        turns = _as_tuple(self.turns, "turns")
        if not turns:
            raise ScriptError("missing_field", "is empty; a dialogue needs at least one turn", field="turns")
        if len(turns) > MAX_TURNS:
            raise ScriptError("too_many_turns", f"{len(turns)} turns, more than {MAX_TURNS}; split the "
                              "dialogue", field="turns")
        for i, turn in enumerate(turns):
            if not isinstance(turn, TurnSpec):
                raise ScriptError("bad_type", f"must be a TurnSpec, got {type(turn).__name__}", turn=i)
            if turn.speaker not in names:
                raise ScriptError("unknown_speaker", f"{turn.speaker!r} is not declared in speakers {names}",
                                  turn=i, field="speaker")
            if turn.responder is not None and turn.responder not in names:
                raise ScriptError("unknown_speaker", f"{turn.responder!r} is not declared in speakers "
                                  f"{names}", turn=i, field="responder")
            if turn.act in ("backchannel", "interruption", "simultaneous"):
                if i == 0:
                    raise ScriptError("bad_act", f"a dialogue cannot open with act {turn.act!r}",
                                      turn=i, field="act")
                if turns[i - 1].speaker == turn.speaker:
                    raise ScriptError("bad_act", f"act {turn.act!r} must follow a turn by another speaker, "
                                      f"but turns[{i - 1}] is also {turn.speaker!r}", turn=i, field="act")
        _check_scene(turns)
        spoken = sum(t.spoken_chars() for t in turns)
        if spoken > MAX_DIALOGUE_CHARS:
            raise ScriptError("text_too_long", f"{spoken} characters of speech in all, more than "
                              f"{MAX_DIALOGUE_CHARS} (about 20 minutes); split the dialogue", field="turns")
        object.__setattr__(self, "turns", turns)

        if not isinstance(self.language, str) or not _LANG_RE.fullmatch(self.language):
            raise ScriptError("bad_language", f"{self.language!r} is not a BCP-47-like language tag "
                              "(e.g. 'en', 'en-GB')", field="language")
        if self.license is not None:
            if not isinstance(self.license, str):
                raise ScriptError("bad_type", f"must be a string, got {type(self.license).__name__}",
                                  field="license")
            lic = " ".join(self.license.split())
            bad = refused_char(lic)
            if bad is not None:
                raise ScriptError("bad_text", f"holds {describe_char(bad[1])}; give an SPDX expression "
                                  "such as 'Apache-2.0'", field="license")
            if not lic or len(lic) > MAX_LICENSE_CHARS:
                raise ScriptError("bad_type", f"must be a non-empty SPDX expression of at most "
                                  f"{MAX_LICENSE_CHARS} characters (e.g. 'Apache-2.0'), or omitted",
                                  field="license")
            object.__setattr__(self, "license", lic)

    @property
    def speaker_names(self) -> tuple[str, ...]:
        """Speaker names in script order."""
        return tuple(name for name, _ in self.speakers)

    def speaker(self, name: str) -> SpeakerSpec:
        """The spec of speaker ``name``; ``ValueError`` naming the known speakers otherwise."""
        for n, spec in self.speakers:
            if n == name:
                return spec
        raise ValueError(f"dialogue {self.id!r} has no speaker {name!r}; "
                         f"speakers are {list(self.speaker_names)}")

    def to_dict(self) -> dict:
        """Canonical JSON object: every object's keys sorted, except the speaker names, which keep
        the script order (it is part of the dialogue); defaults written out, None left out."""
        out: dict[str, Any] = {
            "id": self.id,
            "language": self.language,
            "speakers": {name: spec.to_dict() for name, spec in self.speakers},
            "turns": [t.to_dict() for t in self.turns],
        }
        if self.license is not None:
            out["license"] = self.license
        return dict(sorted(out.items()))

    def to_json(self) -> str:
        """Canonical one-line JSON (compact separators, UTF-8 text kept as is);
        ``parse_dialogue(d.to_json()) == d``."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def sha256(self) -> str:
        """SHA-256 (hex) of the UTF-8 canonical JSON."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # json.loads would silently keep the last value, hiding e.g. a speaker declared twice.
            raise ScriptError("invalid_json", f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ScriptError("invalid_json", f"{name} is not valid JSON")


def _check_keys(obj: dict, allowed: tuple[str, ...], required: tuple[str, ...], where: str,
                prefix: str | None = None) -> None:
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            field = f"{prefix}.{key}" if prefix else str(key)
            raise ScriptError("unknown_field", f"unknown key {key!r} in {where}; allowed keys are "
                              f"{list(allowed)}{hint}", field=field)
    for key in required:
        if key not in obj:
            field = f"{prefix}.{key}" if prefix else key
            raise ScriptError("missing_field", f"{where} needs {key!r}", field=field)


def _default_responder(obj: dict, names: list[str]) -> str:
    responder = obj.get("responder")
    if responder is not None:
        return responder
    speaker = obj["speaker"]
    if speaker in names and len(names) == 2:
        return names[1 - names.index(speaker)]
    if speaker in names:
        raise ScriptError("missing_field", f"with {len(names)} speakers, say who answers: add 'responder'",
                          field="responder")
    raise ScriptError("unknown_speaker", f"{speaker!r} is not declared in speakers {names}", field="speaker")


def _parse_cue(obj: Any) -> CueSpec:
    if not isinstance(obj, dict):
        raise ScriptError("bad_type", f"a cue must be an object, got {type(obj).__name__}")
    _check_keys(obj, _CUE_KEYS, ("kind", "after_ms", "responses"), "a cue")
    if not isinstance(obj["responses"], list):
        raise ScriptError("bad_type", "must be a list", field="responses")
    return CueSpec(**obj)


def _parse_turn(obj: Any, names: list[str]) -> TurnSpec:
    if not isinstance(obj, dict):
        raise ScriptError("bad_type", f"a turn must be an object, got {type(obj).__name__}")
    _check_keys(obj, _TURN_KEYS, ("speaker", "text"), "a turn")
    act = obj.get("act", "statement")
    own = _ACT_KEYS.get(act, ())
    stray = [k for keys in _ACT_KEYS.values() for k in keys if k in obj and k not in own]
    if stray:
        owners = [a for a, keys in _ACT_KEYS.items() if stray[0] in keys]
        raise ScriptError("bad_timing", f"{stray[0]!r} only belongs on a turn with \"act\" "
                          f"{' or '.join(map(repr, owners))}; set the act or remove it", field=stray[0])
    kwargs: dict[str, Any] = {}
    if act == "timed_request":
        for key in ("targets_ms", "responses"):
            if key not in obj:
                raise ScriptError("missing_field", f"a timed_request turn needs {key!r}", field=key)
            if not isinstance(obj[key], list):
                raise ScriptError("bad_type", "must be a list", field=key)
        kwargs["timed"] = TimedSpec(targets_ms=obj["targets_ms"], responses=obj["responses"],
                                    responder=_default_responder(obj, names))
    elif act == "visual_request":
        if "cues" not in obj:
            raise ScriptError("missing_field", "a visual_request turn needs 'cues'", field="cues")
        if not isinstance(obj["cues"], list):
            raise ScriptError("bad_type", "must be a list of cue objects", field="cues")
        cues = []
        for i, cue in enumerate(obj["cues"]):
            try:
                cues.append(_parse_cue(cue))
            except ScriptError as exc:
                raise exc.located(field_prefix=f"cues[{i}]") from None
        kwargs["visual"] = VisualSpec(cues=tuple(cues), responder=_default_responder(obj, names))
    elif act == "delegation":
        for key in ("result", "mention", "after_ms"):
            if key not in obj:
                raise ScriptError("missing_field", f"a delegation turn needs {key!r}", field=key)
        kwargs["background"] = BackgroundSpec(result=obj["result"], mention=obj["mention"], after_ms=obj["after_ms"])
    elif act == "simultaneous" and "lag_ms" in obj:
        kwargs["lag_ms"] = obj["lag_ms"]
    return TurnSpec(speaker=obj["speaker"], text=obj["text"], act=act, **kwargs)


def parse_dialogue(line: str | bytes | Mapping) -> Dialogue:
    """Parse and validate one dialogue (a JSON line, its UTF-8 bytes, or an already decoded
    object); raises :class:`ScriptError` saying what is wrong, where, and how to fix it."""
    if isinstance(line, (bytes, bytearray)):
        try:
            line = bytes(line).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScriptError("invalid_json", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if isinstance(line, str):
        try:
            obj = json.loads(line, object_pairs_hook=_object_pairs, parse_constant=_reject_constant)
        except ScriptError:
            raise
        except json.JSONDecodeError as exc:
            raise ScriptError("invalid_json", f"{exc.msg} at column {exc.colno}; each line must hold "
                              "one complete JSON object") from None
        except ValueError:  # CPython refuses to parse an integer of more than 4300 digits
            raise ScriptError("invalid_json", "holds a number of more than 4300 digits; no value of a "
                              "dialogue is that long") from None
        except RecursionError:
            raise ScriptError("invalid_json", "nested too deeply to be a dialogue") from None
    elif isinstance(line, Mapping):
        obj = dict(line)
    else:
        raise TypeError(f"parse_dialogue takes a str, bytes or dict, got {type(line).__name__}")
    if not isinstance(obj, dict):
        raise ScriptError("not_an_object", f"a dialogue is a JSON object, got {type(obj).__name__}")
    did = obj.get("id") if isinstance(obj.get("id"), str) else None
    try:
        return _build(obj)
    except ScriptError as exc:
        raise exc.located(dialogue_id=did) from None


def _build(obj: dict) -> Dialogue:
    _check_keys(obj, _DIALOGUE_KEYS, ("id", "speakers", "turns"), "a dialogue")
    raw_speakers, raw_turns = obj["speakers"], obj["turns"]
    if not isinstance(raw_speakers, dict):
        raise ScriptError("bad_type", "must be an object mapping speaker names to voice settings, e.g. "
                          '{"A": {"voice": "en-us"}, "B": {}}', field="speakers")
    if not isinstance(raw_turns, list):
        raise ScriptError("bad_type", "must be a list of turn objects", field="turns")
    if len(raw_turns) > MAX_TURNS:  # before building anything from an oversized line
        raise ScriptError("too_many_turns", f"{len(raw_turns)} turns, more than {MAX_TURNS}; split the "
                          "dialogue", field="turns")
    speakers = []
    for name, spec in raw_speakers.items():
        prefix = f"speakers.{name}"
        if not isinstance(spec, dict):
            raise ScriptError("bad_type", "voice settings must be an object (possibly empty {})",
                              field=prefix)
        _check_keys(spec, _SPEAKER_KEYS, (), "a speaker", prefix=prefix)
        try:
            speakers.append((name, SpeakerSpec(**spec)))
        except ScriptError as exc:
            raise exc.located(field_prefix=prefix) from None
    names = list(raw_speakers)
    turns = []
    for i, raw in enumerate(raw_turns):
        try:
            turns.append(_parse_turn(raw, names))
        except ScriptError as exc:
            raise exc.located(turn=i) from None
    kwargs = {k: obj[k] for k in ("language", "license") if k in obj}
    return Dialogue(id=obj["id"], speakers=tuple(speakers), turns=tuple(turns), **kwargs)


def too_long_line(number: int | None = None) -> ScriptError:
    """The error of a line longer than :data:`MAX_LINE_BYTES`."""
    return ScriptError("line_too_long", f"the line is longer than {MAX_LINE_BYTES} bytes, far more than "
                       f"a dialogue of {MAX_TURNS} turns holds; split it", line=number)


def read_dialogues(path_or_lines: str | os.PathLike | Iterable[str | bytes]
                   ) -> Iterator[tuple[int, Dialogue | ScriptError]]:
    """Yield ``(line_number, Dialogue or ScriptError)`` for each non-blank line of a JSONL file
    (a path) or of an iterable of lines, numbered from 1. A bad line yields its error and reading
    goes on; a repeated id is an error (``bad_id``) on the later line."""
    if isinstance(path_or_lines, (str, os.PathLike)):
        yield from _read_lines(_file_lines(path_or_lines))
    else:
        yield from _read_lines(path_or_lines)


def bounded_lines(stream, limit: int = MAX_LINE_BYTES, chunk: int = 1 << 16) -> Iterator[bytes | None]:
    """The lines of a binary ``stream`` (anything with ``read(n)``, such as Beam's compressed
    files, whose ``readline`` takes no size), each as bytes with its line end, or None for a line
    longer than ``limit`` bytes, which is skipped without holding more than ``limit + chunk``
    bytes of it. Line numbers stay those of the file."""
    buf = bytearray()
    skipping = False  # inside a line already reported as too long
    while True:
        data = stream.read(chunk)
        if not data:
            break
        buf += data
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            line = bytes(buf[start:end + 1])
            start = end + 1
            if skipping:
                skipping = False
                yield None
            else:
                yield line if len(line) <= limit else None
        del buf[:start]
        if len(buf) > limit:
            skipping = True
            buf.clear()
    if skipping:
        yield None
    elif buf:
        yield bytes(buf) if len(buf) <= limit else None


def _file_lines(path: str | os.PathLike) -> Iterator[bytes | None]:
    # Bytes, so that one badly encoded line is one error rather than the end of the file.
    with open(path, "rb") as f:
        yield from bounded_lines(f)


def _read_lines(lines: Iterable[str | bytes | None]) -> Iterator[tuple[int, Dialogue | ScriptError]]:
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if line is None or len(line) > MAX_LINE_BYTES:
            yield number, too_long_line(number)
            continue
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf") if isinstance(line, bytes) else line.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            dialogue = parse_dialogue(line)
        except ScriptError as exc:
            yield number, exc.located(line=number)
            continue
        if dialogue.id in seen:
            yield number, ScriptError("bad_id", f"id already used on line {seen[dialogue.id]}; ids must be "
                                      "unique", line=number, dialogue_id=dialogue.id, field="id")
            continue
        seen[dialogue.id] = number
        yield number, dialogue


__all__ = [
    "ACTS", "MAX_DIALOGUE_CHARS", "MAX_LINE_BYTES", "MAX_TEXT_CHARS", "MAX_TURNS", "MAX_WORD_CHARS",
    "REASONS", "ROLES", "BackgroundSpec", "CueSpec", "Dialogue", "ScriptError", "SpeakerSpec", "TimedSpec", "TurnSpec",
    "VisualSpec", "bounded_lines",
    "parse_dialogue", "read_dialogues",
]
