"""Bundled dialogue scripts and the template generator: validity, determinism, variety, timing."""

import importlib.resources
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.schemas.dialogue import Dialogue, ScriptError, TimedSpec, TurnSpec, parse_dialogue, read_dialogues
from microturn.schemas.numbers import cardinal
from microturn.synth import templates
from microturn.synth.templates import INTERRUPT_P, bundled_dialogues, generate, main, write_jsonl


def _timed_turns(d: Dialogue):
    return [t for t in d.turns if t.act == "timed_request"]


def _timed(turn: TurnSpec) -> TimedSpec:
    assert turn.timed is not None, "a timed_request turn carries its timing"
    return turn.timed


@pytest.mark.parametrize("name", templates.BUNDLED_FILES)
def test_bundled_files_parse_line_by_line(name):
    path = importlib.resources.files("microturn.synth") / "data" / name
    items = list(read_dialogues(path.read_bytes().splitlines()))
    errors = [(n, str(e)) for n, e in items if isinstance(e, ScriptError)]
    assert not errors
    assert all(isinstance(d, Dialogue) and parse_dialogue(d.to_json()) == d for _, d in items)


def test_bundled_dialogues():
    ds = bundled_dialogues()
    plain = [d for d in ds if not _timed_turns(d)]
    timed = [d for d in ds if _timed_turns(d)]
    assert len(plain) >= 20 and len(timed) >= 6
    assert ds == plain + timed  # dialogues.jsonl, then timed.jsonl
    assert len({d.id for d in ds}) == len(ds)
    assert all(d.license == "Apache-2.0" and d.language == "en" and len(d.speakers) == 2 for d in ds)
    assert all(8 <= len(d.turns) <= 20 for d in plain)
    acts = [t.act for d in plain for t in d.turns]
    assert acts.count("backchannel") >= 10 and acts.count("interruption") >= 3
    assert len({s.voice for d in ds for _, s in d.speakers}) >= 5
    for d in timed:
        assert {s.role for _, s in d.speakers} == {"user", "model"}
        for t in _timed_turns(d):
            assert d.speaker(t.speaker).role == "user" and d.speaker(_timed(t).responder).role == "model"
    by_id = {d.id: d for d in ds}
    assert _timed(_timed_turns(by_id["timed-ten-seconds"])[0]).targets_ms == (10_000,)
    count = _timed(_timed_turns(by_id["timed-count-threes"])[0])
    assert count.targets_ms == (3000, 6000, 9000, 12000) and count.responses[-1] == "Twelve."
    assert bundled_dialogues() is not bundled_dialogues()  # callers may mutate their list


def test_generate_is_deterministic():
    a = [d.to_json() for d in generate(60, seed=3)]
    assert a == [d.to_json() for d in generate(60, seed=3)]
    assert a[:20] == [d.to_json() for d in generate(20, seed=3)]  # dialogue i depends on (seed, i) only
    b = [d.to_json() for d in generate(60, seed=4)]
    assert sum(x != y for x, y in zip(a, b, strict=True)) == 60
    assert [d.id for d in generate(3, seed=7)] == ["gen-7-00000", "gen-7-00001", "gen-7-00002"]


@pytest.fixture(scope="module")
def generated():
    return generate(300, seed=0)


def test_generated_dialogues_are_valid(generated):
    for d in generated:
        assert parse_dialogue(d.to_json()) == d
        assert d.license == "Apache-2.0" and d.language == "en"
        assert len(d.speakers) == 2 and len({s.voice for _, s in d.speakers}) == 2
        for _, s in d.speakers:
            assert templates.PITCH_RANGE[0] <= s.pitch <= templates.PITCH_RANGE[1]
            assert templates.RATE_RANGE[0] <= s.rate <= templates.RATE_RANGE[1]
        assert not re.search(r"[{}]", " ".join(t.text for t in d.turns))  # every slot filled


def test_variety(generated):
    sample = generated[:200]
    texts = {t.text for d in sample for t in d.turns}
    voices = {(s.voice, s.pitch, s.rate) for d in sample for _, s in d.speakers}
    scripts = {tuple(t.text for t in d.turns) for d in sample}
    assert len(texts) >= 500
    assert len({v for v, _, _ in voices}) >= 30 and len(voices) >= 350
    assert len(scripts) >= 190
    assert len({d.sha256() for d in sample}) == 200
    acts = [t.act for d in sample for t in d.turns]
    assert acts.count("backchannel") >= 100 and acts.count("interruption") >= 30
    # slot swapping: the bundled names and places are not the only ones that appear
    said = " ".join(texts)
    assert sum(name in said for name in templates.NAMES) >= 20
    assert sum(place in said for place in templates.PLACES) >= 15


def test_timed_share(generated):
    share = sum(bool(_timed_turns(d)) for d in generated) / len(generated)
    assert 0.10 <= share <= 0.20
    assert not any(_timed_turns(d) for d in generate(50, seed=1, timed_share=0.0))
    assert all(_timed_turns(d) for d in generate(50, seed=1, timed_share=1.0))
    half = generate(300, seed=2, timed_share=0.5)
    assert 0.4 <= sum(bool(_timed_turns(d)) for d in half) / 300 <= 0.6


def _interruptions(dialogues) -> int:
    return sum(t.act == "interruption" for d in dialogues for t in d.turns)


def test_interruption_share_sets_how_many_conversations_get_one():
    """Share 0 leaves only the bundled scripts' own interruptions; share 1 gives one to every
    conversation with a turn long enough to cut into; the default is the documented 0.3; the
    draw is taken whatever the share, so dialogues without the extra interruption are unchanged."""
    none, default, every = (generate(300, seed=4, interruption_share=s) for s in (0.0, INTERRUPT_P, 1.0))
    assert generate(300, seed=4) == default
    assert _interruptions(none) < _interruptions(default) < _interruptions(every)
    conversations = sum(not _timed_turns(d) for d in every)
    assert _interruptions(every) - _interruptions(none) >= 0.8 * conversations
    changed = sum(a != b for a, b in zip(none, every, strict=True))
    assert changed == _interruptions(every) - _interruptions(none)
    bads: list[Any] = [-0.1, 1.5, True, "0.5"]
    for bad in bads:
        with pytest.raises(ValueError, match="interruption_share"):
            generate(3, interruption_share=bad)


def _number(word: str) -> int:
    return next(i for i in range(100) if cardinal(i) == word.lower().rstrip("."))


def test_timed_dialogues_say_the_right_thing():
    kinds = set()
    for d in generate(120, seed=5, timed_share=1.0):
        (turn,) = _timed_turns(d)
        assert (turn.speaker, _timed(turn).responder) == ("A", "B")
        assert d.speaker("A").role == "user" and d.speaker("B").role == "model"
        targets, responses = _timed(turn).targets_ms, _timed(turn).responses
        if len(targets) == 1:
            seconds = targets[0] // 1000
            assert targets[0] % 1000 == 0 and 3 <= seconds <= 20
            assert f" {cardinal(seconds)} seconds" in turn.text
            kinds.add("remind" if "remind" in turn.text.lower() else "when")
        else:
            step = targets[0]
            assert 2000 <= step <= 5000 and step % 1000 == 0 and 2 <= len(targets) <= 5
            assert targets == tuple(step * j for j in range(1, len(targets) + 1))
            said = [_number(r) for r in responses]
            if said[0] == 1:
                assert said == list(range(1, len(targets) + 1))
                kinds.add("count_to")
            else:
                assert said == [t // 1000 for t in targets]
                kinds.add("count_step")
            assert f"{cardinal(step // 1000)} seconds" in turn.text
    assert kinds == {"when", "remind", "count_to", "count_step"}


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 6), st.floats(0.0, 1.0))
def test_any_seed_gives_valid_round_tripping_dialogues(seed, n, share):
    for d in generate(n, seed=seed, timed_share=share):
        assert parse_dialogue(d.to_json()) == d


def test_language_and_argument_checks():
    assert {d.language for d in generate(5, seed=0, language="en-GB")} == {"en-GB"}
    bad: list[dict[str, Any]] = [{"language": "fr"}, {"timed_share": 1.5}, {"seed": -1}]
    for kwargs in bad:
        with pytest.raises(ValueError):
            generate(3, **kwargs)
    with pytest.raises(ValueError):
        generate(-1)


def test_write_jsonl_and_main(tmp_path, capsys):
    ds = generate(12, seed=9)
    path = tmp_path / "out.jsonl"
    write_jsonl(ds, path)
    assert [d for _, d in read_dialogues(path)] == ds
    cli = tmp_path / "cli.jsonl"
    assert main(["--n", "12", "--seed", "9", "--output", str(cli)]) == 0
    assert cli.read_bytes() == path.read_bytes()
    assert main(["--n", "2", "--seed", "9"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["gen-9-00000", "gen-9-00001"]
    with pytest.raises(SystemExit):
        main(["--n", "2", "--language", "de"])


def test_fillers_sit_mid_clause_in_some_long_turns(generated):
    turns = [t for d in generated for t in d.turns]
    hesitant = [t for t in turns if set(t.text.split()) & set(templates.FILLERS)]
    long_turns = [t for t in turns if t.act in ("statement", "question")
                  and len(t.text.split()) >= templates.HESITATE_MIN_WORDS]
    # Some long turns hesitate (the scripts' own words hold no filler), most do not.
    assert 0.1 * len(long_turns) <= len(hesitant) <= 0.4 * len(long_turns)
    for t in hesitant:
        assert t.act in ("statement", "question")
        words = t.text.split()
        k = next(i for i, w in enumerate(words) if w in templates.FILLERS)
        assert 1 <= k < len(words) - 1 and words[k - 1][-1:].isalnum()  # never first, last or after a comma
