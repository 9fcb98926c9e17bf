"""RemoteMiniBatchKMeans: scikit-learn's MiniBatchKMeans, learnt by a centroidal server over
a StreamMiniBatch stream."""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import NotFound
from .estimator_base import RemoteTransformer, not_fitted_error
from .results import BatchAck
from .stream import MiniBatchStream


class RemoteMiniBatchKMeans(RemoteTransformer):
    """Mini-batch k-means learnt by a centroidal server, with MiniBatchKMeans' partial_fit.

    Each ``partial_fit`` sends one batch over a StreamMiniBatch stream that stays open
    between calls, and returns once the server has applied it. The model is created by
    the first batch, from ``init_size`` points (None: that batch, or 3 * n_clusters).
    ``fit`` starts a new model from batches drawn at random, as scikit-learn's does (see
    ``fit``), for up to ``max_iter`` passes, stopping early after ``max_no_improvement``
    batches that did not improve the smoothed inertia (None: never early).
    Parameters follow scikit-learn's MiniBatchKMeans, plus ``half_life`` and
    ``half_life_unit`` ("batches" or "points") to forget old data, and ``metric``
    ("euclidean" or "cosine", as for RemoteKMeans).

    Attributes after fitting: cluster_centers_ (fetched from the server when read),
    n_steps_, n_iter_ (passes over X, after fit), n_samples_seen_, n_features_in_,
    model_name_, version_, inertia_ (after fit,
    of all of X; after partial_fit, of the last batch before it was applied),
    producer_id_ and next_sequence_ (this
    estimator's identity as a producer, kept across its streams; a pickled copy gets
    its own).
    """

    _fitted_attributes = (
        "model_name_", "version_", "n_steps_", "n_iter_", "n_samples_seen_", "n_features_in_", "inertia_",
        "labels_",
    )
    producer_id_: str
    next_sequence_: int

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        batch_size: int = 1024,
        max_iter: int = 100,
        max_no_improvement: int | None = 10,
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
        ephemeral: bool | None = None,
    ) -> None:
        super().__init__(target=target, token=token, timeout=timeout, ephemeral=ephemeral)
        self.n_clusters = n_clusters
        self.metric = metric
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.max_no_improvement = max_no_improvement
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
        ephemeral estimator deletes its model."""
        self._close_stream()
        super().close()

    def _close_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close(self.timeout)

    def _detach(self) -> list[Callable[[], object]]:
        stream, self._stream = self._stream, None
        # Aborting ends the stream; the server checkpoints the model as it does.
        return ([stream.abort] if stream is not None else []) + super()._detach()

    def _producer(
        self, init_size: int | None = None, on_ack: Callable[[BatchAck], None] | None = None
    ) -> MiniBatchStream:
        """The open stream to this estimator's model; ``init_size`` overrides the parameter
        for a model this call creates, and ``on_ack`` sees each ack of a stream opened here."""
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
                on_ack=on_ack,
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
        """A new model from batches drawn at random from X, as scikit-learn's MiniBatchKMeans
        fits: seeded by k-means++ from ``init_size`` rows drawn without replacement (default
        3 * batch_size, at most all of X), then up to ``max_iter`` passes' worth of batches of
        ``batch_size`` rows drawn with replacement, stopped early once the smoothed batch
        inertia has not improved for ``max_no_improvement`` batches. Drawing at random, not
        in order, keeps sorted or grouped rows (an image's pixels row by row) from seeding
        and steering the model with one part of the data. Complete when it returns."""
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter}")
        if self.max_no_improvement is not None and self.max_no_improvement < 1:
            raise ValueError(f"max_no_improvement must be None or at least 1, got {self.max_no_improvement}")
        points = self._points(X, reset=True)
        weights = self._weights(sample_weight, points)
        n_samples = points.shape[0]
        if n_samples < self.n_clusters:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}.")
        name = getattr(self, "model_name_", None)
        if name is not None:  # a refit replaces this estimator's model, and its producers
            self._close_stream()
            with contextlib.suppress(NotFound):  # a first fit that failed left no model
                self.client.delete_model(name)
            self.next_sequence_ = 1
        rng = np.random.default_rng(self.random_state)
        batch_size = min(self.batch_size, n_samples)
        init_size = self.init_size or 3 * batch_size
        init_size = min(max(init_size, self.n_clusters), n_samples)
        watch = _Convergence(n_samples, batch_size, self.max_no_improvement)
        stream = self._producer(init_size=init_size, on_ack=watch.take)
        seeds = rng.choice(n_samples, init_size, replace=False)  # the model seeds from these
        stream.send(points[seeds], None if weights is None else weights[seeds])
        n_steps = (self.max_iter * n_samples) // batch_size
        steps = 0
        # In rounds of a window of batches, each acknowledged before the next round: the
        # stop is decided on the same acks every time, so a seed gives the same model.
        while steps < n_steps and not watch.converged:
            for _ in range(min(stream.window, n_steps - steps)):
                rows = rng.integers(0, n_samples, batch_size)
                stream.send(points[rows], None if weights is None else weights[rows])
                steps += 1
            stream.flush(self.timeout)
        self.next_sequence_ = stream.next_sequence
        stream.flush(self.timeout)
        ack = stream.last_ack
        assert ack is not None
        self.version_ = ack.version
        self.n_steps_ = steps
        self.n_iter_ = -(-steps * batch_size // n_samples)  # passes over X, as scikit-learn counts
        self.n_samples_seen_ = ack.n_samples_seen
        labels, distances = self.client.predict(self.model_name_, points, return_distance=True)
        self.labels_ = labels
        # As scikit-learn's: the inertia of all of X against the final centers.
        losses = np.asarray(distances, dtype=np.float64)
        losses = losses if self.metric == "cosine" else losses**2
        self.inertia_ = float(losses @ (np.ones(n_samples) if weights is None else weights))
        return self

    @property
    def cluster_centers_(self) -> np.ndarray:
        """The model's current centers, read from the server."""
        self._check_fitted()
        centers = self.client.get_model(self.model_name_).centers
        if centers is None:
            raise not_fitted_error(f"{type(self).__name__} (still buffering its first points)")
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


class _Convergence:
    """scikit-learn's early stop for a mini-batch fit, on the acks of its batches: an
    exponentially weighted average of the per-point batch inertia (weight 2 * batch /
    (n + 1)), and how many batches in a row it has not reached a new low. Fed on the
    stream's receiving thread; read by the sender once a flush has taken every ack."""

    def __init__(self, n_samples: int, batch_size: int, max_no_improvement: int | None) -> None:
        self._alpha = min(1.0, batch_size * 2.0 / (n_samples + 1))
        self._max_no_improvement = max_no_improvement
        self._ewa: float | None = None
        self._lowest = math.inf
        self._no_improvement = 0
        self._acks = 0
        self._points_seen = 0
        self.converged = False

    def take(self, ack: BatchAck) -> None:
        self._acks += 1
        # The batch's points: the growth of the model's count since the last ack.
        batch_points, self._points_seen = ack.n_samples_seen - self._points_seen, ack.n_samples_seen
        if self._acks == 1 or not math.isfinite(ack.batch_inertia) or batch_points < 1:
            return  # the seeding batch, and any before the model had centers
        per_point = ack.batch_inertia / batch_points
        self._ewa = per_point if self._ewa is None else self._ewa * (1 - self._alpha) + per_point * self._alpha
        if self._ewa < self._lowest:
            self._lowest, self._no_improvement = self._ewa, 0
        else:
            self._no_improvement += 1
        if self._max_no_improvement is not None and self._no_improvement >= self._max_no_improvement:
            self.converged = True
