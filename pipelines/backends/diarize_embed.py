"""Speaker embeddings of the embedded diarizer's tracks, with resemblyzer's voice encoder.

Step 3 of :mod:`.embedded_diarizer`'s recipe: pick the clean (non-overlapped) speech of every
track, compute resemblyzer's mel front end for those frames only, and embed all 1.6 s partials
in one dense batch through its 3-layer LSTM (d-vectors).

Suffixes follow :mod:`microturn.schemas.legend`: N audio samples, M mel channels (40 here),
X frequency bins (201 here), D embedding width (256). The other axes (windows, segmentation
frames, local speakers, active pairs, tracks, mel frames of the 10 ms hop, partials) have no
letter there, so arrays over them are named in words and their axes are stated where they are
made.
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
        # Slaney mel filters of resemblyzer's front end, [mel channel 40, frequency bin 201].
        self._mel_fb_MX = librosa.filters.mel(
            sr=SAMPLE_RATE, n_fft=_MEL_WIN, n_mels=_MEL_BANDS
        ).astype(np.float32)
        # Periodic Hann window, as librosa's default "hann" with fftbins=True.
        self._hann_N = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_MEL_WIN) / _MEL_WIN)).astype(
            np.float32
        )

    def embed_tracks(
        self,
        wave_N: np.ndarray,
        starts: np.ndarray,
        on: np.ndarray,
        clean: np.ndarray,
        pairs: np.ndarray,
        track_of_pair: np.ndarray,
        *,
        grid: FrameGrid,
        min_clean_s: float,
        max_embed_s: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Track embeddings [track, D], clean speech seconds and all speech seconds per track.

        ``on`` and ``clean`` are the binarised and the non-overlapped activity, [window, frame,
        local speaker]; ``pairs`` the (window, local speaker) of each active pair and
        ``track_of_pair`` its track.

        A global frame counts as clean for a track when the window that sees it nearest its
        centre (most context, best segmentation) says so; when that leaves less than
        ``min_clean_s``, any member window's clean verdict counts, and failing that the
        track's overlapped speech is used. At most ``max_embed_s`` of it (the middle) is embedded.
        """
        step, per_window = grid.step, grid.per_window
        frame_s = grid.frame_s
        # Owner window of a global frame: the one whose centre is nearest.
        centres = starts + per_window / 2
        boundaries = (centres[:-1] + centres[1:]) / 2
        max_frames = max(1, round(max_embed_s * SAMPLE_RATE / _MEL_HOP))
        num_mel = 1 + wave_N.size // _MEL_HOP
        num_tracks = int(track_of_pair.max()) + 1
        support = np.zeros(num_tracks)
        active = np.zeros(num_tracks)
        frames_per_track: list[np.ndarray] = []
        for t in range(num_tracks):
            members = pairs[track_of_pair == t]
            g0 = int(starts[members[:, 0].min()])
            g1 = int(starts[members[:, 0].max()]) + per_window
            # Over the track's span of global frames g0 .. g1 - 1:
            owner = np.searchsorted(boundaries, np.arange(g0, g1), side="right")
            core = np.zeros(g1 - g0, dtype=bool)
            any_clean = np.zeros(g1 - g0, dtype=bool)
            any_active = np.zeros(g1 - g0, dtype=bool)
            for c, local in members:
                sl = slice(int(starts[c]) - g0, int(starts[c]) - g0 + per_window)
                core[sl] |= clean[c, :, local] & (owner[sl] == c)
                any_clean[sl] |= clean[c, :, local]
                any_active[sl] |= on[c, :, local]
            support[t] = any_clean.sum() * frame_s
            active[t] = any_active.sum() * frame_s
            if core.sum() * frame_s >= min_clean_s:
                use = core
            elif any_clean.any():
                use = any_clean
            else:
                use = any_active
            # Mel frames whose centre falls in a used segmentation frame.
            m_lo = max(0, int(((g0 - 0.5) * step + grid.centre) // _MEL_HOP))
            m_hi = min(num_mel, int(((g1 + 0.5) * step + grid.centre) // _MEL_HOP) + 1)
            mel_frames = np.arange(m_lo, m_hi)
            seg_frames = np.rint((mel_frames * _MEL_HOP - grid.centre) / step).astype(np.int64) - g0
            inside = (seg_frames >= 0) & (seg_frames < g1 - g0)
            mel_frames, seg_frames = mel_frames[inside], seg_frames[inside]
            idx = mel_frames[use[seg_frames]]
            if len(idx) == 0:
                idx = mel_frames[any_active[seg_frames]][:1] if any_active[seg_frames].any() else mel_frames[:1]
            if len(idx) > max_frames:  # the middle of the track's speech
                cut = (len(idx) - max_frames) // 2
                idx = idx[cut : cut + max_frames]
            frames_per_track.append(idx)
        return self.embed(wave_N, frames_per_track), support, active

    def mel(self, wave_N: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """resemblyzer's power mel [frame, mel channel 40] and mean power [frame] at mel frames ``idx``.

        Same framing as ``librosa.feature.melspectrogram`` (centred 25 ms Hann frames, zero
        padded), computed with numpy's FFT for the frames needed only (librosa's first call
        also JIT-compiles for ~20 s).
        """
        half = _MEL_WIN // 2
        view = np.lib.stride_tricks.sliding_window_view(wave_N, _MEL_WIN)  # no copy
        mel = np.empty((len(idx), _MEL_BANDS), dtype=np.float32)
        power = np.empty(len(idx), dtype=np.float64)
        for lo in range(0, len(idx), 4096):  # blocks bound the temporaries (~10 MB each)
            first = idx[lo : lo + 4096] * _MEL_HOP - half  # first sample of each frame
            inside = (first >= 0) & (first + _MEL_WIN <= wave_N.size)
            frames = np.zeros((len(first), _MEL_WIN), dtype=np.float32)  # [frame, sample]
            frames[inside] = view[first[inside]]
            for x in np.flatnonzero(~inside):  # frames hanging over an end: zero padded
                a, b = max(0, first[x]), min(wave_N.size, first[x] + _MEL_WIN)
                frames[x, a - first[x] : b - first[x]] = wave_N[a:b]
            spec = np.abs(np.fft.rfft(frames * self._hann_N, axis=-1)) ** 2  # [frame, frequency bin]
            mel[lo : lo + 4096] = spec.astype(np.float32) @ self._mel_fb_MX.T
            # Power of the central 10 ms (the hop) of each frame, for the dBFS normalisation.
            centre = frames[:, half - _MEL_HOP // 2 : half + _MEL_HOP // 2]
            power[lo : lo + 4096] = np.mean(np.square(centre, dtype=np.float64), axis=1)
        return mel, power

    def embed(self, wave_N: np.ndarray, frames: list[np.ndarray]) -> np.ndarray:
        """Unit-norm d-vectors [entry, D], one per entry of ``frames`` (mel frame indices).

        resemblyzer's recipe: each input is normalised to -30 dBFS (increase only), cut into
        1.6 s partials (160 frames, about one per 1.6 s, evenly spread; a shorter input is
        zero padded at the end, as resemblyzer does), and the normalised mean of the partial
        embeddings is the embedding. All partials run through the LSTM as one dense batch
        (packed variable-length batches take ~2x longer on CPU).
        """
        needed = np.unique(np.concatenate(frames))
        mel, power = self.mel(wave_N, needed)
        partials: list[np.ndarray] = []
        owner: list[int] = []
        for t, idx in enumerate(frames):
            rows = np.searchsorted(needed, idx)
            rms = math.sqrt(max(float(power[rows].mean()), 1e-12))
            gain_db = max(0.0, _TARGET_DBFS - 20 * math.log10(rms))
            track_mel = mel[rows] * np.float32(10 ** (gain_db / 10))  # power mel: gain squared
            n = len(rows)
            if n <= _PARTIAL_FRAMES:
                partials.append(np.pad(track_mel, ((0, _PARTIAL_FRAMES - n), (0, 0))))
                owner.append(t)
                continue
            # round(): 1.6-2.3 s gives one (middle) partial, 2.4-3.2 s two, and so on.
            for s in np.linspace(0, n - _PARTIAL_FRAMES, max(1, round(n / _PARTIAL_FRAMES))):
                s = int(round(s))
                partials.append(track_mel[s : s + _PARTIAL_FRAMES])
                owner.append(t)
        _, (hidden, _) = self._encoder.lstm(torch.from_numpy(np.stack(partials)))
        # [partial, D]
        partial_embeddings = F_nn.normalize(torch.relu(self._encoder.linear(hidden[-1])), dim=-1)
        sums = np.zeros((len(frames), partial_embeddings.shape[1]), dtype=np.float64)
        np.add.at(sums, np.asarray(owner), partial_embeddings.numpy())
        norms = np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        return (sums / norms).astype(np.float32)
