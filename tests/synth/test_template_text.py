"""The template text data file: the bundled one loads, and a broken one is refused on load with a
message that names the key and the problem."""

import importlib.resources
import re

import pytest

from microturn.synth import templates
from microturn.synth.template_text import (
    RENDER_LANGUAGES,
    TEMPLATE_FILE,
    bundled_template_text,
    parse_template_text,
    sentences,
)


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
    assert templates.BACKGROUND_TOPICS == text.background_topics and templates.PASSAGES == text.passages
    # at least 20 templates of each newer kind: visual requests, background requests, passages
    assert len(text.visual_requests()) >= 20
    assert sum(len(t.requests) for t in text.background_topics) >= 20
    assert len(text.passages) >= 20


def test_passages_render_sentence_by_sentence():
    text = bundled_template_text()
    for passage in text.passages:
        n = len(sentences(passage.source))
        assert 2 <= n <= 4
        assert [lang for lang, _ in passage.renderings] == list(RENDER_LANGUAGES)
        for lang in (*RENDER_LANGUAGES, "en"):
            parts = sentences(passage.rendering(lang))
            assert len(parts) == n and all(p[-1] in ".?!" for p in parts)
    with pytest.raises(ValueError, match="no rendering in 'it'"):
        text.passages[0].rendering("it")
    assert sentences("Dr. Who came. Then? Yes! and so") == ["Dr. Who came.", "Then?", "Yes!", "and so"]


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
    # the newer kinds' sections
    ('"Tell me when the {colour} {shape} shows up."', '"Tell me when the {shape} shows up."',
     r"visual_appear_requests\[0\] .* must use \{colour\}"),
    ('"Tell me when the {colour} {shape} shows up."', '"Tell me when the {colour} {shape} turns {to_colour}."',
     r"visual_appear_requests\[0\] .* has the field \{to_colour\}"),
    ('"Now, the {colour} {shape}."', '"Now, the {colur} {shape}."', r"did you mean \{colour\}\?"),
    ('"Then {request}"', '"Then watch."', r"visual_connectors\[0\] .* must use \{Request\} or \{request\}"),
    ('"That was {count} bounces."', '"That was many bounces."', r"must use \{Count\} or \{count\}"),
    ('["SALE ENDS TODAY", "sale ends today"]', '["Sale ends today", "sale ends today"]',
     r"screen_texts\[0\]\[0\] 'Sale ends today' must be at most 24 upper-case letters"),
    ('["SALE ENDS TODAY", "sale ends today"]', '["SALE ENDS TODAY AND TOMORROW", "sale ends"]',
     r"screen_texts\[0\]\[0\]"),
    ('["WELCOME BACK", "welcome back"]', '["SALE ENDS TODAY", "welcome back"]',
     r"screen_texts repeats \['SALE ENDS TODAY'\]"),
    ('"museum", "library",', '"museum", "museum",', r"venues repeats \['museum'\]"),
    ('result = "Opening hours, {venue}, {day}: {open_d}-{close_d}."',
     'resuIt = "Opening hours, {venue}, {day}: {open_d}-{close_d}."',
     r"background_topics\[0\] has the unknown key 'resuIt'; did you mean 'result'\?"),
    ('mentions = ["the {venue} opens at {open} on {day} and closes at {close}.",',
     'mentions = ["the {venue} opens at {open_d} on {day} and closes at {close}.",',
     r"background_topics\[0\]\.mentions\[0\] .* has the field \{open_d\}.*did you mean \{open\}\?"),
    ('result = "Opening hours, {venue}, {day}: {open_d}-{close_d}."',
     'result = "Opening hours, {venue}, {day}: {opening_d}-{close_d}."', r"background_topics\[0\]\.result"),
    ('"Okay, I found it: {found}",', '"Okay, I found it.",',
     r"mention_openers\[0\] .* must use \{Found\} or \{found\}"),
    ('fr = "Bonjour à tous. Merci d\'être venus aujourd\'hui. Commençons par une courte présentation."',
     'fr = "Bonjour à tous. Merci d\'être venus aujourd\'hui, commençons par une courte présentation."',
     r"passages\[0\]\.fr has 2 sentence\(s\) for the source's 3; render sentence by sentence"),
    ('fr = "Bonjour à tous. Merci d\'être venus aujourd\'hui. Commençons par une courte présentation."\n', '',
     r"passages\[0\] lacks the key\(s\) fr"),
    ('es = "Buenos días a todos. Gracias por venir hoy. Empecemos con una breve presentación."',
     'it = "Buongiorno a tutti. Grazie di essere venuti. Cominciamo."',
     r"passages\[0\] has the unknown key 'it'"),
    ('source = "Good morning, everyone. Thank you for coming today.',
     'source = "Good morning, Mr. Smith. Thank you for coming today.', r"the token 'Mr\.'.*spell it out"),
    ('source = "Welcome aboard. This flight to Madrid will take two hours. Please fasten your seat belts."',
     'source = "Welcome aboard."', r"passages\[\d+\]\.source has 1 sentence\(s\); a passage has 2-4"),
    ('de = "Heute Morgen wird es sonnig. Am Nachmittag ziehen Wolken von Westen auf. Heute Nacht wird es regnen."',
     'de = "Heute Morgen wird es sonnig. Am Nachmittag ziehen Wolken von Westen auf. Heute Nacht {regen}."',
     r"passages\[\d+\]\.de .* has the field \{regen\}; the fields allowed here are none"),
    ('["X", "Morning!"]', '["X", "Morning!", "delegation"]', r"openers\[2\]\[0\]: act must be one of"),
])
def test_broken_text_is_refused(bundled, old, new, message):
    with pytest.raises(ValueError, match=message):
        parse_template_text(_swap(bundled, old, new), name="broken.toml")


def test_missing_empty_and_unknown_keys_are_refused(bundled):
    without_days = re.sub(r"\ndays = \[[^\]]*\]\n", "\n", bundled)
    with pytest.raises(ValueError, match=r"broken.toml: unknown keys \[\], missing keys \['days'\]"):
        parse_template_text(without_days, name="broken.toml")
    # At the top: appended, a key would belong to the file's last [[passages]] table.
    with pytest.raises(ValueError, match=r"unknown keys \['voices'\]"):
        parse_template_text('voices = ["en-us"]\n' + bundled, name="broken.toml")
    empty = re.sub(r"\ndays = \[[^\]]*\]\n", "\ndays = []\n", bundled)
    with pytest.raises(ValueError, match=r"days must be a non-empty list"):
        parse_template_text(empty, name="broken.toml")


def test_data_that_is_not_utf8_toml_is_refused(bundled):
    with pytest.raises(ValueError, match="broken.toml is not valid UTF-8 TOML"):
        parse_template_text(bundled + "\nnames = [", name="broken.toml")
    with pytest.raises(ValueError, match="broken.toml is not valid UTF-8 TOML"):
        parse_template_text(b"\xff\xfe" + bundled.encode("utf-16-le"), name="broken.toml")
