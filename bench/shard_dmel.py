"""Benchmark of the dMel featurizer against torchaudio's mel spectrogram.

    python bench/shard_dmel.py [--seconds 600] [--repeats 5] [--threads 2]

Both compute the same STFT and mel projection (torchaudio.transforms.MelSpectrogram with
sample_rate 16000, n_fft = win_length = 1600, hop 800, center=False, power 1, 80 Slaney mel
filters 0-8 kHz) on the same audio: the pyannote sample recording (16 kHz speech, 30 s) tiled to
``seconds``. torchaudio gets the wave already padded as ``microturn.schemas.dmel.encode`` pads it
(800 zeros in front, zeros behind to a multiple of 800), so it computes the same T frames;
``encode`` takes the raw wave and adds its padding, log, quantisation and float64 re-check.
The figure is the ratio of best-of-``repeats`` wall times, the two alternated within each repeat
(goal: at most 1.2). Measured on an idle 2-core machine, 2 threads: 0.43-0.53 for 600 s; 1.13
for 120 s, 1.26 for 30 s and 1.5 for 10 s (``--seconds``), where torchaudio's whole-signal
tensors fit in cache too. With another process keeping one core busy, 2-thread figures swing
between 0.7 and 1.25 from run to run; with ``--threads 1`` the 600 s figure stays at 0.46.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from microturn.schemas import dmel
from microturn.testing.sample_call import sample_wave as call_wave


def sample_wave(seconds: float) -> np.ndarray:
    """float32 [N]: the pyannote sample recording (16 kHz mono) tiled to ``seconds``."""
    return np.resize(call_wave(), int(round(seconds * dmel.SAMPLE_RATE)))


def measure(seconds: float = 600.0, repeats: int = 5) -> dict:
    """Best-of-``repeats`` wall seconds of ``dmel.encode`` and of torchaudio's MelSpectrogram on
    ``seconds`` of speech, with the torch threads the caller set.

    Returns ``{"audio_s", "dmel_s", "torchaudio_s", "ratio"}`` (ratio = dmel_s / torchaudio_s).
    """
    import torchaudio

    if seconds <= 0 or repeats < 1:
        raise ValueError(f"need seconds > 0 and repeats >= 1, got {seconds}, {repeats}")
    wave_N = sample_wave(seconds)
    frames = -(-wave_N.size // dmel.HOP)
    padded_N = np.zeros(dmel.HOP * (frames + 1), dtype=np.float32)
    padded_N[dmel.HOP:dmel.HOP + wave_N.size] = wave_N
    padded = torch.from_numpy(padded_N)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=dmel.SAMPLE_RATE, n_fft=dmel.N_FFT, win_length=dmel.N_FFT, hop_length=dmel.HOP,
        center=False, power=1.0, n_mels=dmel.N_MELS, f_min=0.0, f_max=dmel.SAMPLE_RATE / 2,
        mel_scale="slaney", norm="slaney")
    ours, theirs = [], []
    with torch.no_grad():
        dmel.encode(wave_N[:dmel.SAMPLE_RATE])  # warm the caches (filters, window) of both
        mel(padded[:dmel.SAMPLE_RATE])
        for _ in range(repeats):
            started = time.perf_counter()
            bins_TM = dmel.encode(wave_N)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            spec_MT = mel(padded)
            theirs.append(time.perf_counter() - started)
    assert bins_TM.shape == (spec_MT.shape[1], dmel.N_MELS)
    return {"audio_s": wave_N.size / dmel.SAMPLE_RATE, "dmel_s": min(ours), "torchaudio_s": min(theirs),
            "ratio": min(ours) / min(theirs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (this machine has 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = measure(args.seconds, args.repeats)
    for key, value in result.items():
        print(f"{key:>13s}: {value:.4f}")


if __name__ == "__main__":
    main()
