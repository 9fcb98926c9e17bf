"""Predict: find the model version asked for, check the points against it, assign them."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable

import numpy as np

from centroidal import codec
from centroidal.engine import spectral
from centroidal.engine.nearest import ON_CALLER_WORK, NearestCenters

from .admission import Incoming
from .config import ServerConfig
from .exceptions import InvalidRequest, LimitExceeded, ModelMismatch
from .gathering import ENVELOPE_BYTES
from .limits import check_model_name, check_shape
from .registry import Registry
from .runtime import Runtime
from .shared_rows import check_allowed, mapped_rows
from .snapshots import SPECTRAL, ModelSnapshot

# The answer's wire form, written where it is computed: off the event loop for a large one.
Encode = Callable[[codec.PredictResponse], bytes]

# An answer the engine computes on the calling thread (below this many multiply-adds,
# n * k * d) costs less than a hand-over to a worker thread: it runs on the event loop.
INLINE_WORK = ON_CALLER_WORK
# Each snapshot's centers (or a spectral model's rows), prepared for predicts once, for as
# long as the snapshot lives.
_prepared: weakref.WeakKeyDictionary[ModelSnapshot, NearestCenters] = weakref.WeakKeyDictionary()
_votes: weakref.WeakKeyDictionary[ModelSnapshot, spectral.NeighbourVote] = weakref.WeakKeyDictionary()


def metric_of(snapshot: ModelSnapshot) -> str:
    """The distance a model predicts with."""
    return str(snapshot.config.get("metric", "euclidean"))  # none before metrics, nor palettes


def nearest(snapshot: ModelSnapshot) -> NearestCenters:
    prepared = _prepared.get(snapshot)
    if prepared is None:
        prepared = _prepared[snapshot] = NearestCenters(snapshot.centers, metric_of(snapshot))
    return prepared


def neighbour_vote(snapshot: ModelSnapshot) -> spectral.NeighbourVote:
    """A spectral model's training rows and labels, ready to vote."""
    vote = _votes.get(snapshot)
    if vote is None:
        assert snapshot.state is not None
        vote = _votes[snapshot] = spectral.NeighbourVote.from_bytes(snapshot.state, snapshot.n_clusters)
    return vote


def labels_of(snapshot: ModelSnapshot, points: np.ndarray) -> np.ndarray:
    """The model's labels for checked points: nearest center, or a spectral model's vote."""
    if snapshot.kind == SPECTRAL:
        return neighbour_vote(snapshot).predict(points, field="points")
    labels: np.ndarray = nearest(snapshot).predict(points, field="points")
    return labels


def snapshot_for(registry: Registry, name: str, version: int | None, field: str = "model") -> ModelSnapshot:
    """The model version a Predict uses; refuses one that has no centers yet. ``field``
    names the model in the request."""
    return usable(registry.get_version(check_model_name(name, field), version, field), field)


def usable(snapshot: ModelSnapshot, field: str) -> ModelSnapshot:
    """``snapshot``, unless it has no centers yet."""
    name = snapshot.name
    if snapshot.n_clusters == 0:
        raise ModelMismatch(
            f"model {name!r} has no centers yet: it holds "
            f"{snapshot.extra.get('init_points_buffered', 0)} points and initialises "
            f"once it has {snapshot.config.get('init_size') or 'its first batch or 3 * n_clusters'} "
            "of them",
            field=field,
            reason="NOT_INITIALIZED",
        )
    return snapshot


def check_points(
    snapshot: ModelSnapshot, shape: tuple[int, ...], dtype: np.dtype, options: codec.PredictOptions,
    limits: ServerConfig,
) -> None:
    """Points of this shape and dtype fit the model, and their answer fits in one message."""
    check_shape(shape, "points", max_rows=limits.max_points, max_cols=limits.max_features, allow_empty=True)
    rows, cols = shape
    if cols != snapshot.n_features:
        raise ModelMismatch(
            f"points.cols={cols} but model {snapshot.name!r} version "
            f"{snapshot.version} has {snapshot.n_features} features",
            field="points.cols",
            reason="FEATURE_MISMATCH",
        )
    if snapshot.kind == SPECTRAL and (options.return_distances or options.return_transform):
        raise ModelMismatch(
            f"model {snapshot.name!r} is a spectral model: it labels points by their training "
            "neighbours and has no distances or transform to return",
            field="options", reason="SPECTRAL_MODEL",
        )
    label_bytes = codec.narrowest_label_type(snapshot.n_clusters).itemsize if options.narrow_labels else 4
    row_bytes = label_bytes + dtype.itemsize * (
        options.return_distances + options.return_transform * snapshot.n_clusters
    )
    budget = limits.max_message_bytes - ENVELOPE_BYTES
    if rows * row_bytes > budget:
        raise LimitExceeded(
            f"the answer for points.rows={rows} would be "
            f"{rows * row_bytes} bytes, over the server's message limit of "
            f"{limits.max_message_bytes}; send at most {max(1, budget // row_bytes)} rows "
            "per message with PredictStream",
            field="points.rows",
        )


def work_of(snapshot: ModelSnapshot, rows: int) -> int:
    if snapshot.kind == SPECTRAL:  # tree searches: never worth blocking the event loop for
        return rows * (INLINE_WORK + 1)
    return rows * snapshot.n_clusters * snapshot.n_features


def answer(
    snapshot: ModelSnapshot, points: np.ndarray, options: codec.PredictOptions, offset: int
) -> codec.PredictResponse:
    """Labels (and distances or the transform when asked) for checked points; the labels in
    the narrowest type for the model's clusters when the options ask for it."""
    label_type = codec.narrowest_label_type(snapshot.n_clusters) if options.narrow_labels else np.int32
    if points.shape[0] == 0:
        return codec.PredictResponse(snapshot.version, offset, np.empty(0, dtype=label_type))
    if snapshot.kind == SPECTRAL:
        labels = labels_of(snapshot, points).astype(label_type, copy=False)
        return codec.PredictResponse(snapshot.version, offset, labels)
    centers = nearest(snapshot)
    distances = transform = None
    if options.return_distances:
        labels, closest = centers.predict(points, return_distance=True, field="points")
        distances = closest.reshape(-1, 1)
    else:
        labels = centers.predict(points, field="points")
    if options.return_transform:
        transform = centers.transform(points, field="points")
    labels = labels.astype(label_type, copy=False)
    return codec.PredictResponse(snapshot.version, offset, labels, distances, transform)


_NO_OPTIONS = codec.PredictOptions()


def _rows_of(query: codec.PredictRequest) -> np.ndarray | codec.SharedRows | None:
    """Where a request's rows are: in the message, or in shared memory (not both)."""
    if query.shared is None:
        return query.points
    if query.points is not None:
        raise InvalidRequest(
            f"points.data has {query.points.nbytes} bytes, but with points_shared the rows are in "
            "shared memory and data must be empty", field="points.data",
        )
    return query.shared


class Predicting:
    """Predict and PredictStream over the registry's snapshots."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def snapshot(self, name: str, version: int | None, field: str = "model") -> ModelSnapshot:
        """The model version a call asks for; an older one is read from the store."""
        runtime = self._runtime
        if version is None:  # the current version, when it is in memory: no thread hop
            current = runtime.registry.lookup(check_model_name(name, field), field)
            if current is not None:
                return usable(current, field)
        return await runtime.workers.run(
            runtime.workers.storage, snapshot_for, runtime.registry, name, version, field
        )

    async def predict(self, query: codec.PredictRequest, encode: Encode, peer: str = "") -> bytes:
        """One Predict's answer, encoded by ``encode``; ``peer`` is the caller's address
        (its rows may be in shared memory only when it is on this host)."""
        snapshot = await self.snapshot(query.model, query.version)
        points = _rows_of(query)
        if points is None:
            raise InvalidRequest("points is required", field="points")
        rows, compute = self._work(snapshot, points, query.options or _NO_OPTIONS, 0, encode, peer)
        return await self._run(snapshot, points.dtype, rows, compute)

    async def predict_stream(
        self, queries: Incoming[codec.PredictRequest], encode: Encode, peer: str = ""
    ) -> AsyncIterator[bytes]:
        """One answer per message that carries rows, in order; the first names the model."""
        snapshot, options, offset = None, codec.PredictOptions(), 0
        async with queries.drained_on_refusal():
            index = 0
            async for query in queries.ahead():
                if snapshot is None:
                    snapshot = await self.snapshot(query.model, query.version)
                    options = query.options or options
                elif query.model or query.version is not None or query.options is not None:
                    raise InvalidRequest(
                        f"message {index} of the stream sets model, version or options; only the "
                        "first message may",
                        field="model",
                    )
                points = _rows_of(query)
                if points is not None:
                    rows, compute = self._work(snapshot, points, options, offset, encode, peer)
                    yield await self._run(snapshot, points.dtype, rows, compute)
                    offset += rows
                index += 1

    def _work(
        self, snapshot: ModelSnapshot, points: np.ndarray | codec.SharedRows, options: codec.PredictOptions,
        offset: int, encode: Encode, peer: str,
    ) -> tuple[int, Callable[[], bytes]]:
        """The rows checked against the model and the server's limits: how many, and the
        work that answers them."""
        runtime = self._runtime
        compute: Callable[[], bytes]
        if isinstance(points, codec.SharedRows):
            shared = points
            path = check_allowed(shared, peer, runtime.config.shared_memory)
            check_points(snapshot, (shared.rows, shared.cols), shared.dtype, options, runtime.config)
            rows = shared.rows

            def compute() -> bytes:  # mapping and reading the object: off the event loop
                with mapped_rows(shared, path) as mapped:
                    return encode(answer(snapshot, mapped, options, offset))
        else:
            check_points(snapshot, points.shape, points.dtype, options, runtime.config)
            rows = points.shape[0]

            def compute() -> bytes:
                return encode(answer(snapshot, points, options, offset))
        return rows, compute

    async def _run(self, snapshot: ModelSnapshot, dtype: np.dtype, rows: int, compute: Callable[[], bytes]) -> bytes:
        """``compute``'s answer: here for a small one, else on the compute pool."""
        runtime = self._runtime
        if runtime.compiling:  # checked here: an await per small call costs it CPU
            await runtime.kernels_for(dtype, fit=False)
        if work_of(snapshot, rows) <= INLINE_WORK:
            response = compute()
        else:
            response = await runtime.workers.run(runtime.workers.compute, compute)
        runtime.metrics.predicted.inc(rows)
        return response
