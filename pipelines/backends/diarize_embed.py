"""Speaker embeddings of the embedded diarizer's tracks, with resemblyzer's voice encoder.

Step 3 of :mod:`.embedded_diarizer`'s recipe: pick the clean (non-overlapped) speech of every
track, compute resemblyzer's mel front end for those frames only, and embed all 1.6 s partials
in one dense batch through its 3-layer LSTM (d-vectors).

Legend of array-name suffixes (the diarizer's, see :mod:`.embedded_diarizer`):
    N  audio samples at 16 kHz
    W  samples of one 400-sample mel frame
    C  windows of the sliding segmentation
    F  segmentation frames per window
    L  local speakers per window
    A  active (window, local speaker) pairs
    T  tracks (chains of pairs)
    M  mel frames (160-sample = 10 ms step)
    B  mel bands (40)
    Q  FFT bins of the 400-sample mel frames (201)
    P  partials of 160 mel frames
    D  embedding dimension (256)
    X  an axis named where it is used (a track's span, a block of rows)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F_nn

from .base import SAMPLE_RATE
from .diarize_segments import FrameGrid

__all__ = ["TrackEmbedder"]

# resemblyzer's front end (resemblyzer/hparams.py): 25 ms Hann window, 10 ms hop, 40 mel bands,
# power (not log) mel, utterances normalised to -30 dBFS (increase only) before embedding.
_MEL_WIN = 400
_MEL_HOP = 160
_MEL_BANDS = 40
_TARGET_DBFS = -30.0
_PARTIAL_FRAMES = 160  # 1.6 s, the utterance length resemblyzer was trained on


class TrackEmbedder:
    """resemblyzer's ``VoiceEncoder`` with its mel front end re-done in numpy for chosen frames.

    Call under ``torch.inference_mode()``.
    """

    def __init__(self) -> None:
        # resemblyzer imports librosa; keep both out of this module's import. VoiceEncoder
        # reads its bundled pretrained.pt with torch.load, whose default since torch 2.6 is
        # weights_only=True: no arbitrary unpickling there either.
        import librosa
        from resemblyzer import VoiceEncoder

        self._encoder = VoiceEncoder(device="cpu", verbose=False).eval()
        # Slaney mel filters of resemblyzer's front end, [40, 201].
        self._mel_fb_BQ = librosa.filters.mel(
            sr=SAMPLE_RATE, n_fft=_MEL_WIN, n_mels=_MEL_BANDS
        ).astype(np.float32)
        # Periodic Hann window, as librosa's default "hann" with fftbins=True.
        self._hann_W = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_MEL_WIN) / _MEL_WIN)).astype(
            np.float32
        )

    def embed_tracks(
        self,
        wave_N: np.ndarray,
        start_C: np.ndarray,
        on_CFL: np.ndarray,
        clean_CFL: np.ndarray,
        pairs_A: np.ndarray,
        track_A: np.ndarray,
        *,
        grid: FrameGrid,
        min_clean_s: float,
        max_embed_s: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Track embeddings ``emb_TD`` and clean speech seconds ``support_T``.

        A global frame counts as clean for a track when the window that sees it nearest its
        centre (most context, best segmentation) says so; when that leaves less than
        ``min_clean_s``, any member window's clean verdict counts, and failing that the
        track's overlapped speech is used. At most ``max_embed_s`` of it (the middle) is embedded.
        """
        step, F = grid.step, grid.per_window
        frame_s = grid.frame_s
        # Owner window of a global frame: the one whose centre is nearest.
        centre_C = start_C + F / 2
        boundaries = (centre_C[:-1] + centre_C[1:]) / 2
        max_frames = max(1, round(max_embed_s * SAMPLE_RATE / _MEL_HOP))
        num_mel = 1 + wave_N.size // _MEL_HOP
        T = int(track_A.max()) + 1
        support_T = np.zeros(T)
        frames_T: list[np.ndarray] = []
        for t in range(T):
            members = pairs_A[track_A == t]
            g0 = int(start_C[members[:, 0].min()])
            g1 = int(start_C[members[:, 0].max()]) + F
            owner_X = np.searchsorted(boundaries, np.arange(g0, g1), side="right")
            core_X = np.zeros(g1 - g0, dtype=bool)
            clean_X = np.zeros(g1 - g0, dtype=bool)
            active_X = np.zeros(g1 - g0, dtype=bool)
            for c, local in members:
                sl = slice(int(start_C[c]) - g0, int(start_C[c]) - g0 + F)
                core_X[sl] |= clean_CFL[c, :, local] & (owner_X[sl] == c)
                clean_X[sl] |= clean_CFL[c, :, local]
                active_X[sl] |= on_CFL[c, :, local]
            support_T[t] = clean_X.sum() * frame_s
            if core_X.sum() * frame_s >= min_clean_s:
                use_X = core_X
            elif clean_X.any():
                use_X = clean_X
            else:
                use_X = active_X
            # Mel frames whose centre falls in a used segmentation frame.
            m_lo = max(0, int(((g0 - 0.5) * step + grid.centre) // _MEL_HOP))
            m_hi = min(num_mel, int(((g1 + 0.5) * step + grid.centre) // _MEL_HOP) + 1)
            m_X = np.arange(m_lo, m_hi)
            g_X = np.rint((m_X * _MEL_HOP - grid.centre) / step).astype(np.int64) - g0
            inside = (g_X >= 0) & (g_X < g1 - g0)
            m_X, g_X = m_X[inside], g_X[inside]
            idx = m_X[use_X[g_X]]
            if len(idx) == 0:
                idx = m_X[active_X[g_X]][:1] if active_X[g_X].any() else m_X[:1]
            if len(idx) > max_frames:  # the middle of the track's speech
                cut = (len(idx) - max_frames) // 2
                idx = idx[cut : cut + max_frames]
            frames_T.append(idx)
        return self.embed(wave_N, frames_T), support_T

    def mel(self, wave_N: np.ndarray, idx_M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """resemblyzer's power mel ``mel_MB`` and mean power ``pow_M`` at mel frames ``idx_M``.

        Same framing as ``librosa.feature.melspectrogram`` (centred 25 ms Hann frames, zero
        padded), computed with numpy's FFT for the frames needed only (librosa's first call
        also JIT-compiles for ~20 s).
        """
        half = _MEL_WIN // 2
        view_NW = np.lib.stride_tricks.sliding_window_view(wave_N, _MEL_WIN)  # no copy
        mel_MB = np.empty((len(idx_M), _MEL_BANDS), dtype=np.float32)
        pow_M = np.empty(len(idx_M), dtype=np.float64)
        for lo in range(0, len(idx_M), 4096):  # blocks bound the temporaries (~10 MB each)
            first_X = idx_M[lo : lo + 4096] * _MEL_HOP - half  # first sample of each frame
            inside_X = (first_X >= 0) & (first_X + _MEL_WIN <= wave_N.size)
            frames_XW = np.zeros((len(first_X), _MEL_WIN), dtype=np.float32)
            frames_XW[inside_X] = view_NW[first_X[inside_X]]
            for x in np.flatnonzero(~inside_X):  # frames hanging over an end: zero padded
                a, b = max(0, first_X[x]), min(wave_N.size, first_X[x] + _MEL_WIN)
                frames_XW[x, a - first_X[x] : b - first_X[x]] = wave_N[a:b]
            spec_XQ = np.abs(np.fft.rfft(frames_XW * self._hann_W, axis=-1)) ** 2
            mel_MB[lo : lo + 4096] = spec_XQ.astype(np.float32) @ self._mel_fb_BQ.T
            # Power of the central 10 ms (the hop) of each frame, for the dBFS normalisation.
            centre = frames_XW[:, half - _MEL_HOP // 2 : half + _MEL_HOP // 2]
            pow_M[lo : lo + 4096] = np.mean(np.square(centre, dtype=np.float64), axis=1)
        return mel_MB, pow_M

    def embed(self, wave_N: np.ndarray, frames: list[np.ndarray]) -> np.ndarray:
        """Unit-norm d-vectors ``emb_TD``, one per entry of ``frames`` (mel frame indices).

        resemblyzer's recipe: each input is normalised to -30 dBFS (increase only), cut into
        1.6 s partials (160 frames, about one per 1.6 s, evenly spread; a shorter input is
        zero padded at the end, as resemblyzer does), and the normalised mean of the partial
        embeddings is the embedding. All partials run through the LSTM as one dense batch
        (packed variable-length batches take ~2x longer on CPU).
        """
        needed_M = np.unique(np.concatenate(frames))
        mel_MB, pow_M = self.mel(wave_N, needed_M)
        partials: list[np.ndarray] = []
        owner_P: list[int] = []
        for t, idx in enumerate(frames):
            rows = np.searchsorted(needed_M, idx)
            rms = math.sqrt(max(float(pow_M[rows].mean()), 1e-12))
            gain_db = max(0.0, _TARGET_DBFS - 20 * math.log10(rms))
            mel_XB = mel_MB[rows] * np.float32(10 ** (gain_db / 10))  # power mel: gain squared
            n = len(rows)
            if n <= _PARTIAL_FRAMES:
                partials.append(np.pad(mel_XB, ((0, _PARTIAL_FRAMES - n), (0, 0))))
                owner_P.append(t)
                continue
            # round(): 1.6-2.3 s gives one (middle) partial, 2.4-3.2 s two, and so on.
            for s in np.linspace(0, n - _PARTIAL_FRAMES, max(1, round(n / _PARTIAL_FRAMES))):
                s = int(round(s))
                partials.append(mel_XB[s : s + _PARTIAL_FRAMES])
                owner_P.append(t)
        _, (hidden, _) = self._encoder.lstm(torch.from_numpy(np.stack(partials)))
        partial_PD = F_nn.normalize(torch.relu(self._encoder.linear(hidden[-1])), dim=-1)
        sum_TD = np.zeros((len(frames), partial_PD.shape[1]), dtype=np.float64)
        np.add.at(sum_TD, np.asarray(owner_P), partial_PD.numpy())
        norm_T1 = np.maximum(np.linalg.norm(sum_TD, axis=1, keepdims=True), 1e-12)
        return (sum_TD / norm_T1).astype(np.float32)
