"""Clustering of the embedded diarizer's tracks into global speakers (numpy and scipy only).

Steps 4 of :mod:`.embedded_diarizer`'s recipe: the window constraints between tracks, a
constrained average-linkage tree over the track embeddings, its cut at a distance threshold or
at the requested number of speakers, weakly supported clusters folded into large ones, and the
per-window assignment of every active local speaker to a cluster. No model runs here, so every
function can be tested on synthetic embeddings.

Suffixes follow :mod:`microturn.schemas.legend` (D embedding width); the other axes (windows,
segmentation frames, local speakers, active pairs, tracks, the tracks being clustered, clusters)
have no letter there, so arrays over them are named in words and each function states their axes.
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


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def track_constraints(
    on: np.ndarray,
    pairs: np.ndarray,
    track_of_pair: np.ndarray,
    *,
    frame_s: float,
    cooccur_penalty: float,
    cannot_link_s: float,
) -> np.ndarray:
    """Distance penalty between tracks, [track, track].

    ``cooccur_penalty`` for two local speakers of one window, :data:`CANNOT_LINK` when they
    also talk at the same time there for ``cannot_link_s`` or more (``frame_s`` seconds per
    frame). ``on`` is the binarised activity [window, frame, local speaker]; ``pairs`` holds the
    (window, local speaker) of each active pair, sorted by window, and ``track_of_pair`` its
    track. The result is symmetric with a zero diagonal.
    """
    num_tracks = int(track_of_pair.max()) + 1
    penalty = np.zeros((num_tracks, num_tracks))
    windows, first = np.unique(pairs[:, 0], return_index=True)
    bounds = list(first) + [len(pairs)]
    for w in range(len(windows)):
        rows = np.arange(bounds[w], bounds[w + 1])
        if len(rows) < 2:
            continue
        on_here = on[windows[w]][:, pairs[rows, 1]].astype(np.int32)  # [frame, pair of this window]
        both_s = (on_here.T @ on_here) * frame_s  # seconds of simultaneous speech
        value = np.where(both_s >= cannot_link_s, CANNOT_LINK, cooccur_penalty)
        tracks = track_of_pair[rows]
        for i in range(len(rows)):
            for j in range(len(rows)):
                if i != j:
                    a, b = tracks[i], tracks[j]
                    penalty[a, b] = max(penalty[a, b], value[i, j])
    return penalty


def constrained_average_linkage(dist: np.ndarray, penalty: np.ndarray) -> list[Merge]:
    """Agglomerative clustering down to one cluster; returns the ``n - 1`` merges ``(i, j, height)``.

    ``dist`` and ``penalty`` are [item, item] for ``n`` items.

    The height of two clusters is their average pairwise distance (average linkage) plus the
    largest penalty between their members (complete linkage on the constraints). Unlike a
    penalty folded into the distances before average linkage, a cannot-link keeps its full
    weight however many members the clusters have (on a 10 min call, 96 cannot-linked pairs
    among 8 100 were averaged away and the two speakers merged). The height stays monotone
    (both parts are reducible), so cutting at a threshold is a prefix of the merges. Nearest
    neighbours are cached per row: ~O(n^2) time overall. Ties go to the lower index, so the
    result is deterministic. A cluster is named by its lowest member.
    """
    n = len(dist)
    dist_sum = dist.astype(np.float64).copy()  # sum of member distances between clusters
    cluster_penalty = penalty.astype(np.float64).copy()
    size = np.ones(n)
    active = np.ones(n, dtype=bool)
    height = dist_sum + cluster_penalty
    np.fill_diagonal(height, np.inf)
    nearest = height.argmin(axis=1)
    nearest_height = height[np.arange(n), nearest]
    merges: list[Merge] = []
    for _ in range(n - 1):
        a = int(np.argmin(nearest_height))
        i, j = sorted((a, int(nearest[a])))
        merges.append((i, j, float(nearest_height[a])))
        dist_sum[i] += dist_sum[j]
        dist_sum[:, i] = dist_sum[i]
        cluster_penalty[i] = np.maximum(cluster_penalty[i], cluster_penalty[j])
        cluster_penalty[:, i] = cluster_penalty[i]
        size[i] += size[j]
        active[j] = False
        row = dist_sum[i] / (size[i] * size) + cluster_penalty[i]
        row[~active] = np.inf
        row[i] = np.inf
        height[i], height[:, i] = row, row
        height[j], height[:, j] = np.inf, np.inf
        nearest_height[j] = np.inf
        stale = np.flatnonzero(active & ((nearest == i) | (nearest == j)))
        for k in np.union1d(stale, [i]):
            nearest[k] = int(np.argmin(height[k]))
            nearest_height[k] = height[k, nearest[k]]
        closer = active & (row < nearest_height)
        nearest[closer] = i
        nearest_height[closer] = row[closer]
    return merges


def cut_tree(merges: list[Merge], n: int, num_merges: int) -> np.ndarray:
    """Cluster id of each of the ``n`` items after the first ``num_merges`` merges (a cluster's
    id is its lowest member, as in the merges)."""
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in merges[: max(0, num_merges)]:
        parent[root(j)] = root(i)
    return np.array([root(x) for x in range(n)])


def merge_small_clusters(
    embeddings: np.ndarray,
    labels: np.ndarray,
    support: np.ndarray,
    *,
    min_support: float,
    min_k: int,
    penalty: np.ndarray | None = None,
    active: np.ndarray | None = None,
) -> np.ndarray:
    """Move clusters with less than ``min_support`` seconds of clean speech into the most similar
    large cluster (centroid cosine).

    ``embeddings`` is [item, D]; ``labels`` and ``support`` (seconds) have one entry per item.

    Small clusters never merge with each other: two stray embeddings must not add up to a
    speaker. Without enough large clusters, the best supported ones are promoted (at least
    ``max(1, min_k)``). With ``penalty`` [item, item] a small cluster never joins a large one
    it has a cannot-link with (they talked at the same time); one that is cannot-linked with
    every large cluster and has ``min_support`` seconds of speech in all (``active``, per item,
    overlapped speech included) is a voice of its own and is promoted: in a meeting, the
    person who only ever speaks over others has no clean speech. Returns labels ``0 .. k - 1``
    (k clusters) ordered by the input's cluster ids, where only large clusters' labels remain.
    """
    ids, labels = np.unique(labels, return_inverse=True)
    num_clusters = len(ids)
    cluster_support = np.bincount(labels, weights=support, minlength=num_clusters)
    large = cluster_support >= min_support
    for k in np.argsort(-cluster_support, kind="stable"):
        if large.sum() >= max(1, min_k):
            break
        large[k] = True
    if large.all():
        return labels
    centroids = unit_rows(np.stack([embeddings[labels == k].mean(axis=0) for k in range(num_clusters)]))
    sim = centroids @ centroids.T  # [cluster, cluster]
    blocked = np.zeros((num_clusters, num_clusters), dtype=bool)  # a cannot-link between members
    if penalty is not None:
        member = (labels[None, :] == np.arange(num_clusters)[:, None]).astype(np.float64)  # [cluster, item]
        blocked = member @ (penalty >= CANNOT_LINK).astype(np.float64) @ member.T > 0
        np.fill_diagonal(blocked, False)
        cluster_active = np.bincount(labels, weights=support if active is None else active, minlength=num_clusters)
        for k in np.argsort(-cluster_active, kind="stable"):  # most speech first
            if not large[k] and not (large & ~blocked[k]).any() and cluster_active[k] >= min_support:
                large[k] = True
    target = np.arange(num_clusters)
    for k in np.flatnonzero(~large):
        allowed = large & ~blocked[k]
        if not allowed.any():
            allowed = large  # too little speech to be a voice of its own
        target[k] = int(np.flatnonzero(allowed)[np.argmax(sim[k, allowed])])
    return target[labels]


def cut_known(
    embeddings: np.ndarray,
    merges: list[Merge],
    support: np.ndarray,
    k: int,
    *,
    min_cluster_s: float,
    penalty: np.ndarray | None = None,
    active: np.ndarray | None = None,
) -> np.ndarray:
    """Labels of the ``n`` items in exactly ``min(k, n)`` clusters, for a requested count.

    Cutting the tree at k clusters makes a stray item (a track of overlapped speech, a cough)
    one of the k speakers and merges two real ones. Instead the tree is cut at the fewest
    clusters that leave k voices after :func:`merge_small_clusters` (clusters of at least
    ``min_cluster_s`` seconds of clean speech, or heard over every other voice), and the small
    ones join those. When no cut gives exactly k, the finest cut with fewer voices is taken and
    its best supported small clusters are promoted up to k.
    """
    n = len(embeddings)
    k = min(k, n)
    fewer = None  # the finest cut that still leaves fewer than k voices
    for num_merges in range(n - k, -1, -1):  # fewest clusters first
        labels = merge_small_clusters(
            embeddings, cut_tree(merges, n, num_merges), support, min_support=min_cluster_s, min_k=1,
            penalty=penalty, active=active,
        )
        found = len(np.unique(labels))
        if found == k:
            return labels
        if found > k:
            break
        fewer = num_merges
    if fewer is None:
        return cut_tree(merges, n, n - k)
    # Too few voices with enough speech: the best supported small clusters of that cut make up
    # the count, and the big voices stay whole.
    return merge_small_clusters(
        embeddings, cut_tree(merges, n, fewer), support, min_support=min_cluster_s, min_k=k,
        penalty=penalty, active=active,
    )


def cluster_tracks(
    embeddings: np.ndarray,
    penalty: np.ndarray,
    support: np.ndarray,
    count: SpeakerCount,
    *,
    threshold: float,
    min_cluster_s: float,
    active: np.ndarray | None = None,
) -> np.ndarray:
    """Cluster label ``0 .. k - 1`` (k clusters) of every track, from unit-norm ``embeddings``
    [track, D] and the window ``penalty`` [track, track] of ``n`` tracks.

    With ``count.num_speakers`` the tree is cut at that many clusters (at most n). Otherwise it
    is cut at ``threshold``, clusters with less than ``min_cluster_s`` of clean speech
    (``support``, seconds) join large ones, and a result outside ``count``'s min / max is
    re-cut at the nearest allowed count. Labels are numbered in the order of each cluster's
    lowest member after the cut.
    """
    n = len(embeddings)
    lo = count.num_speakers or count.min_speakers or 1
    hi = count.num_speakers or count.max_speakers or n
    dist = np.clip(1.0 - embeddings.astype(np.float64) @ embeddings.T, 0.0, 2.0)
    merges = constrained_average_linkage(dist, penalty)
    if count.num_speakers is not None:
        labels = cut_known(embeddings, merges, support, count.num_speakers, min_cluster_s=min_cluster_s,
                           penalty=penalty, active=active)
    else:
        below = 0
        while below < len(merges) and merges[below][2] <= threshold:
            below += 1
        labels = merge_small_clusters(
            embeddings, cut_tree(merges, n, below), support, min_support=min_cluster_s, min_k=lo,
            penalty=penalty, active=active,
        )
        k = len(np.unique(labels))
        if k < lo or k > hi:
            labels = cut_tree(merges, n, n - min(max(k, lo), hi, n))
    return np.unique(labels, return_inverse=True)[1]


def cluster_centroids(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit-norm mean embedding of each label ``0 .. k - 1``, [cluster, D]."""
    num_clusters = int(labels.max()) + 1
    return unit_rows(np.stack([embeddings[labels == k].mean(axis=0) for k in range(num_clusters)]))


def assign_pairs(similarity: np.ndarray, window_of_pair: np.ndarray) -> np.ndarray:
    """Cluster of every active pair, from its ``similarity`` to each cluster [pair, cluster]
    and its window ``window_of_pair``.

    One-to-one within a window (optimal assignment on the similarities): two local speakers of
    one window are two global speakers. Local speakers left over when a window has more local
    speakers than there are clusters join their most similar cluster.
    """
    cluster_of_pair = similarity.argmax(axis=1)
    windows, first = np.unique(window_of_pair, return_index=True)
    bounds = list(first) + [len(window_of_pair)]
    for w in range(len(windows)):
        rows = np.arange(bounds[w], bounds[w + 1])
        r, k = linear_sum_assignment(-similarity[rows])
        cluster_of_pair[rows[r]] = k
    return cluster_of_pair
