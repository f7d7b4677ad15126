import numpy as np

from microturn.pipelines.ingest.channels import MIXED, PER_SPEAKER, detect_layout

SR = 16_000


def _bursts(rng, n, spans):
    x = np.zeros(n, np.float32)
    for s, e in spans:
        x[s * SR:e * SR] = 0.3 * rng.standard_normal((e - s) * SR)
    return x


def test_alternating_channels_are_per_speaker():
    rng = np.random.default_rng(0)
    a = _bursts(rng, 10 * SR, [(0, 2), (4, 6), (8, 9)])
    b = _bursts(rng, 10 * SR, [(2, 4), (6, 8)])
    b += 0.002 * rng.standard_normal(b.size).astype(np.float32)  # line noise, 40 dB down
    assert detect_layout(np.stack([a, b])) == PER_SPEAKER


def test_mix_on_every_channel_is_mixed():
    rng = np.random.default_rng(1)
    a = _bursts(rng, 10 * SR, [(0, 3), (5, 9)])
    assert detect_layout(np.stack([a, 0.8 * a + 0.01])) == MIXED
    assert detect_layout(np.stack([a, a])) == MIXED
    assert detect_layout(a[None]) == MIXED
    assert detect_layout(np.zeros((2, SR), np.float32)) == MIXED
