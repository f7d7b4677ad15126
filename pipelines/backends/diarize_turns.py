"""Reconstruction of the embedded diarizer's turns from clustered local activations (numpy only).

Step 5 of :mod:`.embedded_diarizer`'s recipe: local activations mapped to their clusters are
overlap-added on the global frame grid (Hamming weighted); the number of simultaneous speakers
per frame is the rounded mean of the binarised local counts; each frame keeps that many most
active speakers, inside the VAD speech; runs of frames become (possibly overlapping) turns.

The arrays here have axes :mod:`microturn.schemas.legend` has no letter for (windows,
segmentation frames of a window, local speakers, active pairs, frames of the whole file's
segmentation grid, clusters, speech regions), so they are named in words and each function
states their axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import SAMPLE_RATE, Turn

if TYPE_CHECKING:  # the grid is plain data; its module loads the segmentation model (torch)
    from .diarize_segments import FrameGrid

__all__ = ["global_activity", "runs", "to_turns"]


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the runs of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def global_activity(
    activation: np.ndarray,
    local_count: np.ndarray,
    starts: np.ndarray,
    pairs: np.ndarray,
    cluster_of_pair: np.ndarray,
    num_clusters: int,
    regions: tuple[np.ndarray, np.ndarray] | None,
    *,
    grid: FrameGrid,
    warm_up_s: float,
    min_clusters: int = 0,
) -> np.ndarray:
    """Binary global activity [global frame, cluster] from the clustered local activations.

    ``activation`` is [window, frame, local speaker], ``local_count`` (binarised local speakers
    on) [window, frame]. ``pairs`` holds the (window, local speaker) of each active pair, sorted
    by window, and ``cluster_of_pair`` each pair's cluster (< ``num_clusters``).
    Frames near a window edge (``warm_up_s``) do not count speakers where a neighbour sees them
    with more context. With ``regions`` (merged VAD speech, ms), frames outside speech are
    silent; None keeps every frame.

    A cluster that is never among a frame's most active speakers would vanish; while fewer
    than ``min_clusters`` clusters speak (a requested count), such clusters, strongest first,
    speak on the frames where their score is at least half its peak, on top of the others
    (overlap). The clustering found that voice; the count of simultaneous speakers missed it.
    """
    step, per_window = grid.step, grid.per_window
    frame_s = grid.frame_s
    num_windows = len(starts)
    num_frames = int(starts[-1]) + per_window
    # Hamming-weighted overlap-add of each cluster's activation (the max over its local
    # speakers in a window): window centres are more reliable than edges.
    weight = np.hamming(per_window).astype(np.float32)
    score = np.zeros((num_frames, num_clusters), dtype=np.float32)
    bounds = np.searchsorted(pairs[:, 0], np.arange(num_windows + 1))  # pairs are window-sorted
    for c, start in enumerate(starts):
        window_activity = np.zeros((per_window, num_clusters), dtype=np.float32)
        for a in range(bounds[c], bounds[c + 1]):
            k = cluster_of_pair[a]
            np.maximum(window_activity[:, k], activation[c, :, pairs[a, 1]], out=window_activity[:, k])
        score[start : start + per_window] += window_activity * weight[:, None]

    # Instantaneous speaker count: mean over windows of the local count, leaving out the
    # warm-up edges of a window wherever its neighbour sees those frames.
    warm = min(round(warm_up_s / frame_s), (per_window - 1) // 2)
    count_sum = np.zeros(num_frames, dtype=np.float32)
    count_n = np.zeros(num_frames, dtype=np.float32)
    for c, start in enumerate(starts):
        lo = warm if c > 0 and starts[c - 1] + per_window > start + warm else 0
        hi = (per_window - warm if c < num_windows - 1 and starts[c + 1] < start + per_window - warm
              else per_window)
        count_sum[start + lo : start + hi] += local_count[c, lo:hi]
        count_n[start + lo : start + hi] += 1
    for c, start in enumerate(starts):  # frames only warm-up zones see (long steps)
        unseen = count_n[start : start + per_window] == 0
        count_sum[start : start + per_window][unseen] += local_count[c][unseen]
        count_n[start : start + per_window][unseen] += 1
    frame_count = np.rint(count_sum / np.maximum(count_n, 1)).astype(np.int64)
    frame_count = np.minimum(frame_count, num_clusters)
    in_speech = np.ones(num_frames, dtype=bool)
    if regions is not None:
        centre_ms = (np.arange(num_frames) * step + grid.centre) * 1000 / SAMPLE_RATE
        region_starts, region_ends = regions
        last_region = np.searchsorted(region_starts, centre_ms, side="right") - 1
        in_speech = (last_region >= 0) & (centre_ms < region_ends[np.maximum(last_region, 0)])
        frame_count[~in_speech] = 0

    # Keep the frame_count most active speakers of each frame (ties: lower index).
    order = np.argsort(-score, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(num_clusters)[None, :], axis=1)
    speaking = (rank < frame_count[:, None]) & (score > 0)
    peak = score.max(axis=0)
    silent = [k for k in np.argsort(-peak, kind="stable") if not speaking[:, k].any() and peak[k] > 0]
    for k in silent[: max(0, min_clusters - int(speaking.any(axis=0).sum()))]:
        speaking[:, k] = (score[:, k] >= peak[k] / 2) & in_speech
    return speaking


def to_turns(
    speaking: np.ndarray, num_samples: int, *, grid: FrameGrid, min_gap_ms: int, min_turn_ms: int
) -> list[Turn]:
    """Runs of active frames of ``speaking`` [global frame, cluster] -> turns in ms on channel 0,
    sorted by start.

    Pauses shorter than ``min_gap_ms`` inside one speaker's speech are filled, turns shorter
    than ``min_turn_ms`` dropped, and speakers named ``SPEAKER_00``, ``SPEAKER_01``, ... by
    first appearance. Turns end at ``num_samples`` at the latest.
    """
    step = grid.step
    duration_ms = num_samples * 1000 // SAMPLE_RATE
    per_cluster: list[list[tuple[int, int]]] = []
    for k in range(speaking.shape[1]):
        spans: list[tuple[int, int]] = []
        for a, b in runs(speaking[:, k]):
            # Frame g stands for the samples within half a step of its centre.
            s = round((a * step + grid.centre - step / 2) * 1000 / SAMPLE_RATE)
            e = round(((b - 1) * step + grid.centre + step / 2) * 1000 / SAMPLE_RATE)
            s, e = max(0, s), min(duration_ms, e)
            if spans and s - spans[-1][1] < min_gap_ms:
                spans[-1] = (spans[-1][0], e)
            else:
                spans.append((s, e))
        spans = [(s, e) for s, e in spans if e - s >= max(min_turn_ms, 1)]
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
