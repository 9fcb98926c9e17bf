"""RemoteKMeans and RemoteSpectralClustering: scikit-learn estimators whose fitting runs on
a centroidal server (RemoteMiniBatchKMeans lives in ``minibatch_estimator``)."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from .estimator_base import RemoteEstimator, RemoteTransformer
from .minibatch_estimator import RemoteMiniBatchKMeans

__all__ = ["RemoteKMeans", "RemoteMiniBatchKMeans", "RemoteSpectralClustering"]


class RemoteKMeans(RemoteTransformer):
    """K-means fitted and applied by a centroidal server, with sklearn.cluster.KMeans' API.

    Parameters follow scikit-learn's KMeans; ``random_state`` must be an int or None.
    ``metric="cosine"`` fits spherical k-means (unit-length rows and centers, for
    embeddings): transform gives cosine distances and score sums them. ``model_name`` names the stored model (a unique name is made when it is None),
    ``target`` defaults to $CENTROIDAL_TARGET, else 127.0.0.1:50051.

    Attributes after fit: cluster_centers_ (n_clusters, n_features), labels_
    (n_samples,) int32, inertia_, n_iter_, n_features_in_, model_name_, version_.
    """

    _fitted_attributes = (
        "model_name_", "version_", "cluster_centers_", "labels_", "inertia_", "n_iter_",
        "n_features_in_",
    )

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | np.ndarray = "k-means++",
        n_init: int | str = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | None = None,
        metric: str = "euclidean",
        model_name: str | None = None,
        target: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        ephemeral: bool | None = None,
    ) -> None:
        super().__init__(target=target, token=token, timeout=timeout, ephemeral=ephemeral)
        self.n_clusters = n_clusters
        self.metric = metric
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.model_name = model_name

    # ---- estimator API -----------------------------------------------------

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> RemoteKMeans:
        if self.random_state is not None and not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(
                f"random_state must be an int or None for a remote fit, got {self.random_state!r}"
            )
        if self.n_init == "auto":
            n_init = None
        elif isinstance(self.n_init, (int, np.integer)) and not isinstance(self.n_init, bool):
            n_init = int(self.n_init)
        else:
            raise ValueError(f"n_init must be 'auto' or an int, got {self.n_init!r}")
        points = self._points(X, reset=True)
        weights = self._weights(sample_weight, points)
        if points.shape[0] < self.n_clusters:
            raise ValueError(f"n_samples={points.shape[0]} should be >= n_clusters={self.n_clusters}.")
        # A refit replaces this estimator's model rather than leaving the old one behind.
        name = self.model_name or getattr(self, "model_name_", None) or f"remote-kmeans-{uuid.uuid4().hex[:16]}"
        result = self.client.fit(
            name,
            points,
            self.n_clusters,
            init=self.init,
            n_init=n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            seed=None if self.random_state is None else int(self.random_state),
            metric=self.metric,
            sample_weight=weights,
            return_labels=True,
        )
        self.model_name_ = name
        self._owns_model = True
        self.version_ = result.version
        self.cluster_centers_ = result.centers
        self.labels_ = result.labels
        self.inertia_ = result.inertia
        self.n_iter_ = result.n_iter
        return self

    def predict(self, X: Any, sample_weight: Any = None) -> np.ndarray:
        """Labels of the nearest centers, shape (n_samples,), int32."""
        self._check_fitted()
        labels = self.client.predict(self.model_name_, self._points(X, reset=False), version=self.version_)
        assert isinstance(labels, np.ndarray)
        return labels

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        labels = self.fit(X, sample_weight=sample_weight).labels_
        assert labels is not None
        return labels

    def transform(self, X: Any) -> np.ndarray:
        """Distances to every center, shape (n_samples, n_clusters)."""
        self._check_fitted()
        return self.client.transform(self.model_name_, self._points(X, reset=False), version=self.version_)

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Minus the weighted sum of squared distances of X to its nearest centers."""
        self._check_fitted()
        return self._score(X, sample_weight, self.version_)


class RemoteSpectralClustering(RemoteEstimator):
    """Spectral clustering fitted by a centroidal server, with SpectralClustering's
    parameters for a nearest-neighbour affinity, plus ``predict`` for new points.

    The server builds the symmetric ``n_neighbors`` graph of X's rows, embeds them with
    the eigenvectors of its normalised Laplacian, and runs k-means (best of ``n_init``)
    there. The model keeps its training rows (at most 20,000) and labels a new point by
    the majority label of its ``n_neighbors`` nearest ones.

    Attributes after fit: labels_ (n_samples,) int32, cluster_centers_ (each cluster's
    mean, for description), n_features_in_, model_name_, version_.
    """

    _fitted_attributes = ("model_name_", "version_", "labels_", "cluster_centers_", "n_features_in_")

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        n_neighbors: int = 10,
        n_init: int = 10,
        random_state: int | None = None,
        model_name: str | None = None,
        target: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        ephemeral: bool | None = None,
    ) -> None:
        super().__init__(target=target, token=token, timeout=timeout, ephemeral=ephemeral)
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.n_init = n_init
        self.random_state = random_state
        self.model_name = model_name

    def fit(self, X: Any, y: Any = None) -> RemoteSpectralClustering:
        if self.random_state is not None and not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(f"random_state must be an int or None for a remote fit, got {self.random_state!r}")
        points = self._points(X, reset=True)
        if points.shape[0] < 2:
            raise ValueError(f"n_samples={points.shape[0]}: spectral clustering needs at least 2 samples")
        name = self.model_name or getattr(self, "model_name_", None) or f"remote-spectral-{uuid.uuid4().hex[:16]}"
        result = self.client.fit(
            name, points, self.n_clusters, algorithm="spectral", n_neighbors=self.n_neighbors,
            n_init=self.n_init, seed=None if self.random_state is None else int(self.random_state),
            return_labels=True,
        )
        self.model_name_ = name
        self._owns_model = True
        self.version_ = result.version
        self.labels_ = result.labels
        self.cluster_centers_ = result.centers
        return self

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        labels = self.fit(X).labels_
        assert labels is not None
        return labels

    def predict(self, X: Any) -> np.ndarray:
        """Labels of new points by their training neighbours' vote, shape (n_samples,), int32."""
        self._check_fitted()
        labels = self.client.predict(self.model_name_, self._points(X, reset=False), version=self.version_)
        assert isinstance(labels, np.ndarray)
        return labels
