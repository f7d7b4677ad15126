"""Loading keyword-only dataclass configs from named TOML files, refusing unknown keys."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def from_mapping(cls: type[T], data: dict[str, Any], *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are ``ValueError``s."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    clean: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        origin = typing.get_origin(hint)
        if origin is tuple and isinstance(value, list):
            value = tuple(value)
        allowed = typing.get_args(hint) if origin in (typing.Union, getattr(__import__("types"), "UnionType")) else (hint,)
        allowed_types = tuple(typing.get_origin(a) or a for a in allowed if a is not type(None))
        if value is None and type(None) in allowed:
            clean[key] = value
            continue
        if allowed_types and all(isinstance(a, type) for a in allowed_types):
            ok = isinstance(value, allowed_types) and not (isinstance(value, bool) and bool not in allowed_types)
            if float in allowed_types and isinstance(value, int) and not isinstance(value, bool):
                ok, value = True, float(value)
            if not ok:
                raise ValueError(f"{where}: {key} must be {hint}, got {value!r}")
        clean[key] = value
    return cls(**clean)


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
