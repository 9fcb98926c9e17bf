"""Request building and response gathering shared by Client and AsyncClient.

Requests carrying arrays are built pre-serialised (``_wire.encode_with_matrix``);
``raw_methods`` gives the multi-callables that send such bytes as they are.

Each plan turns one SDK call's arguments into the messages to send, and the
messages received into the call's result. The two clients differ only in how
they send, wait and retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from centroidal.v1 import clustering_pb2 as pb

from . import _wire
from ._wire import FitProgress, FitResult
from .errors import CentroidalError

HALF_LIFE_UNITS = ("batches", "points")


def rows_per_chunk(
    chunk_bytes: int,
    points: np.ndarray,
    response_row_bytes: int = 0,
    extra_row_bytes: int = 0,
    response_budget: int = 0,
) -> int:
    """Rows per message so that a request stays near chunk_bytes and its answer within budget."""
    row_bytes = int(points.shape[1]) * points.dtype.itemsize + extra_row_bytes
    rows = chunk_bytes // max(1, row_bytes)
    if response_row_bytes:
        rows = min(rows, response_budget // response_row_bytes)
    return max(1, rows)


class FitPlan:
    """The FitRequest stream for one fit, and the result assembled from its responses."""

    def __init__(
        self,
        name: str,
        X: Any,
        n_clusters: int,
        *,
        init: str | np.ndarray,
        n_init: int | None,
        max_iter: int | None,
        tol: float | None,
        seed: int | None,
        sample_weight: Any,
        expected_version: int | None,
        return_labels: bool,
        chunk_bytes: int,
    ) -> None:
        self.points = points = _wire.as_points(X)
        self.n_samples = n_samples = points.shape[0]
        config = pb.KMeansConfig(
            algorithm=pb.ALGORITHM_KMEANS,
            n_clusters=int(n_clusters),
            n_init=int(n_init or 0),
            max_iter=int(max_iter or 0),
        )
        if isinstance(init, str):
            if init not in _wire.INIT_METHODS:
                raise ValueError(f"init must be 'k-means++', 'random' or an array, got {init!r}")
            config.init = _wire.INIT_METHODS[init]
        else:
            config.init = pb.INIT_METHOD_GIVEN
            config.init_centers.CopyFrom(
                _wire.encode_matrix(np.ascontiguousarray(_wire.as_points(init, "init"), dtype=points.dtype))
            )
        if tol is not None:
            config.tol = float(tol)
        if seed is not None:
            config.seed = int(seed)
        self.spec = pb.FitSpec(
            model=name, config=config, n_samples=n_samples, return_labels=return_labels
        )
        if expected_version is not None:
            self.spec.expected_version = int(expected_version)
        self.weights = None
        if sample_weight is not None:
            self.weights = np.asarray(sample_weight, dtype=np.float64)
            if self.weights.shape != (n_samples,):
                raise ValueError(
                    f"sample_weight must have shape ({n_samples},), got {self.weights.shape}"
                )
        self.rows = rows_per_chunk(
            chunk_bytes, points, extra_row_bytes=8 if self.weights is not None else 0
        )
        self.labels = np.empty(n_samples, dtype=np.int32) if return_labels else None
        self._result: pb.FitResult | None = None

    def requests(self) -> Iterator[tuple[bytes, FitProgress]]:
        """Each serialised chunk to send, with the upload progress once it is sent."""
        points, weights, rows = self.points, self.weights, self.rows
        # range(0, 1, ...) for empty data: the spec always goes out, so the server can say why.
        for start in range(0, max(self.n_samples, 1), rows):
            head = pb.FitRequest()
            if start == 0:
                head.spec.CopyFrom(self.spec)
            if weights is not None:
                head.sample_weight.CopyFrom(_wire.encode_weights(weights[start : start + rows]))
            message = _wire.encode_with_matrix(head, "points", points[start : start + rows])
            sent = min(start + rows, self.n_samples)
            yield message, FitProgress("uploading", points_received=sent, points_total=self.n_samples)

    def take(self, response: pb.FitResponse) -> FitProgress | None:
        """Absorb one response; returns the progress event it carries, if any."""
        kind = response.WhichOneof("event")
        if kind == "progress":
            return _wire.fit_progress(response.progress, self.n_samples)
        if kind == "labels" and self.labels is not None:
            chunk = _wire.decode_labels(response.labels.labels)
            offset = int(response.labels.offset)
            self.labels[offset : offset + chunk.size] = chunk
        elif kind == "result":
            self._result = response.result
        return None

    def result(self) -> FitResult:
        result = self._result
        if result is None:
            raise CentroidalError("the server ended the Fit stream without a result")
        return FitResult(
            model=_wire.model_info(result.model),
            n_samples=int(result.n_samples),
            best_restart=int(result.best_restart),
            elapsed_seconds=float(result.elapsed_seconds),
            labels=self.labels,
        )


class PredictPlan:
    """The requests for one predict or transform, and the arrays filled from the answers."""

    def __init__(
        self,
        name: str,
        points: np.ndarray,
        version: int | None,
        options: pb.PredictOptions,
        n_clusters: int,
        chunk_bytes: int,
        response_budget: int,
    ) -> None:
        self.name = name
        self.points = points
        self.version = version
        self.options = options
        self.n_clusters = n_clusters
        self.n_samples = n_samples = points.shape[0]
        response_row_bytes = 4 + points.dtype.itemsize * (options.return_distances + n_clusters)
        self.rows = rows_per_chunk(chunk_bytes, points, response_row_bytes, response_budget=response_budget)
        self.labels = np.empty(n_samples, dtype=np.int32)
        self.distances = np.empty(n_samples, dtype=points.dtype) if options.return_distances else None
        self.transformed = (
            np.empty((n_samples, n_clusters), dtype=points.dtype) if options.return_transform else None
        )
        self.answered = 0

    @property
    def single(self) -> bool:
        """One unary call suffices."""
        return bool(self.n_samples <= self.rows)

    def request(self, start: int) -> bytes:
        """The serialised request for the rows from ``start``."""
        head = pb.PredictRequest()
        if start == 0:
            head.model = self.name
            head.options.CopyFrom(self.options)
            if self.version is not None:
                head.version = int(self.version)
        return _wire.encode_with_matrix(head, "points", self.points[start : start + self.rows])

    def requests(self) -> Iterator[bytes]:
        return (self.request(start) for start in range(0, self.n_samples, self.rows))

    def store(self, response: pb.PredictResponse) -> None:
        offset = int(response.offset)
        chunk = _wire.decode_labels(response.labels)
        self.labels[offset : offset + chunk.size] = chunk
        if self.distances is not None:
            self.distances[offset : offset + chunk.size] = _wire.decode_matrix(response.distances)[:, 0]
        if self.transformed is not None:
            block = _wire.decode_matrix(response.transform)
            if block.shape[1] != self.n_clusters:
                raise CentroidalError(
                    f"model {self.name!r} answered with {block.shape[1]} clusters, expected "
                    f"{self.n_clusters}"
                )
            self.transformed[offset : offset + chunk.size] = block
        self.answered += chunk.size

    def finish(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        if self.answered != self.n_samples:
            raise CentroidalError(f"the server answered {self.answered} of {self.n_samples} points")
        return self.labels, self.distances, self.transformed


def stream_open(
    name: str,
    *,
    n_clusters: int | None,
    init_size: int,
    reassignment_ratio: float | None,
    half_life: float | None,
    half_life_unit: str,
    seed: int | None,
) -> pb.MiniBatchOpen:
    """The first message of a StreamMiniBatch stream."""
    if half_life_unit not in HALF_LIFE_UNITS:
        raise ValueError(f"half_life_unit must be 'batches' or 'points', got {half_life_unit!r}")
    message = pb.MiniBatchOpen(model=name)
    if n_clusters is not None:
        config = message.create_if_missing
        config.n_clusters = int(n_clusters)
        config.init_size = int(init_size)
        if reassignment_ratio is not None:
            config.reassignment_ratio = float(reassignment_ratio)
        if half_life is not None:
            config.half_life = float(half_life)
        config.half_life_unit = (
            pb.MiniBatchConfig.HALF_LIFE_UNIT_POINTS
            if half_life_unit == "points"
            else pb.MiniBatchConfig.HALF_LIFE_UNIT_BATCHES
        )
        if seed is not None:
            config.seed = int(seed)
    return message


_SERVICE = "/centroidal.v1.ClusteringService/"


class RawMethods:
    """Fit, Predict and PredictStream on a channel (sync or aio), taking serialised requests."""

    def __init__(self, channel: Any) -> None:
        self.fit = channel.stream_stream(
            _SERVICE + "Fit", request_serializer=bytes, response_deserializer=pb.FitResponse.FromString
        )
        self.predict = channel.unary_unary(
            _SERVICE + "Predict", request_serializer=bytes,
            response_deserializer=pb.PredictResponse.FromString,
        )
        self.predict_stream = channel.stream_stream(
            _SERVICE + "PredictStream", request_serializer=bytes,
            response_deserializer=pb.PredictResponse.FromString,
        )
