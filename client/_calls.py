"""Request building and response gathering shared by Client and AsyncClient.

Requests carrying arrays are built pre-serialised (``codec.serialize_with_matrix``);
``raw_methods`` gives the multi-callables that send such bytes as they are.

Each plan turns one SDK call's arguments into the messages to send, and the
messages received into the call's result. The two clients differ only in how
they send, wait and retry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import codec

from . import _wire
from ._wire import FitProgress, FitResult
from .errors import CentroidalError



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
        metric: str = "euclidean",
        algorithm: str = "kmeans",
        n_neighbors: int | None = None,
    ) -> None:
        self.points = points = _wire.as_points(X)
        self.n_samples = n_samples = points.shape[0]
        init_centers = None
        if isinstance(init, str):
            if init not in codec.INIT_METHODS.numbers or init == "given":
                raise ValueError(f"init must be 'k-means++', 'random' or an array, got {init!r}")
        else:
            init_centers = np.ascontiguousarray(_wire.as_points(init, "init"), dtype=points.dtype)
        config = codec.KMeansConfig(
            n_clusters=int(n_clusters),
            init="given" if init_centers is not None else str(init),
            init_centers=init_centers,
            n_init=int(n_init or 0),
            max_iter=int(max_iter or 0),
            tol=None if tol is None else float(tol),
            seed=None if seed is None else int(seed),
            metric=_choice(codec.METRICS, metric, "metric"),
            algorithm=_choice(codec.ALGORITHMS, algorithm, "algorithm"),
            n_neighbors=int(n_neighbors or 0),
        )
        self.spec = codec.encode_fit_spec(codec.FitSpec(
            model=name, config=config, n_samples=n_samples,
            expected_version=None if expected_version is None else int(expected_version),
            return_labels=return_labels,
        ))
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
        """Each serialised message to send, with the upload progress once it is sent.

        The spec goes alone, first: a server that refuses the fit (a bad spec, or every
        fit slot taken) says so before any data is uploaded.
        """
        points, weights, rows = self.points, self.weights, self.rows
        yield pb.FitRequest(spec=self.spec).SerializeToString(), FitProgress(
            "uploading", points_received=0, points_total=self.n_samples
        )
        # range(0, 1, ...) for empty data: one empty chunk, so the server can say why.
        for start in range(0, max(self.n_samples, 1), rows):
            head = pb.FitRequest()
            if weights is not None:
                head.sample_weight.CopyFrom(codec.encode_vector(weights[start : start + rows]))
            message = codec.serialize_with_matrix(head, "points", points[start : start + rows])
            sent = min(start + rows, self.n_samples)
            yield message, FitProgress("uploading", points_received=sent, points_total=self.n_samples)

    def take(self, response: pb.FitResponse) -> FitProgress | None:
        """Absorb one response; returns the progress event it carries, if any."""
        kind = response.WhichOneof("event")
        if kind == "progress":
            progress = _wire.fit_progress(response.progress, self.n_samples)
            # Admission is the transport's business (it gates the upload), not progress to show.
            return None if progress.stage == "admitted" else progress
        if kind == "labels" and self.labels is not None:
            chunk = codec.decode_labels(response.labels.labels)
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
        # Labels travel in the narrowest type the model allows (at most 4 bytes each); the
        # caller still gets int32.
        self.options = pb.PredictOptions(narrow_labels=True)
        self.options.MergeFrom(options)
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
        request: bytes = codec.serialize_with_matrix(head, "points", self.points[start : start + self.rows])
        return request

    def requests(self) -> Iterator[bytes]:
        return (self.request(start) for start in range(0, self.n_samples, self.rows))

    def store(self, response: pb.PredictResponse) -> None:
        offset = int(response.offset)
        chunk = codec.decode_labels(response.labels, width=response.label_bytes)
        self.labels[offset : offset + chunk.size] = chunk
        if self.distances is not None:
            self.distances[offset : offset + chunk.size] = codec.decode_matrix(response.distances, "distances")[:, 0]
        if self.transformed is not None:
            block = codec.decode_matrix(response.transform, "transform")
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
    metric: str = "euclidean",
) -> pb.MiniBatchOpen:
    """The first message of a StreamMiniBatch stream."""
    if half_life_unit not in codec.HALF_LIFE_UNITS.numbers:
        raise ValueError(f"half_life_unit must be 'batches' or 'points', got {half_life_unit!r}")
    create = None
    if n_clusters is not None:
        create = codec.MiniBatchConfig(
            n_clusters=int(n_clusters),
            init_size=int(init_size),
            reassignment_ratio=None if reassignment_ratio is None else float(reassignment_ratio),
            half_life=None if half_life is None else float(half_life),
            half_life_unit=half_life_unit,
            seed=None if seed is None else int(seed),
            metric=_choice(codec.METRICS, metric, "metric"),
        )
    return codec.encode_minibatch_open(codec.MiniBatchOpen(name, create))


def quantize_requests(
    image: bytes | str | os.PathLike[str],
    n_colors: int,
    chunk_bytes: int,
    *,
    seed: int | None = None,
    max_samples: int = 0,
    color_space: str = "rgb",
    dither: bool = False,
    output_format: str = "png",
    palette_model: str = "",
    save_palette_as: str = "",
) -> list[pb.QuantizeImageRequest]:
    """The QuantizeImage stream for an encoded image (bytes, or a file's path)."""
    if isinstance(image, bytes):
        data = image
    else:
        with open(image, "rb") as source:
            data = source.read()
    spec = codec.encode_quantize_spec(codec.QuantizeSpec(
        n_colors=int(n_colors),
        seed=None if seed is None else int(seed),
        max_samples=int(max_samples),
        color_space=_choice(codec.COLOR_SPACES, color_space, "color_space"),
        dither="floyd-steinberg" if dither else "none",
        output_format=_choice(codec.IMAGE_FORMATS, _format_name(output_format), "output_format"),
        palette_model=palette_model,
        save_palette_as=save_palette_as,
    ))
    # The spec goes alone, first: a refusal (every slot taken, a bad spec) comes before upload.
    return [pb.QuantizeImageRequest(spec=spec)] + [
        pb.QuantizeImageRequest(image=data[i : i + chunk_bytes]) for i in range(0, len(data), chunk_bytes)
    ]


def _choice(table: codec.EnumTable, value: str, name: str) -> str:
    """``value`` if the contract's table knows it; a ValueError listing the choices if not."""
    if value not in table.numbers:
        known = ", ".join(repr(choice.lower()) for choice in table.numbers)
        raise ValueError(f"{name} must be one of {known}, got {value.lower()!r}")
    return value


def _format_name(output_format: str) -> str:
    """The SDK takes "png", "jpeg", ... or "same"; the codec names formats as Pillow does."""
    return output_format if output_format == "same" else output_format.upper()


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
        self.evaluate = channel.stream_unary(
            _SERVICE + "Evaluate", request_serializer=bytes,
            response_deserializer=pb.EvaluateResponse.FromString,
        )
        self.suggest_k = channel.stream_stream(
            _SERVICE + "SuggestK", request_serializer=bytes,
            response_deserializer=pb.SuggestKResponse.FromString,
        )
