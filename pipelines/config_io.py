"""Loading keyword-only dataclass configs from named TOML files, refusing unknown keys."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _coerce(key: str, hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against a simple type hint (``int``, ``float | None``, ``tuple[str, ...]``).

    Floats must be finite: TOML spells ``inf`` and ``nan``, and a ``nan`` passes every range
    check written as ``x <= 0`` (all comparisons with it are false).
    """
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"{where}: {key} must not be empty")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a finite number, got {value!r}")
    for option in options:
        base = typing.get_origin(option) or option
        if base is tuple and isinstance(value, list):
            items = typing.get_args(option)
            if len(items) == 2 and items[1] is Ellipsis:  # tuple[X, ...]: every element an X
                return tuple(_coerce(f"{key}[{i}]", items[0], v, where) for i, v in enumerate(value))
            return tuple(value)
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(base, type) and isinstance(value, base) and not (
                isinstance(value, bool) and base is not bool):
            return value
    raise ValueError(f"{where}: {key} must be {hint}, got {value!r}")


def from_mapping(cls: type[T], data: dict[str, Any], *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types and non-finite floats
    are ``ValueError``s naming the key."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(k, hints[k], v, where) for k, v in data.items()})


def load_toml(cls: type[T], path: str, *, section: str | None = None) -> T:
    """Load ``cls`` from a TOML file (optionally one ``[section]`` of it); a file that cannot be
    read or parsed is a one-line ``ValueError`` naming it."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML (not UTF-8: {exc.reason})") from None
    if section is not None:
        if section not in data:
            raise ValueError(f"{path}: no [{section}] section")
        data = data[section]
    return from_mapping(cls, data, where=path)


def check_numbers(obj: Any) -> None:
    """Refuse a dataclass instance whose ``int`` fields hold no integer or whose ``float``
    fields hold no finite number, naming the field.

    For configs built in code as well as from TOML: ``nan`` passes every range check written
    as ``x <= 0`` (all comparisons with it are false), and ``inf`` passes every lower bound.
    """
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        hint = hints[field.name]
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if value is None or bool in options or any(isinstance(value, o) for o in options if o in (str, tuple)):
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if float in options:
            if not number:
                raise TypeError(f"{field.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{field.name} must be a finite number, got {value!r}")
        elif int in options and not (number and isinstance(value, int)):
            raise TypeError(f"{field.name} must be an integer, got {value!r}")
