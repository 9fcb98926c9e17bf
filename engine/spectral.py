"""Spectral clustering as a fitted model: the clusters k-means cannot see, such as two moons.

The fit, with no dense n x n matrix anywhere:
1. the k-nearest-neighbour graph of the rows (scipy's cKDTree), made symmetric: an edge
   of weight 1 where either row is among the other's neighbours, 0.5 where only one is;
2. the symmetric normalised affinity D^-1/2 A D^-1/2, whose largest eigenvectors are
   the smallest of the normalised Laplacian I - D^-1/2 A D^-1/2; LOBPCG (scipy's)
   finds n_clusters of them, from a seeded start block;
3. the spectral embedding: those eigenvectors divided by sqrt(degree), each with its
   sign fixed, as scikit-learn's spectral_embedding makes it;
4. k-means (this engine's) on the embedding, best of n_init restarts.

A new point is labelled by its training neighbours: the majority label of its
n_neighbors nearest training rows (the nearest one breaks a tie). So the model keeps
its training rows and their labels, and its size grows with them: MAX_POINTS bounds it.
The ``centers`` of a spectral model are each cluster's mean in the input space, for
description only.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import lobpcg
from scipy.spatial import cKDTree

from . import kmeans
from .progress import Progress, Stage, run_to_end
from .validation import InvalidInputError, as_float_matrix, check_finite

# Rows a spectral model may be fitted on: its graph, eigenvectors and stored rows grow with n.
MAX_POINTS = 20_000
# LOBPCG's residual tolerance and iteration cap: an embedding this close clusters as the exact one.
EIGEN_TOL = 1e-6
EIGEN_MAX_ITER = 1000


@dataclass(frozen=True)
class SpectralResult:
    """A fitted spectral model.

    points : ndarray of shape (n_samples, n_features), the training rows (X's dtype)
    labels : ndarray of shape (n_samples,), int32
    centers : ndarray of shape (n_clusters, n_features), each cluster's mean
    """

    points: np.ndarray
    labels: np.ndarray
    centers: np.ndarray
    n_neighbors: int
    n_components: int  # connected components of the neighbour graph
    seed: int
    inertia: float  # of the rows around their cluster means
    n_iter: int  # of the embedding's k-means
    best_restart: int

    def to_bytes(self) -> bytes:
        """What predicting needs (the training rows and labels), as one npz blob."""
        buffer = io.BytesIO()
        np.savez(buffer, points=self.points, labels=self.labels,
                 n_neighbors=np.array([self.n_neighbors], dtype=np.int64))
        return buffer.getvalue()


@dataclass(frozen=True)
class NeighbourVote:
    """Labels new rows by the majority label of their nearest training rows."""

    points: np.ndarray
    labels: np.ndarray
    n_neighbors: int
    n_clusters: int

    @classmethod
    def from_bytes(cls, blob: bytes, n_clusters: int) -> NeighbourVote:
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            return cls(np.array(arrays["points"]), np.array(arrays["labels"], dtype=np.int32),
                       int(arrays["n_neighbors"][0]), n_clusters)

    def predict(self, X: np.ndarray, field: str = "X") -> np.ndarray:
        """Labels of the rows of X, ndarray of shape (n,), int32."""
        X = as_float_matrix(X, field)
        check_finite(X, field)
        if X.shape[1] != self.points.shape[1]:
            raise InvalidInputError(field, f"{field} has {X.shape[1]} features but the model has {self.points.shape[1]}")
        neighbours = min(self.n_neighbors, self.points.shape[0])
        _, rows = _tree(self.points).query(X.astype(np.float64), k=neighbours)
        rows = rows.reshape(X.shape[0], neighbours)
        votes = np.zeros((X.shape[0], self.n_clusters), dtype=np.int64)
        np.add.at(votes, (np.arange(X.shape[0])[:, None], self.labels[rows]), 1)
        # The nearest neighbour's label wins a tie: give it half a vote more.
        scores = votes * 2
        scores[np.arange(X.shape[0]), self.labels[rows[:, 0]]] += 1
        return np.argmax(scores, axis=1).astype(np.int32)


def _tree(points: np.ndarray) -> cKDTree:
    return cKDTree(points.astype(np.float64, copy=False))


def check_spectral(n_samples: int, n_clusters: int) -> None:
    """Refuse a spectral fit the method or its size limit cannot take."""
    if n_samples > MAX_POINTS:
        raise InvalidInputError(
            "X", f"spectral clustering takes at most {MAX_POINTS} rows (its model keeps them "
            f"to label new points), got {n_samples}; fit k-means, or a sample",
        )
    if not 1 <= n_clusters < n_samples:
        raise InvalidInputError(
            "n_clusters", f"spectral clustering needs 1 <= n_clusters < n_samples={n_samples}, got {n_clusters}"
        )


def affinity(X: np.ndarray, n_neighbors: int) -> sparse.csr_matrix:
    """The symmetric k-nearest-neighbour connectivity of X's rows, sparse (n, n) float64."""
    n_samples = X.shape[0]
    _, rows = _tree(X).query(X.astype(np.float64, copy=False), k=n_neighbors + 1)
    # Each row's own index comes first (distance 0); duplicates may push it later, so drop by value.
    neighbours = np.empty((n_samples, n_neighbors), dtype=np.int64)
    for i, found in enumerate(rows):
        others = found[found != i]
        neighbours[i] = others[:n_neighbors]
    connectivity = sparse.csr_matrix(
        (np.ones(n_samples * n_neighbors), (np.repeat(np.arange(n_samples), n_neighbors), neighbours.ravel())),
        shape=(n_samples, n_samples),
    )
    return ((connectivity + connectivity.T) * 0.5).tocsr()


def embedding(graph: sparse.csr_matrix, n_components: int, seed: int) -> np.ndarray:
    """The spectral embedding of a symmetric affinity graph: (n, n_components) float64."""
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = 1.0 / np.sqrt(degree)
    normalised = sparse.diags(scale) @ graph @ sparse.diags(scale)
    # A block method, with two guard vectors: a graph of several connected components has
    # eigenvalue 1 that many times, which single-vector Lanczos (ARPACK) can miss.
    block = np.random.default_rng(seed).normal(size=(graph.shape[0], n_components + 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not reaching the requested tolerance"
        values, vectors = lobpcg(normalised, block, largest=True, tol=EIGEN_TOL, maxiter=EIGEN_MAX_ITER)
    order = np.argsort(-values, kind="stable")[:n_components]
    vectors = vectors[:, order] * scale[:, None]  # largest eigenvalue first; random-walk scaling
    # Each vector's sign is fixed by its largest entry, so the embedding is reproducible.
    largest = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[largest, np.arange(vectors.shape[1])])
    return np.ascontiguousarray(vectors * signs)


def fit(
    X: np.ndarray, n_clusters: int, *, n_neighbors: int | None = None, n_init: int | None = None,
    seed: int | None = None,
) -> SpectralResult:
    """Spectral clustering of X's rows into n_clusters groups (see the module's docstring).

    X : array-like of shape (n_samples, n_features), float32 or float64
    n_neighbors : neighbours per row in the graph (default 10); on fewer rows, every other row
    n_init : k-means restarts on the embedding (default 10)
    """
    params = kmeans.KMeansParams(n_clusters, n_init=n_init, seed=seed, algorithm="spectral",
                                 n_neighbors=n_neighbors)
    result: SpectralResult = run_to_end(fit_steps_with(X, params))
    return result


def fit_steps_with(X: np.ndarray, params: kmeans.KMeansParams) -> Generator[Progress, None, SpectralResult]:
    """``fit`` as a generator: an INITIALIZED event once the graph and its embedding are
    made, then the embedding's k-means progress. Arguments are checked before the first."""
    params = params.check()
    assert params.n_neighbors is not None and params.n_init is not None
    X = as_float_matrix(X, "X")
    check_finite(X, "X")
    n_samples = X.shape[0]
    check_spectral(n_samples, params.n_clusters)
    # scikit-learn counts a row among its own neighbours, so it takes up to n_samples of them;
    # this graph links each row to others only, so that many links it to every other row.
    if params.n_neighbors > n_samples:
        raise InvalidInputError(
            "n_neighbors", f"n_neighbors={params.n_neighbors} is more than the number of rows, {n_samples}"
        )
    n_neighbors = min(params.n_neighbors, n_samples - 1)
    seed = params.seed if params.seed is not None else kmeans.fresh_seed()
    graph = affinity(X, n_neighbors)
    n_components, _ = connected_components(graph, directed=False)
    maps = embedding(graph, params.n_clusters, seed)
    del graph
    yield Progress(Stage.INITIALIZED, 0, params.n_init, 0, math.nan, math.nan)
    clustered = yield from kmeans.fit_steps(maps, params.n_clusters, n_init=params.n_init, seed=seed)
    n_clusters = params.n_clusters
    labels = clustered.labels
    counts = np.bincount(labels, minlength=n_clusters)
    sums = np.zeros((n_clusters, X.shape[1]))
    np.add.at(sums, labels, X)
    means = sums / np.maximum(counts, 1)[:, None]
    inertia = float(((X - means[labels]) ** 2).sum())
    return SpectralResult(
        X.copy(), labels, means.astype(X.dtype), params.n_neighbors, int(n_components), seed, inertia,
        clustered.n_iter, clustered.best_restart,
    )
