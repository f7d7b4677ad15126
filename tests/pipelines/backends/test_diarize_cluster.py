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


def random_tracks(seed: int, E: int, D: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit embeddings ``emb_ED``, a symmetric window penalty ``penalty_EE`` (0, 0.1 or a
    cannot-link, zero diagonal) and clean-speech seconds ``support_E`` in [0, 5)."""
    rng = np.random.default_rng(seed)
    emb_ED = unit_rows(rng.standard_normal((E, D)))
    upper_EE = np.triu(rng.choice([0.0, 0.0, 0.0, 0.1, CANNOT_LINK], size=(E, E)), k=1)
    return emb_ED, upper_EE + upper_EE.T, rng.uniform(0.0, 5.0, size=E)


def distances(emb_ED: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - emb_ED @ emb_ED.T, 0.0, 2.0)


def partition(labels_E: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels_E == k).tolist()) for k in np.unique(labels_E)}


def naive_linkage(dist_EE: np.ndarray, penalty_EE: np.ndarray) -> list[tuple[int, int, float]]:
    """The definition, recomputed from the members at every step: O(E^4), for small E."""
    clusters = [[e] for e in range(len(dist_EE))]
    merges = []
    while len(clusters) > 1:
        best = None
        for x, y in itertools.combinations(range(len(clusters)), 2):
            block = np.ix_(clusters[x], clusters[y])
            height = dist_EE[block].mean() + penalty_EE[block].max()
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
    emb_ED, penalty_EE, _ = random_tracks(*drawn)
    E = len(emb_ED)
    merges = constrained_average_linkage(distances(emb_ED), penalty_EE)
    reference = naive_linkage(distances(emb_ED), penalty_EE)
    assert len(merges) == E - 1
    assert [(i, j) for i, j, _ in merges] == [(i, j) for i, j, _ in reference]
    np.testing.assert_allclose([h for *_, h in merges], [h for *_, h in reference], rtol=0, atol=1e-9)
    heights = np.array([h for *_, h in merges])
    assert np.all(np.diff(heights) >= -1e-12), "average + complete linkage is reducible"


@PROPS
@given(sizes, st.data())
def test_cut_tree_gives_the_asked_number_of_clusters(drawn: tuple[int, int, int], data) -> None:
    emb_ED, penalty_EE, _ = random_tracks(*drawn)
    E = len(emb_ED)
    merges = constrained_average_linkage(distances(emb_ED), penalty_EE)
    n = data.draw(st.integers(0, E - 1))
    labels_E = cut_tree(merges, E, n)
    assert len(np.unique(labels_E)) == E - n
    # A cluster is named by its lowest member.
    assert all(labels_E[x] <= x and labels_E[labels_E[x]] == labels_E[x] for x in range(E))


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
    emb_ED, penalty_EE, support_E = random_tracks(*drawn)
    E = len(emb_ED)
    labels_E = cluster_tracks(
        emb_ED, penalty_EE, support_E, count, threshold=THRESHOLD, min_cluster_s=MIN_CLUSTER_S
    )
    K = int(labels_E.max()) + 1
    assert sorted(np.unique(labels_E)) == list(range(K))  # contiguous labels
    if count.num_speakers is not None:
        assert K == min(count.num_speakers, E)
        # Labels in order of first appearance when the tree is only cut.
        _, first = np.unique(labels_E, return_index=True)
        assert list(first) == sorted(first)
    else:
        assert min(count.min_speakers or 1, E) <= K <= min(count.max_speakers or E, E)
    centroid_KD = cluster_centroids(emb_ED, labels_E)
    assert centroid_KD.shape == (K, emb_ED.shape[1])
    np.testing.assert_allclose(np.linalg.norm(centroid_KD, axis=1), 1.0, rtol=1e-6)


@PROPS
@given(sizes, counts, st.data())
def test_clusters_do_not_depend_on_track_order(drawn, count: SpeakerCount, data) -> None:
    emb_ED, penalty_EE, support_E = random_tracks(*drawn)
    perm = np.array(data.draw(st.permutations(range(len(emb_ED)))))

    def run(emb, pen, sup):
        return cluster_tracks(emb, pen, sup, count, threshold=THRESHOLD, min_cluster_s=MIN_CLUSTER_S)

    labels_E = run(emb_ED, penalty_EE, support_E)
    permuted = run(emb_ED[perm], penalty_EE[np.ix_(perm, perm)], support_E[perm])
    unpermuted = np.empty_like(permuted)
    unpermuted[perm] = permuted
    assert partition(unpermuted) == partition(labels_E)
    assert np.array_equal(run(emb_ED, penalty_EE, support_E), labels_E)  # and repeatable


@PROPS
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 6), min_size=1, max_size=5))
def test_well_separated_speakers_are_recovered(seed: int, tracks_per_speaker: list[int]) -> None:
    """Speakers on orthogonal directions, tracks within ~0.01 cosine distance of their speaker."""
    rng = np.random.default_rng(seed)
    K, D = len(tracks_per_speaker), 16
    basis_DD = np.linalg.qr(rng.standard_normal((D, D)))[0]
    truth_E = np.repeat(np.arange(K), tracks_per_speaker)
    rng.shuffle(truth_E)
    emb_ED = unit_rows(basis_DD[truth_E] + 0.05 * rng.standard_normal((len(truth_E), D)) / np.sqrt(D))
    E = len(emb_ED)
    penalty_EE = np.zeros((E, E))
    support_E = rng.uniform(MIN_CLUSTER_S, 10.0, size=E)  # every track well supported
    for count in (SpeakerCount(), SpeakerCount(num_speakers=K), SpeakerCount(max_speakers=K)):
        labels_E = cluster_tracks(
            emb_ED, penalty_EE, support_E, count, threshold=THRESHOLD, min_cluster_s=MIN_CLUSTER_S
        )
        assert partition(labels_E) == partition(truth_E), count


@PROPS
@given(sizes, st.integers(1, 4))
def test_small_clusters_only_join_large_ones(drawn: tuple[int, int, int], min_k: int) -> None:
    emb_ED, penalty_EE, support_E = random_tracks(*drawn)
    E = len(emb_ED)
    merges = constrained_average_linkage(distances(emb_ED), penalty_EE)
    before_E = cut_tree(merges, E, E // 2)
    after_E = merge_small_clusters(emb_ED, before_E, support_E, min_support=MIN_CLUSTER_S, min_k=min_k)
    ids = np.unique(before_E)
    support = {k: support_E[before_E == k].sum() for k in ids}
    large = {k for k in ids if support[k] >= MIN_CLUSTER_S}
    # Promoted: the best supported clusters, until there are max(1, min_k) large ones (or all).
    promoted_to = min(max(1, min_k), len(ids))
    expected = max(len(large), promoted_to)
    assert len(np.unique(after_E)) == expected
    kept = sorted(ids, key=lambda k: -support[k])[:expected] if len(large) < promoted_to else sorted(large)
    # Each kept cluster keeps its members together under a label of its own; every other
    # cluster lands whole in a kept one.
    kept_labels = [after_E[before_E == k][0] for k in kept]
    assert len(set(kept_labels)) == len(kept)
    for k in ids:
        assert len(np.unique(after_E[before_E == k])) == 1
        assert after_E[before_E == k][0] in kept_labels


@PROPS
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.lists(st.integers(1, 4), min_size=1, max_size=6))
def test_assignment_is_one_to_one_and_optimal_per_window(seed: int, K: int, per_window: list[int]) -> None:
    rng = np.random.default_rng(seed)
    window_A = np.repeat(np.arange(len(per_window)), per_window)
    sim_AK = rng.uniform(-1.0, 1.0, size=(len(window_A), K))
    cluster_A = assign_pairs(sim_AK, window_A)
    for w, n in enumerate(per_window):
        rows = np.flatnonzero(window_A == w)
        got = cluster_A[rows]
        if n <= K:
            assert len(set(got.tolist())) == n, "two local speakers of a window, two speakers"
            best = max(
                sum(sim_AK[r, k] for r, k in zip(rows, ks, strict=True))
                for ks in itertools.permutations(range(K), n)
            )
            assert np.isclose(sim_AK[rows, got].sum(), best)
        else:
            assert set(got.tolist()) == set(range(K))  # every cluster used, leftovers by argmax


@PROPS
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(3, 6))
def test_constraints_follow_the_windows(seed: int, C: int, T: int) -> None:
    rng = np.random.default_rng(seed)
    F, L, frame_s = 40, 3, 0.02
    on_CFL = rng.random((C, F, L)) < 0.4
    pairs_A = np.argwhere(on_CFL.any(axis=1))  # window-sorted, as the diarizer builds them
    # A track holds at most one local speaker of a window: a permutation of tracks per window.
    track_of_CL = np.stack([rng.permutation(T)[:L] for _ in range(C)])
    track_A = track_of_CL[pairs_A[:, 0], pairs_A[:, 1]]
    if len(pairs_A) == 0:
        return
    penalty_TT = track_constraints(
        on_CFL, pairs_A, track_A, frame_s=frame_s, cooccur_penalty=0.1, cannot_link_s=0.2
    )
    expected_TT = np.zeros_like(penalty_TT)
    for c in range(C):
        for a, b in itertools.permutations(np.flatnonzero(on_CFL[c].any(axis=0)), 2):
            both_s = np.sum(on_CFL[c, :, a] & on_CFL[c, :, b]) * frame_s
            value = CANNOT_LINK if both_s >= 0.2 else 0.1
            ta, tb = track_of_CL[c, a], track_of_CL[c, b]
            expected_TT[ta, tb] = max(expected_TT[ta, tb], value)
    np.testing.assert_array_equal(penalty_TT, expected_TT)
    assert np.array_equal(penalty_TT, penalty_TT.T) and not penalty_TT.diagonal().any()


def test_clustering_imports_without_torch() -> None:
    """The clustering is numpy and scipy only: importing it pulls in no model framework."""
    code = (
        "import sys, microturn.pipelines.backends.diarize_cluster; "
        "bad = {'torch', 'resemblyzer', 'librosa'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
