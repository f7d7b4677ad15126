"""Clustering of the embedded diarizer's tracks into global speakers (numpy and scipy only).

Steps 4 of :mod:`.embedded_diarizer`'s recipe: the window constraints between tracks, a
constrained average-linkage tree over the track embeddings, its cut at a distance threshold or
at the requested number of speakers, weakly supported clusters folded into large ones, and the
per-window assignment of every active local speaker to a cluster. No model runs here, so every
function can be tested on synthetic embeddings.

Legend of array-name suffixes (the diarizer's, see :mod:`.embedded_diarizer`):
    C  windows of the sliding segmentation
    F  segmentation frames per window
    L  local speakers per window
    A  active (window, local speaker) pairs
    T  tracks (chains of pairs)
    E  tracks used for clustering
    D  embedding dimension
    K  global speakers (clusters)
    X  an axis named where it is used
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .base import SpeakerCount

__all__ = [
    "Merge",
    "assign_pairs",
    "cluster_centroids",
    "cluster_tracks",
    "constrained_average_linkage",
    "cut_tree",
    "merge_small_clusters",
    "track_constraints",
    "unit_rows",
]

Merge = tuple[int, int, float]
"""One merge of the tree: the two cluster ids ``(i, j)``, i < j (i survives), and the height."""

CANNOT_LINK = 2.0
"""Penalty of a cannot-link: the largest cosine distance, so it outweighs any similarity."""


def unit_rows(x_XD: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    return x_XD / np.maximum(np.linalg.norm(x_XD, axis=1, keepdims=True), 1e-12)


def track_constraints(
    on_CFL: np.ndarray,
    pairs_A: np.ndarray,
    track_A: np.ndarray,
    *,
    frame_s: float,
    cooccur_penalty: float,
    cannot_link_s: float,
) -> np.ndarray:
    """Distance penalty ``penalty_TT`` between tracks.

    ``cooccur_penalty`` for two local speakers of one window, :data:`CANNOT_LINK` when they
    also talk at the same time there for ``cannot_link_s`` or more (``frame_s`` seconds per
    frame). ``pairs_A`` are sorted by window; the result is symmetric with a zero diagonal.
    """
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
        value_XX = np.where(both_XX >= cannot_link_s, CANNOT_LINK, cooccur_penalty)
        tracks = track_A[rows]
        for i in range(len(rows)):
            for j in range(len(rows)):
                if i != j:
                    a, b = tracks[i], tracks[j]
                    penalty_TT[a, b] = max(penalty_TT[a, b], value_XX[i, j])
    return penalty_TT


def constrained_average_linkage(dist_EE: np.ndarray, penalty_EE: np.ndarray) -> list[Merge]:
    """Agglomerative clustering down to one cluster; returns the ``E - 1`` merges ``(i, j, height)``.

    The height of two clusters is their average pairwise distance (average linkage) plus the
    largest penalty between their members (complete linkage on the constraints). Unlike a
    penalty folded into the distances before average linkage, a cannot-link keeps its full
    weight however many members the clusters have (on a 10 min call, 96 cannot-linked pairs
    among 8 100 were averaged away and the two speakers merged). The height stays monotone
    (both parts are reducible), so cutting at a threshold is a prefix of the merges. Nearest
    neighbours are cached per row: ~O(E^2) time overall. Ties go to the lower index, so the
    result is deterministic. A cluster is named by its lowest member.
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
    merges: list[Merge] = []
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


def cut_tree(merges: list[Merge], E: int, num_merges: int) -> np.ndarray:
    """Cluster id of each of the ``E`` items after the first ``num_merges`` merges (a cluster's
    id is its lowest member, as in the merges)."""
    parent = np.arange(E)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in merges[: max(0, num_merges)]:
        parent[root(j)] = root(i)
    return np.array([root(x) for x in range(E)])


def merge_small_clusters(
    emb_ED: np.ndarray, labels_E: np.ndarray, support_E: np.ndarray, *, min_support: float, min_k: int
) -> np.ndarray:
    """Move clusters with less than ``min_support`` seconds of clean speech into the most similar
    large cluster (centroid cosine).

    Small clusters never merge with each other: two stray embeddings must not add up to a
    speaker. Without enough large clusters, the best supported ones are promoted (at least
    ``max(1, min_k)``). Returns labels ``0 .. K-1`` ordered by the input's cluster ids, where
    only large clusters' labels remain.
    """
    ids, labels_E = np.unique(labels_E, return_inverse=True)
    K = len(ids)
    support_K = np.bincount(labels_E, weights=support_E, minlength=K)
    large_K = support_K >= min_support
    for k in np.argsort(-support_K, kind="stable"):
        if large_K.sum() >= max(1, min_k):
            break
        large_K[k] = True
    if large_K.all():
        return labels_E
    centroid_KD = unit_rows(np.stack([emb_ED[labels_E == k].mean(axis=0) for k in range(K)]))
    sim_KK = centroid_KD @ centroid_KD.T
    sim_KK[:, ~large_K] = -np.inf
    target_K = np.where(large_K, np.arange(K), sim_KK.argmax(axis=1))
    return target_K[labels_E]


def cluster_tracks(
    emb_ED: np.ndarray,
    penalty_EE: np.ndarray,
    support_E: np.ndarray,
    count: SpeakerCount,
    *,
    threshold: float,
    min_cluster_s: float,
) -> np.ndarray:
    """Cluster label ``0 .. K-1`` of every track, from unit-norm embeddings ``emb_ED``.

    With ``count.num_speakers`` the tree is cut at that many clusters (at most E). Otherwise it
    is cut at ``threshold``, clusters with less than ``min_cluster_s`` of clean speech
    (``support_E``, seconds) join large ones, and a result outside ``count``'s min / max is
    re-cut at the nearest allowed count. Labels are numbered in the order of each cluster's
    lowest member after the cut.
    """
    E = len(emb_ED)
    lo = count.num_speakers or count.min_speakers or 1
    hi = count.num_speakers or count.max_speakers or E
    dist_EE = np.clip(1.0 - emb_ED.astype(np.float64) @ emb_ED.T, 0.0, 2.0)
    merges = constrained_average_linkage(dist_EE, penalty_EE)
    if count.num_speakers is not None:
        labels_E = cut_tree(merges, E, E - min(count.num_speakers, E))
    else:
        below = 0
        while below < len(merges) and merges[below][2] <= threshold:
            below += 1
        labels_E = merge_small_clusters(
            emb_ED, cut_tree(merges, E, below), support_E, min_support=min_cluster_s, min_k=lo
        )
        k = len(np.unique(labels_E))
        if k < lo or k > hi:
            labels_E = cut_tree(merges, E, E - min(max(k, lo), hi, E))
    return np.unique(labels_E, return_inverse=True)[1]


def cluster_centroids(emb_ED: np.ndarray, labels_E: np.ndarray) -> np.ndarray:
    """Unit-norm mean embedding ``centroid_KD`` of each label ``0 .. K-1``."""
    K = int(labels_E.max()) + 1
    return unit_rows(np.stack([emb_ED[labels_E == k].mean(axis=0) for k in range(K)]))


def assign_pairs(sim_AK: np.ndarray, window_A: np.ndarray) -> np.ndarray:
    """Cluster of every active pair, from its similarity ``sim_AK`` to each cluster.

    One-to-one within a window (optimal assignment on the similarities): two local speakers of
    one window are two global speakers. Local speakers left over when a window has more local
    speakers than there are clusters join their most similar cluster.
    """
    cluster_A = sim_AK.argmax(axis=1)
    windows, first_A = np.unique(window_A, return_index=True)
    bounds = list(first_A) + [len(window_A)]
    for w in range(len(windows)):
        rows = np.arange(bounds[w], bounds[w + 1])
        r, k = linear_sum_assignment(-sim_AK[rows])
        cluster_A[rows[r]] = k
    return cluster_A
