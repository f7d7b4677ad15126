"""Typed configs: keyword-only frozen dataclasses whose fields declare their own rules.

Every config of the project (stage configs, backend configs, the model and training configs) is
a ``@dataclass(frozen=True, kw_only=True)``. A field's allowed values are declared once, with
:func:`setting` (bounds, choices, the command-line flag that sets it), and one validator,
:func:`validate`, checks an instance against its field types and those declarations. Its
``__post_init__`` calls ``validate(self)``; only rules that tie several fields together stay
hand-written there.

Reading configs: :func:`load_toml` reads a TOML file, :func:`from_mapping` builds a config from a
mapping (nested TOML tables build nested config fields; unknown keys anywhere are errors), and
:func:`parse_partial` checks the keys and types of a named config that command-line flags will
complete or override. :func:`parse_override` reads one ``section.key=value`` override.

This module is plain Python (no torch, no Beam), so every package may use it.

Errors: a value of the wrong type is a :class:`ConfigTypeError` (both a ``TypeError`` and a
``ValueError``, so a command that turns ``ValueError`` into a one-line message catches it); a
value outside its bounds or choices is a ``ValueError``. Messages name the field (or the flag
that sets it) and say what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tomllib
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

__all__ = ["ConfigTypeError", "Rule", "from_mapping", "load_toml", "parse_override", "parse_partial",
           "rule_of", "setting", "validate"]

T = TypeVar("T")

_META_KEY = "microturn.config"


class ConfigTypeError(TypeError, ValueError):
    """A setting holding a value of the wrong type.

    A ``TypeError`` because that is what Python raises for a wrong type, and a ``ValueError``
    because to a user a wrong type in a config file is a bad value like any other: the stage
    commands turn ``ValueError`` into a one-line message.
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rule:
    """What :func:`setting` records in a field's metadata (see there)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    flag: str | None = None
    allow_inf: bool = False
    parse: Callable[[Any], Any] | None = None

    def label(self, name: str) -> str:
        """How messages name the field: its flag when a command-line flag sets it."""
        return self.flag or name


_NO_RULE = Rule()


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, choices: Collection[Any] | None = None, flag: str | None = None,
            allow_inf: bool = False, parse: Callable[[Any], Any] | None = None,
            hash: bool | None = None) -> Any:  # the keyword dataclasses.field takes
    """A dataclass field whose metadata carries the rules :func:`validate` checks.

    Args:
        default, default_factory: as for :func:`dataclasses.field` (neither: a required field).
        ge, gt, le, lt: bounds (``>=``, ``>``, ``<=``, ``<``) of a number; ``None`` values of an
            optional field are not checked against them.
        choices: the allowed values (strings of a closed set).
        flag: the command-line flag that sets the field (``--max-duration-s``); messages about
            its value name the flag, which is what the user typed.
        allow_inf: accept ``inf`` / ``-inf`` in a float field (``nan`` never passes: it passes
            every comparison written as ``x <= 0``, since all comparisons with it are false).
        parse: turns a value read from a file into the field's type before the type check
            (``"512MiB"`` -> 536870912).
        hash: as for :func:`dataclasses.field` (``False`` for a mapping field).
    """
    rule = Rule(ge=ge, gt=gt, le=le, lt=lt, choices=None if choices is None else tuple(choices),
                flag=flag, allow_inf=allow_inf, parse=parse)
    return dataclasses.field(default=default, default_factory=default_factory, hash=hash,
                             metadata={_META_KEY: rule})


def rule_of(field: dataclasses.Field) -> Rule:
    """The :class:`Rule` of a field (an empty one for a plain field)."""
    return field.metadata.get(_META_KEY, _NO_RULE)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _options(hint: Any) -> tuple[Any, ...]:
    """The members of a union hint (``int | None`` -> ``(int, NoneType)``), else ``(hint,)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _describe(hint: Any) -> str:
    """A type hint in words: ``int | None`` -> ``an integer or empty``."""
    names = []
    for option in _options(hint):
        base = typing.get_origin(option) or option
        if option is type(None):
            names.append("empty")
        elif option is bool:
            names.append("true or false")
        elif option is int:
            names.append("an integer")
        elif option is float:
            names.append("a number")
        elif option is str:
            names.append("a string")
        elif base is tuple:
            args = typing.get_args(option)
            names.append(f"a list of {_describe(args[0]).split(' ', 1)[-1]}s" if len(args) == 2
                         and args[1] is Ellipsis else "a list")
        elif base is typing.Literal:
            names.append("one of " + ", ".join(repr(a) for a in typing.get_args(option)))
        elif isinstance(base, type) and dataclasses.is_dataclass(base):
            names.append("a table of settings")
        elif isinstance(base, type) and issubclass(base, Mapping):
            names.append("a table")
        elif base is os.PathLike:
            names.append("a path")
        else:
            names.append(getattr(base, "__name__", str(base)))
    return " or ".join(dict.fromkeys(names))


def _is_instance(value: Any, option: Any) -> bool:
    """Whether ``value`` is of the (non-union) hint ``option``; bools are not numbers here."""
    if option is Any or option is object:
        return True
    if option is type(None):
        return value is None
    base = typing.get_origin(option) or option
    if base is typing.Literal:
        return value in typing.get_args(option)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is tuple:
        if not isinstance(value, tuple):
            return False
        args = typing.get_args(option)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_is_instance(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(map(_is_instance, value, args)))
    if isinstance(base, type):
        return isinstance(value, base)
    return True  # a hint this validator does not know (a TypeVar, a Protocol): not checked


def _bounds_text(rule: Rule) -> str | None:
    """The allowed range in words (``at least 1``, ``in [0.05, 3]``), or None without bounds."""
    low = ("[", rule.ge) if rule.ge is not None else ("(", rule.gt) if rule.gt is not None else None
    high = ("]", rule.le) if rule.le is not None else (")", rule.lt) if rule.lt is not None else None
    if low and high:
        return f"in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
    if low:
        if low[0] == "(" and low[1] == 0:
            return "positive"
        return f"at least {_num(low[1])}" if low[0] == "[" else f"greater than {_num(low[1])}"
    if high:
        return f"at most {_num(high[1])}" if high[0] == "]" else f"less than {_num(high[1])}"
    return None


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _in_bounds(value: float, rule: Rule) -> bool:
    return ((rule.ge is None or value >= rule.ge) and (rule.gt is None or value > rule.gt)
            and (rule.le is None or value <= rule.le) and (rule.lt is None or value < rule.lt))


def _check_value(name: str, hint: Any, value: Any, rule: Rule) -> None:
    """Type, finiteness, bounds and choices of one field's value; raises naming the field."""
    options = _options(hint)
    if not any(_is_instance(value, o) for o in options):
        raise ConfigTypeError(f"{name} must be {_describe(hint)}, got {value!r}")
    if value is None:
        return
    label = rule.label(name)
    if isinstance(value, float) and float in options:
        if math.isnan(value) or (math.isinf(value) and not rule.allow_inf):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if rule.choices is not None and value not in rule.choices:
        raise ValueError(f"{label} must be one of {rule.choices}, got {value!r}")
    bounds = _bounds_text(rule)
    if bounds is not None and isinstance(value, (int, float)) and not _in_bounds(value, rule):
        raise ValueError(f"{label} must be {bounds}, got {value!r}")


def validate(obj: Any) -> None:
    """Check every field of the dataclass instance ``obj`` against its type hint and its
    :func:`setting` rules.

    Types: ``int``, ``float`` (an int is accepted; ``inf`` only with ``allow_inf``, ``nan``
    never), ``bool`` (not an int, and no int is a bool), ``str``, ``X | None``,
    ``tuple[X, ...]`` (a tuple whose every element is an X), ``Literal[...]``, mappings, paths
    and nested config dataclasses (which validated themselves when built). Raises
    :class:`ConfigTypeError` for a wrong type and ``ValueError`` for a value outside its rules.
    """
    hints = _hints(type(obj))
    for field in dataclasses.fields(obj):
        if field.init:
            _check_value(field.name, hints[field.name], getattr(obj, field.name), rule_of(field))


def _nested_class(hint: Any) -> type | None:
    """The config dataclass a field of hint ``X`` or ``X | None`` holds, if any."""
    classes = [o for o in _options(hint) if isinstance(o, type) and dataclasses.is_dataclass(o)]
    return classes[0] if len(classes) == 1 else None


def _coerce(key: str, hint: Any, value: Any, where: str, rule: Rule) -> Any:
    """A value read from a file (TOML, JSON) in the field's type: lists become tuples, integers
    floats where a float is asked for, tables nested configs; types and finiteness checked.

    Finiteness is checked before the type, so that ``nan`` given for an integer key is named as
    the non-finite number it is.
    """
    if rule.parse is not None and value is not None:
        value = rule.parse(value)
    options = _options(hint)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigTypeError(f"{where}: {key} must not be empty")
    if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and not rule.allow_inf)):
        raise ValueError(f"{where}: {key} must be a finite number, got {value!r}")
    nested = _nested_class(hint)
    if nested is not None and isinstance(value, Mapping):
        return from_mapping(nested, value, where=f"{where} [{key}]")
    for option in options:
        base = typing.get_origin(option) or option
        if base is tuple and isinstance(value, list):
            items = typing.get_args(option)
            if len(items) == 2 and items[1] is Ellipsis:  # tuple[X, ...]: every element an X
                return tuple(_coerce(f"{key}[{i}]", items[0], v, where, _NO_RULE) for i, v in enumerate(value))
            return tuple(value)
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(base, type) and issubclass(base, Mapping) and isinstance(value, Mapping):
            return dict(value)
        if _is_instance(value, option):
            return value
    raise ConfigTypeError(f"{where}: {key} must be {_describe(hint)}, got {value!r}")


def _check_keys(data: Mapping[str, Any], where: str, allowed: Collection[str]) -> None:
    if not isinstance(data, Mapping):
        raise ConfigTypeError(f"{where}: must be a table of settings, got {data!r}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(allowed)}")


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a config dataclass")
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def parse_partial(cls: type, data: Mapping[str, Any], *, where: str = "config",
                  exclude: Collection[str] = ()) -> dict[str, Any]:
    """Check the keys and value types of ``data`` against config class ``cls`` and return them
    in the field types (nested tables built as nested configs).

    For a named config that command-line flags complete: the result is merged with the flags
    and the full config is built from both, which checks the rules. ``exclude`` names fields
    only the command line sets (an ingest config file names no ``inputs``); keys naming them are
    unknown keys.
    """
    fields = _fields(cls)
    allowed = [name for name in fields if name not in exclude]
    _check_keys(data, where, allowed)
    hints = _hints(cls)
    return {k: _coerce(k, hints[k], v, where, rule_of(fields[k])) for k, v in data.items()}


def from_mapping(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build config ``cls`` from ``data`` (a TOML table, a saved JSON object).

    Nested tables build nested config fields; unknown keys (at any depth), wrong types and
    non-finite numbers are errors naming the table and the key, and so are values the config
    itself refuses (prefixed with ``where``).
    """
    values = parse_partial(cls, data, where=where)
    try:
        return cls(**values)
    except ConfigTypeError as exc:
        raise ConfigTypeError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def load_toml(path: str) -> dict[str, Any]:
    """The tables of TOML file ``path``; a file that cannot be read or parsed is a one-line
    ``ValueError`` naming it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML (not UTF-8: {exc.reason})") from None


def parse_override(item: str, *, example: str = "section.key=value") -> tuple[tuple[str, ...], Any]:
    """``"train.lr=3e-4"`` -> ``(("train", "lr"), 0.0003)``.

    The value is read as a TOML value (numbers, booleans, quoted strings, arrays); text that is
    no TOML value is taken as a bare string. Non-finite numbers are refused. The key must have
    at least two dotted parts.
    """
    key, sep, text = item.partition("=")
    path = tuple(part.strip() for part in key.strip().split("."))
    if not sep or len(path) < 2 or not all(path):
        raise ValueError(f"override {item!r} must look like {example}")
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return path, text  # a bare string
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"override {item}: {'.'.join(path)} must be a finite number")
    return path, value
