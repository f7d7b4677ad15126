"""The text of the template generator: read from ``synth/data/templates.toml`` and checked.

The generator (:mod:`microturn.synth.templates`) keeps its numbers, probabilities and voices in
code; the words it puts into dialogues (slot vocabularies, template exchanges, time-aware
requests and responses) live in the data file beside the bundled dialogues, so that they can be
read and extended without reading code. :func:`parse_template_text` checks a file completely,
so a broken one fails when it is loaded, with its name, the key and what is wrong, not halfway
through a generation run: every key is required and no other is allowed, lists are non-empty,
texts are non-empty strings, slot vocabularies hold no repeats, a turn is
``[speaker, text]`` or ``[speaker, text, act]`` with speaker ``"X"`` or ``"Y"`` and a plain
act, and every ``{field}`` of a text is one that the generator fills for that list (and, where
a list needs one, a text names the fields it must: a visual request names its object's
``{colour}`` and ``{shape}``).

The sections of the three newer kinds follow the same rules:

- visual requests and responses, one list per cue kind, and ``screen_texts``: pairs
  ``[SCREEN TEXT, as said]`` whose screen text the scene's font can draw
  (:data:`microturn.schemas.visual.SCREEN_TEXT_CHARS`, at most ``MAX_SCREEN_TEXT`` characters);
- ``background_topics``: tables of exactly ``requests`` (what the user asks), ``result`` (the
  text the background model returns, which may hold digits: ``{open_d}``) and ``mentions`` (how
  the model says it, numbers spelled: ``{open}``);
- ``passages``: tables of exactly ``source`` (English) and one rendering per language of
  :data:`RENDER_LANGUAGES`, each of 2-4 sentences, the renderings with as many sentences as the
  source (the layout aligns sentence k of the rendering to sentence k of the source; see
  :func:`sentences`).

Array-free module: no shape suffixes needed.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import string
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, fields

from microturn.schemas.dialogue import ACTS
from microturn.schemas.visual import MAX_SCREEN_TEXT, SCREEN_TEXT_CHARS

__all__ = ["PASSAGE_SENTENCES", "RENDER_LANGUAGES", "TEMPLATE_FILE", "BackgroundTopic", "Passage", "TemplateText",
           "bundled_template_text", "parse_template_text", "sentences"]

TEMPLATE_FILE = "templates.toml"

Turn = tuple[str, ...]  # (speaker, text) or (speaker, text, act)
Exchange = tuple[Turn, ...]

# Fields the generator fills, per kind of text (see microturn.synth.templates).
_SLOTS = frozenset({"name", "name2", "place", "place2", "day", "dish", "time", "party", "count",
                    "Count", "few", "minutes"})
_SECONDS = frozenset({"n", "N"})
_NO_FIELDS: frozenset[str] = frozenset()
# Acts with parts the generator builds (targets, cues, a result, a rendering of the turn before);
# a template exchange cannot state them.
_TEMPLATE_ACTS = tuple(a for a in ACTS if a not in ("timed_request", "visual_request", "delegation", "simultaneous"))
# Visual cues: the object of a cue is named by colour and shape; a colour cue also by the colour
# it turns to; a counted repeat says the count; a text cue reads what the screen says ({text} as
# said, {Text} capitalised); a later cue's request is joined to the first by a connector.
_OBJECT = frozenset({"colour", "shape"})
_COUNTED = _OBJECT | {"count", "Count"}
_READ = frozenset({"text", "Text"})
_JOINED = frozenset({"request", "Request"})
_FOUND = frozenset({"found", "Found"})
# Background topics: the words the generator fills, numbers spelled ({sum}: "forty-two"); a
# result may also hold their digits ({sum_d}: "42"), a flight code and an exchange rate, which
# a TTS never has to say (the result is text on the background stream, not speech).
_BG_WORDS = frozenset({"name", "place", "place2", "day", "venue", "weather", "dish"})
_BG_NUMBERS = frozenset({"open", "close", "time", "time2", "sunset", "a", "b", "sum", "x", "y", "product",
                         "grams", "amount", "converted", "temp", "delay", "km", "platform", "people", "each",
                         "total", "percent", "bill", "tip", "miles", "miles_km", "route", "gate", "price", "walk"})
_BG_SPOKEN = _BG_WORDS | _BG_NUMBERS
_BG_RESULT = _BG_SPOKEN | {f"{n}_d" for n in _BG_NUMBERS} | {"flight_d", "rate_d"}
_TOPIC_KEYS = ("requests", "result", "mentions")
# Simultaneous passages: the languages a rendering is written in (espeak-ng speaks all three),
# and how many sentences a source holds: one is no lag to learn, five a monologue.
RENDER_LANGUAGES = ("fr", "es", "de")
PASSAGE_SENTENCES = (2, 4)
# Tokens ending in "." that end no sentence (microturn.synth.layout reads them so too).
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "e.g.", "i.e."})


@dataclass(frozen=True, kw_only=True)
class BackgroundTopic:
    """Something the user asks the model to look up: ``requests`` (what the user says; one is
    picked), ``result`` (the background text that comes back) and ``mentions`` (what the model
    says when it brings the result up; one is picked), all filled from the same slots."""

    requests: tuple[str, ...]
    result: str
    mentions: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Passage:
    """An English ``source`` passage and its ``renderings`` ((language, text) pairs in the order
    of :data:`RENDER_LANGUAGES`), each of the same number of sentences."""

    source: str
    renderings: tuple[tuple[str, str], ...]

    def rendering(self, language: str) -> str:
        """The rendering in ``language`` ("en": the source itself, for shadowing)."""
        if language == "en":
            return self.source
        for lang, text in self.renderings:
            if lang == language:
                return text
        raise ValueError(f"no rendering in {language!r}; the languages are en, {', '.join(RENDER_LANGUAGES)}")


@dataclass(frozen=True, kw_only=True)
class TemplateText:
    """Everything in ``templates.toml``, one field per key (the file's comments say what each is)."""

    backchannels: tuple[str, ...]
    interjections: tuple[str, ...]
    names: tuple[str, ...]
    places: tuple[str, ...]
    days: tuple[str, ...]
    dishes: tuple[str, ...]
    times: tuple[str, ...]
    party_sizes: tuple[str, ...]
    openers: tuple[Exchange, ...]
    closers: tuple[Exchange, ...]
    exchanges: tuple[Exchange, ...]
    when_requests: tuple[str, ...]
    when_responses: tuple[str, ...]
    count_step_requests: tuple[str, ...]
    count_to_requests: tuple[str, ...]
    remind_requests: tuple[str, ...]
    remind_responses: tuple[str, ...]
    tasks: tuple[tuple[str, str], ...]
    timed_preambles: tuple[Exchange, ...]
    timed_closings: tuple[Exchange, ...]
    visual_appear_requests: tuple[str, ...]
    visual_disappear_requests: tuple[str, ...]
    visual_colour_requests: tuple[str, ...]
    visual_move_requests: tuple[str, ...]
    visual_count_aloud_requests: tuple[str, ...]
    visual_count_total_requests: tuple[str, ...]
    visual_text_requests: tuple[str, ...]
    visual_connectors: tuple[str, ...]
    visual_appear_responses: tuple[str, ...]
    visual_disappear_responses: tuple[str, ...]
    visual_colour_responses: tuple[str, ...]
    visual_move_responses: tuple[str, ...]
    visual_count_total_responses: tuple[str, ...]
    visual_text_responses: tuple[str, ...]
    screen_texts: tuple[tuple[str, str], ...]
    venues: tuple[str, ...]
    weather: tuple[str, ...]
    delegations: tuple[str, ...]
    background_acks: tuple[str, ...]
    mention_openers: tuple[str, ...]
    background_topics: tuple[BackgroundTopic, ...]
    passages: tuple[Passage, ...]

    def visual_requests(self) -> tuple[str, ...]:
        """Every visual request template, of all six cue kinds."""
        return (self.visual_appear_requests + self.visual_disappear_requests + self.visual_colour_requests
                + self.visual_move_requests + self.visual_count_aloud_requests
                + self.visual_count_total_requests + self.visual_text_requests)


# Per key: how to read it (plain texts, a vocabulary without repeats, exchanges, task pairs,
# screen texts, background topics, passages) and which fields its texts may hold.
_TEXTS, _VOCABULARY, _EXCHANGES, _PAIRS = "texts", "vocabulary", "exchanges", "pairs"
_SCREEN, _TOPICS, _PASSAGES = "screen", "topics", "passages"
_KEYS: dict[str, tuple[str, frozenset[str]]] = {
    "backchannels": (_TEXTS, _NO_FIELDS),
    "interjections": (_TEXTS, _NO_FIELDS),
    "names": (_VOCABULARY, _NO_FIELDS),
    "places": (_VOCABULARY, _NO_FIELDS),
    "days": (_VOCABULARY, _NO_FIELDS),
    "dishes": (_VOCABULARY, _NO_FIELDS),
    "times": (_VOCABULARY, _NO_FIELDS),
    "party_sizes": (_VOCABULARY, _NO_FIELDS),
    "openers": (_EXCHANGES, _SLOTS),
    "closers": (_EXCHANGES, _SLOTS),
    "exchanges": (_EXCHANGES, _SLOTS),
    "when_requests": (_TEXTS, _SECONDS),
    "when_responses": (_TEXTS, _SECONDS),
    "count_step_requests": (_TEXTS, frozenset({"k", "top"})),
    "count_to_requests": (_TEXTS, frozenset({"k", "c"})),
    "remind_requests": (_TEXTS, _SECONDS | {"task"}),
    "remind_responses": (_TEXTS, _SECONDS | {"task", "Task"}),
    "tasks": (_PAIRS, _NO_FIELDS),
    "timed_preambles": (_EXCHANGES, _NO_FIELDS),
    "timed_closings": (_EXCHANGES, _NO_FIELDS),
    "visual_appear_requests": (_TEXTS, _OBJECT),
    "visual_disappear_requests": (_TEXTS, _OBJECT),
    "visual_colour_requests": (_TEXTS, _OBJECT | {"to_colour"}),
    "visual_move_requests": (_TEXTS, _OBJECT),
    "visual_count_aloud_requests": (_TEXTS, _OBJECT),
    "visual_count_total_requests": (_TEXTS, _OBJECT),
    "visual_text_requests": (_TEXTS, _NO_FIELDS),
    "visual_connectors": (_TEXTS, _JOINED),
    "visual_appear_responses": (_TEXTS, _OBJECT),
    "visual_disappear_responses": (_TEXTS, _OBJECT),
    "visual_colour_responses": (_TEXTS, _OBJECT | {"to_colour"}),
    "visual_move_responses": (_TEXTS, _OBJECT),
    "visual_count_total_responses": (_TEXTS, _COUNTED),
    "visual_text_responses": (_TEXTS, _READ),
    "screen_texts": (_SCREEN, _NO_FIELDS),
    "venues": (_VOCABULARY, _NO_FIELDS),
    "weather": (_VOCABULARY, _NO_FIELDS),
    "delegations": (_TEXTS, _NO_FIELDS),
    "background_acks": (_TEXTS, _NO_FIELDS),
    "mention_openers": (_TEXTS, _FOUND),
    "background_topics": (_TOPICS, _BG_SPOKEN),
    "passages": (_PASSAGES, _NO_FIELDS),
}
assert list(_KEYS) == [f.name for f in fields(TemplateText)], "every field has one reader"
# Fields a text of a key must hold: one of each group. A request that does not name its object
# asks about nothing the viewer can pick out (the scene shows distractors of other colours and
# shapes); a connector that drops the request, a count that does not say it, a reading that does
# not read, a mention that does not say what was found, are all broken.
_REQUIRED: dict[str, tuple[frozenset[str], ...]] = {
    **{f"visual_{kind}_requests": (frozenset({"colour"}), frozenset({"shape"}))
       for kind in ("appear", "disappear", "colour", "move", "count_aloud", "count_total")},
    "visual_connectors": (_JOINED,),
    "visual_count_total_responses": (frozenset({"count", "Count"}),),
    "visual_text_responses": (_READ,),
    "mention_openers": (_FOUND,),
}


def _text(value: object, where: str, allowed: Collection[str],
          required: tuple[frozenset[str], ...] = ()) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string, got {value!r}")
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as err:
        raise ValueError(f"{where} {value!r} has a stray brace ({err}); write {{{{ or }}}} for a "
                         "literal brace") from None
    used = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in allowed or spec or conversion:
            fields_ok = ", ".join("{" + f + "}" for f in sorted(allowed)) or "none"
            close = difflib.get_close_matches(field, sorted(allowed), n=1)
            hint = f"; did you mean {{{close[0]}}}?" if close else ""
            raise ValueError(f"{where} {value!r} has the field {{{field}}}; the fields allowed here "
                             f"are {fields_ok}, without format specs or conversions{hint}")
        used.add(field)
    for group in required:
        if not used & group:
            names = " or ".join("{" + f + "}" for f in sorted(group))
            raise ValueError(f"{where} {value!r} must use {names}")
    return value


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` as the layout aligns them: a sentence ends at a whitespace token
    ending in ".", "?" or "!" (not "..", not an abbreviation such as "Mr."); words after the last
    such token are one more (unfinished) sentence."""
    out: list[str] = []
    current: list[str] = []
    for token in text.split():
        current.append(token)
        if token.endswith((".", "?", "!")) and not token.endswith("..") and token.lower() not in _ABBREVIATIONS:
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def _table(value: object, where: str, keys: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a table with the keys {', '.join(keys)}, got {value!r}")
    for key in value:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where} has the unknown key {key!r}{hint}; the keys are {', '.join(keys)}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ValueError(f"{where} lacks the key(s) {', '.join(missing)}; the keys are {', '.join(keys)}")
    return value


def _topic(value: object, where: str) -> BackgroundTopic:
    table = _table(value, where, _TOPIC_KEYS)
    requests = tuple(_text(t, f"{where}.requests[{i}]", _BG_SPOKEN)
                     for i, t in enumerate(_list(table["requests"], f"{where}.requests")))
    mentions = tuple(_text(t, f"{where}.mentions[{i}]", _BG_SPOKEN)
                     for i, t in enumerate(_list(table["mentions"], f"{where}.mentions")))
    return BackgroundTopic(requests=requests, result=_text(table["result"], f"{where}.result", _BG_RESULT),
                           mentions=mentions)


def _passage_text(value: object, where: str) -> list[str]:
    text = _text(value, where, _NO_FIELDS)
    for token in text.split():
        # "9.30", "e.g." or "Mr." would be read as a sentence end, or not, other than meant.
        if token.endswith("..") or "." in token[:-1] or token.lower() in _ABBREVIATIONS:
            raise ValueError(f"{where} {text!r} has the token {token!r}, which blurs where a sentence ends; "
                             "spell it out")
    parts = sentences(text)
    if not parts[-1].endswith((".", "?", "!")):
        raise ValueError(f"{where} {text!r} must end its last sentence with '.', '?' or '!'")
    return parts


def _passage(value: object, where: str) -> Passage:
    table = _table(value, where, ("source", *RENDER_LANGUAGES))
    source = _passage_text(table["source"], f"{where}.source")
    lo, hi = PASSAGE_SENTENCES
    if not lo <= len(source) <= hi:
        raise ValueError(f"{where}.source has {len(source)} sentence(s); a passage has {lo}-{hi}")
    renderings = []
    for lang in RENDER_LANGUAGES:
        rendered = _passage_text(table[lang], f"{where}.{lang}")
        if len(rendered) != len(source):
            raise ValueError(f"{where}.{lang} has {len(rendered)} sentence(s) for the source's {len(source)}; "
                             "render sentence by sentence (the layout aligns sentence k to sentence k)")
        renderings.append((lang, table[lang]))
    return Passage(source=table["source"], renderings=tuple(renderings))


def _screen_pair(value: object, where: str) -> tuple[str, str]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{where} must be a pair [SCREEN TEXT, as said], got {value!r}")
    screen, said = _text(value[0], f"{where}[0]", _NO_FIELDS), _text(value[1], f"{where}[1]", _NO_FIELDS)
    bad = sorted(set(screen) - SCREEN_TEXT_CHARS)
    if bad or len(screen) > MAX_SCREEN_TEXT or screen != screen.strip():
        raise ValueError(f"{where}[0] {screen!r} must be at most {MAX_SCREEN_TEXT} upper-case letters, digits, "
                         f"inner spaces and .,!?:-' (the scene's font); found {bad or 'too long or padded'}")
    return screen, said


def _list(value: object, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where} must be a non-empty list, got {value!r}")
    return value


def _turn(value: object, where: str, allowed: Collection[str]) -> Turn:
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise ValueError(f"{where} must be [speaker, text] or [speaker, text, act], got {value!r}")
    if value[0] not in ("X", "Y"):
        raise ValueError(f"{where}: speaker must be \"X\" (opens) or \"Y\" (answers), got {value[0]!r}")
    text = _text(value[1], f"{where} text", allowed)
    if len(value) == 2:
        return (value[0], text)
    if value[2] not in _TEMPLATE_ACTS:
        raise ValueError(f"{where}: act must be one of {', '.join(_TEMPLATE_ACTS)}, got {value[2]!r}")
    return (value[0], text, value[2])


def _read(key: str, value: object, where: str) -> tuple:
    kind, allowed = _KEYS[key]
    items = _list(value, where)
    if kind == _TOPICS:
        return tuple(_topic(item, f"{where}[{i}]") for i, item in enumerate(items))
    if kind == _PASSAGES:
        return tuple(_passage(item, f"{where}[{i}]") for i, item in enumerate(items))
    if kind == _SCREEN:
        pairs = tuple(_screen_pair(item, f"{where}[{i}]") for i, item in enumerate(items))
        screens = [p[0] for p in pairs]
        if len(set(screens)) < len(screens):
            raise ValueError(f"{where} repeats {sorted({t for t in screens if screens.count(t) > 1})}; "
                             "each screen text must appear once")
        return pairs
    if kind == _EXCHANGES:
        return tuple(
            tuple(_turn(turn, f"{where}[{i}][{j}]", allowed)
                  for j, turn in enumerate(_list(exchange, f"{where}[{i}]")))
            for i, exchange in enumerate(items))
    if kind == _PAIRS:
        pairs = []
        for i, pair in enumerate(items):
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError(f"{where}[{i}] must be a pair [said, said back], got {pair!r}")
            pairs.append((_text(pair[0], f"{where}[{i}][0]", allowed),
                          _text(pair[1], f"{where}[{i}][1]", allowed)))
        return tuple(pairs)
    required = _REQUIRED.get(key, ())
    texts = tuple(_text(item, f"{where}[{i}]", allowed, required) for i, item in enumerate(items))
    if kind == _VOCABULARY and len(set(texts)) < len(texts):
        repeated = sorted({t for t in texts if texts.count(t) > 1})
        raise ValueError(f"{where} repeats {repeated}; a slot word is swapped for a different one, "
                         "so each must appear once")
    return texts


def parse_template_text(data: bytes | str, *, name: str = TEMPLATE_FILE) -> TemplateText:
    """Read and check template text in the ``templates.toml`` format.

    ``name`` (e.g. the file path) is used in messages. Raises ValueError naming the key and
    the problem when the data is not UTF-8 TOML, a key is missing or unknown, or a value breaks
    the rules in the module docstring.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        doc = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"{name} is not valid UTF-8 TOML: {err}") from None
    unknown, missing = sorted(set(doc) - set(_KEYS)), [k for k in _KEYS if k not in doc]
    if unknown or missing:
        raise ValueError(f"{name}: unknown keys {unknown}, missing keys {missing}; the keys are "
                         f"{', '.join(_KEYS)}")
    return TemplateText(**{key: _read(key, doc[key], f"{name}: {key}") for key in _KEYS})


@functools.lru_cache(maxsize=1)
def bundled_template_text() -> TemplateText:
    """The checked ``synth/data/templates.toml`` shipped with the package (read once)."""
    resource = importlib.resources.files("microturn.synth") / "data" / TEMPLATE_FILE
    return parse_template_text(resource.read_bytes(), name=f"synth/data/{TEMPLATE_FILE}")
