"""Bundled dialogue scripts and the template generator: validity, determinism, variety, timing,
and the kinds (conversations, timed, visual, background, simultaneous)."""

import importlib.resources
import json
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.schemas import visual
from microturn.schemas.dialogue import (
    BackgroundSpec,
    Dialogue,
    ScriptError,
    TimedSpec,
    TurnSpec,
    VisualSpec,
    parse_dialogue,
    read_dialogues,
)
from microturn.schemas.numbers import cardinal
from microturn.synth import templates
from microturn.synth.template_text import RENDER_LANGUAGES, sentences
from microturn.synth.templates import (
    INTERRUPT_P,
    KINDS,
    bundled_dialogues,
    dialogue_kind,
    generate,
    kind_shares,
    main,
    write_jsonl,
)

NEW_KINDS = ("visual", "background", "simultaneous")


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
    by_kind = {k: [d for d in ds if dialogue_kind(d) == k] for k in KINDS}
    plain, timed = by_kind["dialogue"], by_kind["timed"]
    assert len(plain) >= 20 and len(timed) >= 6
    assert all(3 <= len(by_kind[k]) <= 5 for k in NEW_KINDS)
    assert ds == [d for k in KINDS for d in by_kind[k]]  # one file per kind, in the order of KINDS
    assert templates.BUNDLED_FILES == tuple(f"{k}s.jsonl" if k == "dialogue" else f"{k}.jsonl" for k in KINDS)
    assert len({d.id for d in ds}) == len(ds)
    assert all(d.license == "Apache-2.0" and d.language == "en" and len(d.speakers) == 2 for d in ds)
    assert all(8 <= len(d.turns) <= 20 for d in plain)
    acts = [t.act for d in plain for t in d.turns]
    assert acts.count("backchannel") >= 10 and acts.count("interruption") >= 3
    assert len({s.voice for d in ds for _, s in d.speakers}) >= 5
    for d in ds:
        if dialogue_kind(d) != "dialogue":
            assert {s.role for _, s in d.speakers} == {"user", "model"}
            _check_kind(d)
    cues = [c for d in by_kind["visual"] for t in d.turns if t.visual for c in t.visual.cues]
    assert {c.kind for c in cues} == set(visual.CUE_KINDS)  # the hand-written scripts show every cue kind
    assert {d.speaker("B").language for d in by_kind["simultaneous"]} == {None, *RENDER_LANGUAGES}
    for d in timed:
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
    conversations = sum(dialogue_kind(d) == "dialogue" for d in every)
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
    assert main(["--n", "4", "--seed", "9", "--kinds", "visual,simultaneous"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [dialogue_kind(parse_dialogue(x)) for x in lines[:2]] == ["visual", "simultaneous"]
    assert {dialogue_kind(parse_dialogue(x)) for x in lines} <= {"visual", "simultaneous"}
    with pytest.raises(SystemExit):
        main(["--n", "2", "--kinds", "visaul"])
    assert "did you mean 'visual'?" in capsys.readouterr().err


def test_fillers_sit_mid_clause_in_some_long_turns(generated):
    # Conversations hesitate; the other kinds' turns are said as written (German "um" is a word).
    turns = [t for d in generated if dialogue_kind(d) == "dialogue" for t in d.turns]
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


def _spoken(d: Dialogue) -> list[str]:
    """Everything anyone says in ``d``: turns, timed and visual responses, mentions."""
    out = []
    for t in d.turns:
        out.append(t.text)
        if t.timed is not None:
            out.extend(t.timed.responses)
        if t.visual is not None:
            out.extend(r for c in t.visual.cues for r in c.responses)
        if t.background is not None:
            out.append(t.background.mention)
    return out


def _visual(turn: TurnSpec) -> VisualSpec:
    assert turn.visual is not None, "a visual_request turn carries its cues"
    return turn.visual


def _background(turn: TurnSpec) -> BackgroundSpec:
    assert turn.background is not None, "a delegation turn carries its result"
    return turn.background


def _check_kind(d: Dialogue) -> None:
    """The rules of the newer kinds that hold for bundled and generated scripts alike."""
    role = {name: spec.role for name, spec in d.speakers}
    kind = dialogue_kind(d)
    if kind in NEW_KINDS:
        # Numbers are spelled in what is said (a TTS reads "42" differently by voice and language).
        assert not re.search(r"\d", " ".join(_spoken(d))), d.id
    for i, t in enumerate(d.turns):
        if t.act == "visual_request":
            spec = _visual(t)
            assert role[t.speaker] == "user" and role[spec.responder] == "model"
            pairs = []
            for c in spec.cues:
                assert c.kind in visual.CUE_KINDS
                if c.kind == "text":
                    assert c.text and set(c.text) <= visual.SCREEN_TEXT_CHARS and len(c.text) <= visual.MAX_SCREEN_TEXT
                    continue
                assert c.shape in visual.SHAPES and c.colour in visual.COLOURS
                pairs.append((c.shape, c.colour))
                if c.kind == "colour":
                    assert c.to_colour in visual.COLOURS
                    pairs.append((c.shape, c.to_colour))
            assert len(pairs) == len(set(pairs)), "no two cues show the same object (the scene requires it)"
        if t.act == "delegation":
            result = _background(t).result
            assert role[t.speaker] == "model"
            assert all(result not in text for text in _spoken(d)), "a result is text, never spoken"
            assert any(role[u.speaker] == "user" for u in d.turns[i + 1:]), "the mention waits for a user turn"
        if t.act == "simultaneous":
            source = d.turns[i - 1]
            assert role[t.speaker] == "model" and role[source.speaker] == "user" and source.act == "statement"
            assert len(sentences(t.text)) == len(sentences(source.text)) >= 2
            assert all(s[-1] in ".?!" for s in sentences(t.text) + sentences(source.text))
            language = d.speaker(t.speaker).language
            if language is None:  # shadowing: the same words in another English voice
                assert t.text == source.text and d.speaker(t.speaker).voice != d.speaker(source.speaker).voice
            else:
                assert language in RENDER_LANGUAGES and d.speaker(t.speaker).voice.startswith(language)
                assert t.text != source.text


def test_the_default_mix_and_the_first_dialogue_of_each_kind():
    shares = kind_shares()
    assert shares == pytest.approx({"dialogue": 0.55, "timed": 0.15, "visual": 0.10, "background": 0.10,
                                    "simultaneous": 0.10})
    ds = generate(1000, seed=12)
    assert [dialogue_kind(d) for d in ds[:5]] == list(KINDS)  # a set of five shows every kind
    counts = Counter(dialogue_kind(d) for d in ds)
    for kind, share in shares.items():
        assert abs(counts[kind] / 1000 - share) < 0.04, (kind, counts)
    for seed in (0, 1, 7):
        assert [dialogue_kind(d) for d in generate(5, seed=seed)] == list(KINDS)


def test_the_newer_kinds_take_one_band_and_leave_the_others_as_they_were():
    """Each dialogue is what its kind's builder makes of the dialogue's own stream: selecting
    other kinds changes which kind dialogue i is, never what a dialogue of that kind says. With
    the default shares a first draw under 0.15 is timed and one of 0.45 or more a conversation,
    as before the newer kinds (which took the band 0.15-0.45 of conversations)."""
    import numpy as np

    mixed = generate(150, seed=6)
    alone = {k: generate(150, seed=6, kinds=[k]) for k in KINDS}
    for i, d in enumerate(mixed):
        assert d == alone[dialogue_kind(d)][i]
        if i >= len(KINDS):
            u = np.random.default_rng([6, i]).random()
            expected = "timed" if u < 0.15 else "dialogue" if u >= 0.45 else dialogue_kind(d)
            assert dialogue_kind(d) == expected
            assert (dialogue_kind(d) in NEW_KINDS) == (0.15 <= u < 0.45)
    # The two older kinds alone are the earlier mix: timed below 0.15, conversations above.
    for i, d in enumerate(generate(60, seed=6, kinds=("dialogue", "timed"))[2:], start=2):
        u = np.random.default_rng([6, i]).random()
        assert d == alone["timed" if u < 0.15 else "dialogue"][i]


def test_kinds_select_some_and_bad_kinds_are_refused():
    ds = generate(200, seed=3, kinds=["background", "visual"])
    kinds = Counter(dialogue_kind(d) for d in ds)
    assert set(kinds) == {"visual", "background"} and 80 <= kinds["visual"] <= 120
    assert [dialogue_kind(d) for d in ds[:2]] == ["visual", "background"]  # in the order of KINDS
    assert generate(30, seed=3, kinds=("visual", "background", "visual")) == ds[:30]  # order, repeats: no matter
    assert kind_shares(["visual", "background"]) == {"visual": 0.5, "background": 0.5}
    assert kind_shares(["dialogue", "timed"], timed_share=0.5) == {"dialogue": 0.5, "timed": 0.5}
    assert kind_shares(["timed"]) == {"timed": 1.0}
    no_timed = generate(100, seed=3, timed_share=0.0)
    assert [dialogue_kind(d) for d in no_timed[:4]] == ["dialogue", "visual", "background", "simultaneous"]
    assert not any(_timed_turns(d) for d in no_timed)
    with pytest.raises(ValueError, match=r"unknown kind 'visaul' \(did you mean 'visual'\?\); the kinds are "
                                         r"dialogue, timed, visual, background, simultaneous"):
        generate(3, kinds=["visaul"])
    with pytest.raises(ValueError, match="kinds is empty"):
        generate(3, kinds=[])
    with pytest.raises(ValueError, match="not the string 'visual'"):
        generate(3, kinds="visual")
    with pytest.raises(ValueError, match="makes nothing"):
        generate(3, kinds=["timed"], timed_share=0.0)
    assert templates.parse_kinds(" visual , timed") == ("timed", "visual")
    with pytest.raises(ValueError, match="empty kind name"):
        templates.parse_kinds("visual,")


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 8), st.integers(0, 4),
       st.none() | st.lists(st.sampled_from(KINDS), min_size=1, max_size=5), st.floats(0.05, 1.0))
def test_any_kinds_give_deterministic_prefix_stable_round_tripping_dialogues(seed, n, k, kinds, share):
    longer = generate(n + k, seed=seed, kinds=kinds, timed_share=share)
    assert generate(n, seed=seed, kinds=kinds, timed_share=share) == longer[:n]  # i depends on (seed, i, args)
    again = generate(n + k, seed=seed, kinds=None if kinds is None else kinds[::-1], timed_share=share)
    assert [d.to_json() for d in again] == [d.to_json() for d in longer]
    for d in longer:
        assert parse_dialogue(d.to_json()) == d
        assert kinds is None or dialogue_kind(d) in kinds
        _check_kind(d)


def test_at_least_twenty_templates_per_newer_kind():
    text = templates.bundled_template_text()
    assert len(text.visual_requests()) >= 20
    assert set(templates.VISUAL_REQUESTS) == {*visual.CUE_KINDS, "count_aloud", "count_total"} - {"repeat"}
    assert all(len(v) >= 3 for v in templates.VISUAL_REQUESTS.values())  # every cue kind, varied
    assert len(text.background_topics) >= 20 and sum(len(t.requests) for t in text.background_topics) >= 20
    assert len(text.passages) >= 20
    assert len(text.delegations) >= 8 and len(text.screen_texts) >= 12


def test_every_background_topic_fills_to_a_valid_unspoken_result():
    import numpy as np

    for seed in range(20):
        slots = templates._background_slots(np.random.default_rng(seed))
        for topic in templates.BACKGROUND_TOPICS:
            result = topic.result.format(**slots)
            for template in (*topic.requests, *topic.mentions):
                said = template.format(**slots)
                assert not re.search(r"\d", said) and result not in said
                assert BackgroundSpec(result=result, mention=said, after_ms=3000).result == result
        assert int(slots["sum_d"]) == int(slots["a_d"]) + int(slots["b_d"])
        assert int(slots["total_d"]) == int(slots["people_d"]) * int(slots["each_d"])
        assert int(slots["tip_d"]) * 100 == int(slots["bill_d"]) * int(slots["percent_d"])


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_each_newer_kind_is_valid(kind):
    ds = generate(150, seed=11, kinds=[kind])
    assert {dialogue_kind(d) for d in ds} == {kind}
    for d in ds:
        assert parse_dialogue(d.to_json()) == d
        assert d.license == "Apache-2.0" and d.language == "en" and len(d.speakers) == 2
        assert d.speaker("A").role == "user" and d.speaker("B").role == "model"
        assert not re.search(r"[{}]", " ".join(_spoken(d)))  # every slot filled
        _check_kind(d)
    assert len({tuple(_spoken(d)) for d in ds}) == 150


def test_visual_requests_time_their_cues():
    ds = generate(200, seed=13, kinds=["visual"])
    cue_kinds, counts, modes = Counter(), Counter(), Counter()
    for d in ds:
        (turn,) = [t for t in d.turns if t.act == "visual_request"]
        spec = _visual(turn)
        assert (turn.speaker, spec.responder) == ("A", "B")
        assert 1 <= len(spec.cues) <= 3 and len({c.kind for c in spec.cues}) == len(spec.cues)
        counts[len(spec.cues)] += 1
        ready = 0
        for c in spec.cues:
            cue_kinds[c.kind] += 1
            assert 2000 <= c.after_ms - ready <= 15_000  # 2-15 s after the request or the cue before
            ready = c.after_ms
            if c.kind == "repeat":
                assert c.count is not None and c.period_ms is not None and 2 <= c.count <= 8
                assert c.period_ms % 100 == 0
                ready += c.count * c.period_ms
                if len(c.responses) == c.count:  # counting aloud, one number per bounce
                    assert 1000 <= c.period_ms <= 2000
                    assert [r.rstrip(".").lower() for r in c.responses] == [cardinal(j) for j in range(1, c.count + 1)]
                    modes["aloud"] += 1
                else:
                    assert 500 <= c.period_ms <= 1500 and len(c.responses) == 1
                    assert cardinal(c.count) in c.responses[0].lower()
                    modes["total"] += 1
            elif c.kind == "colour":
                assert c.to_colour != c.colour
    assert set(cue_kinds) == set(visual.CUE_KINDS) and min(cue_kinds.values()) >= 20
    assert set(counts) == {1, 2, 3} and counts[1] > counts[3]
    assert modes["aloud"] >= 10 and modes["total"] >= 10
    requests = {t.text for d in ds for t in d.turns if t.act == "visual_request"}
    assert len(requests) >= 150


def test_background_delegations_wait_for_the_user():
    ds = generate(150, seed=14, kinds=["background"])
    results = set()
    for d in ds:
        (i,) = [k for k, t in enumerate(d.turns) if t.act == "delegation"]
        spec = _background(d.turns[i])
        assert 3000 <= spec.after_ms <= 12_000
        assert d.turns[i].speaker == "B" and d.turns[i - 1].speaker == "A"
        assert sum(t.speaker == "A" for t in d.turns[i + 1:]) >= 1
        results.add(spec.result)
    assert len(results) >= 140
    topics = {r.split(":")[0].split(" ")[0] for r in results}
    assert len(topics) >= 12  # many topics, not one


def test_simultaneous_renderings_align_sentence_by_sentence():
    ds = generate(150, seed=15, kinds=["simultaneous"])
    languages = Counter()
    for d in ds:
        acts = [(t.speaker, t.act) for t in d.turns]
        assert 2 <= len(acts) // 2 <= 4 and acts == [("A", "statement"), ("B", "simultaneous")] * (len(acts) // 2)
        language = d.speaker("B").language
        languages[language or "en"] += 1
        if language is not None:
            assert d.speaker("B").voice in templates.LANGUAGE_VOICES[language]
        for source, rendering in zip(d.turns[::2], d.turns[1::2], strict=True):
            assert len(sentences(source.text)) == len(sentences(rendering.text))
    assert set(languages) == {"en", *RENDER_LANGUAGES} and min(languages.values()) >= 20
