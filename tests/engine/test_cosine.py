"""Cosine (spherical) k-means against scikit-learn on L2-normalised data, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from centroidal.engine import InvalidInputError, kmeans
from centroidal.engine.cosine import unit_rows
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState


def embeddings(n: int = 4000, d: int = 24, k: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Directions around k random axes, at lengths spread over two orders of magnitude."""
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(k, d))
    truth = rng.integers(0, k, n)
    X = (axes[truth] + 0.25 * rng.normal(size=(n, d))) * rng.uniform(0.1, 10.0, size=(n, 1))
    return X, truth


def unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def cosine_inertia(X: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> float:
    """The naive objective: sum of 1 - cos(x, its center)."""
    return float((1.0 - (unit(X) * unit(centers)[labels]).sum(axis=1)).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cosine_fit_matches_scikit_learn_on_normalised_data(dtype) -> None:
    X, truth = embeddings()
    ours = kmeans.fit(X.astype(dtype), 6, metric="cosine", n_init=3, seed=0)
    reference = KMeans(6, n_init=3, random_state=0).fit(unit(X))
    assert adjusted_rand_score(ours.labels, reference.labels_) == 1.0
    assert adjusted_rand_score(ours.labels, truth) == 1.0
    np.testing.assert_allclose(np.linalg.norm(ours.centers.astype(np.float64), axis=1), 1.0, rtol=1e-6)
    # Same partition, so the same spherical objective, and ours reports it as cosine distances.
    expected = cosine_inertia(X, reference.cluster_centers_, reference.labels_)
    np.testing.assert_allclose(ours.inertia, expected, rtol=1e-4 if dtype == np.float32 else 1e-9)
    np.testing.assert_allclose(ours.inertia, cosine_inertia(X, ours.centers, ours.labels), rtol=1e-4)


def test_rows_are_clustered_by_direction_not_length() -> None:
    X, _ = embeddings(seed=1)
    scaled = X * np.random.default_rng(2).uniform(1e-3, 1e3, size=(X.shape[0], 1))
    a = kmeans.fit(X, 6, metric="cosine", seed=3)
    b = kmeans.fit(scaled, 6, metric="cosine", seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    euclidean = kmeans.fit(scaled, 6, seed=3)
    assert adjusted_rand_score(euclidean.labels, a.labels) < 0.9


def test_predict_and_transform_give_cosine_distances() -> None:
    X, _ = embeddings()
    result = kmeans.fit(X, 6, metric="cosine", seed=0)
    cosine = 1.0 - unit(X) @ unit(result.centers).T
    labels, distances = kmeans.predict(X, result.centers, return_distance=True, metric="cosine")
    np.testing.assert_array_equal(labels, np.argmax(unit(X) @ result.centers.T, axis=1))
    np.testing.assert_array_equal(labels, result.labels)
    np.testing.assert_allclose(distances, cosine.min(axis=1), atol=1e-12)
    np.testing.assert_allclose(kmeans.transform(X, result.centers, metric="cosine"), cosine, atol=1e-12)
    np.testing.assert_allclose(distances.sum(), result.inertia, rtol=1e-9)


def test_a_zero_length_row_is_refused_by_its_index() -> None:
    X, _ = embeddings(n=300)
    X[217] = 0.0
    with pytest.raises(InvalidInputError, match="row 217 has zero length") as raised:
        kmeans.fit(X, 3, metric="cosine")
    assert raised.value.field == "X"
    centers = kmeans.fit(embeddings(n=300)[0], 3, metric="cosine", seed=0).centers
    with pytest.raises(InvalidInputError, match="row 217"):
        kmeans.predict(X, centers, metric="cosine")


def test_tiny_and_huge_rows_still_have_a_direction() -> None:
    rows = np.array([[3e-300, 4e-300], [3e300, 4e300], [5e-324, 0.0]])
    np.testing.assert_allclose(unit_rows(rows, "X"), [[0.6, 0.8], [0.6, 0.8], [1.0, 0.0]])


def test_given_centers_are_scaled_to_unit_length() -> None:
    X, _ = embeddings(n=500)
    start = 7.0 * unit(X[:6])
    result = kmeans.fit(X, 6, init=start, metric="cosine", max_iter=1)
    np.testing.assert_allclose(np.linalg.norm(result.centers, axis=1), 1.0)
    with pytest.raises(InvalidInputError, match="init center 2 has zero length"):
        kmeans.fit(X, 3, init=np.vstack([X[:2], np.zeros((1, X.shape[1]))]), metric="cosine")


def test_copy_x_false_scales_the_callers_rows_in_place() -> None:
    X, _ = embeddings(n=500)
    kept = X.copy()
    kmeans.fit(X, 3, metric="cosine", seed=0)
    np.testing.assert_array_equal(X, kept)
    kmeans.fit(X, 3, metric="cosine", seed=0, copy_x=False)
    np.testing.assert_allclose(X, unit(kept))


def test_an_unknown_metric_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="metric must be one of") as raised:
        kmeans.fit(embeddings(n=100)[0], 2, metric="manhattan")
    assert raised.value.field == "metric"


def test_minibatch_cosine_learns_the_directions_and_keeps_unit_centers() -> None:
    X, truth = embeddings(n=20_000, seed=4)
    state = MiniBatchState(MiniBatchParams(n_clusters=6, metric="cosine", seed=1), X.shape[1], np.dtype(np.float64))
    for start in range(0, X.shape[0] - 500, 500):
        state.partial_fit(*state.check_batch(X[start : start + 500]))
    before, last = state.centers.copy(), X[-500:]
    outcome = state.partial_fit(*state.check_batch(last))
    # A batch's inertia is its cosine distances to the centers it met.
    expected = cosine_inertia(last, before, kmeans.predict(last, before, metric="cosine"))
    np.testing.assert_allclose(outcome.batch_inertia, expected, rtol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(state.centers, axis=1), 1.0)
    labels = kmeans.predict(X, state.centers, metric="cosine")
    assert adjusted_rand_score(labels, truth) == 1.0
    again = MiniBatchState.from_bytes(state.to_bytes())
    assert again.params.metric == "cosine"
    bad = X[:10].copy()
    bad[4] = 0.0
    with pytest.raises(InvalidInputError, match="points row 4 has zero length"):
        state.check_batch(bad)
