"""What the scikit-learn estimators share: the connection, made on first use and never
pickled; the model an estimator owns; and letting both go when the estimator is closed,
collected, or the interpreter exits."""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import export
from .client import Client
from .errors import NotFound


class RemoteEstimator(ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """A scikit-learn estimator whose work runs on a centroidal server: the parameter
    protocol is BaseEstimator's; the connection is made on first use and never pickled.

    ``close()`` ends the connection (and a mini-batch estimator's stream); it also runs,
    without waiting on the server, when the estimator is collected and at interpreter
    exit, so an idle estimator holds nothing there.

    A model the estimator named itself (no ``model_name``) belongs to it: it is deleted when
    the estimator is closed, collected, or the interpreter exits. A model given a
    ``model_name`` stays on the server for other processes to use by that name. ``ephemeral``
    overrides either way (True deletes a named model too, False keeps an unnamed one). A
    pickled copy owns nothing and deletes nothing.
    """

    _fitted_attributes: tuple[str, ...] = ()
    metric: str
    model_name_: str  # set once fitted
    _client: Client | None = None

    def __init__(
        self, *, target: str | None = None, token: str | None = None, timeout: float | None = None,
        ephemeral: bool | None = None,
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

    @property
    def is_ephemeral(self) -> bool:
        """Whether the fitted model goes with the estimator: ``ephemeral`` when set, else
        whether the estimator named the model itself."""
        if self.ephemeral is None:
            return getattr(self, "model_name", None) is None
        return bool(self.ephemeral)

    def _owned_model(self) -> str | None:
        """The model this estimator deletes when it goes: its own fitted model, when
        ephemeral (a pickled copy owns nothing)."""
        if self.__dict__.get("_owns_model") and self.is_ephemeral:
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
        """End the connection; an ephemeral estimator deletes its model first."""
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


class RemoteTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, RemoteEstimator):  # type: ignore[misc]
    """``transform`` gives one column per center, named ``<class>0``, ``<class>1``, ... by
    ``get_feature_names_out``, so ``set_output(transform="pandas")`` gives a DataFrame."""

    n_clusters: int

    @property
    def _n_features_out(self) -> int:
        return int(self.n_clusters)


def not_fitted_error(kind: str) -> Exception:
    message = f"this {kind} is not fitted yet; call fit or partial_fit first"
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:
        return AttributeError(message)
    error: Exception = NotFittedError(message)
    return error


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
_CONNECTED: weakref.WeakSet[RemoteEstimator] = weakref.WeakSet()


@atexit.register
def _release_all() -> None:
    for estimator in list(_CONNECTED):
        _run_all(estimator._detach())
    _REAPER.drain()
