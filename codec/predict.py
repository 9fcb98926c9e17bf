"""Predict on the wire: requests with their rows, and answers serialised by hand."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from centroidal.v1 import clustering_pb2 as pb

from .arrays import (
    decode_labels,
    dtype_number,
    dtype_of,
    label_payload,
    matrix_field,
    matrix_fields,
    matrix_of,
    matrix_or_none,
    with_matrix,
)
from .wire import (
    LEN,
    READ_IN_PLACE_BYTES,
    VARINT,
    WireError,
    field_header,
    field_number,
    optional,
    read_fields,
    set_optional,
    text_of,
    varint,
)


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
class SharedRows:
    """Rows named by a shared-memory object on the server's host: ``rows`` x ``cols`` of
    ``dtype`` from byte ``offset`` of object ``name`` (as the client wrote it)."""

    name: str
    offset: int
    dtype: np.dtype
    rows: int
    cols: int

    @property
    def nbytes(self) -> int:
        return self.rows * self.cols * self.dtype.itemsize


@dataclass(frozen=True)
class PredictRequest:
    """points : ndarray of shape (rows, n_features), or None (a stream message without rows,
    or one whose rows are ``shared``)."""

    model: str = ""
    version: int | None = None
    points: np.ndarray | None = None
    options: PredictOptions | None = None
    shared: SharedRows | None = None


def decode_predict_request(message: pb.PredictRequest) -> PredictRequest:
    """With points_shared, points gives only the shape unless it carries data too (which the
    server refuses, but the message still says)."""
    shared = shared_rows_of(message, "points") if message.HasField("points_shared") else None
    return PredictRequest(
        model=message.model,
        version=optional(message, "version"),
        points=None if shared is not None and not message.points.data else matrix_or_none(message, "points", "points"),
        options=decode_predict_options(message.options) if message.HasField("options") else None,
        shared=shared,
    )


_REQUEST_FIELDS = {field_number(pb.PredictRequest, name): kind for name, kind in
                   (("model", LEN), ("version", VARINT), ("points", LEN), ("options", LEN))}
_MODEL, _VERSION, _POINTS, _OPTIONS = (field_number(pb.PredictRequest, name) for name in
                                       ("model", "version", "points", "options"))
_OPTION_FIELDS = {field_number(pb.PredictOptions, name): VARINT for name in
                  ("return_distances", "return_transform", "narrow_labels")}


def read_predict_request(data: bytes, in_place_from: int = READ_IN_PLACE_BYTES) -> PredictRequest:
    """``decode_predict_request`` of the message in ``data``, read without protobuf: the
    rows are a view of ``data`` instead of two copies of it. Anything past the usual shape
    (shared rows, a field set twice, bytes that are not the message) goes through protobuf,
    whose DecodeError says why. Messages under ``in_place_from`` bytes go through protobuf
    too, which reads a small one faster."""
    fields = read_fields(memoryview(data), _REQUEST_FIELDS) if len(data) >= in_place_from else None
    if fields is None:
        return decode_predict_request(pb.PredictRequest.FromString(data))
    points = matrix_fields(fields[_POINTS]) if _POINTS in fields else None
    options = read_fields(fields[_OPTIONS], _OPTION_FIELDS) if _OPTIONS in fields else None
    model = text_of(fields.get(_MODEL, b""))
    if model is None or (_POINTS in fields and points is None) or (_OPTIONS in fields and options is None):
        return decode_predict_request(pb.PredictRequest.FromString(data))
    return PredictRequest(
        model=model,
        version=fields.get(_VERSION),
        points=None if points is None else matrix_of(points, "points"),
        options=None if options is None else PredictOptions(*(bool(options.get(number, 0)) for number in _OPTION_FIELDS)),
    )


def shared_rows_of(message: pb.PredictRequest | pb.MiniBatch, field: str) -> SharedRows:
    """The rows a message's points_shared names, their shape and dtype from its points
    (``field`` is the points' name in errors)."""
    points = message.points
    if not message.HasField("points"):
        raise WireError(field, f"{field}_shared needs {field} to give dtype, rows and cols")
    dtype = dtype_of(points.dtype, field)
    if points.cols < 1:
        raise WireError(f"{field}.cols", f"{field}.cols must be at least 1, got {points.cols}")
    region = message.points_shared
    return SharedRows(region.name, int(region.offset), dtype, int(points.rows), int(points.cols))


def serialize_predict_request(request: PredictRequest) -> bytes:
    """A PredictRequest's bytes; the rows are appended without protobuf's copy."""
    head = pb.PredictRequest(model=request.model)
    set_optional(head, version=request.version)
    if request.options is not None:
        head.options.CopyFrom(encode_predict_options(request.options))
    if request.shared is not None:
        shared = request.shared
        head.points_shared.CopyFrom(pb.SharedRows(name=shared.name, offset=shared.offset))
        if request.points is None:
            head.points.CopyFrom(pb.Matrix(dtype=dtype_number(shared.dtype), rows=shared.rows, cols=shared.cols))
            written: bytes = head.SerializeToString()
            return written
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
# The small fields' tags (varints, wire type 0), written by hand like the rest.
_VERSION_TAG, _OFFSET_TAG, _LABEL_BYTES_TAG = (
    varint(field_number(pb.PredictResponse, name) << 3) for name in ("version", "offset", "label_bytes")
)


def serialize_predict_response(response: PredictResponse) -> bytes:
    """A PredictResponse's bytes, written by hand: the labels and arrays go in with one copy
    each instead of protobuf's slower one. Labels keep their type when it is one of
    LABEL_TYPES (label_bytes says which)."""
    width, labels = label_payload(response.labels)
    head = _VERSION_TAG + varint(response.version) if response.version else b""
    if response.offset:
        head += _OFFSET_TAG + varint(response.offset)
    parts: list[bytes | memoryview] = [
        head + _LABEL_BYTES_TAG + varint(width) + field_header(_RESPONSE_LABELS, labels.nbytes), labels,
    ]
    for number, array in ((_RESPONSE_DISTANCES, response.distances), (_RESPONSE_TRANSFORM, response.transform)):
        if array is not None:
            parts += matrix_field(number, array)
    return b"".join(parts)
