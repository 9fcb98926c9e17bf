"""RemoteKMeans: a scikit-learn-style estimator whose fitting runs on a centroidal server."""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import export
from .client import Client
from .errors import NotFound
from .stream import MiniBatchStream


class _RemoteEstimator(ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """A scikit-learn estimator whose work runs on a centroidal server: the parameter
    protocol is BaseEstimator's; the connection is made on first use and never pickled.

    ``close()`` ends the connection (and a mini-batch estimator's stream); it also runs,
    without waiting on the server, when the estimator is collected and at interpreter
    exit, so an idle estimator holds nothing there. The fitted model stays on the server
    for other processes to use by name, unless ``ephemeral=True``: then closing,
    collection or exit delete it too (a pickled copy owns nothing and deletes nothing).
    """

    _fitted_attributes: tuple[str, ...] = ()
    metric: str
    model_name_: str  # set once fitted
    _client: Client | None = None

    def __init__(
        self, *, target: str | None = None, token: str | None = None, timeout: float | None = None,
        ephemeral: bool = False,
    ) -> None:
        self.target = target
        self.token = token
        self.timeout = timeout
        self.ephemeral = ephemeral

    def set_params(self, **params: Any) -> Any:
        super().set_params(**params)
        if {"target", "token", "timeout"} & params.keys():
            # The next call connects with the new settings; the model stays where it is.
            owned = self.__dict__.pop("_owns_model", None)
            try:
                self.close()
            finally:
                if owned is not None:
                    self._owns_model = owned
        return self

    def __getstate__(self) -> dict[str, Any]:
        # A copy: BaseEstimator's may be the object's own __dict__.
        state: dict[str, Any] = dict(super().__getstate__())
        state.pop("_client", None)
        state.pop("_owns_model", None)
        return state

    def _owned_model(self) -> str | None:
        """The model this estimator deletes when it goes: its own fitted model, when
        ``ephemeral`` (a pickled copy owns nothing)."""
        if self.__dict__.get("_owns_model") and isinstance(self.ephemeral, (bool, np.bool_)) and self.ephemeral:
            return getattr(self, "model_name_", None)
        return None

    @property
    def client(self) -> Client:
        if self._client is None:
            kwargs: dict[str, Any] = {"token": self.token}
            if self.timeout is not None:
                kwargs["timeout"] = self.timeout
                kwargs["fit_timeout"] = self.timeout
            self._client = Client(self.target, **kwargs)
            _CONNECTED.add(self)
        return self._client

    def close(self) -> None:
        """End the connection; an ``ephemeral`` estimator deletes its model first."""
        if self._owned_model() is not None:
            with contextlib.suppress(NotFound):  # deleted by someone else meanwhile
                self.delete_model()
        if self._client is not None:
            self._client.close()
            self._client = None

    def _detach(self) -> list[Callable[[], object]]:
        """Let go of the connection; returns what closes it (and deletes an ephemeral
        model), run after collection and at exit without waiting on the server."""
        owned, client, self._client = self._owned_model(), self._client, None
        if client is None:
            return []
        if owned is None:
            return [client.close]
        self._owns_model = False
        return [lambda: client.delete_model(owned), client.close]

    def __del__(self) -> None:
        try:
            _REAPER.close(self._detach())
        except Exception:  # noqa: BLE001 - nothing to report to from a finaliser
            pass

    def _check_fitted(self) -> None:
        check_is_fitted(self, "model_name_")

    def _points(self, X: Any, *, reset: bool) -> np.ndarray:
        """X checked as scikit-learn checks it: 2-D, finite, numeric, dense (sparse input is
        refused: densify it first), float32 kept, anything else made float64."""
        points: np.ndarray = validate_data(
            self, X, reset=reset, dtype=[np.float64, np.float32], accept_sparse=False, order="C",
        )
        return points

    @staticmethod
    def _weights(sample_weight: Any, points: np.ndarray) -> np.ndarray | None:
        if sample_weight is None:
            return None
        weights: np.ndarray = _check_sample_weight(sample_weight, points, dtype=np.float64)
        if not weights.any():
            raise ValueError("sample_weight: every weight is zero; at least one must be positive")
        return weights

    def to_sklearn(self) -> Any:
        """A fitted sklearn.cluster.KMeans with this model's centers (Euclidean models
        only), to predict without the server."""
        self._check_fitted()
        model = self.client.get_model(self.model_name_, version=getattr(self, "version_", None), include_centers=True)
        return export.to_sklearn(model)

    def delete_model(self) -> None:
        """Delete this estimator's model from the server; the estimator is unfitted afterwards."""
        self._check_fitted()
        self.client.delete_model(self.model_name_)
        self._owns_model = False
        for attribute in self._fitted_attributes:
            if hasattr(self, attribute):
                delattr(self, attribute)

    def _score(self, X: Any, sample_weight: Any, version: int | None) -> float:
        points = self._points(X, reset=False)
        _, distances = self.client.predict(
            self.model_name_, points, version=version, return_distance=True
        )
        # The model's inertia terms: squared Euclidean distances, or cosine distances as they are.
        losses = np.asarray(distances, dtype=np.float64)
        if self.metric != "cosine":
            losses = losses**2
        weights = np.ones(points.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return -float(losses @ weights)


class _RemoteTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _RemoteEstimator):  # type: ignore[misc]
    """``transform`` gives one column per center, named ``<class>0``, ``<class>1``, ... by
    ``get_feature_names_out``, so ``set_output(transform="pandas")`` gives a DataFrame."""

    n_clusters: int

    @property
    def _n_features_out(self) -> int:
        return int(self.n_clusters)


class RemoteKMeans(_RemoteTransformer):
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
        ephemeral: bool = False,
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


class RemoteMiniBatchKMeans(_RemoteTransformer):
    """Mini-batch k-means learnt by a centroidal server, with MiniBatchKMeans' partial_fit.

    Each ``partial_fit`` sends one batch over a StreamMiniBatch stream that stays open
    between calls, and returns once the server has applied it. The model is created by
    the first batch, from ``init_size`` points (None: that batch, or 3 * n_clusters).
    ``fit`` starts a new model and makes one pass over X in ``batch_size`` batches.
    Parameters follow scikit-learn's MiniBatchKMeans, plus ``half_life`` and
    ``half_life_unit`` ("batches" or "points") to forget old data, and ``metric``
    ("euclidean" or "cosine", as for RemoteKMeans).

    Attributes after fitting: cluster_centers_ (fetched from the server when read),
    n_steps_, n_samples_seen_, n_features_in_, model_name_, version_, inertia_ (of the
    last batch, before it was applied), producer_id_ and next_sequence_ (this
    estimator's identity as a producer, kept across its streams; a pickled copy gets
    its own).
    """

    _fitted_attributes = (
        "model_name_", "version_", "n_steps_", "n_samples_seen_", "n_features_in_", "inertia_", "labels_",
    )
    producer_id_: str
    next_sequence_: int

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        batch_size: int = 1024,
        init_size: int | None = None,
        reassignment_ratio: float = 0.01,
        half_life: float | None = None,
        half_life_unit: str = "batches",
        random_state: int | None = None,
        metric: str = "euclidean",
        model_name: str | None = None,
        target: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        ephemeral: bool = False,
    ) -> None:
        super().__init__(target=target, token=token, timeout=timeout, ephemeral=ephemeral)
        self.n_clusters = n_clusters
        self.metric = metric
        self.batch_size = batch_size
        self.init_size = init_size
        self.reassignment_ratio = reassignment_ratio
        self.half_life = half_life
        self.half_life_unit = half_life_unit
        self.random_state = random_state
        self.model_name = model_name
        self._stream: MiniBatchStream | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_stream"] = None
        # A copy is another producer: sharing the identity would make its batches look
        # like replays of this one's, and the server would skip them.
        state.pop("producer_id_", None)
        state.pop("next_sequence_", None)
        return state

    def close(self) -> None:
        """Close the stream (the server checkpoints the model) and the connection; an
        ``ephemeral`` estimator deletes its model."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close(self.timeout)
        super().close()

    def _detach(self) -> list[Callable[[], object]]:
        stream, self._stream = self._stream, None
        # Aborting ends the stream; the server checkpoints the model as it does.
        return ([stream.abort] if stream is not None else []) + super()._detach()

    def _producer(self, init_size: int | None = None) -> MiniBatchStream:
        """The open stream to this estimator's model; ``init_size`` overrides the parameter
        for a model this call creates."""
        if self._stream is None:
            if self.random_state is not None and not isinstance(self.random_state, (int, np.integer)):
                raise ValueError(
                    f"random_state must be an int or None for a remote model, got {self.random_state!r}"
                )
            name = getattr(self, "model_name_", None) or self.model_name or (
                f"remote-minibatch-{uuid.uuid4().hex[:16]}"
            )
            # One producer identity per estimator object, its sequence carried across
            # streams, so the model remembers one producer for it rather than one per stream.
            if not hasattr(self, "producer_id_"):
                self.producer_id_ = f"estimator-{uuid.uuid4().hex}"
                self.next_sequence_ = 1
            self._owns_model = True
            self._stream = self.client.stream(
                name,
                n_clusters=self.n_clusters,
                init_size=(init_size if init_size is not None else self.init_size) or 0,
                reassignment_ratio=self.reassignment_ratio,
                half_life=self.half_life,
                half_life_unit=self.half_life_unit,
                seed=None if self.random_state is None else int(self.random_state),
                metric=self.metric,
                producer_id=self.producer_id_,
                first_sequence=self.next_sequence_,
            )
            self.model_name_ = name
        return self._stream

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> RemoteMiniBatchKMeans:
        """Learn one batch; returns once the server has applied it (or raises its error).
        ``labels_`` are the batch's labels against the updated centers, once there are any."""
        points = self._points(X, reset=not hasattr(self, "n_features_in_"))
        weights = self._weights(sample_weight, points)
        stream = self._producer()
        stream.send(points, weights)
        self.next_sequence_ = stream.next_sequence
        stream.flush(self.timeout)
        ack = stream.last_ack
        assert ack is not None
        self.version_ = ack.version
        self.n_steps_ = getattr(self, "n_steps_", 0) + 1
        self.n_samples_seen_ = ack.n_samples_seen
        self.inertia_ = ack.batch_inertia
        if ack.n_samples_seen:  # initialised: the model has centers
            self.labels_ = self.predict(points)
        return self

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> RemoteMiniBatchKMeans:
        """A new model from one pass over X in batches of ``batch_size`` rows; complete when
        it returns: a model seeds from at most all of X, so it always has centers."""
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        points = self._points(X, reset=True)
        weights = self._weights(sample_weight, points)
        if points.shape[0] < self.n_clusters:
            raise ValueError(f"n_samples={points.shape[0]} should be >= n_clusters={self.n_clusters}.")
        name = getattr(self, "model_name_", None)
        if name is not None:  # a refit replaces this estimator's model, and its producers
            self.close()
            with contextlib.suppress(NotFound):  # a first fit that failed left no model
                self.client.delete_model(name)
            self.next_sequence_ = 1
        init_size = min(self.init_size or 3 * self.n_clusters, points.shape[0])
        stream = self._producer(init_size=max(init_size, self.n_clusters))
        for start in range(0, points.shape[0], self.batch_size):
            batch_weights = None if weights is None else weights[start : start + self.batch_size]
            stream.send(points[start : start + self.batch_size], batch_weights)
            self.next_sequence_ = stream.next_sequence
        stream.flush(self.timeout)
        ack = stream.last_ack
        assert ack is not None
        self.version_ = ack.version
        self.n_steps_ = -(-points.shape[0] // self.batch_size)
        self.n_samples_seen_ = ack.n_samples_seen
        self.inertia_ = ack.batch_inertia
        self.labels_ = self.predict(points)
        return self

    @property
    def cluster_centers_(self) -> np.ndarray:
        """The model's current centers, read from the server."""
        self._check_fitted()
        centers = self.client.get_model(self.model_name_).centers
        if centers is None:
            raise _not_fitted_error(f"{type(self).__name__} (still buffering its first points)")
        return centers

    def predict(self, X: Any, sample_weight: Any = None) -> np.ndarray:
        """Labels of the nearest current centers, shape (n_samples,), int32."""
        self._check_fitted()
        labels = self.client.predict(self.model_name_, self._points(X, reset=False))
        assert isinstance(labels, np.ndarray)
        return labels

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def transform(self, X: Any) -> np.ndarray:
        """Distances to every current center, shape (n_samples, n_clusters)."""
        self._check_fitted()
        return self.client.transform(self.model_name_, self._points(X, reset=False))

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Minus the weighted sum of squared distances of X to its nearest centers."""
        self._check_fitted()
        return self._score(X, sample_weight, None)


def _not_fitted_error(kind: str) -> Exception:
    message = f"this {kind} is not fitted yet; call fit or partial_fit first"
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:
        return AttributeError(message)
    error: Exception = NotFittedError(message)
    return error


class RemoteSpectralClustering(_RemoteEstimator):
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
        ephemeral: bool = False,
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


class _Reaper:
    """Closes what collected estimators held, on a thread of its own: a finaliser may run on
    any thread, gRPC's included, where closing a channel could wait on itself."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[Callable[[], object]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def close(self, closers: list[Callable[[], object]]) -> None:
        if not closers:
            return
        self._queue.put(closers)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="centroidal-estimator-reaper", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            _run_all(self._queue.get())

    def drain(self) -> None:
        while True:
            try:
                closers = self._queue.get_nowait()
            except queue.Empty:
                return
            _run_all(closers)


def _run_all(closers: list[Callable[[], object]]) -> None:
    for close in closers:
        try:
            close()
        except Exception:  # noqa: BLE001 - the server may be gone; nothing waits for this
            pass


_REAPER = _Reaper()
# Estimators with a connection, let go of at interpreter exit if nothing did it before.
_CONNECTED: weakref.WeakSet[_RemoteEstimator] = weakref.WeakSet()


@atexit.register
def _release_all() -> None:
    for estimator in list(_CONNECTED):
        _run_all(estimator._detach())
    _REAPER.drain()
