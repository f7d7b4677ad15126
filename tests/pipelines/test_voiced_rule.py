"""VOICED from speech: the activity of a stream's own audio and its words, pauses of 200 ms or
more unvoiced (:mod:`microturn.pipelines.shard.activity`)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.pipelines.shard.activity import (
    active_spans,
    close_gaps,
    frame_levels,
    speech_spans,
    stream_speech,
    voiced_chunks,
)
from microturn.pipelines.shard.labels import stream_labels
from microturn.pipelines.shard.streams import build_stream
from microturn.schemas.sample import Label
from microturn.schemas.turns import Turn

_PER_MS = 16


def _noise_N(ms: int, spans_ms, *, level: float, seed: int = 0) -> np.ndarray:
    """float32 [N] of ``ms`` ms: white noise at RMS ``level`` inside ``spans_ms``, zeros elsewhere."""
    rng = np.random.default_rng(seed)
    wave_N = np.zeros(ms * _PER_MS, np.float32)
    for s, e in spans_ms:
        wave_N[s * _PER_MS: e * _PER_MS] = level * rng.standard_normal((e - s) * _PER_MS)
    return wave_N


def _reference_voiced(chunks: int, speech_ms) -> list[int]:
    """Chunks voiced under the rule, per millisecond: silences under 200 ms between speech are
    filled, then a chunk is voiced with 100 ms or more of speech."""
    on_ms = np.zeros(chunks * 200, bool)
    for s, e in speech_ms:
        on_ms[s:e] = True
    idx = np.flatnonzero(on_ms)
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        if 1 < b - a <= 200:  # a silence of b - a - 1 ms < 200 between two speech ms
            on_ms[a:b] = True
    return [k for k in range(chunks) if on_ms[k * 200:(k + 1) * 200].sum() >= 100]


def test_pauses_inside_one_turn():
    # One 4 s turn: speech, a 300 ms pause, speech, a 600 ms pause, speech, a 150 ms pause, speech.
    speech = [(0, 800), (1100, 1600), (2200, 3000), (3150, 4000)]
    wave_N = _noise_N(4000, speech, level=0.05)
    got = voiced_chunks(20, speech_spans(segments_ms=[(0, 4000)], words_ms=[],
                                         active_ms=active_spans(wave_N, [(0, 4000)])))
    assert np.flatnonzero(~got).tolist() == [4, 8, 9, 10]  # 300 ms: 800-1000; 600 ms: 1600-2200
    assert got[5] and got[15]  # 1000-1200 holds 100 ms of speech; the 150 ms pause is no pause


def test_words_cover_what_the_audio_does_not_show_and_segments_bound_both():
    wave_N = _noise_N(2000, [(0, 400)], level=0.1)
    # A word over a quiet stretch is speech; audio outside the stream's segments is not.
    sp = speech_spans(segments_ms=[(200, 1400)], words_ms=[(900, 1300)],
                      active_ms=active_spans(wave_N, [(0, 2000)]))
    assert sp == [(200, 400), (900, 1300)]


def test_level_is_relative_to_the_stream_and_floored():
    loud, quiet = 0.3, 0.3 * 10 ** (-40 / 20)  # 40 dB apart: the quiet part is no speech
    wave_N = _noise_N(1000, [(0, 400)], level=loud) + _noise_N(1000, [(600, 1000)], level=quiet, seed=1)
    assert active_spans(wave_N, [(0, 1000)]) == [(0, 400)]
    # The same stream 40 dB lower still speaks in the same places (the floor follows the level)...
    assert active_spans(wave_N * np.float32(0.01), [(0, 1000)]) == [(0, 400)]
    # ...but hiss under -70 dBFS never does, however quiet the stream is.
    assert active_spans(_noise_N(1000, [(0, 1000)], level=1e-4), [(0, 1000)]) == []
    assert frame_levels(np.zeros(165, np.float32)).shape == (1,)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 60)), min_size=1, max_size=12),
       st.floats(0.003, 0.5), st.integers(0, 2**16))
def test_voiced_matches_the_rule_per_millisecond(bursts, level, seed):
    # Bursts of speech and silences on the 10 ms frame grid, at any level above the floor.
    spans, t = [], 0
    for gap, length in bursts:
        t += 10 * gap
        spans.append((t, t + 10 * length))
        t += 10 * length
    ms = t + 200 - t % 200
    chunks = ms // 200
    wave_N = _noise_N(ms, spans, level=level, seed=seed)
    got = voiced_chunks(chunks, speech_spans(segments_ms=[(0, ms)], words_ms=[],
                                             active_ms=active_spans(wave_N, [(0, ms)])))
    assert np.flatnonzero(got).tolist() == _reference_voiced(chunks, spans)
    # The rule stated as the schema does: a chunk whose majority lies in a silence of 200 ms or
    # more is never voiced.
    on_ms = np.zeros(ms, bool)
    for s, e in spans:
        on_ms[s:e] = True
    for k in np.flatnonzero(got):
        lo, hi = k * 200, (k + 1) * 200
        silent = [i for i in range(lo, hi) if not on_ms[i]]
        long_silence = 0
        for i in silent:
            a, b = i, i
            while a > 0 and not on_ms[a - 1]:
                a -= 1
            while b < ms - 1 and not on_ms[b + 1]:
                b += 1
            long_silence += (b - a + 1 >= 200 and 0 < a and b < ms - 1)
        assert long_silence <= 100


def test_close_gaps():
    assert close_gaps([(0, 100), (299, 400), (600, 700)]) == [(0, 400), (600, 700)]
    assert close_gaps([]) == []


def test_mixed_recording_counts_words_where_both_speakers_are_audible():
    # One channel, A talks 0-2000 with a pause 1000-1400, B talks over A 1400-2000. In A's gated
    # stream the energy at 1400-2000 is B's: only A's words count there.
    segs = [Turn("A", 0, 2000, 0), Turn("B", 1400, 2600, 0)]
    mix_N = _noise_N(2600, [(0, 1000), (1400, 2600)], level=0.1)
    a = build_stream(frozenset("A"), audio={0: mix_N}, segments=segs, fade_ms=10)
    words = [("A", "one", 0, 900), ("B", "two", 1400, 2500)]
    sp = stream_speech(a, segments=segs, words=words)
    assert sp == [(0, 1000)]
    # Without any words of A, the diarization is all that tells A speaks over B.
    assert stream_speech(a, segments=segs, words=[w for w in words if w[0] == "B"]) == [(0, 1000), (1400, 2000)]
    # B's stream: its own segment 1400-2600, A leaks in up to 2010; B's words carry it.
    b = build_stream(frozenset("B"), audio={0: mix_N}, segments=segs, fade_ms=10)
    assert stream_speech(b, segments=segs, words=words) == [(1400, 2600)]


def test_overlap_follows_voiced_of_both_streams_and_turn_bits_follow_turns():
    turns = [Turn("A", 0, 2000, 0), Turn("B", 1000, 2000, 1)]
    speech_a = [(0, 400), (900, 2000)]  # a 500 ms pause inside A's turn
    speech_b = [(1000, 2000)]
    a = stream_labels(10, speakers=frozenset("A"), speech_ms=speech_a, other_speech_ms=speech_b,
                      main_turns=turns, backchannels=[], word_starts_ms=[], interruptions_ms=[], leaks_ms=[])
    b = stream_labels(10, speakers=frozenset("B"), speech_ms=speech_b, other_speech_ms=speech_a,
                      main_turns=turns, backchannels=[], word_starts_ms=[], interruptions_ms=[], leaks_ms=[])
    on = lambda bits, flag: [i for i, v in enumerate(bits) if v & flag]  # noqa: E731
    assert on(a, Label.VOICED) == [0, 1, 4, 5, 6, 7, 8, 9]  # 400-900 is silent: chunks 2, 3 (4 has 100 ms)
    assert on(a, Label.OVERLAP) == on(b, Label.OVERLAP) == [5, 6, 7, 8, 9]
    assert on(a, Label.TURN_START) == [0] and on(a, Label.TURN_END) == [9]
