"""Offline, overlap-aware speaker diarization from weights that ship inside registry wheels.

The recipe of pyannote's speaker-diarization pipeline, re-implemented around two small models
that need no download:

1. Local segmentation. The pyannote segmentation model bundled in the whisperx wheel
   (``whisperx/assets/pytorch_model.bin``: PyanNet, multi-label, sigmoid outputs for 3 local
   speakers per 5 s window, one frame every 270 samples = 16.875 ms) runs on 5 s windows every
   ``step_s`` seconds, batched; windows without VAD speech are skipped.
2. Tracks. A local speaker of one window and one of the next window are chained when their
   activity agrees on the frames both windows see (the segmentation model is good at that,
   resemblyzer's embeddings are weak on short telephone speech): a track is one voice followed
   through consecutive windows, usually a whole turn.
3. Embeddings. resemblyzer's ``VoiceEncoder`` (3-layer LSTM d-vector over a 40-band mel at
   10 ms) embeds the clean (non-overlapped) speech of every track, all 1.6 s partials in one
   dense batch.
4. Clustering. Agglomerative clustering of the tracks: average linkage on cosine distance plus
   constraints from the windows, kept at full weight between clusters (complete linkage on
   them): tracks heard in one window get a distance penalty (the segmentation model separated
   them), tracks talking at the same time a cannot-link. The tree is cut at a distance
   threshold or at the requested number of speakers; weakly supported clusters join large
   ones. Every active local speaker then gets a cluster through a per-window optimal
   assignment (two local speakers of a window are two global speakers).
5. Reconstruction. Local activations mapped to their clusters are overlap-added on the global
   frame grid (Hamming weighted); the number of simultaneous speakers per frame is the
   rounded mean of the binarised local counts; each frame keeps that many most active
   speakers, inside the VAD speech. Runs of frames become (possibly overlapping) turns.

Legend of array-name suffixes:
    N  audio samples at 16 kHz
    W  samples of one segmentation window (80 000 = 5 s)
    C  windows ("chunks") of the sliding segmentation
    F  segmentation frames per window (293)
    L  local speakers per window (3)
    P  filterbank outputs (stride 10 samples) / partials of 160 mel frames, as noted
    S  a subset of local speakers
    H  filterbank channels of the segmentation model's first layer (80), J their taps (251)
    Q  FFT bins of the 400-sample mel frames (201)
    X  an axis named where it is used (shared frames, a track's span, a block of rows)
    G  segmentation frames of the whole file (global frame grid, 270-sample step)
    M  mel frames (160-sample = 10 ms step)
    B  mel bands (40)
    A  active (window, local speaker) pairs
    T  tracks (chains of pairs)
    E  tracks used for clustering
    D  embedding dimension (256)
    K  global speakers (clusters)
    R  speech regions
"""

from __future__ import annotations

import collections
import math
import os
import typing
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F_nn
from scipy.optimize import linear_sum_assignment

from .base import SAMPLE_RATE, Region, SpeakerCount, Turn, validate_wave
from .silero import torch_threads

__all__ = ["EmbeddedDiarizer", "EmbeddedDiarizerConfig", "default_segmentation_path"]

# resemblyzer's front end (resemblyzer/hparams.py): 25 ms Hann window, 10 ms hop, 40 mel bands,
# power (not log) mel, utterances normalised to -30 dBFS (increase only) before embedding.
_MEL_WIN = 400
_MEL_HOP = 160
_MEL_BANDS = 40
_TARGET_DBFS = -30.0
_PARTIAL_FRAMES = 160  # 1.6 s, the utterance length resemblyzer was trained on


def default_segmentation_path() -> Path:
    """Path of the pyannote segmentation checkpoint that ships inside the whisperx wheel."""
    import whisperx

    path = Path(whisperx.__file__).resolve().parent / "assets" / "pytorch_model.bin"
    if not path.is_file():
        raise FileNotFoundError(
            f"the segmentation model is missing from the whisperx wheel ({path}); reinstall "
            "whisperx (pip install -c requirements.lock whisperx) or pass "
            "EmbeddedDiarizerConfig(segmentation_path=...)"
        )
    return path


@dataclass(frozen=True, kw_only=True, slots=True)
class EmbeddedDiarizerConfig:
    """Settings of :class:`EmbeddedDiarizer`.

    The defaults give DER 0.052 on pyannote's 30 s two-person phone call (no collar, overlap
    scored) with the speaker count given or estimated (estimate: 2), and results on that file
    stay within DER 0.045-0.08 over wide ranges of every setting (step 1-4 s, onset 0.4-0.6,
    threshold 0.25-0.35, gaps and minimum durations 0-250 ms), so they are not tuned to one
    file's noise. Speaker counts were also checked on audio built from the call: one voice's
    turns alone (1), the call 20 times over (2), the call plus a pitch-shifted copy of one
    or both voices (3, 4), and after AAC / MP3 / Opus coding, gain and noise (2).

    Attributes:
        step_s: hop between 5 s segmentation windows. pyannote uses 0.5 s (10 views of every
            frame) on GPUs; here the segmentation LSTM dominates the run time (~20 ms per
            window on one core) and its cost is proportional to 1 / step_s. With 3 s,
            consecutive windows share 2 s (enough to chain local speakers into tracks), every
            frame near a window edge is also seen by the neighbour's centre, and the frames
            seen once are the middle second of a window, where the model has most context.
            Steps from 1 to 4 s all gave DER 0.045-0.072 on the sample.
        onset: threshold on the local sigmoid activations that marks a local speaker active
            (counts simultaneous speakers, selects clean frames, links windows). 0.5 is the
            natural point of a sigmoid trained with binary cross-entropy; 0.4 and 0.6 moved
            DER on the sample by less than a point (more false alarm / more miss).
        warm_up_s: frames this close to a window edge are not used to count speakers where a
            neighbouring window sees them with more context; 0.5 s is pyannote's 10 % of 5 s.
        min_active_s: a local speaker active for less than this in a window is ignored
            (spurious blips); 0.2 s is shorter than any word.
        link_iou: consecutive windows' local speakers are chained into one track when their
            activity on the shared frames has at least this intersection over union. On the
            sample the same voice seen by two windows agrees at 0.91-1.0 and different local
            speakers at 0-0.48; 0.7 sits between.
        link_min_s: ... and when they share at least this much speech (0.5 s: about two
            words, so that a breath or a click cannot chain two speakers).
        cooccur_penalty: cosine distance added between tracks that are two local speakers of
            one window. The segmentation model separates voices within 5 s well but sometimes
            splits one speaker in two (a pause, a change of tone), so this is a bias, not a
            wall: 0.1 keeps such a split (distance ~0.1-0.15) below the threshold.
        cannot_link_s: tracks that talk at the same time in a window for at least this long
            are certainly two people (cannot-link). 0.25 s ignores the few frames where the
            model's activations of one voice cross over at a handover.
        min_clean_s: tracks with at least this much clean speech form the clusters; shorter
            ones are only assigned to them. resemblyzer embeds 1.6 s partials; below ~1.5 s
            its d-vectors of different people on the same channel look alike.
        max_embed_s: at most this much of a track's clean speech (its middle) is embedded:
            3.2 s is two partials. With 1.6 s (one partial, ~35 ms less per 30 s) one voice
            was split in two in the single-speaker check; more than 3.2 s only costs time.
        cluster_threshold: height (cosine distance + constraint penalty) at which the tree
            is cut when the count is not given. On the sample, track embeddings of one caller
            sit 0.10-0.16 apart and those of the two callers 0.21-0.28: resemblyzer alone
            separates these voices only below ~0.2, which split one voice in two in the
            single-speaker check. Speakers who talk to each other share windows, and the
            window constraints push them apart; every count check came out right for
            thresholds 0.25-0.35, and 0.3 is the middle. Two voices that never share a
            window and sound alike on the channel may be merged.
        min_cluster_s: when the count is estimated, clusters with less clean speech than
            this join the most similar larger cluster (2 s: less than a sentence is not enough
            evidence for one more speaker).
        min_turn_ms: turns shorter than this are dropped (after gap filling); 100 ms is
            shorter than a one-syllable backchannel.
        min_gap_ms: pauses shorter than this inside one speaker's speech are filled; 100 ms
            is below the shortest pauses annotators mark between turns.
        vad_mask: keep diarized speech only inside the VAD ``speech`` regions (on the sample
            it cuts false alarm at turn edges from 0.9 s to 0.5 s, DER 0.081 -> 0.068).
        batch_size: windows per segmentation forward pass: the LSTM costs ~13 ms per window
            at 8 windows a batch and ~17 ms at 32 (larger activations fall out of cache).
        num_threads: torch intra-op threads during a call; the caller's setting is restored
            afterwards (None: leave it alone). 1 by default: on the 2-core ingest machine two
            threads cut the diarization of the 30 s call from ~0.30 s to ~0.25 s (median)
            when the machine is idle, but about double it as soon as one other busy process
            (another worker, ffmpeg) shares the cores, as OpenMP threads wait on each other.
        segmentation_path: another PyanNet multi-label checkpoint (default: whisperx's).
    """

    step_s: float = 3.0
    onset: float = 0.5
    warm_up_s: float = 0.5
    min_active_s: float = 0.2
    link_iou: float = 0.7
    link_min_s: float = 0.5
    cooccur_penalty: float = 0.1
    cannot_link_s: float = 0.25
    min_clean_s: float = 1.5
    max_embed_s: float = 3.2
    cluster_threshold: float = 0.3
    min_cluster_s: float = 2.0
    min_turn_ms: int = 100
    min_gap_ms: int = 100
    vad_mask: bool = True
    batch_size: int = 8
    num_threads: int | None = 1
    segmentation_path: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if not 0.1 <= self.step_s <= 5.0:
            raise ValueError(f"step_s must be in [0.1, 5] seconds (windows are 5 s), got {self.step_s}")
        for name in ("onset", "link_iou"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.warm_up_s < 2.5:
            raise ValueError(f"warm_up_s must be in [0, 2.5) seconds, got {self.warm_up_s}")
        if not 0.0 < self.cluster_threshold < 2.0:
            raise ValueError(
                f"cluster_threshold is a cosine distance in (0, 2), got {self.cluster_threshold}"
            )
        for name in (
            "min_active_s", "link_min_s", "cooccur_penalty", "cannot_link_s", "min_clean_s",
            "min_cluster_s", "min_turn_ms", "min_gap_ms",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_embed_s < 0.1:
            raise ValueError(f"max_embed_s must be >= 0.1 seconds, got {self.max_embed_s}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads}")


_LOAD_LOCK = threading.Lock()


def _load_segmentation(path: Path) -> torch.nn.Module:
    """Load a PyanNet checkpoint without unpickling arbitrary objects.

    ``pyannote.audio.Model.from_pretrained`` calls ``torch.load(weights_only=False)``. Here the
    checkpoint is read with ``weights_only=True``, allowing only the plain data classes that
    the Lightning checkpoint stores (omegaconf containers, pyannote's task specification and
    enums), and the network is rebuilt from its hyper-parameters: same weights, same outputs.
    """
    import omegaconf
    from pyannote.audio.core.model import Introspection
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    allowed = [
        omegaconf.listconfig.ListConfig,
        omegaconf.base.ContainerMetadata,
        omegaconf.base.Metadata,
        omegaconf.nodes.AnyNode,
        typing.Any,
        list,
        dict,
        int,
        collections.defaultdict,
        torch.torch_version.TorchVersion,
        Introspection,
        Specifications,
        Problem,
        Resolution,
    ]
    try:
        # safe_globals edits a process-wide allow-list: two Beam worker threads loading at once
        # would remove each other's entries, so loads are serialised.
        with _LOAD_LOCK, torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's message names the global it refused
        raise RuntimeError(f"cannot load the segmentation checkpoint {path} safely: {error}") from error
    meta = checkpoint["pyannote.audio"]
    if meta["architecture"].get("class") != "PyanNet":
        raise RuntimeError(f"{path}: expected a PyanNet checkpoint, found {meta['architecture']}")
    specifications = meta["specifications"]
    if specifications.problem != Problem.MULTI_LABEL_CLASSIFICATION:
        # A powerset model (pyannote 3.x) would need its outputs decoded to multi-label first.
        raise RuntimeError(
            f"{path}: expected a multi-label segmentation model, found {specifications.problem}"
        )
    hparams = checkpoint["hyper_parameters"]
    model = PyanNet(
        sincnet=dict(hparams["sincnet"]),
        lstm=dict(hparams["lstm"]),
        linear=dict(hparams["linear"]),
        sample_rate=int(hparams["sample_rate"]),
        num_channels=int(hparams["num_channels"]),
    )
    model.specifications = specifications
    model.build()
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval()


def _runs(mask_X: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the runs of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask_X.astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _unit_rows(x_XD: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    return x_XD / np.maximum(np.linalg.norm(x_XD, axis=1, keepdims=True), 1e-12)


def _merged_regions(speech: list[Region]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, merged region bounds ``start_R``, ``end_R`` in ms (empty regions dropped)."""
    spans = sorted((r.start_ms, r.end_ms) for r in speech if r.end_ms > r.start_ms)
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    bounds = np.asarray(merged, dtype=np.float64).reshape(-1, 2)
    return bounds[:, 0], bounds[:, 1]


def _constrained_average_linkage(
    dist_EE: np.ndarray, penalty_EE: np.ndarray
) -> list[tuple[int, int, float]]:
    """Agglomerative clustering down to one cluster; returns the merges ``(i, j, height)``.

    The height of two clusters is their average pairwise distance (average linkage) plus the
    largest penalty between their members (complete linkage on the constraints). Unlike a
    penalty folded into the distances before average linkage, a cannot-link keeps its full
    weight however many members the clusters have (on a 10 min call, 96 cannot-linked pairs
    among 8 100 were averaged away and the two speakers merged). The height stays monotone
    (both parts are reducible), so cutting at a threshold is a prefix of the merges. Nearest
    neighbours are cached per row: ~O(E^2) time overall. Ties go to the lower index, so the
    result is deterministic.
    """
    E = len(dist_EE)
    sum_EE = dist_EE.astype(np.float64).copy()  # sum of member distances between clusters
    pen_EE = penalty_EE.astype(np.float64).copy()
    size_E = np.ones(E)
    active_E = np.ones(E, dtype=bool)
    height_EE = sum_EE + pen_EE
    np.fill_diagonal(height_EE, np.inf)
    nn_E = height_EE.argmin(axis=1)
    nd_E = height_EE[np.arange(E), nn_E]
    merges: list[tuple[int, int, float]] = []
    for _ in range(E - 1):
        a = int(np.argmin(nd_E))
        i, j = sorted((a, int(nn_E[a])))
        merges.append((i, j, float(nd_E[a])))
        sum_EE[i] += sum_EE[j]
        sum_EE[:, i] = sum_EE[i]
        pen_EE[i] = np.maximum(pen_EE[i], pen_EE[j])
        pen_EE[:, i] = pen_EE[i]
        size_E[i] += size_E[j]
        active_E[j] = False
        row = sum_EE[i] / (size_E[i] * size_E) + pen_EE[i]
        row[~active_E] = np.inf
        row[i] = np.inf
        height_EE[i], height_EE[:, i] = row, row
        height_EE[j], height_EE[:, j] = np.inf, np.inf
        nd_E[j] = np.inf
        stale = np.flatnonzero(active_E & ((nn_E == i) | (nn_E == j)))
        for k in np.union1d(stale, [i]):
            nn_E[k] = int(np.argmin(height_EE[k]))
            nd_E[k] = height_EE[k, nn_E[k]]
        closer = active_E & (row < nd_E)
        nn_E[closer] = i
        nd_E[closer] = row[closer]
    return merges


def _cut(merges: list[tuple[int, int, float]], E: int, num_merges: int) -> np.ndarray:
    """Cluster label of each of the ``E`` items after the first ``num_merges`` merges."""
    parent = np.arange(E)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in merges[: max(0, num_merges)]:
        parent[root(j)] = root(i)
    return np.array([root(x) for x in range(E)])


class EmbeddedDiarizer:
    """:class:`~.base.Diarizer` that runs offline on CPU from weights inside installed wheels.

    The constructor loads both models once (~0.3 s after the imports, which take a few
    seconds on first use); keep one instance per worker. A call costs ~10 ms per second of
    audio on one core (30 s call: ~0.3 s; 10 min: ~6.5 s), less where the VAD found silence.
    Calls are deterministic: the same input gives the same turns. ``num_threads`` changes
    torch's process-wide thread count for the duration of a call.
    """

    name = "embedded"

    def __init__(self, config: EmbeddedDiarizerConfig | None = None) -> None:
        self.config = config or EmbeddedDiarizerConfig()
        path = Path(self.config.segmentation_path or default_segmentation_path())
        model = _load_segmentation(path)
        self._segmentation = model
        specs = model.specifications
        self._window_samples = round(specs.duration * SAMPLE_RATE)  # 80 000
        frames = model.receptive_field
        self._frame_step = round(frames.step * SAMPLE_RATE)  # 270 samples
        # Centre of frame 0, in samples from the window start.
        self._frame_centre = (frames.start + frames.duration / 2) * SAMPLE_RATE
        self._frames_per_window = int(model.num_frames(self._window_samples))  # 293
        # _segment's shared-filterbank path relies on PyanNet's layout: a monolithic LSTM and
        # window starts on the filterbank stride (270 samples = 27 strides of 10).
        sinc = model.sincnet
        self._sinc_stride = int(sinc.conv1d[0].stride)
        if not model.hparams.lstm["monolithic"] or self._frame_step % self._sinc_stride:
            raise RuntimeError(f"{path}: unsupported PyanNet layout")
        with torch.inference_mode():
            self._sinc_filters_H1J = sinc.conv1d[0].get_filters().detach().clone()  # [80,1,251]
        self._sinc_sums_H = self._sinc_filters_H1J.sum(dim=(1, 2))

        # resemblyzer imports librosa; keep both out of this module's import. VoiceEncoder
        # reads its bundled pretrained.pt with torch.load, whose default since torch 2.6 is
        # weights_only=True: no arbitrary unpickling there either.
        from resemblyzer import VoiceEncoder
        import librosa

        self._encoder = VoiceEncoder(device="cpu", verbose=False).eval()
        # Slaney mel filters of resemblyzer's front end, [40, 201].
        self._mel_fb_BQ = librosa.filters.mel(
            sr=SAMPLE_RATE, n_fft=_MEL_WIN, n_mels=_MEL_BANDS
        ).astype(np.float32)
        # Periodic Hann window, as librosa's default "hann" with fftbins=True.
        self._hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_MEL_WIN) / _MEL_WIN)).astype(
            np.float32
        )

    # ------------------------------------------------------------------ public API

    def __call__(
        self, wave_N: np.ndarray, *, speech: list[Region], count: SpeakerCount
    ) -> list[Turn]:
        """Diarize 16 kHz mono float32 audio ``[N]`` into possibly overlapping turns.

        Args:
            wave_N: the mixed channel.
            speech: VAD regions in ms. Windows without speech are skipped, and with
                ``config.vad_mask`` the turns are cut to these regions. An empty list means
                no speech: the result is empty.
            count: speaker-count constraints (exact, or min / max; all None: estimated).

        Returns:
            Turns sorted by start, speakers named ``SPEAKER_00``, ``SPEAKER_01``, ... in order of
            first appearance, all on channel 0. Audio shorter than one 5 s segmentation window
            is padded with silence. Empty (with a warning) without speech.

        Raises:
            ValueError: non-1-D, non-float32, empty or non-finite audio.
        """
        wave_N = validate_wave(wave_N, who=self.name)
        if not any(r.end_ms > r.start_ms for r in speech):
            warnings.warn(f"{self.name}: no speech regions given; no diarization", stacklevel=2)
            return []
        n_ms = wave_N.size * 1000 // SAMPLE_RATE
        if wave_N.size < self._window_samples:
            # A clip shorter than one 5 s window (a short answer, a voice note) is padded with
            # silence: the segmentation model sees digital silence as no speaker, and the turns
            # are cut back to the real length below.
            wave_N = np.pad(wave_N, (0, self._window_samples - wave_N.size))
        with torch.inference_mode(), torch_threads(self.config.num_threads):
            turns = self._diarize(wave_N, _merged_regions(speech), count)
        return [replace(t, end_ms=min(t.end_ms, n_ms)) for t in turns if t.start_ms < n_ms]

    # ------------------------------------------------------------------ pipeline

    def _diarize(
        self, wave_N: np.ndarray, regions: tuple[np.ndarray, np.ndarray], count: SpeakerCount
    ) -> list[Turn]:
        cfg = self.config
        F = self._frames_per_window
        frame_s = self._frame_step / SAMPLE_RATE
        start_C = self._window_starts(wave_N.size, regions)
        if len(start_C) == 0:
            warnings.warn(f"{self.name}: no segmentation window overlaps speech", stacklevel=3)
            return []

        # 1. local segmentation
        act_CFL = self._segment(wave_N, start_C)
        on_CFL = act_CFL >= cfg.onset
        active_CL = on_CFL.sum(axis=1) * frame_s >= cfg.min_active_s
        on_CFL &= active_CL[:, None, :]  # blips are not speakers, not even for the count
        local_count_CF = on_CFL.sum(axis=-1)
        clean_CFL = on_CFL & (local_count_CF == 1)[:, :, None]
        pairs_A = np.argwhere(active_CL)  # (window, local speaker), in window order
        if len(pairs_A) == 0:
            warnings.warn(f"{self.name}: the segmentation found no speaker", stacklevel=3)
            return []

        # 2. tracks, 3. their embeddings
        track_A = self._link(on_CFL, start_C, pairs_A)
        emb_TD, support_T = self._embed_tracks(wave_N, start_C, on_CFL, clean_CFL, pairs_A, track_A)

        # 4. clustering and assignment
        penalty_TT = self._constraints(on_CFL, pairs_A, track_A)
        strong_T = support_T >= cfg.min_clean_s
        wanted = count.num_speakers or count.min_speakers or 1
        if strong_T.sum() < wanted:
            if not strong_T.any():
                warnings.warn(
                    f"{self.name}: no voice has {cfg.min_clean_s} s of clean speech; clustering "
                    "short or overlapped speech, the speaker count is less reliable",
                    stacklevel=3,
                )
            strong_T[:] = True  # too few reliable tracks for the requested count: use all
        sel_E = np.flatnonzero(strong_T)
        centroid_KD = self._cluster(
            emb_TD[sel_E], penalty_TT[np.ix_(sel_E, sel_E)], support_T[sel_E], count
        )
        cluster_A = self._assign(emb_TD[track_A] @ centroid_KD.T, pairs_A[:, 0])

        # 5. reconstruction
        binary_GK = self._reconstruct(
            act_CFL, local_count_CF, start_C, pairs_A, cluster_A, len(centroid_KD), regions
        )
        turns = self._to_turns(binary_GK, wave_N.size)
        found = len({t.speaker for t in turns})
        if found < wanted:
            warnings.warn(
                f"{self.name}: {found} speaker(s) found, {wanted} requested: the others have no "
                "speech left after reconstruction",
                stacklevel=3,
            )
        return turns

    def _window_starts(
        self, num_samples: int, regions: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """Start frames (global grid) of the windows to segment, ``start_C``: every
        ``step_s``, plus one flush with the end of the audio, minus those without speech."""
        step = self._frame_step
        step_frames = max(1, round(self.config.step_s * SAMPLE_RATE / step))
        last = (num_samples - self._window_samples) // step
        starts = list(range(0, last + 1, step_frames))
        if starts[-1] != last:
            starts.append(last)
        start_C = np.asarray(starts, dtype=np.int64)
        begin_ms = start_C * step * 1000 / SAMPLE_RATE
        end_ms = begin_ms + self._window_samples * 1000 / SAMPLE_RATE
        region_start_R, region_end_R = regions
        # The last region starting before a window's end overlaps it iff it ends after the
        # window's start (merged regions have increasing ends).
        i_C = np.searchsorted(region_start_R, end_ms, side="left") - 1
        keep_C = (i_C >= 0) & (region_end_R[np.maximum(i_C, 0)] > begin_ms)
        return start_C[keep_C]

    def _segment(self, wave_N: np.ndarray, start_C: np.ndarray) -> np.ndarray:
        """Local speaker activations ``act_CFL`` (sigmoid probabilities) of every window.

        Same result as the model applied to each window (to ~3e-4, float rounding), faster:
        PyanNet starts with an instance norm of the waveform (an affine map per window) and a
        linear strided filterbank, so the filterbank runs once over the audio a batch covers
        and each window gets its normalisation afterwards as ``scale * conv + shift * sum(h)``.
        This made the filterbank, a third of the model's time, ~3x cheaper (one long
        convolution is also more efficient than many 5 s ones).
        """
        model = self._segmentation
        sinc = model.sincnet
        step, W = self._frame_step, self._window_samples
        stride = self._sinc_stride
        conv_frames = (W - self._sinc_filters_H1J.shape[-1]) // stride + 1
        norm = sinc.wav_norm1d
        gamma, beta, eps = float(norm.weight), float(norm.bias), float(norm.eps)
        out = []
        for i in range(0, len(start_C), self.config.batch_size):
            s_C = start_C[i : i + self.config.batch_size] * step
            windows_CW = np.stack([wave_N[s : s + W] for s in s_C])
            mean_C = windows_CW.mean(axis=1, dtype=np.float64)
            std_C = np.sqrt(windows_CW.var(axis=1, dtype=np.float64) + eps)
            scale_C11 = torch.from_numpy(gamma / std_C).float()[:, None, None]
            shift_C11 = torch.from_numpy(beta - gamma * mean_C / std_C).float()[:, None, None]
            # One filterbank pass per run of overlapping windows (a run never spans a long
            # silence, whose windows were skipped), each window then sliced out of it.
            pieces = []
            run_starts = [0] + [k for k in range(1, len(s_C)) if s_C[k] >= s_C[k - 1] + W]
            for a, b in zip(run_starts, run_starts[1:] + [len(s_C)]):
                lo, hi = int(s_C[a]), int(s_C[b - 1]) + W
                conv_HP = F_nn.conv1d(
                    torch.from_numpy(wave_N[lo:hi])[None, None], self._sinc_filters_H1J,
                    stride=stride,
                )[0]
                pieces += [conv_HP[:, o : o + conv_frames] for o in ((s_C[a:b] - lo) // stride)]
            x = torch.stack(pieces)  # [C, 80, P], contiguous: the in-place ops below are cheap
            x.mul_(scale_C11).add_(shift_C11 * self._sinc_sums_H[None, :, None]).abs_()
            x = F_nn.leaky_relu(sinc.norm1d[0](sinc.pool1d[0](x)))
            for conv, pool, inorm in zip(sinc.conv1d[1:], sinc.pool1d[1:], sinc.norm1d[1:]):
                x = F_nn.leaky_relu(inorm(pool(conv(x))))
            x, _ = model.lstm(x.transpose(1, 2))
            for linear in model.linear:
                x = F_nn.leaky_relu(linear(x))
            out.append(model.activation(model.classifier(x)).numpy())
        return np.concatenate(out, axis=0)

    def _link(self, on_CFL: np.ndarray, start_C: np.ndarray, pairs_A: np.ndarray) -> np.ndarray:
        """Track id ``track_A`` of every active pair (0 .. T-1, in order of first window).

        Consecutive windows' local speakers are chained when their binarised activity on the
        shared frames has ``link_iou`` intersection over union and ``link_min_s`` of common
        speech; links are one-to-one (optimal assignment on the IoU), so a track holds at
        most one local speaker per window.
        """
        cfg = self.config
        F = self._frames_per_window
        frame_s = self._frame_step / SAMPLE_RATE
        parent = list(range(len(pairs_A)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        index = {(int(c), int(l)): a for a, (c, l) in enumerate(pairs_A)}
        by_window: dict[int, list[int]] = collections.defaultdict(list)
        for c, l in index:
            by_window[c].append(l)
        for c in range(len(start_C) - 1):
            shift = int(start_C[c + 1] - start_C[c])
            if shift >= F or c not in by_window or c + 1 not in by_window:
                continue
            left, right = by_window[c], by_window[c + 1]
            a_XS = on_CFL[c, shift:][:, left].astype(np.int32)  # shared frames, seen by c
            b_XS = on_CFL[c + 1, : F - shift][:, right].astype(np.int32)  # ... and by c + 1
            inter = a_XS.T @ b_XS
            union = a_XS.sum(0)[:, None] + b_XS.sum(0)[None, :] - inter
            iou = inter / np.maximum(union, 1)
            ok = (iou >= cfg.link_iou) & (inter * frame_s >= cfg.link_min_s)
            rows, cols = linear_sum_assignment(-np.where(ok, iou, -1.0))
            for r, k in zip(rows, cols):
                if ok[r, k]:
                    parent[root(index[(c, left[r])])] = root(index[(c + 1, right[k])])
        roots = np.array([root(a) for a in range(len(pairs_A))])
        _, first_A, inverse = np.unique(roots, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first_A, kind="stable"), kind="stable")
        return rank[inverse]

    def _embed_tracks(
        self,
        wave_N: np.ndarray,
        start_C: np.ndarray,
        on_CFL: np.ndarray,
        clean_CFL: np.ndarray,
        pairs_A: np.ndarray,
        track_A: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Track embeddings ``emb_TD`` and clean speech seconds ``support_T``.

        A global frame counts as clean for a track when the window that sees it nearest its
        centre (most context, best segmentation) says so; when that leaves less than
        ``min_clean_s``, any member window's clean verdict counts, and failing that the
        track's overlapped speech is used.
        """
        cfg = self.config
        step, F = self._frame_step, self._frames_per_window
        frame_s = step / SAMPLE_RATE
        # Owner window of a global frame: the one whose centre is nearest.
        centre_C = start_C + F / 2
        boundaries = (centre_C[:-1] + centre_C[1:]) / 2
        max_frames = max(1, round(cfg.max_embed_s * SAMPLE_RATE / _MEL_HOP))
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
            for c, l in members:
                sl = slice(int(start_C[c]) - g0, int(start_C[c]) - g0 + F)
                core_X[sl] |= clean_CFL[c, :, l] & (owner_X[sl] == c)
                clean_X[sl] |= clean_CFL[c, :, l]
                active_X[sl] |= on_CFL[c, :, l]
            support_T[t] = clean_X.sum() * frame_s
            if core_X.sum() * frame_s >= cfg.min_clean_s:
                use_X = core_X
            elif clean_X.any():
                use_X = clean_X
            else:
                use_X = active_X
            # Mel frames whose centre falls in a used segmentation frame.
            m_lo = max(0, int(((g0 - 0.5) * step + self._frame_centre) // _MEL_HOP))
            m_hi = min(num_mel, int(((g1 + 0.5) * step + self._frame_centre) // _MEL_HOP) + 1)
            m_X = np.arange(m_lo, m_hi)
            g_X = np.rint((m_X * _MEL_HOP - self._frame_centre) / step).astype(np.int64) - g0
            inside = (g_X >= 0) & (g_X < g1 - g0)
            m_X, g_X = m_X[inside], g_X[inside]
            idx = m_X[use_X[g_X]]
            if len(idx) == 0:
                idx = m_X[active_X[g_X]][:1] if active_X[g_X].any() else m_X[:1]
            if len(idx) > max_frames:  # the middle of the track's speech
                cut = (len(idx) - max_frames) // 2
                idx = idx[cut : cut + max_frames]
            frames_T.append(idx)
        return self._embed(wave_N, frames_T), support_T

    def _mel(self, wave_N: np.ndarray, idx_M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
            spec_XQ = np.abs(np.fft.rfft(frames_XW * self._hann, axis=-1)) ** 2
            mel_MB[lo : lo + 4096] = spec_XQ.astype(np.float32) @ self._mel_fb_BQ.T
            # Power of the central 10 ms (the hop) of each frame, for the dBFS normalisation.
            centre = frames_XW[:, half - _MEL_HOP // 2 : half + _MEL_HOP // 2]
            pow_M[lo : lo + 4096] = np.mean(np.square(centre, dtype=np.float64), axis=1)
        return mel_MB, pow_M

    def _embed(self, wave_N: np.ndarray, frames: list[np.ndarray]) -> np.ndarray:
        """Unit-norm d-vectors ``emb_TD``, one per entry of ``frames`` (mel frame indices).

        resemblyzer's recipe: each input is normalised to -30 dBFS (increase only), cut into
        1.6 s partials (160 frames, about one per 1.6 s, evenly spread; a shorter input is
        zero padded at the end, as resemblyzer does), and the normalised mean of the partial
        embeddings is the embedding. All partials run through the LSTM as one dense batch
        (packed variable-length batches take ~2x longer on CPU).
        """
        needed_M = np.unique(np.concatenate(frames))
        mel_MB, pow_M = self._mel(wave_N, needed_M)
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

    def _constraints(
        self, on_CFL: np.ndarray, pairs_A: np.ndarray, track_A: np.ndarray
    ) -> np.ndarray:
        """Distance penalty ``penalty_TT`` between tracks: ``cooccur_penalty`` for two local
        speakers of one window, 2 (a cannot-link) when they also talk at the same time there
        for ``cannot_link_s`` or more."""
        cfg = self.config
        frame_s = self._frame_step / SAMPLE_RATE
        T = int(track_A.max()) + 1
        penalty_TT = np.zeros((T, T))
        windows, first_A = np.unique(pairs_A[:, 0], return_index=True)
        bounds = list(first_A) + [len(pairs_A)]
        for w in range(len(windows)):
            rows = np.arange(bounds[w], bounds[w + 1])
            if len(rows) < 2:
                continue
            on_FX = on_CFL[windows[w]][:, pairs_A[rows, 1]].astype(np.int32)
            both_XX = (on_FX.T @ on_FX) * frame_s  # seconds of simultaneous speech
            value_XX = np.where(both_XX >= cfg.cannot_link_s, 2.0, cfg.cooccur_penalty)
            tracks = track_A[rows]
            for i in range(len(rows)):
                for j in range(len(rows)):
                    if i != j:
                        a, b = tracks[i], tracks[j]
                        penalty_TT[a, b] = max(penalty_TT[a, b], value_XX[i, j])
        return penalty_TT

    def _cluster(
        self,
        emb_ED: np.ndarray,
        penalty_EE: np.ndarray,
        support_E: np.ndarray,
        count: SpeakerCount,
    ) -> np.ndarray:
        """Unit-norm centroids ``centroid_KD`` of the constrained average-linkage clusters."""
        cfg = self.config
        E = len(emb_ED)
        lo = count.num_speakers or count.min_speakers or 1
        hi = count.num_speakers or count.max_speakers or E
        dist_EE = np.clip(1.0 - emb_ED.astype(np.float64) @ emb_ED.T, 0.0, 2.0)
        merges = _constrained_average_linkage(dist_EE, penalty_EE)
        if count.num_speakers is not None:
            labels_E = _cut(merges, E, E - min(count.num_speakers, E))
        else:
            below = 0
            while below < len(merges) and merges[below][2] <= cfg.cluster_threshold:
                below += 1
            labels_E = self._merge_small(emb_ED, _cut(merges, E, below), support_E, lo)
            k = len(np.unique(labels_E))
            if k < lo or k > hi:
                labels_E = _cut(merges, E, E - min(max(k, lo), hi, E))
        labels_E = np.unique(labels_E, return_inverse=True)[1]
        K = int(labels_E.max()) + 1
        centroid_KD = np.stack([emb_ED[labels_E == k].mean(axis=0) for k in range(K)])
        return _unit_rows(centroid_KD)

    def _merge_small(
        self, emb_ED: np.ndarray, labels_E: np.ndarray, support_E: np.ndarray, min_k: int
    ) -> np.ndarray:
        """Move clusters with < ``min_cluster_s`` of clean speech into the most similar large
        cluster (centroid cosine). Small clusters never merge with each other: two stray
        embeddings must not add up to a speaker. Without any large cluster, the best
        supported ones are kept (at least ``min_k``)."""
        ids, labels_E = np.unique(labels_E, return_inverse=True)
        K = len(ids)
        support_K = np.bincount(labels_E, weights=support_E, minlength=K)
        large_K = support_K >= self.config.min_cluster_s
        for k in np.argsort(-support_K, kind="stable"):
            if large_K.sum() >= max(1, min_k):
                break
            large_K[k] = True
        if large_K.all():
            return labels_E
        centroid_KD = _unit_rows(np.stack([emb_ED[labels_E == k].mean(axis=0) for k in range(K)]))
        sim_KK = centroid_KD @ centroid_KD.T
        sim_KK[:, ~large_K] = -np.inf
        target_K = np.where(large_K, np.arange(K), sim_KK.argmax(axis=1))
        return target_K[labels_E]

    @staticmethod
    def _assign(sim_AK: np.ndarray, window_A: np.ndarray) -> np.ndarray:
        """Cluster of every active pair: one-to-one within a window (optimal assignment on the
        similarities); local speakers left over when a window has more local speakers than
        there are clusters join their most similar cluster."""
        cluster_A = sim_AK.argmax(axis=1)
        windows, first_A = np.unique(window_A, return_index=True)
        bounds = list(first_A) + [len(window_A)]
        for w in range(len(windows)):
            rows = np.arange(bounds[w], bounds[w + 1])
            r, k = linear_sum_assignment(-sim_AK[rows])
            cluster_A[rows[r]] = k
        return cluster_A

    def _reconstruct(
        self,
        act_CFL: np.ndarray,
        local_count_CF: np.ndarray,
        start_C: np.ndarray,
        pairs_A: np.ndarray,
        cluster_A: np.ndarray,
        K: int,
        regions: tuple[np.ndarray, np.ndarray],
    ) -> np.ndarray:
        """Binary global activity ``binary_GK`` from the clustered local activations."""
        cfg = self.config
        step, F = self._frame_step, self._frames_per_window
        frame_s = step / SAMPLE_RATE
        C = len(start_C)
        G = int(start_C[-1]) + F
        # Hamming-weighted overlap-add of each cluster's activation (the max over its local
        # speakers in a window): window centres are more reliable than edges.
        weight_F = np.hamming(F).astype(np.float32)
        score_GK = np.zeros((G, K), dtype=np.float32)
        bounds_C = np.searchsorted(pairs_A[:, 0], np.arange(C + 1))  # pairs are window-sorted
        for c, start in enumerate(start_C):
            act_FK = np.zeros((F, K), dtype=np.float32)
            for a in range(bounds_C[c], bounds_C[c + 1]):
                k = cluster_A[a]
                np.maximum(act_FK[:, k], act_CFL[c, :, pairs_A[a, 1]], out=act_FK[:, k])
            score_GK[start : start + F] += act_FK * weight_F[:, None]

        # Instantaneous speaker count: mean over windows of the local count, leaving out the
        # warm-up edges of a window wherever its neighbour sees those frames.
        warm = min(round(cfg.warm_up_s / frame_s), (F - 1) // 2)
        count_sum_G = np.zeros(G, dtype=np.float32)
        count_n_G = np.zeros(G, dtype=np.float32)
        for c, start in enumerate(start_C):
            lo = warm if c > 0 and start_C[c - 1] + F > start + warm else 0
            hi = F - warm if c < C - 1 and start_C[c + 1] < start + F - warm else F
            count_sum_G[start + lo : start + hi] += local_count_CF[c, lo:hi]
            count_n_G[start + lo : start + hi] += 1
        for c, start in enumerate(start_C):  # frames only warm-up zones see (long steps)
            unseen_F = count_n_G[start : start + F] == 0
            count_sum_G[start : start + F][unseen_F] += local_count_CF[c][unseen_F]
            count_n_G[start : start + F][unseen_F] += 1
        frame_count_G = np.rint(count_sum_G / np.maximum(count_n_G, 1)).astype(np.int64)
        frame_count_G = np.minimum(frame_count_G, K)
        if cfg.vad_mask:
            centre_ms_G = (np.arange(G) * step + self._frame_centre) * 1000 / SAMPLE_RATE
            region_start_R, region_end_R = regions
            i_G = np.searchsorted(region_start_R, centre_ms_G, side="right") - 1
            in_speech_G = (i_G >= 0) & (centre_ms_G < region_end_R[np.maximum(i_G, 0)])
            frame_count_G[~in_speech_G] = 0

        # Keep the frame_count_G most active speakers of each frame (ties: lower index).
        order_GK = np.argsort(-score_GK, axis=1, kind="stable")
        rank_GK = np.empty_like(order_GK)
        np.put_along_axis(rank_GK, order_GK, np.arange(K)[None, :], axis=1)
        return (rank_GK < frame_count_G[:, None]) & (score_GK > 0)

    def _to_turns(self, binary_GK: np.ndarray, num_samples: int) -> list[Turn]:
        """Runs of active frames -> turns in ms; gaps filled, short turns dropped, speakers
        named by first appearance."""
        cfg = self.config
        step = self._frame_step
        duration_ms = num_samples * 1000 // SAMPLE_RATE
        per_cluster: list[list[tuple[int, int]]] = []
        for k in range(binary_GK.shape[1]):
            spans: list[tuple[int, int]] = []
            for a, b in _runs(binary_GK[:, k]):
                # Frame g stands for the samples within half a step of its centre.
                s = round((a * step + self._frame_centre - step / 2) * 1000 / SAMPLE_RATE)
                e = round(((b - 1) * step + self._frame_centre + step / 2) * 1000 / SAMPLE_RATE)
                s, e = max(0, s), min(duration_ms, e)
                if spans and s - spans[-1][1] < cfg.min_gap_ms:
                    spans[-1] = (spans[-1][0], e)
                else:
                    spans.append((s, e))
            spans = [(s, e) for s, e in spans if e - s >= max(cfg.min_turn_ms, 1)]
            if spans:
                per_cluster.append(spans)
        per_cluster.sort(key=lambda spans: spans[0][0])  # first appearance sets the names
        turns = [
            Turn(speaker=f"SPEAKER_{i:02d}", start_ms=s, end_ms=e, channel=0)
            for i, spans in enumerate(per_cluster)
            for s, e in spans
        ]
        turns.sort(key=lambda t: (t.start_ms, t.speaker, t.end_ms))
        return turns
