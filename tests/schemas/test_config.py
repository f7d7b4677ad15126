"""The one config system: setting() rules, validate(), from_mapping() with nested tables,
parse_partial() for named configs that flags complete, load_toml() and dotted overrides."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microturn.schemas.config import (
    ConfigTypeError,
    from_mapping,
    load_toml,
    parse_override,
    parse_partial,
    setting,
    validate,
)


@dataclass(frozen=True, kw_only=True)
class Inner:
    rate: float = setting(0.5, gt=0.0, lt=1.0)
    engine: Literal["fast", "slow"] = "fast"
    limit_s: float = setting(float("inf"), gt=0.0, allow_inf=True)
    options: Mapping[str, object] = setting(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True, kw_only=True)
class Outer:
    inputs: tuple[str, ...] = setting((), flag="--input")
    count: int = setting(1, ge=1, le=100, flag="--count")
    gain: float = setting(0.0, ge=-10.0, le=10.0)
    mode: str = setting("a", choices=("a", "b"))
    enabled: bool = True
    cap: int | None = setting(None, ge=0)
    inner: Inner | None = None

    def __post_init__(self) -> None:
        validate(self)


# --- validate: types ------------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    (dict(count=True), "count must be an integer, got True"),  # a bool is no int
    (dict(count=2.0), "count must be an integer"),
    (dict(enabled=1), "enabled must be true or false, got 1"),  # an int is no bool
    (dict(gain="1"), "gain must be a number"),
    (dict(inputs=("a", 3)), "inputs must be a list of strings"),
    (dict(inputs=["a"]), "inputs must be a list of strings"),  # frozen configs hold tuples
    (dict(cap=1.5), "cap must be an integer or empty"),
    (dict(inner={"rate": 0.1}), "inner must be a table of settings or empty"),
])
def test_a_wrong_type_is_a_config_type_error_naming_the_field(kw, message):
    with pytest.raises(ConfigTypeError, match=message) as exc:
        Outer(**kw)
    assert isinstance(exc.value, TypeError) and isinstance(exc.value, ValueError)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_floats_are_finite_unless_a_setting_allows_inf(value):
    with pytest.raises(ValueError, match="gain must be a finite number"):
        Outer(gain=value)
    if math.isnan(value):  # nan passes every comparison written as x <= 0: never allowed
        with pytest.raises(ValueError, match="limit_s must be a finite number"):
            Inner(limit_s=value)
    elif value > 0:
        assert Inner(limit_s=value).limit_s == value
    else:
        with pytest.raises(ValueError, match="limit_s must be positive"):
            Inner(limit_s=value)


@pytest.mark.parametrize("kw, message", [
    (dict(count=0), r"--count must be in \[1, 100\], got 0"),  # the flag the user typed
    (dict(count=101), r"--count must be in \[1, 100\], got 101"),
    (dict(gain=-11.0), r"gain must be in \[-10, 10\], got -11.0"),
    (dict(mode="c"), r"mode must be one of \('a', 'b'\), got 'c'"),
    (dict(cap=-1), "cap must be at least 0, got -1"),
])
def test_bounds_and_choices_name_the_field_or_its_flag(kw, message):
    with pytest.raises(ValueError, match=message):
        Outer(**kw)


def test_none_skips_the_bounds_of_an_optional_field_and_literals_are_choices():
    assert Outer(cap=None).cap is None
    with pytest.raises(ConfigTypeError, match="engine must be one of 'fast', 'slow'"):
        Inner(engine="medium")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"rate must be in \(0, 1\)"):
        Inner(rate=1.0)


# --- from_mapping and parse_partial ---------------------------------------------------------

def test_from_mapping_builds_nested_tables_and_converts_file_types():
    cfg = from_mapping(Outer, {"inputs": ["a", "b"], "gain": 2, "inner": {"rate": 0.25, "options": {"k": 1}}})
    assert cfg == Outer(inputs=("a", "b"), gain=2.0, inner=Inner(rate=0.25, options={"k": 1}))
    assert isinstance(cfg.gain, float)


@pytest.mark.parametrize("data, message", [
    ({"cuont": 2}, r"f.toml: unknown key\(s\) \['cuont'\]; known keys: \['cap', 'count', "),
    ({"inner": {"rat": 0.2}}, r"f.toml \[inner\]: unknown key\(s\) \['rat'\]; known keys: \['engine', 'limit_s'"),
    ({"inner": {"rate": "high"}}, r"f.toml \[inner\]: rate must be a number, got 'high'"),
    ({"inner": {"rate": 2.0}}, r"f.toml \[inner\]: rate must be in \(0, 1\), got 2.0"),
    ({"inner": {"rate": math.nan}}, r"f.toml \[inner\]: rate must be a finite number, got nan"),
    ({"count": math.nan}, "f.toml: count must be a finite number"),  # named as the nan it is
    ({"count": True}, "f.toml: count must be an integer, got True"),
    ({"inputs": ["a", 3]}, r"f.toml: inputs\[1\] must be a string, got 3"),
    ({"inner": 3}, "f.toml: inner must be a table of settings or empty, got 3"),
    ({"count": 0}, r"f.toml: --count must be in \[1, 100\]"),
])
def test_from_mapping_errors_name_the_table_and_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        from_mapping(Outer, data, where="f.toml")


def test_parse_partial_checks_keys_and_types_and_leaves_the_rules_to_the_full_build():
    assert parse_partial(Outer, {"count": 0, "gain": 1}, where="f.toml") == {"count": 0, "gain": 1.0}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['inputs'\]"):
        parse_partial(Outer, {"inputs": ["a"]}, where="f.toml", exclude=("inputs",))
    with pytest.raises(ConfigTypeError, match="f.toml: count must be an integer"):
        parse_partial(Outer, {"count": "2"}, where="f.toml")


def test_a_parse_hook_reads_the_file_spelling():
    @dataclass(frozen=True, kw_only=True)
    class Sized:
        size: int = setting(0, ge=0, parse=lambda v: int(v[:-1]) << 10 if isinstance(v, str) else v)

        def __post_init__(self) -> None:
            validate(self)

    assert from_mapping(Sized, {"size": "4k"}).size == 4096
    assert from_mapping(Sized, {"size": 7}).size == 7


# --- property tests -------------------------------------------------------------------------

@given(count=st.integers(1, 100), gain=st.floats(-10.0, 10.0), rate=st.floats(0.0, 1.0, exclude_min=True,
                                                                             exclude_max=True))
def test_any_value_in_bounds_round_trips_through_from_mapping(count, gain, rate):
    data = {"count": count, "gain": gain, "inner": {"rate": rate}}
    cfg = from_mapping(Outer, data)
    assert cfg.inner is not None and (cfg.count, cfg.gain, cfg.inner.rate) == (count, gain, rate)
    assert from_mapping(Outer, dataclasses.asdict(cfg)) == cfg


@given(count=st.integers().filter(lambda n: not 1 <= n <= 100))
def test_any_integer_out_of_bounds_fails_naming_the_flag(count):
    with pytest.raises(ValueError, match=f"--count must be in .*, got {count}"):
        from_mapping(Outer, {"count": count})


@given(gain=st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not -10.0 <= x <= 10.0))
def test_any_float_out_of_bounds_or_not_finite_fails_naming_the_key(gain):
    with pytest.raises(ValueError, match="gain must be"):
        from_mapping(Outer, {"gain": gain})


@given(value=st.one_of(st.booleans(), st.text(max_size=3), st.floats(allow_nan=True)))
def test_no_bool_text_or_float_passes_for_an_integer(value):
    with pytest.raises(ValueError, match="count must be"):
        from_mapping(Outer, {"count": value})


# --- files and overrides --------------------------------------------------------------------

def test_load_toml_errors_are_one_line_and_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="nope.toml: cannot read the config"):
        load_toml(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("x = = 1\n")
    with pytest.raises(ValueError, match="bad.toml: not valid TOML") as exc:
        load_toml(str(bad))
    assert "\n" not in str(exc.value)
    bad.write_bytes(b'x = "\xff"\n')
    with pytest.raises(ValueError, match="not valid TOML"):
        load_toml(str(bad))
    good = tmp_path / "good.toml"
    good.write_text("count = 3\n[inner]\nrate = 0.1\n")
    assert load_toml(str(good)) == {"count": 3, "inner": {"rate": 0.1}}


@pytest.mark.parametrize("item, expected", [
    ("train.lr=3e-4", (("train", "lr"), 3e-4)),
    ("model.layers = 4", (("model", "layers"), 4)),
    ("train.pack=false", (("train", "pack"), False)),
    ("train.tokenizer=bytes", (("train", "tokenizer"), "bytes")),  # no TOML value: a bare string
    ('train.tokenizer="a b"', (("train", "tokenizer"), "a b")),
])
def test_parse_override(item, expected):
    assert parse_override(item) == expected


@pytest.mark.parametrize("item, message", [
    ("lr=1", "must look like"), ("train.lr", "must look like"), ("train.=1", "must look like"),
    ("train.lr=inf", "train.lr must be a finite number"), ("train.lr=nan", "finite"),
])
def test_bad_overrides(item, message):
    with pytest.raises(ValueError, match=message):
        parse_override(item)
