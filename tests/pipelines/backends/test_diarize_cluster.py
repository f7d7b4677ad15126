"""Properties of the embedded diarizer's clustering, on synthetic embeddings (no model runs).

Inputs are drawn from a seeded generator (hypothesis picks the seed and the sizes), so that
distances are continuous and exact ties, whose order the functions do not promise, do not occur.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from microturn.pipelines.backends.base import SpeakerCount
from microturn.pipelines.backends.diarize_cluster import (
    CANNOT_LINK,
    assign_pairs,
    cluster_centroids,
    cluster_tracks,
    constrained_average_linkage,
    cut_tree,
    merge_small_clusters,
    track_constraints,
    unit_rows,
)

PROPS = settings(max_examples=60, deadline=None)
THRESHOLD, MIN_CLUSTER_S = 0.3, 2.0  # EmbeddedDiarizerConfig's defaults


def random_tracks(seed: int, n: int, D: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``n`` tracks: unit embeddings [track, D], a symmetric window penalty [track, track]
    (0, 0.1 or a cannot-link, zero diagonal) and clean-speech seconds [track] in [0, 5)."""
    rng = np.random.default_rng(seed)
    embeddings = unit_rows(rng.standard_normal((n, D)))
    upper = np.triu(rng.choice([0.0, 0.0, 0.0, 0.1, CANNOT_LINK], size=(n, n)), k=1)
    return embeddings, upper + upper.T, rng.uniform(0.0, 5.0, size=n)


def distances(embeddings: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - embeddings @ embeddings.T, 0.0, 2.0)


def partition(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == k).tolist()) for k in np.unique(labels)}


def naive_linkage(dist: np.ndarray, penalty: np.ndarray) -> list[tuple[int, int, float]]:
    """The definition, recomputed from the members at every step: O(n^4), for small n."""
    clusters = [[e] for e in range(len(dist))]
    merges = []
    while len(clusters) > 1:
        best = None
        for x, y in itertools.combinations(range(len(clusters)), 2):
            block = np.ix_(clusters[x], clusters[y])
            height = dist[block].mean() + penalty[block].max()
            if best is None or height < best[0]:
                best = (height, x, y)
        assert best is not None
        height, x, y = best
        merged = sorted(clusters[x] + clusters[y])
        merges.append((min(clusters[x]), min(clusters[y]), float(height)))
        clusters = [c for k, c in enumerate(clusters) if k not in (x, y)] + [merged]
    return [(min(i, j), max(i, j), h) for i, j, h in merges]


sizes = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 16), st.integers(2, 6))


@PROPS
@given(sizes)
def test_linkage_is_the_definition_and_monotone(drawn: tuple[int, int, int]) -> None:
    embeddings, penalty, _ = random_tracks(*drawn)
    n = len(embeddings)
    merges = constrained_average_linkage(distances(embeddings), penalty)
    reference = naive_linkage(distances(embeddings), penalty)
    assert len(merges) == n - 1
    assert [(i, j) for i, j, _ in merges] == [(i, j) for i, j, _ in reference]
    np.testing.assert_allclose([h for *_, h in merges], [h for *_, h in reference], rtol=0, atol=1e-9)
    heights = np.array([h for *_, h in merges])
    assert np.all(np.diff(heights) >= -1e-12), "average + complete linkage is reducible"


@PROPS
@given(sizes, st.data())
def test_cut_tree_gives_the_asked_number_of_clusters(drawn: tuple[int, int, int], data) -> None:
    embeddings, penalty, _ = random_tracks(*drawn)
    n = len(embeddings)
    merges = constrained_average_linkage(distances(embeddings), penalty)
    num_merges = data.draw(st.integers(0, n - 1))
    labels = cut_tree(merges, n, num_merges)
    assert len(np.unique(labels)) == n - num_merges
    # A cluster is named by its lowest member.
    assert all(labels[x] <= x and labels[labels[x]] == labels[x] for x in range(n))


counts = st.one_of(
    st.builds(SpeakerCount),
    st.builds(lambda n: SpeakerCount(num_speakers=n), st.integers(1, 20)),
    st.integers(1, 20).flatmap(
        lambda lo: st.builds(
            lambda hi, use_lo, use_hi: SpeakerCount(
                min_speakers=lo if use_lo else None, max_speakers=hi if use_hi else None
            ),
            st.integers(lo, 20), st.booleans(), st.booleans(),
        )
    ),
)


@PROPS
@given(sizes, counts)
def test_cluster_count_respects_the_constraints(drawn: tuple[int, int, int], count: SpeakerCount) -> None:
    embeddings, penalty, support = random_tracks(*drawn)
    n = len(embeddings)
    labels = cluster_tracks(
        embeddings, penalty, support, count, threshold=THRESHOLD, min_cluster_s=MIN_CLUSTER_S
    )
    num_clusters = int(labels.max()) + 1
    assert sorted(np.unique(labels)) == list(range(num_clusters))  # contiguous labels
    if count.num_speakers is not None:
        assert num_clusters == min(count.num_speakers, n)
    else:
        assert min(count.min_speakers or 1, n) <= num_clusters <= min(count.max_speakers or n, n)
    centroids = cluster_centroids(embeddings, labels)
    assert centroids.shape == (num_clusters, embeddings.shape[1])
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-6)


@PROPS
@given(sizes, counts, st.data())
def test_clusters_do_not_depend_on_track_order(drawn, count: SpeakerCount, data) -> None:
    embeddings, penalty, support = random_tracks(*drawn)
    perm = np.array(data.draw(st.permutations(range(len(embeddings)))))

    def run(emb, pen, sup):
        return cluster_tracks(emb, pen, sup, count, threshold=THRESHOLD, min_cluster_s=MIN_CLUSTER_S)

    labels = run(embeddings, penalty, support)
    permuted = run(embeddings[perm], penalty[np.ix_(perm, perm)], support[perm])
    unpermuted = np.empty_like(permuted)
    unpermuted[perm] = permuted
    assert partition(unpermuted) == partition(labels)
    assert np.array_equal(run(embeddings, penalty, support), labels)  # and repeatable


@PROPS
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 6), min_size=1, max_size=5))
def test_well_separated_speakers_are_recovered(seed: int, tracks_per_speaker: list[int]) -> None:
    """Speakers on orthogonal directions, tracks within ~0.01 cosine distance of their speaker."""
    rng = np.random.default_rng(seed)
    num_speakers, D = len(tracks_per_speaker), 16
    basis_DD = np.linalg.qr(rng.standard_normal((D, D)))[0]
    truth = np.repeat(np.arange(num_speakers), tracks_per_speaker)
    rng.shuffle(truth)
    embeddings = unit_rows(basis_DD[truth] + 0.05 * rng.standard_normal((len(truth), D)) / np.sqrt(D))
    n = len(embeddings)
    penalty = np.zeros((n, n))
    support = rng.uniform(MIN_CLUSTER_S, 10.0, size=n)  # every track well supported
    for count in (SpeakerCount(), SpeakerCount(num_speakers=num_speakers), SpeakerCount(max_speakers=num_speakers)):
        labels = cluster_tracks(
            embeddings, penalty, support, count, threshold=THRESHOLD, min_cluster_s=MIN_CLUSTER_S
        )
        assert partition(labels) == partition(truth), count


@PROPS
@given(sizes, st.integers(1, 4))
def test_small_clusters_only_join_large_ones(drawn: tuple[int, int, int], min_k: int) -> None:
    embeddings, penalty, support = random_tracks(*drawn)
    n = len(embeddings)
    merges = constrained_average_linkage(distances(embeddings), penalty)
    before = cut_tree(merges, n, n // 2)
    after = merge_small_clusters(embeddings, before, support, min_support=MIN_CLUSTER_S, min_k=min_k)
    ids = np.unique(before)
    cluster_support = {k: support[before == k].sum() for k in ids}
    large = {k for k in ids if cluster_support[k] >= MIN_CLUSTER_S}
    # Promoted: the best supported clusters, until there are max(1, min_k) large ones (or all).
    promoted_to = min(max(1, min_k), len(ids))
    expected = max(len(large), promoted_to)
    assert len(np.unique(after)) == expected
    kept = sorted(ids, key=lambda k: -cluster_support[k])[:expected] if len(large) < promoted_to else sorted(large)
    # Each kept cluster keeps its members together under a label of its own; every other
    # cluster lands whole in a kept one.
    kept_labels = [after[before == k][0] for k in kept]
    assert len(set(kept_labels)) == len(kept)
    for k in ids:
        assert len(np.unique(after[before == k])) == 1
        assert after[before == k][0] in kept_labels


@PROPS
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.lists(st.integers(1, 4), min_size=1, max_size=6))
def test_assignment_is_one_to_one_and_optimal_per_window(seed: int, num_clusters: int, per_window: list[int]) -> None:
    rng = np.random.default_rng(seed)
    window_of_pair = np.repeat(np.arange(len(per_window)), per_window)
    similarity = rng.uniform(-1.0, 1.0, size=(len(window_of_pair), num_clusters))
    cluster_of_pair = assign_pairs(similarity, window_of_pair)
    for w, n in enumerate(per_window):
        rows = np.flatnonzero(window_of_pair == w)
        got = cluster_of_pair[rows]
        if n <= num_clusters:
            assert len(set(got.tolist())) == n, "two local speakers of a window, two speakers"
            best = max(
                sum(similarity[r, k] for r, k in zip(rows, ks, strict=True))
                for ks in itertools.permutations(range(num_clusters), n)
            )
            assert np.isclose(similarity[rows, got].sum(), best)
        else:
            assert set(got.tolist()) == set(range(num_clusters))  # every cluster used, leftovers by argmax


@PROPS
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(3, 6))
def test_constraints_follow_the_windows(seed: int, num_windows: int, num_tracks: int) -> None:
    rng = np.random.default_rng(seed)
    per_window, num_local, frame_s = 40, 3, 0.02
    on = rng.random((num_windows, per_window, num_local)) < 0.4
    pairs = np.argwhere(on.any(axis=1))  # window-sorted, as the diarizer builds them
    # A track holds at most one local speaker of a window: a permutation of tracks per window.
    track_of_local = np.stack([rng.permutation(num_tracks)[:num_local] for _ in range(num_windows)])
    track_of_pair = track_of_local[pairs[:, 0], pairs[:, 1]]
    if len(pairs) == 0:
        return
    penalty = track_constraints(
        on, pairs, track_of_pair, frame_s=frame_s, cooccur_penalty=0.1, cannot_link_s=0.2
    )
    expected = np.zeros_like(penalty)
    for c in range(num_windows):
        for a, b in itertools.permutations(np.flatnonzero(on[c].any(axis=0)), 2):
            both_s = np.sum(on[c, :, a] & on[c, :, b]) * frame_s
            value = CANNOT_LINK if both_s >= 0.2 else 0.1
            ta, tb = track_of_local[c, a], track_of_local[c, b]
            expected[ta, tb] = max(expected[ta, tb], value)
    np.testing.assert_array_equal(penalty, expected)
    assert np.array_equal(penalty, penalty.T) and not penalty.diagonal().any()


def test_clustering_imports_without_torch() -> None:
    """The clustering is numpy and scipy only: importing it pulls in no model framework."""
    code = (
        "import sys, microturn.pipelines.backends.diarize_cluster; "
        "bad = {'torch', 'resemblyzer', 'librosa'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_voice_heard_over_every_other_is_promoted() -> None:
    """A small cluster cannot-linked with every large one is a voice of its own when it has
    enough speech in all; with too little, or without the constraint, it joins a large one."""
    e = np.eye(4)
    embeddings = unit_rows(np.stack([e[0], e[0] + 0.2 * e[1], e[2]]))
    labels = np.array([0, 1, 2])
    support = np.array([5.0, 0.0, 5.0])  # item 1: no clean speech (always overlapped)
    penalty = np.zeros((3, 3))
    penalty[0, 1] = penalty[1, 0] = CANNOT_LINK

    def merged(active: list[float]) -> np.ndarray:
        return merge_small_clusters(embeddings, labels, support, min_support=2.0, min_k=1, penalty=penalty,
                                    active=np.array(active))

    # Cannot-linked with item 0 only: it joins the other large cluster, not the most similar one.
    joined = merged([5.0, 3.0, 5.0])
    assert joined[1] == joined[2] != joined[0]
    penalty[1, 2] = penalty[2, 1] = CANNOT_LINK
    promoted = merged([5.0, 3.0, 5.0])
    assert len(np.unique(promoted)) == 3
    too_little = merged([5.0, 1.0, 5.0])
    assert len(np.unique(too_little)) == 2
    unconstrained = merge_small_clusters(embeddings, labels, support, min_support=2.0, min_k=1)
    assert unconstrained[1] == unconstrained[0]  # the most similar


def test_a_requested_count_keeps_big_voices_whole() -> None:
    """Asked for 2 voices among a big speaker, a second speaker and a far stray track, the stray
    track joins a voice instead of taking the place of one (the plain 2-cluster cut would merge
    the two speakers and keep the stray track)."""
    rng = np.random.default_rng(0)
    e = np.eye(8)
    big = unit_rows(e[0] + 0.05 * rng.standard_normal((4, 8)))
    stray = unit_rows(-(e[0] + e[1])[None, :])
    embeddings = np.concatenate([big, stray, e[1][None, :]])
    support = np.array([4.0, 4.0, 4.0, 4.0, 0.3, 3.0])
    penalty = np.zeros((6, 6))
    labels = cluster_tracks(embeddings, penalty, support, SpeakerCount(num_speakers=2),
                            threshold=THRESHOLD, min_cluster_s=MIN_CLUSTER_S)
    assert len(np.unique(labels[:4])) == 1 and labels[5] != labels[0]
    merges = constrained_average_linkage(distances(embeddings), penalty)
    plain = cut_tree(merges, 6, 4)
    assert plain[5] == plain[0] != plain[4]  # what the count used to give
