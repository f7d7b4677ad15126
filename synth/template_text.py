"""The text of the template generator: read from ``synth/data/templates.toml`` and checked.

The generator (:mod:`microturn.synth.templates`) keeps its numbers, probabilities and voices in
code; the words it puts into dialogues (slot vocabularies, template exchanges, time-aware
requests and responses) live in the data file beside the bundled dialogues, so that they can be
read and extended without reading code. :func:`parse_template_text` checks a file completely,
so a broken one fails when it is loaded, with its name, the key and what is wrong, not halfway
through a generation run: every key is required and no other is allowed, lists are non-empty,
texts are non-empty strings, slot vocabularies hold no repeats, a turn is
``[speaker, text]`` or ``[speaker, text, act]`` with speaker ``"X"`` or ``"Y"`` and a plain
act, and every ``{field}`` of a text is one that the generator fills for that list.

Array-free module: no shape suffixes needed.
"""

from __future__ import annotations

import functools
import importlib.resources
import string
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, fields

from microturn.schemas.dialogue import ACTS

__all__ = ["TEMPLATE_FILE", "TemplateText", "bundled_template_text", "parse_template_text"]

TEMPLATE_FILE = "templates.toml"

Turn = tuple[str, ...]  # (speaker, text) or (speaker, text, act)
Exchange = tuple[Turn, ...]

# Fields the generator fills, per kind of text (see microturn.synth.templates).
_SLOTS = frozenset({"name", "name2", "place", "place2", "day", "dish", "time", "party", "count",
                    "Count", "few", "minutes"})
_SECONDS = frozenset({"n", "N"})
_NO_FIELDS: frozenset[str] = frozenset()
# A timed request is built by the generator with its targets; a template cannot state one.
_TEMPLATE_ACTS = tuple(a for a in ACTS if a != "timed_request")


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


# Per key: how to read it (plain texts, a vocabulary without repeats, exchanges, task pairs)
# and which fields its texts may hold.
_TEXTS, _VOCABULARY, _EXCHANGES, _PAIRS = "texts", "vocabulary", "exchanges", "pairs"
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
}
assert list(_KEYS) == [f.name for f in fields(TemplateText)], "every field has one reader"


def _text(value: object, where: str, allowed: Collection[str]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string, got {value!r}")
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as err:
        raise ValueError(f"{where} {value!r} has a stray brace ({err}); write {{{{ or }}}} for a "
                         "literal brace") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in allowed or spec or conversion:
            fields_ok = ", ".join("{" + f + "}" for f in sorted(allowed)) or "none"
            raise ValueError(f"{where} {value!r} has the field {{{field}}}; the fields allowed here "
                             f"are {fields_ok}, without format specs or conversions")
    return value


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
    texts = tuple(_text(item, f"{where}[{i}]", allowed) for i, item in enumerate(items))
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
