"""The engine against scikit-learn and against the naive reference."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, make_blobs

from centroidal.engine import InvalidInputError, bounds, kmeans, lloyd
from tests import naive
from tests.sources.datasets import blobs as blobs_of


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    X, _ = make_blobs(3000, n_features=6, centers=8, cluster_std=1.5, random_state=7)
    return X


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lloyd_from_same_centers_matches_sklearn(blobs: np.ndarray, dtype: type) -> None:
    X = blobs.astype(dtype)
    init = X[::375][:8].copy()
    ours = kmeans.fit(X, 8, init=init, n_init=1)
    ref = KMeans(8, init=init, n_init=1).fit(X)
    np.testing.assert_array_equal(ours.labels, ref.labels_)
    tolerance = 1e-4 if dtype is np.float32 else 1e-10
    np.testing.assert_allclose(ours.centers, ref.cluster_centers_, rtol=tolerance, atol=tolerance)
    assert ours.inertia == pytest.approx(ref.inertia_, rel=tolerance)


@pytest.mark.parametrize(
    "dataset, n_clusters",
    [("blobs", 8), ("digits", 10)],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kmeans_plusplus_inertia_within_one_percent_of_sklearn_median(
    blobs: np.ndarray, dataset: str, n_clusters: int, dtype: type
) -> None:
    X = (blobs if dataset == "blobs" else load_digits().data).astype(dtype)
    ours = np.median([kmeans.fit(X, n_clusters, seed=seed).inertia for seed in range(10)])
    ref = np.median([KMeans(n_clusters, random_state=seed).fit(X).inertia_ for seed in range(10)])
    assert ours <= 1.01 * ref


def test_float32_input_gives_float32_centers(blobs: np.ndarray) -> None:
    result = kmeans.fit(blobs.astype(np.float32), 4, seed=0)
    assert result.centers.dtype == np.float32
    assert result.labels.dtype == np.int32
    assert kmeans.transform(blobs.astype(np.float32), result.centers).dtype == np.float32


def test_same_seed_gives_bitwise_identical_results(blobs: np.ndarray) -> None:
    first = kmeans.fit(blobs, 8, seed=123, n_init=3)
    second = kmeans.fit(blobs, 8, seed=123, n_init=3)
    assert first.centers.tobytes() == second.centers.tobytes()
    np.testing.assert_array_equal(first.labels, second.labels)
    different = kmeans.fit(blobs, 8, seed=124, n_init=3)
    assert different.centers.tobytes() != first.centers.tobytes()


@pytest.mark.parametrize("n_features", [3, 4])  # tiles summed by cluster, rows one by one
def test_result_does_not_depend_on_thread_count(n_features: int) -> None:
    X, _ = make_blobs(50_000, n_features=n_features, centers=10, random_state=1)
    X = X.astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = kmeans.fit(X, 10, seed=5)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        multi = kmeans.fit(X, 10, seed=5)
    finally:
        numba.set_num_threads(before)
    assert single.centers.tobytes() == multi.centers.tobytes()
    assert single.inertia == multi.inertia


def test_result_with_group_bounds_does_not_depend_on_thread_count() -> None:
    # k * d = 1024 and 32 features: the bounds are used, in two groups of centers.
    X, _ = make_blobs(30_000, n_features=32, centers=32, cluster_std=3.0, random_state=2)
    X = X.astype(np.float32)
    assert bounds.n_groups_for(32, 32) == 2
    before = numba.get_num_threads()
    results, skipped = [], []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            events: list[kmeans.Progress] = []
            results.append(kmeans.fit(X, 32, seed=9, n_init=2, on_progress=events.append))
            skipped.append([e.distances_skipped for e in events if e.stage == kmeans.Stage.ITERATION])
    finally:
        numba.set_num_threads(before)
    single, multi = results
    assert max(skipped[0]) > 0.5  # the bounds did prune
    assert skipped[0] == skipped[1]
    assert single.centers.tobytes() == multi.centers.tobytes()
    np.testing.assert_array_equal(single.labels, multi.labels)
    assert single.inertia == multi.inertia
    # And the labels are the nearest centers: bounds never kept a row from a nearer one.
    distances = naive.sq_distances(X, single.centers)
    assert (single.labels == distances.argmin(axis=1)).mean() > 0.9999


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_features", [2, 3, 5])  # tiles summed by cluster up to 3 features
def test_centers_stop_moving_without_labels_to_compare(dtype: type, n_features: int) -> None:
    # The partitioned driver keeps no labels between steps (out of core): it stops when a
    # step leaves the centers exactly where they were, which unchanged labels must do.
    X = blobs_of(6000, n_features, 4, seed=0).astype(dtype)
    centers = np.vstack([X[:3], X[:1]])  # two equal centers: one is empty at once
    for step in range(1, 100):
        work = lloyd.Workspace(X.shape[0], 4, n_features, X.dtype)
        work.step(X, kmeans.UNIT_WEIGHTS, centers, exact_inertia=False)
        moved = lloyd.centers_from_sums(X, kmeans.UNIT_WEIGHTS, centers, work)
        if moved.tobytes() == centers.tobytes():
            break
        centers = moved
    assert step < 20


def test_empty_cluster_moves_to_the_farthest_point() -> None:
    X = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [50.0]])
    init = np.array([[0.1], [10.0], [1000.0]])  # the third center attracts nothing
    result = kmeans.fit(X, 3, init=init, n_init=1)
    assert sorted(set(result.labels.tolist())) == [0, 1, 2]
    assert 50.0 in result.centers[:, 0]


def test_sample_weight_acts_like_repeated_rows(blobs: np.ndarray) -> None:
    X = blobs[:500]
    weights = np.tile([1.0, 2.0, 3.0], 500)[:500]
    repeated = np.repeat(X, weights.astype(int), axis=0)
    init = X[:5].copy()
    weighted = kmeans.fit(X, 5, init=init, sample_weight=weights)
    expanded = kmeans.fit(repeated, 5, init=init)
    np.testing.assert_allclose(weighted.centers, expanded.centers, rtol=1e-10)
    assert weighted.inertia == pytest.approx(expanded.inertia, rel=1e-10)


def test_random_init_restarts_keep_the_best(blobs: np.ndarray) -> None:
    single = [kmeans.fit(blobs, 8, init="random", n_init=1, seed=s).inertia for s in range(5)]
    best_of_ten = kmeans.fit(blobs, 8, init="random", seed=0)
    assert best_of_ten.inertia <= np.median(single)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_predict_and_transform_match_naive(blobs: np.ndarray, dtype: type) -> None:
    X = blobs.astype(dtype)
    centers = X[:7].copy()
    labels, distances = kmeans.predict(X, centers, return_distance=True)
    expected = naive.sq_distances(X, centers)
    np.testing.assert_array_equal(labels, expected.argmin(axis=1))
    np.testing.assert_allclose(distances, np.sqrt(expected.min(axis=1)), rtol=1e-5)
    np.testing.assert_allclose(kmeans.transform(X, centers), np.sqrt(expected), rtol=1e-5)


def test_tolerance_is_relative_to_data_variance(blobs: np.ndarray) -> None:
    np.testing.assert_allclose(lloyd.mean_variance(blobs), np.var(blobs, axis=0).mean(), rtol=1e-12)
    loose = kmeans.fit(blobs * 1000, 8, init=blobs[:8] * 1000, tol=1e-1)
    strict = kmeans.fit(blobs * 1000, 8, init=blobs[:8] * 1000, tol=0)
    assert loose.n_iter < strict.n_iter


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n_clusters": 0}, "n_clusters"),
        ({"n_clusters": 11}, "n_clusters"),
        ({"X": np.full((10, 2), np.nan)}, "X"),
        ({"X": np.ones(10)}, "X"),
        ({"X": np.ones((0, 3))}, "X"),
        ({"sample_weight": -np.ones(10)}, "sample_weight"),
        ({"sample_weight": np.ones(9)}, "sample_weight"),
        ({"init": np.ones((3, 2))}, "init_centers.rows"),
        ({"init": "farthest"}, "init"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs: dict, field: str) -> None:
    arguments = {"X": np.random.default_rng(0).normal(size=(10, 2)), "n_clusters": 2, **kwargs}
    with pytest.raises(InvalidInputError) as raised:
        kmeans.fit(**arguments)
    assert raised.value.field == field


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
# Up to 16 features the plain steps scan their tiles directly and bounds start late (k * d
# from 2048, under 1% of the labels changed); past 16 a GEMM labels the rows.
@pytest.mark.parametrize(("n_features", "k"), [(16, 128), (17, 20)])
def test_bounded_steps_assign_like_a_full_search(dtype: type, n_features: int, k: int) -> None:
    X, _ = make_blobs(20_000, n_features=n_features, centers=20, cluster_std=6.0, random_state=3)
    X = X.astype(dtype)
    centers = X[:k].copy()
    work = lloyd.Workspace(len(X), k, n_features, X.dtype)
    assert work.use_bounds
    work.reset()
    skipped_rows = 0
    for _ in range(30):
        work.step(X, kmeans.UNIT_WEIGHTS, centers)
        agreement = (work.labels == naive.assign(X, centers)).mean()
        assert agreement == 1.0 if dtype is np.float64 else agreement >= 0.9999
        skipped_rows += len(X) - int(work.partial_computed.sum())
        centers = lloyd.centers_from_sums(X, kmeans.UNIT_WEIGHTS, centers, work)
    assert skipped_rows > 0, "the bounds never let a row skip the full search"


def test_iterations_report_the_share_of_distances_the_bounds_skipped() -> None:
    # Well-separated clusters with k * d large enough for bounds (past 16 features they start
    # once fewer than 30% of the labels change): once few labels change, most rows keep their
    # center unexamined. A random start, so that the run is long enough
    # for bounds (from k-means++ it converges in a few steps).
    X, _ = make_blobs(20_000, n_features=17, centers=32, cluster_std=2.0, random_state=3)
    events: list[kmeans.Progress] = []
    result = kmeans.fit(X, 32, seed=1, tol=0, max_iter=50, init="random", n_init=1,
                        on_progress=events.append)
    shares = [event.distances_skipped for event in events if event.stage is kmeans.Stage.ITERATION]
    assert len(shares) == result.n_iter
    assert shares[0] == 0.0  # no bounds yet: every row searched
    assert all(0.0 <= share < 1.0 for share in shares)
    assert max(shares) > 0.5
    # The bounds change what is computed, never the answer.
    plain = kmeans.fit(X, 32, init=result.centers, n_init=1, max_iter=1)
    np.testing.assert_array_equal(plain.labels, result.labels)
