"""All conversion between numpy and the v1 messages on the SDK side."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import Message

from centroidal.v1 import clustering_pb2 as pb

_TO_WIRE: dict[np.dtype, int] = {
    np.dtype(np.float32): pb.DTYPE_FLOAT32,
    np.dtype(np.float64): pb.DTYPE_FLOAT64,
}
_FROM_WIRE: dict[int, np.dtype] = {pb.DTYPE_FLOAT32: np.dtype("<f4"), pb.DTYPE_FLOAT64: np.dtype("<f8")}
INIT_METHODS = {
    "k-means++": pb.INIT_METHOD_KMEANS_PLUS_PLUS,
    "random": pb.INIT_METHOD_RANDOM,
}
_INIT_NAMES = {
    pb.INIT_METHOD_UNSPECIFIED: "k-means++",
    pb.INIT_METHOD_KMEANS_PLUS_PLUS: "k-means++",
    pb.INIT_METHOD_RANDOM: "random",
    pb.INIT_METHOD_GIVEN: "given",
}
_KINDS = {
    pb.MODEL_KIND_KMEANS: "kmeans",
    pb.MODEL_KIND_MINIBATCH_KMEANS: "minibatch-kmeans",
    pb.MODEL_KIND_PALETTE: "palette",
}


def as_points(X: Any, name: str = "X") -> np.ndarray:
    """X as a C-contiguous 2-D float32 or float64 array; float32 is never widened."""
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {array.shape}")
    if array.dtype not in _TO_WIRE:
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
        array = array.astype(np.float64)
    return np.ascontiguousarray(array)


def encode_matrix(array: np.ndarray) -> pb.Matrix:
    """array : ndarray of shape (rows, cols), float32 or float64."""
    return pb.Matrix(
        dtype=_TO_WIRE[array.dtype.newbyteorder("=")],
        rows=array.shape[0],
        cols=array.shape[1],
        data=np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes(),
    )


# Serialising a freshly built message that holds a large bytes field costs protobuf (upb)
# about 1 ms per 512 KiB here, 25 times a plain copy. Requests that carry bulk data are
# encoded by hand instead: the small fields by protobuf, the array appended as its own
# length-delimited Matrix field, which is the same wire format (a parser merges the parts).
_MATRIX_DATA = pb.Matrix.DESCRIPTOR.fields_by_name["data"].number
_REQUEST_BATCH = pb.MiniBatchRequest.DESCRIPTOR.fields_by_name["batch"].number


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field_header(number: int, length: int) -> bytes:
    """Tag and length of a length-delimited (wire type 2) field."""
    return _varint(number << 3 | 2) + _varint(length)


def _matrix_parts(array: np.ndarray) -> tuple[bytes, memoryview]:
    """A Matrix message for ``array`` as its serialised head and its payload."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    payload = little.data.cast("B") if little.size else memoryview(b"")
    head = pb.Matrix(
        dtype=_TO_WIRE[array.dtype.newbyteorder("=")], rows=array.shape[0], cols=array.shape[1]
    ).SerializeToString() + _field_header(_MATRIX_DATA, payload.nbytes)
    return head, payload


def encode_with_matrix(head: Message, field: str, array: np.ndarray) -> bytes:
    """``head`` serialised with ``array`` as its Matrix field ``field`` (unset in head)."""
    matrix_head, payload = _matrix_parts(array)
    number = head.DESCRIPTOR.fields_by_name[field].number
    return b"".join(
        (
            head.SerializeToString(),
            _field_header(number, len(matrix_head) + payload.nbytes),
            matrix_head,
            payload,
        )
    )


def encode_batch_request(
    producer_id: str, sequence: int, points: np.ndarray, weights: np.ndarray | None
) -> bytes:
    """A serialised MiniBatchRequest carrying one batch; ``points`` from ``as_points``."""
    head = pb.MiniBatch(producer_id=producer_id, sequence=sequence)
    if weights is not None:
        head.sample_weight.CopyFrom(encode_weights(weights))
    batch = encode_with_matrix(head, "points", points)
    return _field_header(_REQUEST_BATCH, len(batch)) + batch


def decode_matrix(message: pb.Matrix) -> np.ndarray:
    """A writable (rows, cols) array in native byte order."""
    dtype = _FROM_WIRE[message.dtype]
    flat = np.frombuffer(message.data, dtype=dtype)
    return flat.reshape(int(message.rows), int(message.cols)).astype(dtype.newbyteorder("="))


def encode_weights(weights: np.ndarray) -> pb.Vector:
    return pb.Vector(dtype=pb.DTYPE_FLOAT64, data=np.ascontiguousarray(weights, dtype="<f8").tobytes())


def decode_labels(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i4").astype(np.int32)


@dataclass(frozen=True)
class ModelInfo:
    """A stored model as the server describes it.

    centers : ndarray of shape (n_clusters, n_features), or None when not asked for
    """

    name: str
    version: int
    kind: str
    n_clusters: int
    n_features: int
    dtype: np.dtype
    inertia: float
    n_iter: int
    n_samples_seen: int
    created_at: dt.datetime
    updated_at: dt.datetime
    config: dict[str, Any] = field(default_factory=dict)
    centers: np.ndarray | None = None
    # The newest version on disk: below ``version`` while a streamed model awaits a checkpoint.
    durable_version: int = 0
    n_batches: int = 0
    init_points_buffered: int = 0


_HALF_LIFE_UNITS = {pb.MiniBatchConfig.HALF_LIFE_UNIT_POINTS: "points"}


def _config(message: pb.Model) -> dict[str, Any]:
    if message.kind == pb.MODEL_KIND_MINIBATCH_KMEANS:
        mini = message.minibatch
        return {
            "n_clusters": int(mini.n_clusters),
            "init_size": int(mini.init_size),
            "reassignment_ratio": float(mini.reassignment_ratio),
            "half_life": float(mini.half_life) if mini.HasField("half_life") else None,
            "half_life_unit": _HALF_LIFE_UNITS.get(mini.half_life_unit, "batches"),
            "seed": int(mini.seed) if mini.HasField("seed") else None,
        }
    config = message.config
    return {
        "n_clusters": int(config.n_clusters),
        "init": _INIT_NAMES.get(config.init, "k-means++"),
        "n_init": int(config.n_init),
        "max_iter": int(config.max_iter),
        "tol": float(config.tol),
        "seed": int(config.seed) if config.HasField("seed") else None,
    }


def model_info(message: pb.Model) -> ModelInfo:
    return ModelInfo(
        name=message.name,
        version=int(message.version),
        kind=_KINDS.get(message.kind, "unknown"),
        n_clusters=int(message.n_clusters),
        n_features=int(message.n_features),
        dtype=_FROM_WIRE.get(message.dtype, np.dtype(np.float64)).newbyteorder("="),
        inertia=float(message.inertia),
        n_iter=int(message.n_iter),
        n_samples_seen=int(message.n_samples_seen),
        created_at=message.created_at.ToDatetime(tzinfo=dt.timezone.utc),
        updated_at=message.updated_at.ToDatetime(tzinfo=dt.timezone.utc),
        config=_config(message),
        centers=decode_matrix(message.centers) if message.HasField("centers") else None,
        durable_version=int(message.durable_version),
        n_batches=int(message.n_batches),
        init_points_buffered=int(message.init_points_buffered),
    )


@dataclass(frozen=True)
class FitProgress:
    """One progress event of a fit.

    stage is "uploading", "data_received", "seeding", "initialized", "iteration"
    or "restart_done".
    """

    stage: str
    restart: int = 0
    n_init: int = 0
    iteration: int = 0
    inertia: float = 0.0
    center_shift: float = 0.0
    points_received: int = 0
    points_total: int = 0
    elapsed_seconds: float = 0.0


_STAGES = {
    pb.FitProgress.STAGE_DATA_RECEIVED: "data_received",
    pb.FitProgress.STAGE_SEEDING: "seeding",
    pb.FitProgress.STAGE_INITIALIZED: "initialized",
    pb.FitProgress.STAGE_ITERATION: "iteration",
    pb.FitProgress.STAGE_RESTART_DONE: "restart_done",
}


def fit_progress(message: pb.FitProgress, points_total: int) -> FitProgress:
    return FitProgress(
        stage=_STAGES.get(message.stage, "unknown"),
        restart=int(message.restart),
        n_init=int(message.n_init),
        iteration=int(message.iteration),
        inertia=float(message.inertia),
        center_shift=float(message.center_shift),
        points_received=int(message.points_received),
        points_total=points_total,
        elapsed_seconds=float(message.elapsed_seconds),
    )


@dataclass(frozen=True)
class FitResult:
    """A finished remote fit.

    labels : ndarray of shape (n_samples,), int32, when return_labels was set
    """

    model: ModelInfo
    n_samples: int
    best_restart: int
    elapsed_seconds: float
    labels: np.ndarray | None = None

    @property
    def centers(self) -> np.ndarray:
        assert self.model.centers is not None
        return self.model.centers

    @property
    def inertia(self) -> float:
        return self.model.inertia

    @property
    def n_iter(self) -> int:
        return self.model.n_iter

    @property
    def version(self) -> int:
        return self.model.version


_FORMAT_NAMES = {
    pb.IMAGE_FORMAT_PNG: "PNG",
    pb.IMAGE_FORMAT_JPEG: "JPEG",
    pb.IMAGE_FORMAT_WEBP: "WEBP",
    pb.IMAGE_FORMAT_BMP: "BMP",
    pb.IMAGE_FORMAT_TIFF: "TIFF",
    pb.IMAGE_FORMAT_GIF: "GIF",
}


@dataclass(frozen=True)
class QuantizedImage:
    """A quantised image and what the server measured.

    palette : ndarray of shape (n_colors, 3), uint8 RGB
    pixel_counts : ndarray of shape (n_colors,), int64
    """

    image: bytes
    format: str
    palette: np.ndarray
    pixel_counts: np.ndarray
    mse: float
    psnr: float
    width: int
    height: int
    notes: tuple[str, ...]
    saved_version: int


def quantized_image(image: bytes, summary: pb.QuantizeSummary) -> QuantizedImage:
    return QuantizedImage(
        image=image,
        format=_FORMAT_NAMES.get(summary.format, "PNG"),
        palette=np.frombuffer(summary.palette, dtype=np.uint8).reshape(-1, 3).copy(),
        pixel_counts=np.array(summary.pixel_counts, dtype=np.int64),
        mse=float(summary.mse),
        psnr=float(summary.psnr),
        width=int(summary.width),
        height=int(summary.height),
        notes=tuple(summary.notes),
        saved_version=int(summary.saved_version),
    )
