"""The synchronous SDK: numpy in, numpy out, chunked transfers, a deadline on every call."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc

from . import _wire
from ._wire import FitProgress, FitResult, ModelInfo
from .errors import CentroidalError, error_from_rpc
from .stream import (
    DEFAULT_MAX_REPLAY_BYTES,
    DEFAULT_RECONNECT_TIMEOUT_S,
    DEFAULT_WINDOW,
    BatchAck,
    MiniBatchStream,
)

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_FIT_TIMEOUT_S = 24 * 3600.0
DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024
MIN_CHUNK_BYTES = 1024
# Well under the server's default 16 MiB message limit, envelope included.
MAX_CHUNK_BYTES = 8 * 1024 * 1024
# The server's default message limit; answers larger than this are streamed.
SERVER_MESSAGE_BYTES = 16 * 1024 * 1024
_RESPONSE_BUDGET = SERVER_MESSAGE_BYTES // 2


def default_target() -> str:
    """$CENTROIDAL_TARGET, else 127.0.0.1:50051."""
    return os.environ.get("CENTROIDAL_TARGET") or DEFAULT_TARGET


class Client:
    """A connection to a centroidal server.

    Every call has a deadline (``timeout`` seconds unless the call says otherwise)
    and raises a subclass of ``CentroidalError`` named after the status code.
    Use it as a context manager, or call ``close``.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        fit_timeout: float = DEFAULT_FIT_TIMEOUT_S,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(
                f"chunk_bytes must be from {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES}, got {chunk_bytes}"
            )
        self.target = target or default_target()
        self.timeout = timeout
        self.fit_timeout = fit_timeout
        self.chunk_bytes = chunk_bytes
        channel_options = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            *options,
        ]
        if credentials is not None:
            self._channel = grpc.secure_channel(self.target, credentials, options=channel_options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=channel_options)
        self._stub = pb_grpc.ClusteringServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    # ---- lifecycle -------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from error

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    # ---- streaming -------------------------------------------------------

    def stream(
        self,
        name: str,
        *,
        n_clusters: int | None = None,
        init_size: int = 0,
        reassignment_ratio: float | None = None,
        half_life: float | None = None,
        half_life_unit: str = "batches",
        seed: int | None = None,
        producer_id: str | None = None,
        first_sequence: int = 1,
        window: int = DEFAULT_WINDOW,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT_S,
        max_replay_bytes: int = DEFAULT_MAX_REPLAY_BYTES,
        on_ack: Callable[[BatchAck], None] | None = None,
    ) -> MiniBatchStream:
        """Open a stream of mini-batches into model ``name``; use it as a context manager.

        With ``n_clusters`` the model is created if it does not exist (the other
        model parameters apply only then). ``producer_id`` and ``first_sequence``
        identify the batches: a producer that restarts passes its old id and one past
        the ``durable_sequence`` it last saw, and the server skips what it already has.
        """
        if half_life_unit not in ("batches", "points"):
            raise ValueError(f"half_life_unit must be 'batches' or 'points', got {half_life_unit!r}")
        open_message = pb.MiniBatchOpen(model=name)
        if n_clusters is not None:
            config = open_message.create_if_missing
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
        return MiniBatchStream(
            self,
            open_message,
            producer_id=producer_id,
            first_sequence=first_sequence,
            window=window,
            reconnect_timeout=reconnect_timeout,
            max_replay_bytes=max_replay_bytes,
            on_ack=on_ack,
        )

    # ---- health ----------------------------------------------------------

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's health status name: SERVING, NOT_SERVING or SERVICE_UNKNOWN."""
        response = self._call(
            self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    # ---- fit -------------------------------------------------------------

    def fit(
        self,
        name: str,
        X: Any,
        n_clusters: int,
        *,
        init: str | np.ndarray = "k-means++",
        n_init: int | None = None,
        max_iter: int | None = None,
        tol: float | None = None,
        seed: int | None = None,
        sample_weight: Any = None,
        expected_version: int | None = None,
        return_labels: bool = False,
        on_progress: Callable[[FitProgress], None] | None = None,
        timeout: float | None = None,
    ) -> FitResult:
        """Fit k-means model ``name`` on X and store it; returns the stored model.

        X : array-like of shape (n_samples, n_features), float32 or float64
        init : "k-means++", "random", or initial centers of shape (n_clusters, n_features)
        sample_weight : array-like of shape (n_samples,), or None
        on_progress : called with each FitProgress event, upload progress included
        """
        points = _wire.as_points(X)
        n_samples = points.shape[0]
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
        spec = pb.FitSpec(
            model=name, config=config, n_samples=n_samples, return_labels=return_labels
        )
        if expected_version is not None:
            spec.expected_version = int(expected_version)
        weights = None
        if sample_weight is not None:
            weights = np.asarray(sample_weight, dtype=np.float64)
            if weights.shape != (n_samples,):
                raise ValueError(
                    f"sample_weight must have shape ({n_samples},), got {weights.shape}"
                )

        # on_progress runs on gRPC's sending thread for uploads; keep its exception for the caller.
        upload_failure: list[BaseException] = []
        call: list[grpc.Future] = []

        def requests() -> Iterator[pb.FitRequest]:
            rows = self._rows_per_chunk(points, extra_row_bytes=8 if weights is not None else 0)
            # range(0, 1, ...) for empty data: the spec always goes out, so the server can say why.
            for start in range(0, max(n_samples, 1), rows):
                message = pb.FitRequest(points=_wire.encode_matrix(points[start : start + rows]))
                if start == 0:
                    message.spec.CopyFrom(spec)
                if weights is not None:
                    message.sample_weight.CopyFrom(_wire.encode_weights(weights[start : start + rows]))
                yield message
                if on_progress is not None:
                    sent = min(start + rows, n_samples)
                    try:
                        on_progress(FitProgress("uploading", points_received=sent, points_total=n_samples))
                    except BaseException as failure:  # noqa: BLE001 - re-raised in the caller
                        upload_failure.append(failure)
                        if call:
                            call[0].cancel()
                        return

        labels = np.empty(n_samples, dtype=np.int32) if return_labels else None
        result = None
        responses = self._stub.Fit(
            requests(),
            timeout=self.fit_timeout if timeout is None else timeout,
            metadata=self._metadata,
        )
        call.append(responses)
        try:
            for response in responses:
                kind = response.WhichOneof("event")
                if kind == "progress" and on_progress is not None:
                    on_progress(_wire.fit_progress(response.progress, n_samples))
                elif kind == "labels" and labels is not None:
                    chunk = _wire.decode_labels(response.labels.labels)
                    offset = int(response.labels.offset)
                    labels[offset : offset + chunk.size] = chunk
                elif kind == "result":
                    result = response.result
        except grpc.RpcError as error:
            if upload_failure:
                raise upload_failure[0] from None
            raise error_from_rpc(error) from error
        except BaseException:
            # on_progress raised (or the caller was interrupted): stop the server's work too.
            responses.cancel()
            raise
        if upload_failure:
            raise upload_failure[0]
        if result is None:
            raise CentroidalError("the server ended the Fit stream without a result")
        return FitResult(
            model=_wire.model_info(result.model),
            n_samples=int(result.n_samples),
            best_restart=int(result.best_restart),
            elapsed_seconds=float(result.elapsed_seconds),
            labels=labels,
        )

    def _rows_per_chunk(
        self, points: np.ndarray, response_row_bytes: int = 0, extra_row_bytes: int = 0
    ) -> int:
        row_bytes = int(points.shape[1]) * points.dtype.itemsize + extra_row_bytes
        rows = self.chunk_bytes // max(1, row_bytes)
        if response_row_bytes:
            rows = min(rows, _RESPONSE_BUDGET // response_row_bytes)
        return max(1, rows)

    # ---- predict ---------------------------------------------------------

    def predict(
        self,
        name: str,
        X: Any,
        *,
        version: int | None = None,
        return_distance: bool = False,
        timeout: float | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Nearest-center labels, ndarray of shape (n_samples,), int32.

        With return_distance, also the Euclidean distance to that center, shape
        (n_samples,), in X's dtype. version pins a model version.
        """
        options = pb.PredictOptions(return_distances=return_distance)
        labels, distances, _ = self._predict(name, X, version, options, timeout)
        if return_distance:
            assert distances is not None
            return labels, distances
        return labels

    def transform(
        self, name: str, X: Any, *, version: int | None = None, timeout: float | None = None
    ) -> np.ndarray:
        """Euclidean distance from each row to each center: (n_samples, n_clusters), X's dtype."""
        options = pb.PredictOptions(return_transform=True)
        _, _, transformed = self._predict(name, X, version, options, timeout)
        assert transformed is not None
        return transformed

    def _predict(
        self,
        name: str,
        X: Any,
        version: int | None,
        options: pb.PredictOptions,
        timeout: float | None,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        points = _wire.as_points(X)
        n_samples = points.shape[0]
        n_clusters = 0
        if options.return_transform:
            model = self.get_model(name, version=version, include_centers=False, timeout=timeout)
            n_clusters = model.n_clusters
        itemsize = points.dtype.itemsize
        response_row_bytes = 4 + itemsize * (options.return_distances + n_clusters)
        rows = self._rows_per_chunk(points, response_row_bytes)
        labels = np.empty(n_samples, dtype=np.int32)
        distances = np.empty(n_samples, dtype=points.dtype) if options.return_distances else None
        transformed = (
            np.empty((n_samples, n_clusters), dtype=points.dtype) if options.return_transform else None
        )

        def request(start: int, first: bool) -> pb.PredictRequest:
            message = pb.PredictRequest(points=_wire.encode_matrix(points[start : start + rows]))
            if first:
                message.model = name
                message.options.CopyFrom(options)
                if version is not None:
                    message.version = int(version)
            return message

        answered = 0

        def store(response: pb.PredictResponse) -> None:
            nonlocal answered
            offset = int(response.offset)
            chunk = _wire.decode_labels(response.labels)
            labels[offset : offset + chunk.size] = chunk
            if distances is not None:
                distances[offset : offset + chunk.size] = _wire.decode_matrix(response.distances)[:, 0]
            if transformed is not None:
                block = _wire.decode_matrix(response.transform)
                if block.shape[1] != n_clusters:
                    raise CentroidalError(
                        f"model {name!r} answered with {block.shape[1]} clusters, expected {n_clusters}"
                    )
                transformed[offset : offset + chunk.size] = block
            answered += chunk.size

        if n_samples <= rows:
            store(self._call(self._stub.Predict, request(0, True), timeout))
        else:
            requests = (request(start, start == 0) for start in range(0, n_samples, rows))
            try:
                for response in self._stub.PredictStream(
                    requests, timeout=self._deadline(timeout), metadata=self._metadata
                ):
                    store(response)
            except grpc.RpcError as error:
                raise error_from_rpc(error) from error
        if answered != n_samples:
            raise CentroidalError(f"the server answered {answered} of {n_samples} points")
        return labels, distances, transformed

    # ---- model management ------------------------------------------------

    def get_model(
        self,
        name: str,
        *,
        version: int | None = None,
        include_centers: bool = True,
        timeout: float | None = None,
    ) -> ModelInfo:
        """Describe model ``name`` (or a kept earlier version); centers unless include_centers is False."""
        request = pb.GetModelRequest(name=name, include_centers=include_centers)
        if version is not None:
            request.version = int(version)
        return _wire.model_info(self._call(self._stub.GetModel, request, timeout))

    def list_models_page(
        self, *, page_size: int = 100, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[ModelInfo], str]:
        """One page of models in name order, and the token of the next page ("" at the end)."""
        request = pb.ListModelsRequest(page_size=page_size, page_token=page_token)
        response = self._call(self._stub.ListModels, request, timeout)
        return [_wire.model_info(m) for m in response.models], response.next_page_token

    def iter_models(self, *, page_size: int = 100, timeout: float | None = None) -> Iterator[ModelInfo]:
        """Every model, fetched a page at a time."""
        token = ""
        while True:
            models, token = self.list_models_page(page_size=page_size, page_token=token, timeout=timeout)
            yield from models
            if not token:
                return

    def list_models(self, *, page_size: int = 100, timeout: float | None = None) -> list[ModelInfo]:
        """Every model, without centers."""
        return list(self.iter_models(page_size=page_size, timeout=timeout))

    def delete_model(
        self, name: str, *, expected_version: int | None = None, timeout: float | None = None
    ) -> int:
        """Delete model ``name``; returns the version the delete wrote."""
        request = pb.DeleteModelRequest(name=name)
        if expected_version is not None:
            request.expected_version = int(expected_version)
        response: pb.DeleteModelResponse = self._call(self._stub.DeleteModel, request, timeout)
        return int(response.version)
