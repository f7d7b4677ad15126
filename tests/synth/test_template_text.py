"""The template text data file: the bundled one loads, and a broken one is refused on load with a
message that names the key and the problem."""

import importlib.resources
import re

import pytest

from microturn.synth import templates
from microturn.synth.template_text import TEMPLATE_FILE, bundled_template_text, parse_template_text


@pytest.fixture(scope="module")
def bundled() -> str:
    return (importlib.resources.files("microturn.synth") / "data" / TEMPLATE_FILE).read_text("utf-8")


def test_bundled_text_loads_once_and_feeds_the_generator(bundled):
    text = parse_template_text(bundled)
    assert text == bundled_template_text()
    assert bundled_template_text() is bundled_template_text()
    assert templates.NAMES == text.names and templates.EXCHANGES == text.exchanges
    assert len(text.exchanges) >= 20 and all(len(e) >= 2 for e in text.exchanges)
    assert all(isinstance(t, tuple) for e in text.exchanges for t in e)  # immutable, like the rest


def _swap(bundled: str, old: str, new: str) -> str:
    assert bundled.count(old) == 1, old
    return bundled.replace(old, new)


@pytest.mark.parametrize("old,new,message", [
    ('"Maya", "Tom",', '"Maya", "Maya",', r"names repeats \['Maya'\]"),
    ('["Y", "Sure, what\'s up?"]', '["Z", "Sure, what\'s up?"]', r"openers\[0\]\[1\]: speaker must be"),
    ('["X", "Morning!"]', '["X", "Morning!", "timed_request"]', r"openers\[2\]\[0\]: act must be one of"),
    ('["X", "Morning!"]', '["X"]', r"openers\[2\]\[0\] must be \[speaker, text\]"),
    ('["X", "Morning!"]', '["X", ""]', r"openers\[2\]\[0\] text must be a non-empty string"),
    ('"Tell me when {n} seconds have passed."', '"Tell me when {m} seconds have passed."',
     r"when_requests\[0\] .* has the field \{m\}; the fields allowed here are \{N\}, \{n\}"),
    ('"Tell me when {n} seconds have passed."', '"Tell me when {n:>3} seconds have passed."',
     r"without format specs"),
    ('"Wait.",', '"Wait {.",', r"interjections\[0\] .* stray brace"),
    ('"Hold on.",', '"Hold {name}.",', r"the fields allowed here are none"),
    ('["check the oven", "check the oven"],', '["check the oven"],', r"tasks\[0\] must be a pair"),
    ("days = [", "days = 3\nold_days = [", r"unknown keys \['old_days'\]"),
])
def test_broken_text_is_refused(bundled, old, new, message):
    with pytest.raises(ValueError, match=message):
        parse_template_text(_swap(bundled, old, new), name="broken.toml")


def test_missing_empty_and_unknown_keys_are_refused(bundled):
    without_days = re.sub(r"\ndays = \[[^\]]*\]\n", "\n", bundled)
    with pytest.raises(ValueError, match=r"broken.toml: unknown keys \[\], missing keys \['days'\]"):
        parse_template_text(without_days, name="broken.toml")
    with pytest.raises(ValueError, match=r"unknown keys \['voices'\]"):
        parse_template_text(bundled + '\nvoices = ["en-us"]\n', name="broken.toml")
    empty = re.sub(r"\ndays = \[[^\]]*\]\n", "\ndays = []\n", bundled)
    with pytest.raises(ValueError, match=r"days must be a non-empty list"):
        parse_template_text(empty, name="broken.toml")


def test_data_that_is_not_utf8_toml_is_refused(bundled):
    with pytest.raises(ValueError, match="broken.toml is not valid UTF-8 TOML"):
        parse_template_text(bundled + "\nnames = [", name="broken.toml")
    with pytest.raises(ValueError, match="broken.toml is not valid UTF-8 TOML"):
        parse_template_text(b"\xff\xfe" + bundled.encode("utf-16-le"), name="broken.toml")
