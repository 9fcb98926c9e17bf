"""Request building and answer gathering shared by Client and AsyncClient.

Every request goes out as bytes the codec wrote, and every answer is read through the
codec: nothing here touches a protobuf field. ``Methods`` gives the multi-callables that
send such bytes as they are.

Each plan turns one SDK call's arguments into the messages to send, and the messages
received into the call's result. The two clients differ only in how they send, wait and
retry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from centroidal import codec
from centroidal.v1 import clustering_pb2 as pb

from .errors import CentroidalError
from .results import FitProgress, FitResult, QuantizedImage


def as_points(X: Any, name: str = "X") -> np.ndarray:
    """X as a C-contiguous 2-D float32 or float64 array; float32 is never widened."""
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {array.shape}")
    if array.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
        array = array.astype(np.float64)
    return np.ascontiguousarray(array)


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


def optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


class FitPlan:
    """The FitRequest stream for one fit, and the result assembled from its responses."""

    def __init__(
        self,
        name: str,
        X: Any,
        n_clusters: int | None,
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
        source: codec.DatasetSource | None = None,
    ) -> None:
        if (X is None) == (source is None):
            raise ValueError("fit takes its rows from X or from a dataset the server reads (source=), one of them")
        if n_clusters is None:
            raise ValueError("fit needs n_clusters")
        if source is not None and sample_weight is not None:
            raise ValueError("a fit of a source takes its weights from the dataset (weight_column=), not sample_weight")
        self.points = points = as_points(X) if X is not None else np.empty((0, 1))
        self.source = source
        self.n_samples = n_samples = points.shape[0]
        init_centers = None
        if isinstance(init, str):
            if init not in codec.INIT_METHODS.numbers or init == "given":
                raise ValueError(f"init must be 'k-means++', 'random' or an array, got {init!r}")
        else:
            init_centers = as_points(init, "init")
            init_centers = np.ascontiguousarray(init_centers, dtype=points.dtype if X is not None else None)
        config = codec.KMeansConfig(
            n_clusters=int(n_clusters),
            init="given" if init_centers is not None else str(init),
            init_centers=init_centers,
            n_init=int(n_init or 0),
            max_iter=int(max_iter or 0),
            tol=None if tol is None else float(tol),
            seed=optional_int(seed),
            metric=codec.METRICS.choice(metric, "metric"),
            algorithm=codec.ALGORITHMS.choice(algorithm, "algorithm"),
            n_neighbors=int(n_neighbors or 0),
        )
        self.spec = codec.FitSpec(
            model=name, config=config, n_samples=n_samples,
            expected_version=optional_int(expected_version), return_labels=return_labels, source=source,
        )
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
        self._result: codec.FitResult | None = None

    def requests(self) -> Iterator[tuple[bytes, FitProgress]]:
        """Each serialised message to send, with the upload progress once it is sent.

        The spec goes alone, first: a server that refuses the fit (a bad spec, or every
        fit slot taken) says so before any data is uploaded.
        """
        points, weights, rows = self.points, self.weights, self.rows
        yield codec.serialize_fit_request(codec.FitChunk(spec=self.spec)), FitProgress(
            "uploading", points_received=0, points_total=self.n_samples
        )
        if self.source is not None:
            return  # the server reads the rows
        # range(0, 1, ...) for empty data: one empty chunk, so the server can say why.
        for start in range(0, max(self.n_samples, 1), rows):
            chunk = codec.FitChunk(
                points=points[start : start + rows],
                sample_weight=None if weights is None else weights[start : start + rows],
            )
            sent = min(start + rows, self.n_samples)
            yield codec.serialize_fit_request(chunk), FitProgress(
                "uploading", points_received=sent, points_total=self.n_samples
            )

    def take(self, response: pb.FitResponse) -> FitProgress | None:
        """Absorb one response; returns the progress event it carries, if any."""
        event = codec.decode_fit_response(response)
        if isinstance(event, codec.FitProgress):
            # Admission is the transport's business (it gates the upload), not progress to show.
            if event.stage == "data_received" and self.source is not None:
                self.n_samples = event.points_received  # the dataset's rows, known now
                if self.labels is not None:
                    self.labels = np.empty(self.n_samples, dtype=np.int32)
            return None if event.stage == "admitted" else FitProgress.of(event, self.n_samples)
        if isinstance(event, codec.LabelsChunk) and self.labels is not None:
            self.labels[event.offset : event.offset + event.labels.size] = event.labels
        elif isinstance(event, codec.FitResult):
            self._result = event
        return None

    def result(self) -> FitResult:
        if self._result is None:
            raise CentroidalError("the server ended the Fit stream without a result")
        return FitResult.of(self._result, self.labels)


class PredictPlan:
    """The requests for one predict or transform, and the arrays filled from the answers."""

    def __init__(
        self,
        name: str,
        points: np.ndarray,
        version: int | None,
        options: codec.PredictOptions,
        n_clusters: int,
        chunk_bytes: int,
        response_budget: int,
        shared: codec.SharedRows | None = None,
    ) -> None:
        """shared: the points, already written into shared memory: requests name slices of
        it instead of carrying rows, and only the answer's size bounds a request."""
        self.name = name
        self.points = points
        self.shared = shared
        self.version = optional_int(version)
        # Labels travel in the narrowest type the model allows (at most 4 bytes each); the
        # caller still gets int32.
        self.options = codec.PredictOptions(
            options.return_distances, options.return_transform, narrow_labels=True
        )
        self.n_clusters = n_clusters
        self.n_samples = n_samples = points.shape[0]
        response_row_bytes = 4 + points.dtype.itemsize * (options.return_distances + n_clusters)
        if shared is None:
            self.rows = rows_per_chunk(chunk_bytes, points, response_row_bytes, response_budget=response_budget)
        else:
            self.rows = max(1, response_budget // response_row_bytes)
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
        """The serialised request for the rows from ``start``; the first names the model."""
        rows: np.ndarray | None = self.points[start : start + self.rows]
        shared = None
        if self.shared is not None:
            assert rows is not None
            row_bytes = self.points.shape[1] * self.points.dtype.itemsize
            shared = replace(self.shared, offset=self.shared.offset + start * row_bytes, rows=rows.shape[0])
            rows = None
        if start:
            return codec.serialize_predict_request(codec.PredictRequest(points=rows, shared=shared))
        return codec.serialize_predict_request(
            codec.PredictRequest(self.name, self.version, rows, self.options, shared)
        )

    def requests(self) -> Iterator[bytes]:
        return (self.request(start) for start in range(0, self.n_samples, self.rows))

    def store(self, response: pb.PredictResponse) -> None:
        answer = codec.decode_predict_response(response)
        offset, size = answer.offset, answer.labels.size
        self.labels[offset : offset + size] = answer.labels
        if self.distances is not None:
            if answer.distances is None:
                raise CentroidalError(f"model {self.name!r} answered without the distances asked for")
            self.distances[offset : offset + size] = answer.distances[:, 0]
        if self.transformed is not None:
            block = answer.transform
            if block is None or block.shape[1] != self.n_clusters:
                raise CentroidalError(
                    f"model {self.name!r} answered with "
                    f"{'no transform' if block is None else f'{block.shape[1]} clusters'}, "
                    f"expected {self.n_clusters} clusters"
                )
            self.transformed[offset : offset + size] = block
        self.answered += size

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
) -> codec.MiniBatchOpen:
    """The first message of a StreamMiniBatch stream."""
    create = None
    if n_clusters is not None:
        create = codec.MiniBatchConfig(
            n_clusters=int(n_clusters),
            init_size=int(init_size),
            reassignment_ratio=None if reassignment_ratio is None else float(reassignment_ratio),
            half_life=None if half_life is None else float(half_life),
            half_life_unit=codec.HALF_LIFE_UNITS.choice(half_life_unit, "half_life_unit"),
            seed=optional_int(seed),
            metric=codec.METRICS.choice(metric, "metric"),
        )
    return codec.MiniBatchOpen(name, create)


class QuantizePlan:
    """The QuantizeImage stream for an encoded image (bytes, or a file's path), and the
    quantised image gathered from the answers."""

    def __init__(
        self,
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
    ) -> None:
        if isinstance(image, bytes):
            data = image
        else:
            with open(image, "rb") as source:
                data = source.read()
        spec = codec.QuantizeSpec(
            n_colors=int(n_colors),
            seed=optional_int(seed),
            max_samples=int(max_samples),
            color_space=codec.COLOR_SPACES.choice(color_space, "color_space"),
            dither="floyd-steinberg" if dither else "none",
            output_format=codec.IMAGE_FORMATS.choice(_format_name(output_format), "output_format"),
            palette_model=palette_model,
            save_palette_as=save_palette_as,
        )
        # The spec goes alone, first: a refusal (every slot taken, a bad spec) comes before upload.
        self.requests = [_bytes(codec.encode_quantize_request(codec.QuantizeImageRequest(spec)))] + [
            _bytes(codec.encode_quantize_request(codec.QuantizeImageRequest(image=data[i : i + chunk_bytes])))
            for i in range(0, len(data), chunk_bytes)
        ]
        self._parts: list[bytes] = []
        self._summary: codec.QuantizeSummary | None = None

    def take(self, response: pb.QuantizeImageResponse) -> None:
        answer = codec.decode_quantize_response(response)
        self._parts.append(answer.image)
        if answer.summary is not None:
            self._summary = answer.summary

    def result(self) -> QuantizedImage:
        if self._summary is None:
            raise CentroidalError("the server ended QuantizeImage without a summary")
        return QuantizedImage.of(self._summary, b"".join(self._parts))


def _format_name(output_format: str) -> str:
    """The SDK takes "png", "jpeg", ... or "same"; the codec names formats as Pillow does."""
    return output_format if output_format == "same" else output_format.upper()


def _bytes(message: Any) -> bytes:
    serialized: bytes = message.SerializeToString()
    return serialized


# ---- model management -----------------------------------------------------------------


def get_model_request(name: str, version: int | None, include_centers: bool) -> bytes:
    return _bytes(codec.encode_get_model_request(
        codec.GetModelRequest(name, include_centers, optional_int(version))
    ))


def list_models_request(page_size: int, page_token: str) -> bytes:
    return _bytes(codec.encode_list_models_request(codec.ListModelsRequest(int(page_size), page_token)))


def delete_model_request(name: str, expected_version: int | None) -> bytes:
    return _bytes(codec.encode_delete_model_request(
        codec.DeleteModelRequest(name, optional_int(expected_version))
    ))


class Methods:
    """Every ClusteringService method on a channel (sync or aio), taking serialised requests
    and giving the answers as protobuf messages for the codec to read."""

    def __init__(self, channel: Any) -> None:
        def method(kind: str, name: str, answer: Any) -> Any:
            return getattr(channel, kind)(
                codec.method_path(name), request_serializer=bytes,
                response_deserializer=answer.FromString,
            )

        self.fit = method("stream_stream", "Fit", pb.FitResponse)
        self.predict = method("unary_unary", "Predict", pb.PredictResponse)
        self.predict_stream = method("stream_stream", "PredictStream", pb.PredictResponse)
        self.stream_mini_batch = method("stream_stream", "StreamMiniBatch", pb.MiniBatchAck)
        self.quantize_image = method("stream_stream", "QuantizeImage", pb.QuantizeImageResponse)
        self.get_model = method("unary_unary", "GetModel", pb.Model)
        self.list_models = method("unary_unary", "ListModels", pb.ListModelsResponse)
        self.delete_model = method("unary_unary", "DeleteModel", pb.DeleteModelResponse)
        self.evaluate = method("stream_unary", "Evaluate", pb.EvaluateResponse)
        self.suggest_k = method("stream_stream", "SuggestK", pb.SuggestKResponse)
        self.predict_dataset = method("unary_stream", "PredictDataset", pb.PredictDatasetResponse)
