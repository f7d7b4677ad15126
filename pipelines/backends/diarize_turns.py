"""Reconstruction of the embedded diarizer's turns from clustered local activations (numpy only).

Step 5 of :mod:`.embedded_diarizer`'s recipe: local activations mapped to their clusters are
overlap-added on the global frame grid (Hamming weighted); the number of simultaneous speakers
per frame is the rounded mean of the binarised local counts; each frame keeps that many most
active speakers, inside the VAD speech; runs of frames become (possibly overlapping) turns.

Legend of array-name suffixes (the diarizer's, see :mod:`.embedded_diarizer`):
    C  windows of the sliding segmentation
    F  segmentation frames per window
    L  local speakers per window
    A  active (window, local speaker) pairs
    G  segmentation frames of the whole file (global frame grid)
    K  global speakers (clusters)
    R  speech regions
    X  an axis named where it is used
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import SAMPLE_RATE, Turn

if TYPE_CHECKING:  # the grid is plain data; its module loads the segmentation model (torch)
    from .diarize_segments import FrameGrid

__all__ = ["global_activity", "runs", "to_turns"]


def runs(mask_X: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the runs of True in a 1-D boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask_X.astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def global_activity(
    act_CFL: np.ndarray,
    local_count_CF: np.ndarray,
    start_C: np.ndarray,
    pairs_A: np.ndarray,
    cluster_A: np.ndarray,
    K: int,
    regions: tuple[np.ndarray, np.ndarray] | None,
    *,
    grid: FrameGrid,
    warm_up_s: float,
) -> np.ndarray:
    """Binary global activity ``binary_GK`` from the clustered local activations.

    ``pairs_A`` are sorted by window and ``cluster_A`` gives each pair's cluster (< ``K``).
    Frames near a window edge (``warm_up_s``) do not count speakers where a neighbour sees them
    with more context. With ``regions`` (merged VAD speech, ms), frames outside speech are
    silent; None keeps every frame.
    """
    step, F = grid.step, grid.per_window
    frame_s = grid.frame_s
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
    warm = min(round(warm_up_s / frame_s), (F - 1) // 2)
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
    if regions is not None:
        centre_ms_G = (np.arange(G) * step + grid.centre) * 1000 / SAMPLE_RATE
        region_start_R, region_end_R = regions
        i_G = np.searchsorted(region_start_R, centre_ms_G, side="right") - 1
        in_speech_G = (i_G >= 0) & (centre_ms_G < region_end_R[np.maximum(i_G, 0)])
        frame_count_G[~in_speech_G] = 0

    # Keep the frame_count_G most active speakers of each frame (ties: lower index).
    order_GK = np.argsort(-score_GK, axis=1, kind="stable")
    rank_GK = np.empty_like(order_GK)
    np.put_along_axis(rank_GK, order_GK, np.arange(K)[None, :], axis=1)
    return (rank_GK < frame_count_G[:, None]) & (score_GK > 0)


def to_turns(
    binary_GK: np.ndarray, num_samples: int, *, grid: FrameGrid, min_gap_ms: int, min_turn_ms: int
) -> list[Turn]:
    """Runs of active frames -> turns in ms on channel 0, sorted by start.

    Pauses shorter than ``min_gap_ms`` inside one speaker's speech are filled, turns shorter
    than ``min_turn_ms`` dropped, and speakers named ``SPEAKER_00``, ``SPEAKER_01``, ... by
    first appearance. Turns end at ``num_samples`` at the latest.
    """
    step = grid.step
    duration_ms = num_samples * 1000 // SAMPLE_RATE
    per_cluster: list[list[tuple[int, int]]] = []
    for k in range(binary_GK.shape[1]):
        spans: list[tuple[int, int]] = []
        for a, b in runs(binary_GK[:, k]):
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
