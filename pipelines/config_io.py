"""Loading keyword-only dataclass configs from named TOML files, refusing unknown keys."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _coerce(key: str, hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against a simple type hint (``int``, ``float | None``, ``tuple[str, ...]``)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"{where}: {key} must not be empty")
    for option in options:
        base = typing.get_origin(option) or option
        if base is tuple and isinstance(value, list):
            return tuple(value)
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(base, type) and isinstance(value, base) and not (
                isinstance(value, bool) and base is not bool):
            return value
    raise ValueError(f"{where}: {key} must be {hint}, got {value!r}")


def from_mapping(cls: type[T], data: dict[str, Any], *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are ``ValueError``s."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(k, hints[k], v, where) for k, v in data.items()})


def load_toml(cls: type[T], path: str, *, section: str | None = None) -> T:
    """Load ``cls`` from a TOML file (optionally one ``[section]`` of it)."""
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
    if section is not None:
        if section not in data:
            raise ValueError(f"{path}: no [{section}] section")
        data = data[section]
    return from_mapping(cls, data, where=path)
