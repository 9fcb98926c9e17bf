"""Silhouette, Calinski-Harabasz and Davies-Bouldin against scikit-learn, and suggest-k."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import make_blobs

from centroidal.engine import choosing, kmeans, scoring
from centroidal.engine.progress import run_to_end

X, _ = make_blobs(2500, centers=5, n_features=6, cluster_std=2.5, random_state=0)
LABELS = kmeans.fit(X, 5, seed=0).labels


@pytest.mark.parametrize("dtype,tolerance", [(np.float64, 1e-9), (np.float32, 1e-6)])
def test_scores_match_scikit_learn(dtype, tolerance: float) -> None:
    points = X.astype(dtype)
    scores = scoring.score(points, LABELS, 5)
    assert scores.silhouette == pytest.approx(metrics.silhouette_score(points, LABELS), abs=tolerance)
    assert scores.silhouette_rows == X.shape[0] and scores.n_clusters_present == 5
    assert scores.calinski_harabasz == pytest.approx(metrics.calinski_harabasz_score(points, LABELS), rel=tolerance)
    assert scores.davies_bouldin == pytest.approx(metrics.davies_bouldin_score(points, LABELS), abs=tolerance)


def test_a_seeded_sample_is_the_one_scikit_learn_draws() -> None:
    for seed in (0, 7):
        ours = scoring.score(X, LABELS, 5, sample_size=400, seed=seed)
        theirs = metrics.silhouette_score(X, LABELS, sample_size=400, random_state=seed)
        assert ours.silhouette == pytest.approx(theirs, abs=1e-12)
        assert ours.silhouette_rows == 400


def test_cosine_scores_match_scikit_learn_on_unit_rows() -> None:
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    scores = scoring.score(X, LABELS, 5, metric="cosine")
    assert scores.silhouette == pytest.approx(metrics.silhouette_score(X, LABELS, metric="cosine"), abs=1e-9)
    assert scores.calinski_harabasz == pytest.approx(metrics.calinski_harabasz_score(unit, LABELS), rel=1e-9)
    assert scores.davies_bouldin == pytest.approx(metrics.davies_bouldin_score(unit, LABELS), abs=1e-9)


def test_singletons_empty_clusters_and_duplicates_follow_scikit_learn() -> None:
    points = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [5.0, 5.0], [5.0, 6.0], [9.0, 0.0]])
    labels = np.array([0, 0, 0, 2, 2, 3], dtype=np.int32)  # cluster 1 is empty, 3 a singleton
    scores = scoring.score(points, labels, 4)
    assert scores.n_clusters_present == 3
    assert scores.silhouette == pytest.approx(metrics.silhouette_score(points, labels), abs=1e-12)
    assert scores.calinski_harabasz == pytest.approx(metrics.calinski_harabasz_score(points, labels), rel=1e-12)
    assert scores.davies_bouldin == pytest.approx(metrics.davies_bouldin_score(points, labels), abs=1e-12)


def test_undefined_scores_are_none() -> None:
    one_cluster = scoring.score(X[:50], np.zeros(50, dtype=np.int32), 3)
    assert (one_cluster.silhouette, one_cluster.calinski_harabasz, one_cluster.davies_bouldin) == (None, None, None)
    every_row_alone = scoring.score(X[:4], np.arange(4, dtype=np.int32), 4)
    assert every_row_alone.silhouette is None and every_row_alone.n_clusters_present == 4


def test_the_silhouette_in_steps_is_the_silhouette_in_one_go() -> None:
    # Rows are scored independently, so the values cannot depend on how the work is split.
    whole = scoring.score(X, LABELS, 5).silhouette
    steps = scoring.silhouette_steps(X, LABELS, 5)
    shares = []
    while True:
        try:
            shares.append(next(steps))
        except StopIteration as done:
            assert done.value == whole
            break
    assert shares[-1] == 1.0


def test_suggest_k_picks_four_on_the_four_blobs() -> None:
    blobs, _ = make_blobs(n_samples=300, centers=4, cluster_std=0.60, random_state=0)
    events = []
    suggestion = run_to_end(choosing.suggest_k_steps(blobs, range(2, 13), seed=0), events.append)
    assert suggestion.recommended == 4 and suggestion.elbow == 4
    per_k = [event for event in events if isinstance(event, choosing.KScore)]
    assert [entry.n_clusters for entry in per_k] == list(range(2, 13))
    for entry in per_k:
        labels = kmeans.predict(blobs, entry.centers)
        assert entry.scores.silhouette == pytest.approx(metrics.silhouette_score(blobs, labels), abs=1e-9)
    assert [entry.inertia for entry in suggestion.per_k] == [entry.inertia for entry in per_k]


def test_suggest_k_refuses_a_range_outside_the_data() -> None:
    with pytest.raises(scoring.InvalidInputError, match="every k must lie in"):
        run_to_end(choosing.suggest_k_steps(X[:10], range(1, 4)))
    with pytest.raises(scoring.InvalidInputError, match="every k must lie in"):
        run_to_end(choosing.suggest_k_steps(X[:10], range(2, 11)))


def test_scores_do_not_depend_on_thread_count() -> None:
    import numba

    points = X.astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = scoring.score(points, LABELS, 5)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        multi = scoring.score(points, LABELS, 5)
    finally:
        numba.set_num_threads(before)
    assert single == multi


def test_a_seed_past_two_to_the_32_still_draws_a_seeded_sample() -> None:
    # scikit-learn's RandomState takes seeds below 2**32; the contract's seed is 64-bit.
    big = 2**63 + 12345
    first = scoring.score(X, LABELS, 5, sample_size=300, seed=big)
    assert first == scoring.score(X, LABELS, 5, sample_size=300, seed=big)
    assert first.silhouette_rows == 300
    assert first != scoring.score(X, LABELS, 5, sample_size=300, seed=big + 1)
