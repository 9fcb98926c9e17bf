"""Predict on the wire: requests with their rows, and answers serialised by hand."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from centroidal.v1 import clustering_pb2 as pb

from .arrays import decode_labels, label_payload, matrix_field, matrix_or_none, with_matrix
from .wire import field_header, field_number, optional, set_optional


@dataclass(frozen=True)
class PredictOptions:
    return_distances: bool = False
    return_transform: bool = False
    narrow_labels: bool = False


def decode_predict_options(message: pb.PredictOptions) -> PredictOptions:
    return PredictOptions(message.return_distances, message.return_transform, message.narrow_labels)


def encode_predict_options(options: PredictOptions) -> pb.PredictOptions:
    return pb.PredictOptions(
        return_distances=options.return_distances, return_transform=options.return_transform,
        narrow_labels=options.narrow_labels,
    )


@dataclass(frozen=True)
class PredictRequest:
    """points : ndarray of shape (rows, n_features), or None (a stream message without rows)."""

    model: str = ""
    version: int | None = None
    points: np.ndarray | None = None
    options: PredictOptions | None = None


def decode_predict_request(message: pb.PredictRequest) -> PredictRequest:
    return PredictRequest(
        model=message.model,
        version=optional(message, "version"),
        points=matrix_or_none(message, "points", "points"),
        options=decode_predict_options(message.options) if message.HasField("options") else None,
    )


def serialize_predict_request(request: PredictRequest) -> bytes:
    """A PredictRequest's bytes; the rows are appended without protobuf's copy."""
    head = pb.PredictRequest(model=request.model)
    set_optional(head, version=request.version)
    if request.options is not None:
        head.options.CopyFrom(encode_predict_options(request.options))
    return with_matrix(head, "points", request.points)


@dataclass(frozen=True)
class PredictResponse:
    """labels (n,) int32, or uint8 or uint16 when narrow labels were asked for; distances
    (n, 1) and transform (n, n_clusters) when asked for."""

    version: int
    offset: int
    labels: np.ndarray
    distances: np.ndarray | None = None
    transform: np.ndarray | None = None


def decode_predict_response(message: pb.PredictResponse) -> PredictResponse:
    return PredictResponse(
        version=int(message.version),
        offset=int(message.offset),
        labels=decode_labels(message.labels, width=message.label_bytes),
        distances=matrix_or_none(message, "distances", "distances"),
        transform=matrix_or_none(message, "transform", "transform"),
    )


_RESPONSE_LABELS = field_number(pb.PredictResponse, "labels")
_RESPONSE_DISTANCES = field_number(pb.PredictResponse, "distances")
_RESPONSE_TRANSFORM = field_number(pb.PredictResponse, "transform")


def serialize_predict_response(response: PredictResponse) -> bytes:
    """A PredictResponse's bytes, written by hand: the labels and arrays go in with one copy
    each instead of protobuf's slower one. Labels keep their type when it is one of
    LABEL_TYPES (label_bytes says which)."""
    width, labels = label_payload(response.labels)
    parts: list[bytes | memoryview] = [
        pb.PredictResponse(version=response.version, offset=response.offset, label_bytes=width)
        .SerializeToString(),
        field_header(_RESPONSE_LABELS, labels.nbytes),
        labels,
    ]
    for number, array in ((_RESPONSE_DISTANCES, response.distances), (_RESPONSE_TRANSFORM, response.transform)):
        if array is not None:
            parts += matrix_field(number, array)
    return b"".join(parts)
