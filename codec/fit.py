"""Fit on the wire: the spec, the rows, the progress events, the labels and the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from centroidal.v1 import clustering_pb2 as pb

from .datasets import DatasetSource, decode_dataset_source, encode_dataset_source
from .arrays import (
    decode_labels,
    encode_labels,
    encode_vector,
    matrix_or_none,
    rows_in_place,
    vector_or_none,
    with_matrix,
)
from .enums import STAGES
from .models import KMeansConfig, Model, decode_kmeans_config, decode_model, encode_kmeans_config, encode_model
from .wire import READ_IN_PLACE_BYTES, optional, set_optional


@dataclass(frozen=True)
class FitSpec:
    model: str
    config: KMeansConfig
    n_samples: int = 0  # 0: not declared
    expected_version: int | None = None
    return_labels: bool = False
    source: DatasetSource | None = None  # rows the server reads instead of the stream's


def decode_fit_spec(message: pb.FitSpec, field: str = "spec") -> FitSpec:
    return FitSpec(
        model=message.model,
        config=decode_kmeans_config(message.config, f"{field}.config"),
        n_samples=int(message.n_samples),
        expected_version=optional(message, "expected_version"),
        return_labels=message.return_labels,
        source=decode_dataset_source(message.source, f"{field}.source") if message.HasField("source") else None,
    )


def encode_fit_spec(spec: FitSpec) -> pb.FitSpec:
    message = pb.FitSpec(
        model=spec.model, config=encode_kmeans_config(spec.config), n_samples=spec.n_samples,
        return_labels=spec.return_labels,
    )
    set_optional(message, expected_version=spec.expected_version)
    if spec.source is not None:
        message.source.CopyFrom(encode_dataset_source(spec.source))
    return message


@dataclass(frozen=True)
class FitChunk:
    """One FitRequest: the spec (first message only), rows, and their weights.

    points : ndarray of shape (rows, n_features), or None
    sample_weight : ndarray of shape (rows,), or None
    """

    spec: FitSpec | None = None
    points: np.ndarray | None = None
    sample_weight: np.ndarray | None = None


def decode_fit_request(message: pb.FitRequest) -> FitChunk:
    return FitChunk(
        spec=decode_fit_spec(message.spec) if message.HasField("spec") else None,
        points=matrix_or_none(message, "points", "points"),
        sample_weight=vector_or_none(message, "sample_weight", "sample_weight"),
    )


def read_fit_request(data: bytes, in_place_from: int = READ_IN_PLACE_BYTES) -> FitChunk:
    """``decode_fit_request`` of the message in ``data``, read without protobuf for a chunk of
    rows: its arrays are views of ``data`` instead of two copies of it (protobuf's parse, then
    each read of a bytes field). Anything else goes through protobuf (arrays.rows_in_place)."""
    rows = rows_in_place(data, pb.FitRequest, in_place_from, "sample_weight")
    if rows is None:
        return decode_fit_request(pb.FitRequest.FromString(data))
    return FitChunk(points=rows[0], sample_weight=rows[1])


def serialize_fit_request(chunk: FitChunk) -> bytes:
    """A FitRequest's bytes; the rows are appended without protobuf's copy."""
    head = pb.FitRequest()
    if chunk.spec is not None:
        head.spec.CopyFrom(encode_fit_spec(chunk.spec))
    if chunk.sample_weight is not None:
        head.sample_weight.CopyFrom(encode_vector(chunk.sample_weight))
    return with_matrix(head, "points", chunk.points)


@dataclass(frozen=True)
class FitProgress:
    """One progress event of a fit; stage is a STAGES name.

    In an "iteration" event, distances_skipped is the share of point-to-center distances the
    server's bounds let it skip (0 to 1). In a SuggestK, n_clusters is the k being fitted.
    """

    stage: str
    restart: int = 0
    n_init: int = 0
    iteration: int = 0
    inertia: float = 0.0
    center_shift: float = 0.0
    points_received: int = 0
    elapsed_seconds: float = 0.0
    n_clusters: int = 0
    distances_skipped: float = 0.0


def decode_fit_progress(message: pb.FitProgress) -> FitProgress:
    return FitProgress(
        stage=STAGES.name(message.stage, "progress.stage", lenient=True),
        restart=int(message.restart),
        n_init=int(message.n_init),
        iteration=int(message.iteration),
        inertia=float(message.inertia),
        center_shift=float(message.center_shift),
        points_received=int(message.points_received),
        elapsed_seconds=float(message.elapsed_seconds),
        n_clusters=int(message.n_clusters),
        distances_skipped=float(message.distances_skipped),
    )


def encode_fit_progress(progress: FitProgress) -> pb.FitProgress:
    return pb.FitProgress(
        stage=STAGES.number(progress.stage),
        restart=progress.restart,
        n_init=progress.n_init,
        iteration=progress.iteration,
        inertia=progress.inertia,
        center_shift=progress.center_shift,
        points_received=progress.points_received,
        elapsed_seconds=progress.elapsed_seconds,
        n_clusters=progress.n_clusters,
        distances_skipped=progress.distances_skipped,
    )


@dataclass(frozen=True)
class LabelsChunk:
    """labels : ndarray of shape (n,), int32, for rows offset..offset+n."""

    offset: int
    labels: np.ndarray


def decode_labels_chunk(message: pb.LabelsChunk) -> LabelsChunk:
    return LabelsChunk(int(message.offset), decode_labels(message.labels, "labels.labels"))


def encode_labels_chunk(chunk: LabelsChunk) -> pb.LabelsChunk:
    return pb.LabelsChunk(offset=chunk.offset, labels=encode_labels(chunk.labels))


@dataclass(frozen=True)
class FitResult:
    """A finished, stored fit: the model as committed, and how the fit went."""

    model: Model
    n_samples: int
    best_restart: int
    elapsed_seconds: float


def decode_fit_result(message: pb.FitResult) -> FitResult:
    return FitResult(
        decode_model(message.model, "result.model"), int(message.n_samples),
        int(message.best_restart), float(message.elapsed_seconds),
    )


def encode_fit_result(result: FitResult) -> pb.FitResult:
    return pb.FitResult(
        model=encode_model(result.model), n_samples=result.n_samples,
        best_restart=result.best_restart, elapsed_seconds=result.elapsed_seconds,
    )


FitEvent = Union[FitProgress, LabelsChunk, FitResult]


def decode_fit_response(message: pb.FitResponse) -> FitEvent | None:
    """The event a FitResponse carries; None for one this SDK does not know."""
    kind = message.WhichOneof("event")
    if kind == "progress":
        return decode_fit_progress(message.progress)
    if kind == "labels":
        return decode_labels_chunk(message.labels)
    if kind == "result":
        return decode_fit_result(message.result)
    return None


def encode_fit_response(event: FitEvent) -> pb.FitResponse:
    if isinstance(event, FitProgress):
        return pb.FitResponse(progress=encode_fit_progress(event))
    if isinstance(event, LabelsChunk):
        return pb.FitResponse(labels=encode_labels_chunk(event))
    return pb.FitResponse(result=encode_fit_result(event))
