"""Dialogue script contract: accepted forms, every error reason, canonical JSON, JSONL reading."""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microturn.schemas import visual
from microturn.schemas.dialogue import (
    ACTS,
    MAX_DIALOGUE_CHARS,
    MAX_LINE_BYTES,
    MAX_TEXT_CHARS,
    MAX_TURNS,
    MAX_WORD_CHARS,
    REASONS,
    BackgroundSpec,
    CueSpec,
    Dialogue,
    ScriptError,
    SpeakerSpec,
    TimedSpec,
    TurnSpec,
    VisualSpec,
    bounded_lines,
    parse_dialogue,
    read_dialogues,
)
from microturn.schemas.text import refused_char, visible

EXAMPLE = {
    "id": "d1",
    "speakers": {"A": {"voice": "en-us", "pitch": 40, "rate": 160}, "B": {"voice": "en-gb"}},
    "turns": [
        {"speaker": "A", "text": "So I was thinking we could leave on Friday."},
        {"speaker": "B", "text": "mm-hmm", "act": "backchannel"},
        {"speaker": "A", "text": "Or Saturday, if that's easier for you?", "act": "question"},
        {"speaker": "B", "text": "Saturday works.", "act": "interruption"},
        {"speaker": "A", "text": "tell me when ten seconds have passed", "act": "timed_request",
         "targets_ms": [10000], "responses": ["ten seconds"], "responder": "B"},
    ],
}


def _base() -> dict:
    return copy.deepcopy(EXAMPLE)


def test_accepted_form_parses():
    d = parse_dialogue(json.dumps(EXAMPLE))
    assert d.id == "d1" and d.language == "en" and d.license is None
    assert d.speaker_names == ("A", "B")
    assert d.speaker("A") == SpeakerSpec(voice="en-us", pitch=40, rate=160)
    assert d.speaker("B") == SpeakerSpec(voice="en-gb")  # defaults: pitch 50, rate 175
    assert [t.act for t in d.turns] == ["statement", "backchannel", "question", "interruption",
                                        "timed_request"]
    assert d.turns[4].timed == TimedSpec(targets_ms=(10000,), responses=("ten seconds",), responder="B")
    assert d.turns[0].timed is None
    with pytest.raises(ValueError, match="no speaker 'C'"):
        d.speaker("C")


def test_bytes_dict_and_str_give_the_same_dialogue():
    line = json.dumps(EXAMPLE)
    assert parse_dialogue(line) == parse_dialogue(line.encode()) == parse_dialogue(EXAMPLE)
    with pytest.raises(TypeError):
        parse_dialogue(42)  # pyright: ignore[reportArgumentType]  # the type it refuses


def test_responder_defaults_to_the_other_of_two_speakers():
    obj = _base()
    del obj["turns"][4]["responder"]
    timed = parse_dialogue(obj).turns[4].timed
    assert timed is not None and timed.responder == "B"


def test_text_is_whitespace_normalised():
    obj = _base()
    obj["turns"][0]["text"] = "  So \t I was\n\n thinking  "
    obj["turns"][4]["responses"] = ["  ten   seconds "]
    d = parse_dialogue(obj)
    assert d.turns[0].text == "So I was thinking"
    timed = d.turns[4].timed
    assert timed is not None and timed.responses == ("ten seconds",)


def test_roles_language_and_license():
    obj = _base()
    obj["speakers"]["A"]["role"] = "user"
    obj["speakers"]["B"]["role"] = "model"
    obj["language"] = "en-GB"
    obj["license"] = "CC-BY-4.0"
    d = parse_dialogue(obj)
    assert (d.speaker("A").role, d.speaker("B").role) == ("user", "model")
    assert (d.language, d.license) == ("en-GB", "CC-BY-4.0")


def _set(path, value):
    """A mutation of the example that sets one nested key (path of keys / indices)."""
    def mutate(obj):
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return obj
    return mutate


def _delete(path):
    def mutate(obj):
        target = obj
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return obj
    return mutate


def _raw(text):
    return lambda obj: text


def _speakers(n):
    if n == 1:
        return _set(("speakers",), {"A": {}})
    return _set(("speakers",), {"A": {}, "B": {}} | {f"S{i}": {} for i in range(n - 2)})


def _turns(n):
    return _set(("turns",), [{"speaker": "AB"[i % 2], "text": "hi"} for i in range(n)])


def _turns_of_length(n, chars):
    words = " ".join(["word"] * (chars // 5))
    return _set(("turns",), [{"speaker": "AB"[i % 2], "text": words} for i in range(n)])


def _three_speakers_no_responder(obj):
    obj["speakers"]["C"] = {}
    del obj["turns"][4]["responder"]
    return obj


def _two_models(obj):
    obj["speakers"]["A"]["role"] = obj["speakers"]["B"]["role"] = "model"
    return obj


BAD = [
    ("invalid_json", _raw("{not json")),
    ("invalid_json", _raw(b"\xff\xfe{}")),
    ("invalid_json", _raw('{"id": "a", "id": "b", "speakers": {}, "turns": []}')),
    ("invalid_json", _raw('{"id": "a", "speakers": {"A": {"pitch": NaN}}, "turns": []}')),
    ("not_an_object", _raw("[1, 2]")),
    ("not_an_object", _raw('"a dialogue"')),
    ("unknown_field", _set(("idd",), "d1")),
    ("unknown_field", _set(("speakers", "A", "pich"), 40)),
    ("unknown_field", _set(("turns", 0, "actt"), "question")),
    ("missing_field", _delete(("turns",))),
    ("missing_field", _delete(("turns", 0, "text"))),
    ("missing_field", _delete(("turns", 4, "targets_ms"))),
    ("missing_field", _three_speakers_no_responder),
    ("missing_field", _set(("turns",), [])),
    ("bad_type", _set(("speakers", "A", "pitch"), True)),
    ("bad_type", _set(("speakers", "A", "rate"), 160.0)),
    ("bad_type", _set(("turns", 0, "text"), 5)),
    ("bad_type", _set(("speakers",), ["A", "B"])),
    ("bad_type", _set(("turns", 0), "hello")),
    ("bad_type", _set(("turns", 4, "targets_ms"), [True])),
    ("bad_type", _set(("license",), 2)),
    ("bad_id", _set(("id",), "a b")),
    ("bad_id", _set(("id",), "")),
    ("bad_id", _set(("speakers",), {"A": {}, "B c": {}})),
    ("too_few_speakers", _speakers(1)),
    ("too_many_speakers", _speakers(9)),
    ("unknown_speaker", _set(("turns", 0, "speaker"), "C")),
    ("unknown_speaker", _set(("turns", 4, "responder"), "C")),
    ("empty_text", _set(("turns", 0, "text"), " \t\n ")),
    ("empty_text", _set(("turns", 4, "responses"), [""])),
    ("text_too_long", _set(("turns", 0, "text"), "x" * (MAX_TEXT_CHARS + 1))),
    ("too_many_turns", _turns(MAX_TURNS + 1)),
    ("bad_act", _set(("turns", 0, "act"), "shout")),
    ("bad_act", _set(("turns", 0, "act"), "backchannel")),
    ("bad_act", _set(("turns", 1, "speaker"), "A")),  # A's backchannel after A
    ("bad_voice", _set(("speakers", "A", "voice"), "English US")),
    ("bad_voice", _set(("speakers", "A", "pitch"), 100)),
    ("bad_voice", _set(("speakers", "A", "rate"), 79)),
    ("bad_role", _set(("speakers", "A", "role"), "assistant")),
    ("bad_role", _two_models),
    ("bad_timing", _set(("turns", 4, "targets_ms"), [0])),
    ("bad_timing", _set(("turns", 4, "targets_ms"), [600_001])),
    ("bad_timing", _set(("turns", 4, "targets_ms"), [])),
    ("bad_timing", _set(("turns", 4), {"speaker": "A", "text": "twice", "act": "timed_request",
                                         "targets_ms": [5000, 5000], "responses": ["a", "b"]})),
    ("bad_timing", _set(("turns", 4, "responses"), ["ten", "eleven"])),
    ("bad_timing", _set(("turns", 0, "targets_ms"), [1000])),  # only on timed_request turns
    ("bad_timing", _set(("turns", 4, "responder"), "A")),  # asks itself
    ("bad_language", _set(("language",), "english")),
    ("bad_language", _set(("language",), "e")),
    ("invalid_json", _raw('{"id": ' + "9" * 5000 + "}")),  # past CPython's 4300-digit int limit
    ("bad_text", _set(("turns", 0, "text"), "so \x1b[31mred\x1b[0m")),
    ("bad_text", _set(("turns", 0, "text"), "hello\x00world")),  # espeak-ng would stop at the NUL
    ("bad_text", _set(("turns", 0, "text"), "hello \ud800")),  # lone surrogate, valid JSON
    ("bad_text", _raw('{"id": "d", "speakers": {"A": {}, "B": {}}, "turns": [{"speaker": "A", "text": "\\udfff"}]}')),
    ("bad_text", _set(("turns", 0, "text"), "abc \u202edcba")),  # right-to-left override
    ("bad_text", _set(("turns", 0, "text"), "isolate \u2066x\u2069")),
    ("bad_text", _set(("turns", 0, "text"), "DEL \x7f and C1 \x9b")),
    ("bad_text", _set(("turns", 4, "responses"), ["ten \x07 seconds"])),
    ("bad_text", _set(("license",), "MIT\x1b]0;title\x07")),
    ("word_too_long", _set(("turns", 0, "text"), "see " + "x" * (MAX_WORD_CHARS + 1))),
    ("text_too_long", _turns_of_length(MAX_DIALOGUE_CHARS // 500 + 1, 500)),
    ("line_too_long", _raw(None)),
]


@pytest.mark.parametrize("reason,mutate", BAD, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD)])
def test_each_bad_input_has_its_reason(reason, mutate):
    bad = mutate(_base())
    with pytest.raises(ScriptError) as info:
        if bad is None:  # a line longer than MAX_LINE_BYTES, through the reader
            (_, err), = read_dialogues([b" " * (MAX_LINE_BYTES + 1)])
            raise _err(err)
        parse_dialogue(bad if isinstance(bad, (str, bytes)) else json.dumps(bad))
    assert info.value.reason == reason, str(info.value)
    assert isinstance(info.value, ValueError)
    assert f"({reason})" in str(info.value)


def test_every_reason_is_exercised():
    assert {r for r, _ in BAD} == set(REASONS)


def test_message_says_where():
    obj = _base()
    obj["turns"][3]["text"] = "   "
    with pytest.raises(ScriptError) as info:
        parse_dialogue(obj)
    err = info.value
    assert (err.dialogue_id, err.turn, err.field) == ("d1", 3, "text")
    assert str(err).startswith("dialogue 'd1': turns[3].text: ")
    obj = _base()
    obj["speakers"]["B"]["pitch"] = 120
    err = pytest.raises(ScriptError, parse_dialogue, obj).value
    assert err.field == "speakers.B.pitch" and "0..99" in str(err)
    obj = _base()
    obj["speakers"]["A"]["raet"] = 150
    assert "did you mean 'rate'?" in str(pytest.raises(ScriptError, parse_dialogue, obj).value)


def test_error_survives_copy_with_its_location():
    err = ScriptError("bad_act", "nope", line=3, dialogue_id="d", turn=2, field="act")
    clone = copy.deepcopy(err)
    assert (clone.reason, clone.line, clone.turn, str(clone)) == ("bad_act", 3, 2, str(err))


def test_hand_built_dialogues_are_checked_too():
    a, b = SpeakerSpec(), SpeakerSpec(voice="en-gb+m3")
    with pytest.raises(ScriptError) as info:
        Dialogue(id="x", speakers=(("A", a), ("B", b)), turns=(TurnSpec(speaker="C", text="hi"),))
    assert info.value.reason == "unknown_speaker" and info.value.dialogue_id == "x"
    with pytest.raises(ScriptError, match="empty_text"):
        TurnSpec(speaker="A", text="  ")
    with pytest.raises(ScriptError, match="missing_field"):
        TurnSpec(speaker="A", text="count", act="timed_request")
    # lists and mappings are accepted and stored as tuples
    d = Dialogue(id="x", speakers={"A": a, "B": b},  # pyright: ignore[reportArgumentType]  # a mapping on purpose
                 turns=[TurnSpec(speaker="A", text="hi")])  # pyright: ignore[reportArgumentType]  # a list on purpose
    assert d.speakers == (("A", a), ("B", b)) and isinstance(d.turns, tuple)
    t = TimedSpec(targets_ms=[1000, 2000], responses=["one", "two"],  # pyright: ignore[reportArgumentType]  # lists
                  responder="B")
    same = TimedSpec(targets_ms=(1000, 2000), responses=("one", "two"), responder="B")
    assert t.targets_ms == (1000, 2000) and t == same and hash(t) == hash(same)


def test_canonical_json():
    d = parse_dialogue(_base())
    text = d.to_json()
    assert "\n" not in text and not text.startswith('{"id": ')
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert parse_dialogue(text) == d and parse_dialogue(text).to_json() == text
    assert len(d.sha256()) == 64 and d.sha256() == parse_dialogue(json.dumps(EXAMPLE, indent=2)).sha256()
    # defaults are written out, so an explicit default hashes the same as an omitted one
    obj = _base()
    obj["speakers"]["B"].update(pitch=50, rate=175)
    obj["turns"][0]["act"] = "statement"
    assert parse_dialogue(obj).sha256() == d.sha256()
    assert parse_dialogue(obj | {"license": "MIT"}).sha256() != d.sha256()


def test_speaker_order_is_kept():
    obj = _base()
    obj["speakers"] = {"B": obj["speakers"]["B"], "A": obj["speakers"]["A"]}
    d = parse_dialogue(obj)
    assert d.speaker_names == ("B", "A")
    assert parse_dialogue(d.to_json()).speaker_names == ("B", "A")
    assert d != parse_dialogue(_base())


_NAME = st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True)
_TEXT = st.text(max_size=60).filter(lambda s: s.split() and refused_char(" ".join(s.split())) is None)
_VOICE = st.from_regex(r"[a-z]{2,3}(-[a-z0-9]{1,4}){0,2}(\+[A-Za-z0-9_]{1,5})?", fullmatch=True)


@st.composite
def _cue(draw, after_ms: int) -> CueSpec:
    kind = draw(st.sampled_from(visual.CUE_KINDS))
    extra: dict = {}
    if kind == "colour":
        extra["to_colour"] = draw(st.sampled_from(visual.COLOURS[1:]))
    elif kind == "text":
        extra["text"] = draw(st.text(alphabet=sorted(visual.SCREEN_TEXT_CHARS - {" "}), min_size=1, max_size=24))
    elif kind == "repeat":
        extra["count"] = draw(st.integers(1, visual.MAX_COUNT))
        extra["period_ms"] = 100 * draw(st.integers(3, 30))
    n = draw(st.sampled_from([1, extra["count"]])) if kind == "repeat" else 1
    if kind != "text":
        extra.update(colour="red", shape=draw(st.sampled_from(visual.SHAPES)))
    return CueSpec(kind=kind, after_ms=after_ms, responses=tuple(draw(_TEXT) for _ in range(n)), **extra)


def test_cues_of_one_scene_must_show_objects_told_apart():
    cue = {"kind": "appear", "after_ms": 1000, "shape": "circle", "colour": "red", "responses": ["there"]}
    turns = [{"speaker": "A", "text": "watch", "act": "visual_request", "cues": [cue]},
             {"speaker": "A", "text": "and this", "act": "visual_request",
              "cues": [{**cue, "kind": "colour", "colour": "blue", "to_colour": "red"}]}]
    with pytest.raises(ScriptError, match=r"turns\[1\]\.cues\[0\]: shows a red circle, as turns\[0\]\.cues\[0\]"):
        parse_dialogue({"id": "d", "speakers": {"A": {}, "B": {}}, "turns": turns})
    turns[1]["cues"][0]["shape"] = "square"
    parse_dialogue({"id": "d", "speakers": {"A": {}, "B": {}}, "turns": turns})


_CUES = st.lists(st.integers(1, 600_000), min_size=1, max_size=3, unique=True).flatmap(
    lambda ts: st.tuples(*[_cue(t) for t in sorted(ts)]))


@st.composite
def dialogues(draw):
    names = draw(st.lists(_NAME, min_size=2, max_size=4, unique=True))
    roles: list[str | None] = [None] * len(names)
    if draw(st.booleans()):
        roles[0] = "model"
        roles[1:] = ["user"] * (len(names) - 1)
    speakers = tuple((n, SpeakerSpec(voice=draw(_VOICE), pitch=draw(st.integers(0, 99)),
                                     rate=draw(st.integers(80, 450)), role=r))
                     for n, r in zip(names, roles, strict=True))
    turns = []
    used: set[tuple[str, str]] = set()
    for i in range(draw(st.integers(1, 10))):
        speaker = draw(st.sampled_from(names))
        act = draw(st.sampled_from(ACTS))
        timed = None
        if act in ("backchannel", "interruption", "simultaneous") and (i == 0 or turns[-1].speaker == speaker):
            act = "statement"
        parts: dict = {}
        if act == "timed_request":
            targets = sorted(draw(st.sets(st.integers(1, 600_000), min_size=1, max_size=4)))
            responder = draw(st.sampled_from([n for n in names if n != speaker]))
            timed = TimedSpec(targets_ms=tuple(targets), responses=tuple(draw(_TEXT) for _ in targets),
                              responder=responder)
        elif act == "visual_request":
            cues = tuple(draw(_CUES))
            pairs = [p for c in cues if c.kind != "text"
                     for p in {(c.shape, c.colour), (c.shape, c.to_colour or c.colour)}]
            if len(set(pairs)) == len(pairs) and not used & set(pairs):  # one scene: objects told apart
                used.update(pairs)
                others = [n for n in names if n != speaker]
                parts["visual"] = VisualSpec(cues=cues, responder=draw(st.sampled_from(others)))
            else:
                act = "statement"
        elif act == "delegation":
            parts["background"] = BackgroundSpec(result=draw(_TEXT), mention=draw(_TEXT),
                                                 after_ms=draw(st.integers(1, 600_000)))
        elif act == "simultaneous":
            parts["lag_ms"] = draw(st.none() | st.integers(500, 5000))
        turns.append(TurnSpec(speaker=speaker, text=draw(_TEXT), act=act, timed=timed, **parts))
    return Dialogue(id=draw(st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True)), speakers=speakers,
                    turns=tuple(turns), language=draw(st.sampled_from(["en", "en-GB", "fr", "zh-Hant-TW"])),
                    license=draw(st.sampled_from([None, "Apache-2.0", "CC-BY-4.0"])))


# Dialogues draw many texts, each filtered for speakable characters: filtering is expected.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(dialogues())
def test_canonical_round_trip(d):
    text = d.to_json()
    assert "\n" not in text and "\r" not in text
    again = parse_dialogue(text)
    assert again == d
    assert again.to_json() == text and again.sha256() == d.sha256()
    assert parse_dialogue(text.encode("utf-8")) == d
    assert list(read_dialogues([text])) == [(1, d)]


def _err(item: Dialogue | ScriptError) -> ScriptError:
    assert isinstance(item, ScriptError), item
    return item


def _dlg(item: Dialogue | ScriptError) -> Dialogue:
    assert isinstance(item, Dialogue), item
    return item


def test_read_dialogues_numbers_lines_and_keeps_going():
    good = json.dumps(EXAMPLE)
    other = json.dumps(EXAMPLE | {"id": "d2"})
    lines = [good, "", "   ", "{broken", other, good, json.dumps(EXAMPLE | {"id": "d3", "turns": "x"})]
    out = list(read_dialogues(lines))
    assert [n for n, _ in out] == [1, 4, 5, 6, 7]
    assert isinstance(out[0][1], Dialogue) and isinstance(out[2][1], Dialogue)
    assert _err(out[1][1]).reason == "invalid_json" and _err(out[1][1]).line == 4
    assert str(out[1][1]).startswith("line 4: ")
    assert _err(out[3][1]).reason == "bad_id" and "line 1" in str(out[3][1])  # d1 again
    assert _err(out[4][1]).reason == "bad_type" and _err(out[4][1]).dialogue_id == "d3"


def test_read_dialogues_from_a_file(tmp_path):
    path = tmp_path / "scripts.jsonl"
    good = json.dumps(EXAMPLE, ensure_ascii=False).encode()
    second = json.dumps(EXAMPLE | {"id": "d2"}).encode()
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\r\n\n" + b'{"id": "\xff"}\n' + second)
    out = list(read_dialogues(path))
    assert [n for n, _ in out] == [1, 3, 4]
    assert out[0][1] == parse_dialogue(EXAMPLE)
    assert _err(out[1][1]).reason == "invalid_json" and "UTF-8" in str(out[1][1])
    assert _dlg(out[2][1]).id == "d2"
    assert [n for n, _ in read_dialogues(str(path))] == [1, 3, 4]


def test_whitespace_controls_collapse_and_other_marks_stay():
    obj = _base()
    obj["turns"][0]["text"] = "line one\r\nline\ttwo\x0bthree\x1cfour\x85five\u2028six"
    obj["turns"][2]["text"] = "\u05e9\u05dc\u05d5\u05dd \u200f! cafe\u0301"  # RLM kept, NFC applied
    d = parse_dialogue(obj)
    assert d.turns[0].text == "line one line two three four five six"
    assert d.turns[2].text == "\u05e9\u05dc\u05d5\u05dd \u200f! caf\u00e9"


def test_messages_never_carry_raw_controls():
    line = json.dumps(EXAMPLE | {"\x1b[2J\u202e": 1, "id": "x\x1b"})
    with pytest.raises(ScriptError) as info:
        parse_dialogue(line)
    text = str(info.value)
    assert refused_char(text) is None and "\\x1b[2J" in text
    assert text == visible(text)


def test_read_dialogues_skips_an_oversized_line_and_keeps_going(tmp_path):
    path = tmp_path / "big.jsonl"
    good = json.dumps(EXAMPLE).encode()
    path.write_bytes(good + b"\n" + b"[" * (MAX_LINE_BYTES + 10) + b"\n" + json.dumps(EXAMPLE | {"id": "d2"}).encode())
    out = list(read_dialogues(path))
    assert [n for n, _ in out] == [1, 2, 3]
    assert _err(out[1][1]).reason == "line_too_long" and _dlg(out[2][1]).id == "d2"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=8), st.booleans(),
       st.integers(1, 10), st.integers(1, 5))
def test_bounded_lines_are_the_lines_with_long_ones_left_out(parts, final_newline, limit, chunk):
    import io

    data = b"\n".join(parts) + (b"\n" if final_newline and parts else b"")
    lines = [p + b"\n" for p in data.split(b"\n")[:-1]] + ([data.rsplit(b"\n", 1)[-1]] if data and not
                                                          data.endswith(b"\n") else [])
    want = [line if len(line) <= limit else None for line in lines]
    assert list(bounded_lines(io.BytesIO(data), limit=limit, chunk=chunk)) == want


_CUE = {"kind": "appear", "after_ms": 1000, "shape": "circle", "colour": "red", "responses": ["there"]}


def _behaviour(turn: dict, speakers: dict | None = None) -> dict:
    return {"id": "b", "speakers": speakers or {"A": {}, "B": {}},
            "turns": [{"speaker": "A", "text": "hello there"}, turn]}


@pytest.mark.parametrize("turn, reason, where", [
    ({"speaker": "A", "text": "watch", "act": "visual_request"}, "missing_field", "cues"),
    ({"speaker": "A", "text": "watch", "cues": [_CUE]}, "bad_timing", "cues"),
    ({"speaker": "A", "text": "watch", "act": "visual_request", "cues": []}, "bad_timing", "cues"),
    ({"speaker": "A", "text": "watch", "act": "visual_request", "cues": [{**_CUE, "kind": "blink"}]}, "bad_act",
     "cues[0].kind"),
    ({"speaker": "A", "text": "watch", "act": "visual_request", "cues": [{**_CUE, "colour": "mauve"}]}, "bad_act",
     "cues[0].colour"),
    ({"speaker": "A", "text": "watch", "act": "visual_request", "cues": [{**_CUE, "kind": "repeat"}]},
     "missing_field", "cues[0].count"),
    ({"speaker": "A", "text": "watch", "act": "visual_request",
      "cues": [{**_CUE, "kind": "repeat", "count": 3, "period_ms": 1250}]}, "bad_timing", "cues[0].period_ms"),
    ({"speaker": "A", "text": "watch", "act": "visual_request",
      "cues": [{**_CUE, "kind": "repeat", "count": 3, "period_ms": 1200, "responses": ["a", "b"]}]},
     "bad_timing", "cues[0].responses"),
    ({"speaker": "A", "text": "watch", "act": "visual_request", "cues": [{**_CUE, "kind": "colour"}]},
     "missing_field", "cues[0].to_colour"),
    ({"speaker": "A", "text": "watch", "act": "visual_request", "cues": [{**_CUE, "to_colour": "blue"}]},
     "bad_timing", "cues[0].to_colour"),
    ({"speaker": "A", "text": "read it", "act": "visual_request",
      "cues": [{"kind": "text", "after_ms": 5, "text": "hello", "responses": ["hi"]}]}, "bad_text", "cues[0].text"),
    ({"speaker": "A", "text": "read it", "act": "visual_request",
      "cues": [{"kind": "text", "after_ms": 5, "text": "HELLO", "shape": "square", "responses": ["hi"]}]},
     "bad_timing", "cues[0].shape"),
    ({"speaker": "A", "text": "watch", "act": "visual_request", "cues": [{**_CUE, "sound": 1}]}, "unknown_field",
     "cues[0].sound"),
    ({"speaker": "A", "text": "watch", "act": "visual_request", "responder": "A", "cues": [_CUE]}, "bad_timing",
     "responder"),
    ({"speaker": "A", "text": "watch", "act": "visual_request", "cues": [_CUE, {**_CUE, "shape": "square",
                                                                                 "after_ms": 1000}]},
     "bad_timing", "cues[1].after_ms"),
    ({"speaker": "B", "text": "let me check", "act": "delegation", "result": "x"}, "missing_field", "mention"),
    ({"speaker": "B", "text": "let me check", "act": "delegation", "result": "x", "mention": "y", "after_ms": 0},
     "bad_timing", "after_ms"),
    ({"speaker": "B", "text": "ok", "result": "x"}, "bad_timing", "result"),
    ({"speaker": "B", "text": "bonjour", "act": "simultaneous", "lag_ms": 100}, "bad_timing", "lag_ms"),
    ({"speaker": "A", "text": "again", "act": "simultaneous"}, "bad_act", "act"),
    ({"speaker": "B", "text": "ok", "lag_ms": 1000}, "bad_timing", "lag_ms"),
])
def test_behaviour_acts_are_checked(turn, reason, where):
    with pytest.raises(ScriptError) as info:
        parse_dialogue(_behaviour(turn))
    assert info.value.reason == reason, str(info.value)
    assert info.value.field == where and info.value.turn == 1, str(info.value)


def test_a_speaker_language_must_be_a_language_tag():
    with pytest.raises(ScriptError, match="bad_language"):
        parse_dialogue(_behaviour({"speaker": "B", "text": "salut"}, {"A": {}, "B": {"language": "french!"}}))
    d = parse_dialogue(_behaviour({"speaker": "B", "text": "salut", "act": "simultaneous"},
                                  {"A": {}, "B": {"voice": "fr-fr", "language": "fr"}}))
    assert d.speaker("B").language == "fr" and d.to_dict()["speakers"]["B"]["language"] == "fr"


def test_the_act_parts_round_trip_and_count_as_speech():
    turn = {"speaker": "A", "text": "count", "act": "visual_request",
            "cues": [{**_CUE, "kind": "repeat", "count": 2, "period_ms": 900, "responses": ["one", "two"]},
                     {"kind": "text", "after_ms": 9000, "text": "GATE 12", "responses": ["gate twelve"]}]}
    d = parse_dialogue(_behaviour(turn))
    assert parse_dialogue(d.to_json()) == d
    assert d.turns[1].spoken_chars() == len("count") + len("one") + len("two") + len("gate twelve")
    assert d.turns[1].responder == "B"
    bg = parse_dialogue(_behaviour({"speaker": "B", "text": "let me check", "act": "delegation",
                                    "result": "Open 10-18.", "mention": "It opens at ten.", "after_ms": 4000}))
    assert parse_dialogue(bg.to_json()) == bg and bg.turns[1].background is not None

