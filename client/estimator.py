"""RemoteKMeans: a scikit-learn-style estimator whose fitting runs on a centroidal server."""

from __future__ import annotations

import inspect
import uuid
from typing import Any

import numpy as np

from ._wire import as_points
from .client import Client


class RemoteKMeans:
    """K-means fitted and applied by a centroidal server, with sklearn.cluster.KMeans' API.

    Parameters follow scikit-learn's KMeans; ``random_state`` must be an int or None.
    ``model_name`` names the stored model (a unique name is made when it is None),
    ``target`` defaults to $CENTROIDAL_TARGET, else 127.0.0.1:50051.

    Attributes after fit: cluster_centers_ (n_clusters, n_features), labels_
    (n_samples,) int32, inertia_, n_iter_, n_features_in_, model_name_, version_.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | np.ndarray = "k-means++",
        n_init: int | str = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | None = None,
        model_name: str | None = None,
        target: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.model_name = model_name
        self.target = target
        self.token = token
        self.timeout = timeout
        self._client: Client | None = None

    # ---- scikit-learn parameter protocol ----------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> RemoteKMeans:
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for RemoteKMeans; valid: {sorted(valid)}")
            setattr(self, name, value)
        if {"target", "token", "timeout"} & params.keys():
            self.close()
        return self

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        changed = [
            f"{name}={value!r}" for name, value in self.get_params().items()
            if not _same(value, defaults[name])
        ]
        return f"RemoteKMeans({', '.join(changed)})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    # ---- connection --------------------------------------------------------

    @property
    def client(self) -> Client:
        if self._client is None:
            kwargs: dict[str, Any] = {"token": self.token}
            if self.timeout is not None:
                kwargs["timeout"] = self.timeout
                kwargs["fit_timeout"] = self.timeout
            self._client = Client(self.target, **kwargs)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

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
        # A refit replaces this estimator's model rather than leaving the old one behind.
        name = self.model_name or getattr(self, "model_name_", None) or f"remote-kmeans-{uuid.uuid4().hex[:16]}"
        result = self.client.fit(
            name,
            X,
            self.n_clusters,
            init=self.init,
            n_init=n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            seed=None if self.random_state is None else int(self.random_state),
            sample_weight=sample_weight,
            return_labels=True,
        )
        self.model_name_ = name
        self.version_ = result.version
        self.cluster_centers_ = result.centers
        self.labels_ = result.labels
        self.inertia_ = result.inertia
        self.n_iter_ = result.n_iter
        self.n_features_in_ = result.model.n_features
        return self

    def delete_model(self) -> None:
        """Delete this estimator's model from the server; the estimator is unfitted afterwards."""
        self._check_fitted()
        self.client.delete_model(self.model_name_)
        for attribute in ("model_name_", "version_", "cluster_centers_", "labels_", "inertia_",
                          "n_iter_", "n_features_in_"):
            delattr(self, attribute)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_name_"):
            raise _not_fitted_error()

    def predict(self, X: Any, sample_weight: Any = None) -> np.ndarray:
        """Labels of the nearest centers, shape (n_samples,), int32."""
        self._check_fitted()
        labels = self.client.predict(self.model_name_, X, version=self.version_)
        assert isinstance(labels, np.ndarray)
        return labels

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        labels = self.fit(X, sample_weight=sample_weight).labels_
        assert labels is not None
        return labels

    def transform(self, X: Any) -> np.ndarray:
        """Distances to every center, shape (n_samples, n_clusters)."""
        self._check_fitted()
        return self.client.transform(self.model_name_, X, version=self.version_)

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Minus the weighted sum of squared distances of X to its nearest centers."""
        self._check_fitted()
        points = as_points(X)
        _, distances = self.client.predict(
            self.model_name_, points, version=self.version_, return_distance=True
        )
        squared = np.asarray(distances, dtype=np.float64) ** 2
        weights = np.ones(points.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return -float(squared @ weights)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is b
    return bool(a == b)


def _not_fitted_error() -> Exception:
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:
        return AttributeError("this RemoteKMeans is not fitted yet; call fit first")
    error: Exception = NotFittedError("this RemoteKMeans is not fitted yet; call fit first")
    return error
