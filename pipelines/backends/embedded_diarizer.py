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

Each step has its module beside this one: 1 and 2 in ``diarize_segments``, 3 in
``diarize_embed``, 4 in ``diarize_cluster`` (numpy only), 5 in ``diarize_turns``; this module
holds the settings and composes the steps.

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

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .base import SAMPLE_RATE, Region, SpeakerCount, Turn, validate_wave
from .diarize_cluster import assign_pairs, cluster_centroids, cluster_tracks, track_constraints
from .diarize_embed import TrackEmbedder
from .diarize_segments import Segmenter, default_segmentation_path, link_tracks, merged_regions
from .diarize_turns import global_activity, to_turns
from .silero import torch_threads

__all__ = ["EmbeddedDiarizer", "EmbeddedDiarizerConfig", "default_segmentation_path"]


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


class EmbeddedDiarizer:
    """:class:`~.base.Diarizer` that runs offline on CPU from weights inside installed wheels.

    The constructor loads both models once (~0.3 s after the imports, which take a few
    seconds on first use); keep one instance per worker. A call costs ~10 ms per second of
    audio on one core (30 s call: ~0.3 s; 10 min: ~6.5 s), less where the VAD found silence.
    Calls are deterministic: the same input gives the same turns. ``num_threads`` changes
    torch's process-wide thread count for the duration of a call.

    The steps of the recipe live beside this module: segmentation and tracks in
    :mod:`.diarize_segments`, embeddings in :mod:`.diarize_embed`, clustering in
    :mod:`.diarize_cluster`, reconstruction in :mod:`.diarize_turns`.
    """

    name = "embedded"

    def __init__(self, config: EmbeddedDiarizerConfig | None = None) -> None:
        self.config = config or EmbeddedDiarizerConfig()
        path = Path(self.config.segmentation_path or default_segmentation_path())
        self._segmenter = Segmenter(path, batch_size=self.config.batch_size)
        self._embedder = TrackEmbedder()

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
        window_samples = self._segmenter.grid.window_samples
        if wave_N.size < window_samples:
            # A clip shorter than one 5 s window (a short answer, a voice note) is padded with
            # silence: the segmentation model sees digital silence as no speaker, and the turns
            # are cut back to the real length below.
            wave_N = np.pad(wave_N, (0, window_samples - wave_N.size))
        with torch.inference_mode(), torch_threads(self.config.num_threads):
            turns = self._diarize(wave_N, merged_regions(speech), count)
        return [replace(t, end_ms=min(t.end_ms, n_ms)) for t in turns if t.start_ms < n_ms]

    def _diarize(
        self, wave_N: np.ndarray, regions: tuple[np.ndarray, np.ndarray], count: SpeakerCount
    ) -> list[Turn]:
        """The five steps of the recipe on audio of at least one window."""
        cfg = self.config
        grid = self._segmenter.grid
        frame_s = grid.frame_s
        start_C = self._segmenter.window_starts(wave_N.size, regions, step_s=cfg.step_s)
        if len(start_C) == 0:
            warnings.warn(f"{self.name}: no segmentation window overlaps speech", stacklevel=3)
            return []

        # 1. local segmentation
        act_CFL = self._segmenter(wave_N, start_C)
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
        track_A = link_tracks(
            on_CFL, start_C, pairs_A, grid=grid, link_iou=cfg.link_iou, link_min_s=cfg.link_min_s
        )
        emb_TD, support_T = self._embedder.embed_tracks(
            wave_N, start_C, on_CFL, clean_CFL, pairs_A, track_A,
            grid=grid, min_clean_s=cfg.min_clean_s, max_embed_s=cfg.max_embed_s,
        )

        # 4. clustering and assignment
        penalty_TT = track_constraints(
            on_CFL, pairs_A, track_A,
            frame_s=frame_s, cooccur_penalty=cfg.cooccur_penalty, cannot_link_s=cfg.cannot_link_s,
        )
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
        emb_ED = emb_TD[sel_E]
        labels_E = cluster_tracks(
            emb_ED, penalty_TT[np.ix_(sel_E, sel_E)], support_T[sel_E], count,
            threshold=cfg.cluster_threshold, min_cluster_s=cfg.min_cluster_s,
        )
        centroid_KD = cluster_centroids(emb_ED, labels_E)
        cluster_A = assign_pairs(emb_TD[track_A] @ centroid_KD.T, pairs_A[:, 0])

        # 5. reconstruction
        binary_GK = global_activity(
            act_CFL, local_count_CF, start_C, pairs_A, cluster_A, len(centroid_KD),
            regions if cfg.vad_mask else None, grid=grid, warm_up_s=cfg.warm_up_s,
        )
        turns = to_turns(
            binary_GK, wave_N.size, grid=grid, min_gap_ms=cfg.min_gap_ms, min_turn_ms=cfg.min_turn_ms
        )
        found = len({t.speaker for t in turns})
        if found < wanted:
            warnings.warn(
                f"{self.name}: {found} speaker(s) found, {wanted} requested: the others have no "
                "speech left after reconstruction",
                stacklevel=3,
            )
        return turns
