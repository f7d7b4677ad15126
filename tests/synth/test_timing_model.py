"""Tests of the turn-taking timing model: sampling invariants, serialisation, MLE recovery, and
the fit-sample-measure loop on a corpus whose timing is not from the model's families.

Arrays hold one entry per draw, an axis without a letter in the project's shape legend
(:mod:`microturn.schemas.legend`), so they are named in words.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from timing_corpus import make_corpus

from microturn.schemas.tables import SEGMENTS, WORDS
from microturn.schemas.turns import Turn, turn_stats
from microturn.synth.timing import DEFAULT_TIMING, FAMILIES, Duration, TimingModel, ks_statistic
from microturn.synth.timing_fit import PAUSE_MIN_MS, fit, measure

durations = st.one_of(
    st.builds(lambda m, s: Duration(family="lognormal", params=(m, s)),
              st.floats(1.0, 5000.0), st.floats(0.05, 2.0)),
    st.builds(lambda k, s: Duration(family="gamma", params=(k, s)),
              st.floats(0.2, 20.0), st.floats(1.0, 1000.0)),
    st.builds(lambda k, s: Duration(family="weibull", params=(k, s)),
              st.floats(0.3, 5.0), st.floats(1.0, 2000.0)),
)
models = st.builds(TimingModel, gap=durations, overlap_prob=st.floats(0.0, 1.0), overlap=durations,
                   pause=durations, reaction=durations, backchannel_delay=durations,
                   backchannel_rate=st.floats(0.0, 60.0))
seeds = st.integers(0, 2**32 - 1)


# --- sampling invariants -------------------------------------------------------------------


@given(durations, seeds, st.integers(0, 300))
def test_samples_are_integers_of_at_least_one_ms(d, seed, n):
    rng = np.random.default_rng(seed)
    draws = d.sample(rng, n)
    assert draws.shape == (n,) and draws.dtype == np.int64 and np.all(draws >= 1)
    one = d.sample(rng)
    assert type(one) is int and one >= 1


@given(st.floats(0.0, 1.0), seeds)
@settings(max_examples=30, deadline=None)
def test_transitions_are_never_zero_and_overlap_share_tends_to_overlap_prob(p, seed):
    # Convention: a transition is a gap (> 0) or minus an overlap (< 0); both durations are
    # >= 1 ms, so 0 never occurs and exact latching comes out as a 1 ms gap.
    model = dataclasses.replace(DEFAULT_TIMING, overlap_prob=p,
                                gap=Duration(family="lognormal", params=(3.0, 1.5)))
    rng = np.random.default_rng(seed)
    offsets = model.sample_transitions(rng, 4000)
    assert offsets.dtype == np.int64 and np.all(offsets != 0)
    # 4000 draws: the share's standard error is <= 0.008, so 0.05 is over 6 standard errors.
    assert abs(np.mean(offsets < 0) - p) <= 0.05
    assert model.sample_transition(rng) != 0


@given(models, seeds)
@settings(max_examples=30, deadline=None)
def test_same_seed_same_samples(model, seed):
    def draw(rng):
        return (model.sample_transitions(rng, 50).tolist(), model.sample_transition(rng),
                model.sample_pause(rng), model.sample_reaction(rng),
                model.sample_backchannel_delay(rng))
    assert draw(np.random.default_rng(seed)) == draw(np.random.default_rng(seed))


# --- serialisation -------------------------------------------------------------------------


@given(models)
def test_to_dict_round_trips_through_sorted_json(model):
    text = json.dumps(model.to_dict(), sort_keys=True)
    back = TimingModel.from_dict(json.loads(text))
    assert back == model
    assert json.dumps(back.to_dict(), sort_keys=True) == text


@given(models, st.text(min_size=1, max_size=12))
def test_from_dict_rejects_unknown_keys(model, key):
    d = model.to_dict()
    if key not in d:
        with pytest.raises(ValueError, match="unknown keys"):
            TimingModel.from_dict({**d, key: 1.0})
    dd = model.gap.to_dict()
    if key not in dd:
        with pytest.raises(ValueError, match="unknown keys"):
            Duration.from_dict({**dd, key: 1.0})


@given(models, st.text(max_size=12).filter(lambda f: f not in FAMILIES))
def test_from_dict_rejects_unknown_families(model, family):
    d = model.to_dict()
    d["overlap"] = {**d["overlap"], "family": family}
    with pytest.raises(ValueError, match="unknown duration family"):
        TimingModel.from_dict(d)


def test_from_dict_rejects_missing_keys_and_bad_values():
    d = DEFAULT_TIMING.to_dict()
    del d["pause"]
    with pytest.raises(ValueError, match="missing keys"):
        TimingModel.from_dict(d)
    with pytest.raises(ValueError, match="overlap_prob"):
        TimingModel.from_dict({**DEFAULT_TIMING.to_dict(), "overlap_prob": 1.5})
    with pytest.raises(ValueError, match="positive"):
        Duration.from_dict({"family": "gamma", "params": [2.0, -1.0]})
    with pytest.raises(ValueError, match="takes 2 params"):
        Duration.from_dict({"family": "lognormal", "params": [200.0]})


# --- maximum-likelihood fits ---------------------------------------------------------------


@pytest.mark.parametrize("truth,tolerance", [
    (Duration(family="lognormal", params=(300.0, 0.6)), (0.04, 0.04)),
    (Duration(family="gamma", params=(2.5, 120.0)), (0.08, 0.08)),
    (Duration(family="weibull", params=(1.8, 400.0)), (0.05, 0.05)),
])
def test_fit_recovers_parameters_and_family(truth, tolerance):
    values = truth.sample(np.random.default_rng(7), 5000)
    fitted = Duration.fit(values)
    assert fitted.family == truth.family
    for got, want, tol in zip(fitted.params, truth.params, tolerance, strict=True):
        assert abs(got / want - 1) <= tol, (fitted, truth)


def test_fit_rejects_too_few_or_non_positive_values():
    with pytest.raises(ValueError, match="got 9"):
        Duration.fit([100] * 5 + [200] * 4)
    with pytest.raises(ValueError, match="2 of the 12"):
        Duration.fit([0, -5] + [100, 200] * 5)
    with pytest.raises(ValueError, match="spread"):
        Duration.fit([100] * 12)
    with pytest.raises(ValueError, match="families"):
        Duration.fit([100, 200] * 6, families=("cauchy",))


def test_cdf_and_median_agree():
    for d in (DEFAULT_TIMING.gap, Duration(family="gamma", params=(2.0, 100.0)),
              Duration(family="weibull", params=(1.5, 300.0))):
        assert abs(float(d.cdf(d.median_ms)) - 0.5) < 1e-9
        assert d.cdf([0.0, 1e9]).tolist() == [0.0, 1.0]


def test_ks_statistic():
    assert ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0
    assert ks_statistic([1, 2, 3], [10, 20]) == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        ks_statistic([], [1])


# --- the default model ---------------------------------------------------------------------


def test_default_model_matches_the_literature():
    assert 150 <= DEFAULT_TIMING.median_gap_ms <= 300
    assert DEFAULT_TIMING.overlap.family == "lognormal"
    assert 0.3 <= DEFAULT_TIMING.overlap_prob <= 0.4
    assert 200 <= DEFAULT_TIMING.reaction.median_ms <= 600
    assert DEFAULT_TIMING.pause.median_ms >= PAUSE_MIN_MS
    assert TimingModel.from_dict(json.loads(json.dumps(DEFAULT_TIMING.to_dict(), sort_keys=True))) \
        == DEFAULT_TIMING


# --- fitting on records --------------------------------------------------------------------


def _parquet_round_trip(tmp_path, rows: list[dict], schema: pa.Schema, name: str) -> pa.Table:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return pq.read_table(path)


def _lay_out(model: TimingModel, rng: np.random.Generator, n_turns: int) -> list[Turn]:
    """Alternating turns with sampled transitions between them."""
    offsets = model.sample_transitions(rng, n_turns - 1)
    lengths = rng.integers(800, 4000, n_turns)
    turns, end = [], 0
    for i in range(n_turns):
        start = 0 if i == 0 else end + int(offsets[i - 1])
        # A turn outlasts the overlaps at both its ends (as a synthesizer must ensure), so the
        # overlapped turn still ends first and no turn lies inside another.
        o_in = max(0, -int(offsets[i - 1])) if i else 0
        o_out = max(0, -int(offsets[i])) if i < n_turns - 1 else 0
        end = start + int(lengths[i]) + o_in + o_out
        turns.append(Turn("A" if i % 2 == 0 else "B", start, end))
    return turns


def test_fit_sample_measure_round_trip(tmp_path):
    corpus = make_corpus(seed=0, conversations=250)
    segments = _parquet_round_trip(tmp_path, corpus.segments, SEGMENTS, "segments")
    words = _parquet_round_trip(tmp_path, corpus.words, WORDS, "words")

    # The corpus measures as laid out: backchannels are recognised, not taken for transitions.
    by_conversation: dict[str, list[Turn]] = {}
    for r in segments.to_pylist():
        by_conversation.setdefault(r["conversation_id"], []).append(
            Turn(r["speaker"], r["start_ms"], r["end_ms"], r["channel"]))
    corpus_gaps, corpus_overlaps = [], []
    for cid, turns in by_conversation.items():
        s = turn_stats(turns, max(t.end_ms for t in turns))
        want = corpus.truth[cid]
        assert (s.gaps_ms, s.overlaps_ms, s.backchannels, s.turns) == \
            (want.gaps_ms, want.overlaps_ms, want.backchannels, want.turns), cid
        corpus_gaps += s.gaps_ms
        corpus_overlaps += s.overlaps_ms
    n_backchannels = sum(t.backchannels for t in corpus.truth.values())
    assert len(corpus_gaps) + len(corpus_overlaps) >= 1500 and n_backchannels >= 500

    obs = measure(segments, words)
    assert sorted(obs.pauses_ms) == sorted(corpus.pauses_ms)
    assert sorted(obs.backchannel_delays_ms) == sorted(corpus.backchannel_delays_ms)
    assert obs.backchannels == n_backchannels
    assert all(r >= 200 for r in obs.reactions_ms) and len(obs.reactions_ms) >= 100

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough data everywhere: nothing may fall back
        model = fit(segments, words)
    assert model == fit(corpus.segments, corpus.words)  # Table and row dicts alike
    assert model.overlap_prob == len(corpus_overlaps) / (len(corpus_gaps) + len(corpus_overlaps))
    main_minutes = sum(t.main_turn_ms for t in corpus.truth.values()) / 60_000
    assert model.backchannel_rate == pytest.approx(n_backchannels / main_minutes, rel=1e-12)

    # Sample from the fitted model, lay the turns out, measure them with turn_stats again.
    rng = np.random.default_rng(1)
    turns = _lay_out(model, rng, 20_000)
    sampled = turn_stats(turns, turns[-1].end_ms)
    assert sampled.backchannels == 0 and sampled.turns == 20_000
    ks = {
        "gap": ks_statistic(sampled.gaps_ms, corpus_gaps),
        "overlap": ks_statistic(sampled.overlaps_ms, corpus_overlaps),
        "pause": ks_statistic(model.pause.sample(rng, 20_000), corpus.pauses_ms),
        "backchannel_delay": ks_statistic(model.backchannel_delay.sample(rng, 20_000),
                                          corpus.backchannel_delays_ms),
    }
    print(f"\nfitted {model}\nKS {ks}")
    assert ks["gap"] <= 0.1 and ks["overlap"] <= 0.1, ks
    assert ks["pause"] <= 0.1 and ks["backchannel_delay"] <= 0.1, ks
    share = len(sampled.overlaps_ms) / (len(sampled.gaps_ms) + len(sampled.overlaps_ms))
    assert abs(share - model.overlap_prob) <= 0.02


def test_fit_without_words_takes_pauses_from_segment_breaks():
    corpus = make_corpus(seed=3, conversations=120)
    with pytest.warns(UserWarning, match=r"backchannel_delay: found 0 values"):
        model = fit(corpus.segments)
    assert model.backchannel_delay == DEFAULT_TIMING.backchannel_delay
    obs = measure(corpus.segments)
    # Only pauses the diarizer did not bridge (>= 500 ms) separate two segments of one turn.
    assert sorted(obs.pauses_ms) == sorted(p for p in corpus.pauses_ms if p >= 500)
    assert model.pause.median_ms > 500


def test_fit_with_too_little_data_warns_and_keeps_the_defaults():
    rows = [
        {"conversation_id": "c1", "speaker": "A", "start_ms": 0, "end_ms": 3000, "channel": 0},
        {"conversation_id": "c1", "speaker": "B", "start_ms": 1000, "end_ms": 1400, "channel": 0},
        {"conversation_id": "c1", "speaker": "B", "start_ms": 3200, "end_ms": 5000, "channel": 0},
        {"conversation_id": "c1", "speaker": "A", "start_ms": 4500, "end_ms": 6000, "channel": 0},
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fit(rows)
    assert model == DEFAULT_TIMING
    messages = " | ".join(str(w.message) for w in caught)
    for quantity, found in [("gap", 1), ("overlap", 1), ("pause", 0), ("reaction", 1),
                            ("backchannel_delay", 0)]:
        assert f"{quantity}: found {found} values, need 20" in messages, messages
    assert "overlap_prob: found 2 speaker changes" in messages
    assert "backchannel_rate: found 3 main turns" in messages


def test_fit_rejects_malformed_input():
    with pytest.raises(ValueError, match="lacks"):
        fit([{"conversation_id": "c", "speaker": "A", "start_ms": 0}])
    with pytest.raises(ValueError, match="lacks columns"):
        fit(pa.table({"conversation_id": ["c"], "speaker": ["A"]}))
    with pytest.raises(TypeError, match="pyarrow Table or an iterable"):
        fit(42)
    with pytest.raises(ValueError, match="min_values"):
        fit([], min_values=5)


def test_fit_learns_the_pause_rate():
    corpus = make_corpus(seed=5, conversations=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few interruptions in a small corpus: reaction falls back
        model = fit(corpus.segments, corpus.words)
    main_minutes = sum(t.main_turn_ms for t in corpus.truth.values()) / 60_000
    assert len(corpus.pauses_ms) >= 20
    assert model.pause_rate == pytest.approx(len(corpus.pauses_ms) / main_minutes, rel=1e-12)
    # Without words only the pauses the diarizer did not bridge are seen: fewer per minute.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fit(corpus.segments).pause_rate < model.pause_rate


def test_pause_rate_is_checked_and_optional_in_old_dicts():
    d = DEFAULT_TIMING.to_dict()
    assert d["pause_rate"] == DEFAULT_TIMING.pause_rate > 0
    del d["pause_rate"]  # a model written before pauses were counted
    assert TimingModel.from_dict(d) == DEFAULT_TIMING
    with pytest.raises(ValueError, match="pause_rate"):
        dataclasses.replace(DEFAULT_TIMING, pause_rate=-1.0)
    with pytest.raises(TypeError, match="pause_rate"):
        dataclasses.replace(DEFAULT_TIMING, pause_rate="often")
