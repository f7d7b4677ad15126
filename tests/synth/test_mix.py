from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.synth.mix import (
    MixConfig,
    active_rms,
    add_noise,
    degraded_speakers,
    mix_stems,
    normalise,
    render,
    reverberate,
)

SR = 16_000


def tone(ms: int, hz: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(ms * 16) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_config_rejects_bad_values():
    bads: tuple[dict[str, Any], ...] = ({"target_dbfs": 3.0}, {"noise_snr_db": 200.0}, {"reverb_rt60_s": 10.0},
                                        {"degrade": "model"}, {"tail_ms": -1})
    for bad in bads:
        with pytest.raises(ValueError):
            MixConfig(**bad)


def test_streams_hold_only_their_own_speaker():
    rng = np.random.default_rng(0)
    pieces = {"A": [(0, tone(500, 200))], "B": [(300, tone(500, 330))]}
    stems = mix_stems(pieces, {"A": None, "B": None}, 1000, MixConfig(), rng)
    a, b = stems["A"], stems["B"]
    assert a.size == b.size == 16_000 and a.dtype == np.float32
    # Nothing of A after 500 ms, nothing of B before 300 ms or after 800 ms: no leakage.
    assert np.all(a[500 * 16:] == 0)
    assert np.all(b[: 300 * 16] == 0) and np.all(b[800 * 16:] == 0)
    # Each stream's spectrum peaks at its own speaker's frequency.
    for stem, hz in ((a, 200), (b, 330)):
        spec = np.abs(np.fft.rfft(stem))
        assert abs(np.argmax(spec) * SR / stem.size - hz) < 3


def test_levels_are_normalised_and_peaks_limited():
    rng = np.random.default_rng(0)
    stems = mix_stems({"A": [(0, tone(800, amp=0.01))], "B": [(0, tone(800, amp=0.9))]}, {"A": None, "B": None},
                      800, MixConfig(target_dbfs=-20.0), rng)
    for stem in stems.values():
        assert 20 * np.log10(active_rms(stem)) == pytest.approx(-20.0, abs=0.05)
    loud = normalise(np.r_[np.zeros(100, np.float32), np.ones(10, np.float32), 0.01 * np.ones(1000, np.float32)], -3.0)
    assert np.max(np.abs(loud)) <= 10 ** (-0.1 / 20) + 1e-6


def test_noise_hits_its_snr_and_only_the_user_stream():
    rng = np.random.default_rng(1)
    clean = tone(4000)
    noisy = add_noise(clean, 20.0, rng)
    noise = noisy - clean
    snr = 20 * np.log10(active_rms(clean) / np.sqrt(np.mean(noise.astype(np.float64) ** 2)))
    assert snr == pytest.approx(20.0, abs=0.3)
    roles = {"U": "user", "M": "model"}
    assert degraded_speakers(roles, "user") == {"U"}
    assert degraded_speakers({"A": None, "B": None}, "user") == {"A"}
    assert degraded_speakers(roles, "all") == {"U", "M"} and degraded_speakers(roles, "none") == set()
    stems = mix_stems({"U": [(0, tone(500))], "M": [(0, tone(500))]}, roles, 1000,
                      MixConfig(noise_snr_db=10.0), np.random.default_rng(2))
    assert np.count_nonzero(stems["M"][600 * 16:]) == 0  # the model's stream stays clean
    assert np.count_nonzero(stems["U"][600 * 16:]) > 0


def test_reverb_keeps_length_onset_and_adds_a_tail():
    rng = np.random.default_rng(3)
    x = np.zeros(16_000, np.float32)
    x[1600:3200] = tone(100)
    y = reverberate(x, 0.4, rng)
    assert y.size == x.size
    assert np.abs(y[:1600]).max() < 1e-6  # causal: nothing before the onset, so word times stay valid
    assert np.abs(y[3200 + 800: 3200 + 1600]).max() > 1e-4  # energy after the dry signal ended


def test_mixing_is_deterministic():
    cfg = MixConfig(noise_snr_db=15.0, reverb_rt60_s=0.3)
    pieces = {"A": [(0, tone(500))], "B": [(200, tone(700, 300))]}
    a = mix_stems(pieces, {"A": "user", "B": "model"}, 1200, cfg, np.random.default_rng(7))
    b = mix_stems(pieces, {"A": "user", "B": "model"}, 1200, cfg, np.random.default_rng(7))
    assert all(np.array_equal(a[k], b[k]) for k in a)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 300)), min_size=0, max_size=6))
def test_render_places_every_piece_at_its_millisecond(spec):
    pieces = [(s, np.full(d * 16, 0.1, np.float32)) for s, d in spec]
    out = render(pieces, 2500)
    assert out.size == 2500 * 16
    for s, d in spec:
        end = min(2500, s + d)
        assert np.all(out[s * 16: end * 16] >= 0.1 - 1e-6)
    covered = np.zeros(out.size, bool)
    for s, d in spec:
        covered[s * 16: (s + d) * 16] = True
    assert np.all(out[~covered] == 0)
