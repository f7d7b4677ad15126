"""The dMel audio featurizer of the data contract (DESIGN.md, "The micro-turn sample").

The shard stage and the trainer's live path both call this module, so a sample's ``*.dmel.npy``
and what the trainer computes from raw audio are the same bins.

Recipe, for 16 kHz float32 mono audio of N samples, giving T = ceil(N / 800) frames:

1. Pad causally: 800 zeros in front, zeros behind up to 800 (T + 1) samples. Frame t is padded
   samples [800 t, 800 t + 1600), i.e. original samples [800 (t - 1), 800 (t + 1)): it ends at the
   end of its 50 ms hop and sees nothing later.
2. Multiply by a periodic Hann window of 1600 samples, take the real FFT (n_fft 1600, 801 bins of
   10 Hz) and its magnitude (not the power).
3. Project on 80 triangular mel filters from 0 to 8 kHz on the Slaney mel scale (linear below
   1 kHz, logarithmic above) with Slaney area normalisation (height 2 / bandwidth in Hz): the
   filters of librosa's default ``filters.mel(sr=16000, n_fft=1600, n_mels=80)``.
4. ``log10(max(mel, 1e-10))``, clamped to [-7, 2]: this is :func:`log_mel`.
5. Quantise to the nearest of the 16 centres ``linspace(-7, 2, 16)`` (step 0.6), a tie going to
   the lower bin: this is :func:`encode`, uint8 in 0..15.

Exactness. The bins are those of the recipe evaluated exactly (in practice: in float64). The
fast path runs in float32 (FFT, magnitude, mel matmul), whose error in a mel value m has two
parts: a relative one (about 1e-7 m) and an absolute one from the FFT, which scales with the
norm n of the whole frame (about 5e-7 n w1, w1 the L1 norm of the band's filter), so a band far
quieter than the rest of its frame (a pure tone's neighbours, the empty top of band-limited
audio) can be off by a lot in log10 units. Near a decision boundary (a midpoint between
centres, at 10^b in mel) either part flips a bin: measured 2 of 960000 values over 20
gain/offset variants of the pyannote sample recording, 899 of 32000 for a mixture of tones 20 dB
apart. So :func:`encode` bounds the error of every value, ``|exact - m| <= _TOL_REL m +
_TOL_FFT n w1`` (constants measured, with their margins, where they are defined), takes the bin
when no boundary lies within that interval, and redoes in float64 every frame that has a value
where one does. The result equals the float64 recipe
(checked against an independent float64 NumPy implementation in the tests). The share of frames
redone depends on the audio: 1-8% of the sample recording (more when louder), about half of
8 kHz telephone audio resampled to 16 kHz, all of a pure tone or of a large DC offset (then
3-4x the time of the float32 path alone).

:func:`log_mel` is the float32 value alone, not re-checked. Against the float64 recipe: within
1.4e-4 log10 units on the sample recording (3e-7 on white noise); bands 50 dB or more below
their frame's level err more, up to 1e-2 at log-mel -6.5 in speech band-limited to 4-5.5 kHz
(float16 storage of the flow target rounds by up to 2e-3 there anyway).

Inputs are a NumPy float32 1-D array (the result is NumPy) or a torch float32 1-D tensor (the
result is a tensor on the same device, so the trainer can run it on its GPU). The computation is
torch in both cases, without autograd, autocast or TF32 matmuls (the last two would break the
error bound by 1000x).

Shape suffixes follow :mod:`microturn.schemas.legend`: N audio samples (``padded_N``: 800 (T + 1)
causally padded samples; ``window_N`` and a frame: 1600), T frames (50 ms hop; ``block_mel_TM``
the frames of one block, ``redo_T`` the frames redone in float64), X = 801 FFT bins (X2: their real
and imaginary parts), M = 80 mel channels.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from microturn.schemas.sample import CHUNK_MS, DMEL_BINS, FRAMES_PER_CHUNK, N_MELS, SAMPLE_RATE

# torch is imported by the functions that compute (log_mel, encode, features, and quantize or
# dequantize given a tensor), not here: the constants, the filters and the NumPy paths of
# quantize/dequantize serve readers of samples that do not have torch.
if TYPE_CHECKING:
    import torch

HOP = SAMPLE_RATE * CHUNK_MS // 1000 // FRAMES_PER_CHUNK  # 800 samples = 50 ms
N_FFT = 1600  # window length = n_fft = 100 ms
N_BINS_FFT = N_FFT // 2 + 1
MEL_FLOOR = 1e-10
LOG_MIN = -7.0
LOG_MAX = 2.0
BIN_CENTRES = np.linspace(LOG_MIN, LOG_MAX, DMEL_BINS)
BIN_CENTRES.setflags(write=False)
_BOUNDARIES = (BIN_CENTRES[:-1] + BIN_CENTRES[1:]) / 2  # float64 [15] decision boundaries

# The float32 error bound of a mel value m: |exact - m| <= _TOL_REL m + _TOL_FFT n w1, with n the
# Euclidean norm of the (unwindowed) frame and w1 the L1 norm of the band's filter. Measured
# against float64 on the pyannote sample recording, white and low-passed noise, noise bursts over
# 60 dB, chirps, clipped, high-passed, telephone-band and DC-offset speech, and 300 random tones,
# tone mixtures, square and step waves: the absolute part needs at most 5.0e-7 (pure tones are
# the worst; float32 eps is 1.2e-7), the relative part at most 1.1e-7 once that is taken out.
# _TOL_REL also covers the float32 rounding of the boundaries and interval ends (6e-8 each).
_TOL_REL = 1e-6  # 9x the measured 1.1e-7
_TOL_FFT = 2e-6  # 4x the measured 5.0e-7
_MAX_HOP_NORM = 1e15


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney scale: 200/3 Hz per mel up to 1 kHz (mel 15), then 27 mel per factor 6.4."""
    hz = np.asarray(hz, dtype=np.float64)
    above = 15.0 + np.log(np.maximum(hz, 1000.0) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz < 1000.0, hz / (200.0 / 3.0), above)


def _mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    above = 1000.0 * np.exp((np.maximum(mel, 15.0) - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel < 15.0, mel * (200.0 / 3.0), above)


@functools.cache
def _filters64_MX() -> np.ndarray:
    """float64 [M, X] Slaney mel filters (see :func:`mel_filters`)."""
    # M + 2 edges equally spaced in mel from 0 Hz to Nyquist; filter i rises from edge i to
    # edge i + 1 and falls to edge i + 2.
    edges_hz = _mel_to_hz(np.linspace(0.0, _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    freqs_X = np.arange(N_BINS_FFT, dtype=np.float64) * (SAMPLE_RATE / N_FFT)
    lo_M1, mid_M1, hi_M1 = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rise_MX = (freqs_X - lo_M1) / (mid_M1 - lo_M1)
    fall_MX = (hi_M1 - freqs_X) / (hi_M1 - mid_M1)
    tri_MX = np.maximum(0.0, np.minimum(rise_MX, fall_MX))
    # Slaney normalisation: every filter has the same area, 1 in units of Hz.
    out = tri_MX * (2.0 / (hi_M1 - lo_M1))
    out.setflags(write=False)
    return out


@functools.cache
def mel_filters() -> np.ndarray:
    """float32 [80, 801] mel filters of the recipe (read-only, cached).

    Numerically librosa's ``filters.mel(sr=16000, n_fft=1600, n_mels=80)`` (Slaney scale and
    normalisation), built here without librosa.
    """
    out = _filters64_MX().astype(np.float32)
    out.setflags(write=False)
    return out


def _is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor, without importing torch: if no module has imported it,
    nothing can be one."""
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(x, torch_module.Tensor)


@functools.cache
def _constants(device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Window, filters and boundaries as tensors on ``device`` in ``dtype`` (cached)."""
    import torch

    fb_MX = _filters64_MX()
    return {
        "window_N": torch.hann_window(N_FFT, periodic=True, dtype=torch.float64).to(device, dtype),
        "filters_XM": torch.from_numpy(np.ascontiguousarray(fb_MX.T)).to(device, dtype),
        "boundaries": torch.from_numpy(_BOUNDARIES.copy()).to(device, dtype),
        # Only the float32 path uses these (see _features).
        "fft_slack_M": torch.from_numpy(fb_MX.sum(axis=1) * _TOL_FFT).to(device, dtype),
        "mel_bounds_low": torch.from_numpy(10.0 ** _BOUNDARIES / (1 - _TOL_REL)).to(device, dtype),
        "mel_bounds_high": torch.from_numpy(10.0 ** _BOUNDARIES / (1 + _TOL_REL)).to(device, dtype),
    }


def _frames(n: int) -> int:
    return -(-n // HOP)


def _check_wave(wave_N: Any) -> tuple[torch.Tensor, bool]:
    """The causally padded wave as a float32 tensor [HOP (T + 1)], and whether the input was NumPy."""
    import torch

    if isinstance(wave_N, np.ndarray):
        if wave_N.ndim != 1:
            raise ValueError(f"wave must be 1-D mono audio, got shape {wave_N.shape}: mix or pick a channel "
                             "first (e.g. wave.mean(axis=1) for [N, C])")
        if wave_N.dtype != np.float32:
            raise TypeError(f"wave must be float32 16 kHz audio in [-1, 1], got {wave_N.dtype}: convert with "
                            "wave.astype(np.float32) (int16 PCM: wave.astype(np.float32) / 32768)")
        n = wave_N.shape[0]
        # One copy does the padding and gives torch a writeable, contiguous buffer.
        padded_N = np.zeros(HOP * (_frames(n) + 1), dtype=np.float32)
        padded_N[HOP:HOP + n] = wave_N
        return torch.from_numpy(padded_N), True
    if isinstance(wave_N, torch.Tensor):
        if wave_N.dim() != 1:
            raise ValueError(f"wave must be 1-D mono audio, got shape {tuple(wave_N.shape)}: mix or pick a "
                             "channel first")
        if wave_N.dtype != torch.float32:
            raise TypeError(f"wave must be a float32 tensor of 16 kHz audio in [-1, 1], got {wave_N.dtype}: "
                            "convert with wave.float()")
        n = wave_N.shape[0]
        return torch.nn.functional.pad(wave_N.detach(), (HOP, HOP * _frames(n) - n)), False
    raise TypeError(f"wave must be a numpy.ndarray or torch.Tensor of float32 samples, got {type(wave_N).__name__}")


@contextlib.contextmanager
def _plain_float(device: torch.device):
    """No autograd, autocast or TF32 inside: the last two would break the error bound by 1000x."""
    import torch

    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved


# On CPU, 384 frames at a time: the block's frames, spectrum and magnitudes (2.5 + 2.5 + 1.2 MB)
# stay in cache and their buffers are reused, where whole-signal tensors (77 MB of frames for 10
# minutes) go to fresh pages and back through memory. Measured with bench/shard_dmel.py (2
# threads, idle 2-core machine), encode against torchaudio's MelSpectrogram: 0.43-0.53x its time
# on 10 minutes of speech, but 1.13x on 2 minutes, 1.26x on 30 s and 1.5x on 10 s, where its
# tensors fit in cache too and the float64 re-check and quantisation weigh more. 384 x 80 =
# 30720 mel values is also under ATen's parallel grain (32768), so the cheap per-value ops run on
# the calling thread instead of waiting for a second one (~7 ms per op when another process
# keeps the other core busy). An accelerator takes all frames at once.
_FFT_BLOCK = 384


def _block_frames(device: torch.device, frames: int) -> int:
    return _FFT_BLOCK if device.type == "cpu" else frames


def _magnitude(spectrum_TX: torch.Tensor, out_TX: torch.Tensor | None = None) -> torch.Tensor:
    """|X| as sqrt(re^2 + im^2) in three in-cache passes. Measured on 384-frame blocks: 2.3x
    faster than complex abs() (which writes a complex result, then copies its real part) and 3x
    faster than hypot (whose overflow guard the input check already makes moot)."""
    import torch

    parts_TX2 = torch.view_as_real(spectrum_TX)
    re_TX, im_TX = parts_TX2[..., 0], parts_TX2[..., 1]
    out_TX = torch.mul(re_TX, re_TX, out=out_TX)
    return out_TX.addcmul_(im_TX, im_TX).sqrt_()


def _mel_blocks(padded_N: torch.Tensor, mel_TM: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """Fill ``mel_TM`` (float32 [T, M]) with the float32 mel magnitudes of the padded wave, one
    block of frames at a time, yielding ``(first frame, the block's rows of mel_TM)`` after each
    block so that the caller can finish it while it is in cache."""
    import torch

    c = _constants(padded_N.device, torch.float32)
    T = mel_TM.shape[0]
    block = _block_frames(padded_N.device, T)
    frames_TN = padded_N.unfold(0, N_FFT, HOP)  # a view: frame t starts at sample HOP t
    windowed_TN = torch.empty((min(block, T), N_FFT), dtype=torch.float32, device=padded_N.device)
    magnitude_TX = torch.empty((min(block, T), N_BINS_FFT), dtype=torch.float32, device=padded_N.device)
    for start in range(0, T, block):
        n = min(block, T - start)
        torch.mul(frames_TN[start:start + n], c["window_N"], out=windowed_TN[:n])
        _magnitude(torch.fft.rfft(windowed_TN[:n]), magnitude_TX[:n])
        torch.mm(magnitude_TX[:n], c["filters_XM"], out=mel_TM[start:start + n])
        yield start, mel_TM[start:start + n]


def _log_(mel_TM: torch.Tensor) -> torch.Tensor:
    """Step 4 of the recipe, in place."""
    return mel_TM.clamp_min_(MEL_FLOOR).log10_().clamp_(LOG_MIN, LOG_MAX)


def _frame_norms(padded_N: torch.Tensor) -> torch.Tensor:
    """float32 [T]: Euclidean norm of each frame (unwindowed); ValueError on non-finite or absurdly
    large input."""
    import torch

    hop_norm = torch.linalg.vector_norm(padded_N.view(-1, HOP), dim=1)
    # NaN or inf anywhere reaches its hop's norm. A frame norm n bounds every |X| by 40 n
    # (Cauchy-Schwarz over 1600 samples), so n <= 1e15 keeps |X|^2 far from float32 overflow.
    peak = float(hop_norm.max())
    if not peak <= _MAX_HOP_NORM:
        bad = (~torch.isfinite(padded_N)).nonzero()
        if bad.numel():
            raise ValueError(f"wave has {bad.numel()} non-finite samples (first at sample {int(bad[0]) - HOP}): "
                             "replace them (e.g. numpy.nan_to_num) before featurizing")
        raise ValueError(f"wave amplitude {float(padded_N.abs().max()):.3g} is out of range: expected audio "
                         "scaled to [-1, 1]")
    return torch.hypot(hop_norm[:-1], hop_norm[1:])


def _float64_bins(padded_N: torch.Tensor, redo_T: torch.Tensor) -> torch.Tensor:
    """uint8 [len(redo_T), M] bins of frames ``redo_T`` by the recipe in float64 (blocks as in _mel_blocks)."""
    import torch

    c = _constants(padded_N.device, torch.float64)
    frames_TN = padded_N.unfold(0, N_FFT, HOP)
    count = redo_T.shape[0]
    redo_bins_TM = torch.empty((count, N_MELS), dtype=torch.uint8, device=padded_N.device)
    block = _block_frames(padded_N.device, count)
    for start in range(0, count, block):
        windowed_TN = frames_TN[redo_T[start:start + block]].double().mul_(c["window_N"])
        block_mel_TM = _magnitude(torch.fft.rfft(windowed_TN)) @ c["filters_XM"]
        redo_bins_TM[start:start + block] = torch.bucketize(_log_(block_mel_TM), c["boundaries"], right=False)
    return redo_bins_TM


def _features(wave_N: Any, *, bins: bool) -> tuple[Any, Any]:
    """``(log-mel, bins or None)`` of ``wave_N``, as NumPy when it is NumPy.

    Bins: a value's exact mel lies in [(1 - r) m - s, (1 + r) m + s] around its float32 mel m
    (r = _TOL_REL, s = _TOL_FFT n w1 with n the frame's norm and w1 the filter's L1 norm). Its
    bin is sure when no boundary 10^b lies in there; dividing by 1 -+ r moves r onto the
    boundaries, so each end is one fused op (m -+ s / (1 -+ r), compared with 10^b / (1 -+ r))
    and the bin is the lower end's. Frames with a value that is not sure are redone in float64.
    """
    import torch

    padded_N, was_numpy = _check_wave(wave_N)
    device = padded_N.device
    T = padded_N.shape[0] // HOP - 1
    logmel_TM = torch.empty((T, N_MELS), dtype=torch.float32, device=device)
    bins_TM = torch.empty((T, N_MELS), dtype=torch.uint8, device=device) if bins else None
    if T:
        c = _constants(device, torch.float32)
        with _plain_float(device):
            norm_T = _frame_norms(padded_N)
            unsure_T = torch.zeros(T, dtype=torch.bool, device=device)
            for start, block_mel_TM in _mel_blocks(padded_N, logmel_TM):
                if bins_TM is not None:
                    stop = start + block_mel_TM.shape[0]
                    slack_TM = torch.outer(norm_T[start:stop], c["fft_slack_M"])
                    low_TM = torch.bucketize(torch.sub(block_mel_TM, slack_TM, alpha=1 / (1 - _TOL_REL)),
                                             c["mel_bounds_low"], out_int32=True)
                    high_TM = torch.bucketize(slack_TM.mul_(1 / (1 + _TOL_REL)).add_(block_mel_TM),
                                              c["mel_bounds_high"], out_int32=True)
                    # high >= low everywhere (its interval end is the larger, its boundaries the smaller);
                    # amax over int32 is ~5x faster here than any() over a bool comparison.
                    torch.gt(high_TM.sub_(low_TM).amax(dim=1), 0, out=unsure_T[start:stop])
                    bins_TM[start:stop] = low_TM
                _log_(block_mel_TM)
            if bins_TM is not None:
                redo_T = unsure_T.nonzero().squeeze(1)
                if redo_T.numel():
                    bins_TM[redo_T] = _float64_bins(padded_N, redo_T)
    if was_numpy:
        return logmel_TM.numpy(), None if bins_TM is None else bins_TM.numpy()
    return logmel_TM, bins_TM


def log_mel(wave_N: Any) -> Any:
    """float32 [T, 80] clamped log10 mel magnitudes of 16 kHz float32 mono ``wave_N`` [N].

    T = ceil(N / 800). NumPy in, NumPy out; a torch tensor in gives a tensor on its device.
    Computed in float32: within 1.4e-4 log10 units of the exact recipe on speech, more in bands
    50 dB or more below their frame's level (see the module notes).
    """
    return _features(wave_N, bins=False)[0]


def encode(wave_N: Any) -> Any:
    """uint8 [T, 80] dMel bins (0..15) of 16 kHz float32 mono ``wave_N`` [N], T = ceil(N / 800).

    Exactly the bins of the recipe evaluated in float64 (see the module notes). NumPy in,
    NumPy out; a torch tensor in gives a tensor on its device.
    """
    return _features(wave_N, bins=True)[1]


def features(wave_N: Any) -> tuple[Any, Any]:
    """``(log_mel(wave_N), encode(wave_N))`` from one STFT: what the shard stage stores for the
    ``model`` stream (float32 log-mel [T, 80], uint8 bins [T, 80])."""
    return _features(wave_N, bins=True)


def quantize(logmel_TM: Any) -> Any:
    """uint8 bins of log-mel values of any shape: nearest centre of :data:`BIN_CENTRES` after
    clamping to [-7, 2], an exact tie going to the lower bin.

    Float16/32/64 NumPy arrays or torch tensors; the comparison with the boundaries is exact
    (in float64), so this is the recipe's last step for the given values. Note that
    ``quantize(log_mel(w))`` can differ from ``encode(w)`` where the float32 log-mel sits
    within its error of a boundary (about 1 value in 5e5 of speech): :func:`encode` is exact.
    """
    if _is_tensor(logmel_TM):
        import torch

        if not logmel_TM.is_floating_point():
            raise TypeError(f"log-mel must be a floating tensor, got {logmel_TM.dtype}")
        if not bool(torch.isfinite(logmel_TM).all()):
            raise ValueError("log-mel has non-finite values; log_mel() never produces them")
        b = torch.from_numpy(_BOUNDARIES.copy()).to(logmel_TM.device)
        with torch.no_grad():
            return torch.bucketize(logmel_TM.double(), b, right=False).to(torch.uint8)
    x = np.asarray(logmel_TM)
    if x.dtype.kind != "f":
        raise TypeError(f"log-mel must be a floating array, got {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError("log-mel has non-finite values; log_mel() never produces them")
    return np.searchsorted(_BOUNDARIES, x.astype(np.float64), side="left").astype(np.uint8)


def dequantize(bins_TM: Any) -> Any:
    """float32 bin centres of uint8 (or other integer) bins 0..15, any shape, NumPy or torch."""
    if _is_tensor(bins_TM):
        import torch

        if bins_TM.is_floating_point() or bins_TM.is_complex() or bins_TM.dtype == torch.bool:
            raise TypeError(f"bins must be an integer tensor, got {bins_TM.dtype}")
        if bins_TM.numel() and (int(bins_TM.min()) < 0 or int(bins_TM.max()) >= DMEL_BINS):
            raise ValueError(f"bins must lie in 0..{DMEL_BINS - 1}")
        centres = torch.from_numpy(BIN_CENTRES.astype(np.float32)).to(bins_TM.device)
        return centres[bins_TM.long()]
    b = np.asarray(bins_TM)
    if b.dtype.kind not in "iu":
        raise TypeError(f"bins must be an integer array, got {b.dtype}")
    if b.size and (int(b.min()) < 0 or int(b.max()) >= DMEL_BINS):
        raise ValueError(f"bins must lie in 0..{DMEL_BINS - 1}")
    return BIN_CENTRES.astype(np.float32)[b]

