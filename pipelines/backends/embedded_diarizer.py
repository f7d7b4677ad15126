"""Offline, overlap-aware speaker diarization from weights that ship inside registry wheels.

The recipe of pyannote's speaker-diarization pipeline, re-implemented around two small models
that need no download:

0. Level. The audio is scaled so that its loud frames sit at ``level_dbfs`` (the models see
   the same signal whatever the recording's gain).
1. Local segmentation. The pyannote segmentation model bundled in the whisperx wheel
   (``whisperx/assets/pytorch_model.bin``: PyanNet, multi-label, sigmoid outputs for 3 local
   speakers per 5 s window, one frame every 270 samples = 16.875 ms) runs on 5 s windows every
   ``step_s`` seconds, batched. It also decides where speech is (``speech = "segmentation"``);
   with ``speech = "vad"`` windows without VAD speech are skipped.
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
   ones they have no cannot-link with, and a voice heard only over others (no clean speech,
   cannot-linked with every large cluster) stays a speaker. Every active local speaker then
   gets a cluster through a per-window optimal assignment (two local speakers of a window
   are two global speakers).
5. Reconstruction. Local activations mapped to their clusters are overlap-added on the global
   frame grid (Hamming weighted); the number of simultaneous speakers per frame is the
   rounded mean of the binarised local counts; each frame keeps that many most active
   speakers (inside the VAD speech with ``speech = "vad"``); a requested cluster that never
   ranks among them speaks where it is most active. Runs of frames become (possibly
   overlapping) turns.

Each step has its module beside this one: 1 and 2 in ``diarize_segments``, 3 in
``diarize_embed``, 4 in ``diarize_cluster`` (numpy only), 5 in ``diarize_turns``; this module
composes them. Its settings, ``EmbeddedDiarizerConfig``, are declared in ``configs`` (no torch
needed to read or check them) and re-exported here.

Array names in these five modules follow :mod:`microturn.schemas.legend`: a suffix only where
every axis is a legend axis (``wave_N`` audio samples; D the 256-wide embeddings, M and X the
mel channels and frequency bins of the embedder's front end). The diarizer's own axes have no
letter there and are named in words: the sliding windows (5 s), the segmentation frames of a
window (293, 270-sample step) and of the whole file (the global frame grid), the local speakers
of a window (3), the active (window, local speaker) pairs, the tracks (chains of pairs), the
clusters (global speakers) and the speech regions; each function states the axes of its arrays.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .base import SAMPLE_RATE, Region, SpeakerCount, Turn, validate_wave
from .configs import EmbeddedDiarizerConfig
from .diarize_cluster import CANNOT_LINK, assign_pairs, cluster_centroids, cluster_tracks, track_constraints
from .diarize_embed import TrackEmbedder
from .diarize_segments import (
    Segmenter,
    default_segmentation_path,
    hysteresis,
    link_tracks,
    merged_regions,
)
from .diarize_turns import global_activity, to_turns
from .silero import torch_threads

__all__ = ["EmbeddedDiarizer", "EmbeddedDiarizerConfig", "default_segmentation_path"]


def normalise_level(wave_N: np.ndarray, level_dbfs: float) -> np.ndarray:
    """``wave_N`` scaled so that its loud 30 ms frames (the 95th percentile of frame RMS) sit at
    ``level_dbfs``; silence stays silence. A recording and the same recording 30 dB quieter
    give the same array (to float rounding). The segmentation model's instance norm adds
    1e-5 to the variance of each window: a far-field meeting at -41 dBFS mean has a variance
    of ~8e-5 in speech and less in pauses, so without this its windows reach the network
    attenuated by a level-dependent amount (at -70 dBFS the count of trn06 fell from 2 to 1).
    """
    frame = SAMPLE_RATE * 30 // 1000
    usable = wave_N[: wave_N.size // frame * frame].reshape(-1, frame) if wave_N.size >= frame else wave_N[None]
    rms = np.sqrt(np.mean(np.square(usable, dtype=np.float64), axis=1))
    loud = float(np.percentile(rms, 95))
    if loud <= 1e-7:  # digital silence (or nearly): nothing to scale
        return wave_N
    return (wave_N * np.float32(10 ** (level_dbfs / 20) / loud)).astype(np.float32)


class EmbeddedDiarizer:
    """:class:`~.base.Diarizer` that runs offline on CPU from weights inside installed wheels.

    The constructor loads both models once (~0.3 s after the imports, which take a few
    seconds on first use); keep one instance per worker. A call costs ~10 ms per second of
    audio on one core at the default 2 s step (ami-dev: ~106x realtime), less with
    ``speech = "vad"`` where the VAD found silence.
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
            speech: VAD regions in ms, used with ``config.speech = "vad"`` only: windows
                without speech are skipped and the turns cut to these regions (an empty list
                then means no speech: the result is empty). With ``"segmentation"`` (the
                default) the segmentation model finds the speech itself.
            count: speaker-count constraints (exact, or min / max; all None: estimated).

        Returns:
            Turns sorted by start, speakers named ``SPEAKER_00``, ``SPEAKER_01``, ... in order of
            first appearance, all on channel 0. Audio shorter than one 5 s segmentation window
            is padded with silence. Empty (with a warning) without speech.

        Raises:
            ValueError: non-1-D, non-float32, empty or non-finite audio.
        """
        wave_N = validate_wave(wave_N, who=self.name)
        n_ms = wave_N.size * 1000 // SAMPLE_RATE
        if self.config.speech == "segmentation":
            # The segmentation model decides where speech is: every window is segmented.
            speech = [Region(0, max(n_ms, 1))]
        elif not any(r.end_ms > r.start_ms for r in speech):
            warnings.warn(f"{self.name}: no speech regions given; no diarization", stacklevel=2)
            return []
        window_samples = self._segmenter.grid.window_samples
        if wave_N.size < window_samples:
            # A clip shorter than one 5 s window (a short answer, a voice note) is padded with
            # silence: the segmentation model sees digital silence as no speaker, and the turns
            # are cut back to the real length below.
            wave_N = np.pad(wave_N, (0, window_samples - wave_N.size))
        if self.config.level_dbfs is not None:
            wave_N = normalise_level(wave_N, self.config.level_dbfs)
        with torch.inference_mode(), torch_threads(self.config.num_threads):
            turns = self._diarize(wave_N, merged_regions(speech), count)
        return [replace(t, end_ms=min(t.end_ms, n_ms)) for t in turns if t.start_ms < n_ms]

    def _cluster(
        self,
        track_embeddings: np.ndarray,
        track_penalty: np.ndarray,
        track_support: np.ndarray,
        track_active: np.ndarray,
        strong: np.ndarray,
        count: SpeakerCount,
        wanted: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The tracks that form clusters and their cluster labels (``0 .. k - 1``).

        Reliable tracks (``strong``) are clustered first, with at most the requested count.
        When a count asks for more voices than they hold, the weak tracks with the most
        speech (those heard over a reliable one first) become voices of their own: a
        dominant speaker is not split to make up a number, which on ami-dev's meetings, where
        a third of the speakers say under 2 s, cost more confusion than the voices it found.
        Only when there are too few tracks in all is every track clustered to the count.
        """
        cfg = self.config
        if not strong.any():
            warnings.warn(
                f"{self.name}: no voice has {cfg.min_clean_s} s of clean speech; clustering "
                "short or overlapped speech, the speaker count is less reliable",
                stacklevel=4,
            )
        if strong.any():
            selected = np.flatnonzero(strong)
            ceiling = SpeakerCount(max_speakers=count.num_speakers or count.max_speakers)
            labels = cluster_tracks(
                track_embeddings[selected], track_penalty[np.ix_(selected, selected)], track_support[selected],
                ceiling, threshold=cfg.cluster_threshold, min_cluster_s=cfg.min_cluster_s,
                active=track_active[selected],
            )
            missing = wanted - (int(labels.max()) + 1)
            weak = np.flatnonzero(~strong)
            if missing <= 0:
                return selected, labels
            if len(weak) >= missing:
                heard_over = (track_penalty[np.ix_(weak, selected)] >= CANNOT_LINK).any(axis=1)
                order = np.lexsort((weak, -track_active[weak], ~heard_over))  # heard over first, then most speech
                extra = weak[order[:missing]]
                voices = int(labels.max()) + 1 + np.arange(missing)
                return np.concatenate([selected, extra]), np.concatenate([labels, voices])
        selected = np.arange(len(track_embeddings))  # too few tracks: every track, to the count
        labels = cluster_tracks(
            track_embeddings, track_penalty, track_support, count,
            threshold=cfg.cluster_threshold, min_cluster_s=cfg.min_cluster_s, active=track_active,
        )
        return selected, labels

    def _diarize(
        self, wave_N: np.ndarray, regions: tuple[np.ndarray, np.ndarray], count: SpeakerCount
    ) -> list[Turn]:
        """The five steps of the recipe on audio of at least one window."""
        cfg = self.config
        grid = self._segmenter.grid
        frame_s = grid.frame_s
        starts = self._segmenter.window_starts(wave_N.size, regions, step_s=cfg.step_s)
        if len(starts) == 0:
            warnings.warn(f"{self.name}: no segmentation window overlaps speech", stacklevel=3)
            return []

        # 1. local segmentation: activation, on and clean are [window, frame, local speaker],
        # active_local [window, local speaker], local_count [window, frame]
        activation = self._segmenter(wave_N, starts)
        on = hysteresis(activation, onset=cfg.onset, offset=cfg.onset if cfg.offset is None else cfg.offset)
        active_local = on.sum(axis=1) * frame_s >= cfg.min_active_s
        on &= active_local[:, None, :]  # blips are not speakers, not even for the count
        local_count = on.sum(axis=-1)
        clean = on & (local_count == 1)[:, :, None]
        pairs = np.argwhere(active_local)  # (window, local speaker), in window order
        if len(pairs) == 0:
            warnings.warn(f"{self.name}: the segmentation found no speaker", stacklevel=3)
            return []

        # 2. tracks (one per pair), 3. their embeddings [track, D] and clean seconds [track]
        track_of_pair = link_tracks(
            on, starts, pairs, grid=grid, link_iou=cfg.link_iou, link_min_s=cfg.link_min_s
        )
        track_embeddings, track_support, track_active = self._embedder.embed_tracks(
            wave_N, starts, on, clean, pairs, track_of_pair,
            grid=grid, min_clean_s=cfg.min_clean_s, max_embed_s=cfg.max_embed_s,
        )

        # 4. clustering and assignment: penalty [track, track], embeddings of the selected
        # tracks [selected, D], centroids [cluster, D], one cluster per pair
        track_penalty = track_constraints(
            on, pairs, track_of_pair,
            frame_s=frame_s, cooccur_penalty=cfg.cooccur_penalty, cannot_link_s=cfg.cannot_link_s,
        )
        strong = track_support >= cfg.min_clean_s
        # A voice heard only over others (no clean speech) still counts when it talks at the
        # same time as a reliable track for long enough: it cannot be that track's speaker.
        heard_over = (track_penalty[:, strong] >= CANNOT_LINK).any(axis=1)
        strong |= heard_over & (track_active >= cfg.min_cluster_s)
        wanted = count.num_speakers or count.min_speakers or 1
        selected, labels = self._cluster(track_embeddings, track_penalty, track_support, track_active, strong,
                                         count, wanted)
        embeddings = track_embeddings[selected]
        centroids = cluster_centroids(embeddings, labels)
        cluster_of_pair = assign_pairs(track_embeddings[track_of_pair] @ centroids.T, pairs[:, 0])

        # 5. reconstruction: speaking [global frame, cluster]
        speaking = global_activity(
            activation, local_count, starts, pairs, cluster_of_pair, len(centroids),
            regions if cfg.speech == "vad" else None, grid=grid, warm_up_s=cfg.warm_up_s,
            min_clusters=wanted,
        )
        turns = to_turns(
            speaking, wave_N.size, grid=grid, min_gap_ms=cfg.min_gap_ms, min_turn_ms=cfg.min_turn_ms
        )
        found = len({t.speaker for t in turns})
        if found < wanted:
            warnings.warn(
                f"{self.name}: {found} speaker(s) found, {wanted} requested: the others have no "
                "speech left after reconstruction",
                stacklevel=3,
            )
        return turns
