"""The v1 contract in native Python: every enum table, arrays as numpy, each message as a dataclass.

Hand-written beside the generated stubs and shared by the SDK and the server,
so no table or conversion is written twice. It needs only numpy and protobuf.

- Enum tables map wire numbers to the names both sides use ("k-means++",
  "minibatch-kmeans", "lab", ...). An unset (0) enum reads as its default.
- ``decode_*`` turns a message into a frozen dataclass. Arrays are read with
  ``frombuffer``: read-only views of the message's bytes, in native byte order
  where that needs no copy. A malformed array raises ``WireError`` naming the
  field's path, such as ``batch.points.data``.
- ``encode_*`` does the reverse. ``serialize_with_matrix`` writes a request's
  bulk array as its own length-delimited field, which skips protobuf's copy
  of large byte strings (the same bytes a parser reads).

``MESSAGES`` lists every message's pair of functions; a test round-trips each
one with every field set, so a field added to the .proto and forgotten here
fails it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
from google.protobuf.message import Message

from . import clustering_pb2 as pb

class WireError(ValueError):
    """A message that does not describe a valid array or value; ``field`` is its path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class EnumTable:
    """Wire numbers to names and back; 0 (unset) reads as ``default``."""

    def __init__(self, enum_name: str, names: Mapping[int, str], default: str) -> None:
        self.enum_name = enum_name
        self.names = dict(names)
        self.numbers = {name: number for number, name in self.names.items()}
        self.default = default

    def name(self, number: int, field: str, *, lenient: bool = False) -> str:
        """The name of a wire number. An unknown number is refused, or, when ``lenient`` (for
        answers from a newer server), read as "unknown"."""
        if number == 0:
            return self.default
        try:
            return self.names[number]
        except KeyError:
            if lenient:
                return "unknown"
            raise WireError(field, f"{field}={number} is not a known {self.enum_name}") from None

    def number(self, name: str) -> int:
        try:
            return self.numbers[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self.numbers)
            raise ValueError(f"{name!r} is not a {self.enum_name}; use one of {known}") from None


DTYPES: dict[int, np.dtype] = {pb.DTYPE_FLOAT32: np.dtype("<f4"), pb.DTYPE_FLOAT64: np.dtype("<f8")}
_DTYPE_NUMBERS = {np.dtype(np.float32): pb.DTYPE_FLOAT32, np.dtype(np.float64): pb.DTYPE_FLOAT64}

ALGORITHMS = EnumTable(
    "Algorithm", {pb.ALGORITHM_KMEANS: "kmeans", pb.ALGORITHM_SPECTRAL: "spectral"}, "kmeans"
)
INIT_METHODS = EnumTable(
    "InitMethod",
    {
        pb.INIT_METHOD_KMEANS_PLUS_PLUS: "k-means++",
        pb.INIT_METHOD_RANDOM: "random",
        pb.INIT_METHOD_GIVEN: "given",
    },
    "k-means++",
)
METRICS = EnumTable(
    "Metric", {pb.METRIC_EUCLIDEAN: "euclidean", pb.METRIC_COSINE: "cosine"}, "euclidean"
)
MODEL_KINDS = EnumTable(
    "ModelKind",
    {
        pb.MODEL_KIND_KMEANS: "kmeans",
        pb.MODEL_KIND_MINIBATCH_KMEANS: "minibatch-kmeans",
        pb.MODEL_KIND_PALETTE: "palette",
        pb.MODEL_KIND_SPECTRAL: "spectral",
    },
    "unknown",
)
STAGES = EnumTable(
    "FitProgress.Stage",
    {
        pb.FitProgress.STAGE_DATA_RECEIVED: "data_received",
        pb.FitProgress.STAGE_INITIALIZED: "initialized",
        pb.FitProgress.STAGE_ITERATION: "iteration",
        pb.FitProgress.STAGE_RESTART_DONE: "restart_done",
        pb.FitProgress.STAGE_SEEDING: "seeding",
        pb.FitProgress.STAGE_ADMITTED: "admitted",
        pb.FitProgress.STAGE_SCORING: "scoring",
    },
    "unknown",
)
HALF_LIFE_UNITS = EnumTable(
    "MiniBatchConfig.HalfLifeUnit",
    {
        pb.MiniBatchConfig.HALF_LIFE_UNIT_BATCHES: "batches",
        pb.MiniBatchConfig.HALF_LIFE_UNIT_POINTS: "points",
    },
    "batches",
)
COLOR_SPACES = EnumTable(
    "ColorSpace", {pb.COLOR_SPACE_RGB: "rgb", pb.COLOR_SPACE_LAB: "lab"}, "rgb"
)
DITHERS = EnumTable(
    "Dither", {pb.DITHER_NONE: "none", pb.DITHER_FLOYD_STEINBERG: "floyd-steinberg"}, "none"
)
# Names are Pillow's format names; "same" is the input's format.
IMAGE_FORMATS = EnumTable(
    "ImageFormat",
    {
        pb.IMAGE_FORMAT_PNG: "PNG",
        pb.IMAGE_FORMAT_JPEG: "JPEG",
        pb.IMAGE_FORMAT_WEBP: "WEBP",
        pb.IMAGE_FORMAT_SAME_AS_INPUT: "same",
        pb.IMAGE_FORMAT_BMP: "BMP",
        pb.IMAGE_FORMAT_TIFF: "TIFF",
        pb.IMAGE_FORMAT_GIF: "GIF",
    },
    "PNG",
)
ENUM_TABLES: dict[str, EnumTable] = {
    table.enum_name: table
    for table in (
        ALGORITHMS, INIT_METHODS, MODEL_KINDS, STAGES, HALF_LIFE_UNITS, COLOR_SPACES, DITHERS,
        IMAGE_FORMATS, METRICS,
    )
}


# ---- arrays ---------------------------------------------------------------------------


def dtype_of(number: int, field: str) -> np.dtype:
    try:
        return DTYPES[number]
    except KeyError:
        name = pb.DType.Name(number) if number in pb.DType.values() else str(number)
        raise WireError(
            f"{field}.dtype", f"{field}.dtype must be DTYPE_FLOAT32 or DTYPE_FLOAT64, got {name}"
        ) from None


def dtype_number(dtype: np.dtype) -> int:
    """The wire DType of a float32 or float64 numpy dtype, in either byte order."""
    return _DTYPE_NUMBERS[np.dtype(dtype).newbyteorder("=")]


def _native(array: np.ndarray) -> np.ndarray:
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def decode_matrix(message: pb.Matrix, field: str) -> np.ndarray:
    """A (rows, cols) view of a Matrix's bytes, read-only; checks dtype, cols and byte count."""
    dtype = dtype_of(message.dtype, field)
    rows, cols = int(message.rows), int(message.cols)
    if cols < 1:
        raise WireError(f"{field}.cols", f"{field}.cols must be at least 1, got {cols}")
    expected = rows * cols * dtype.itemsize
    data = message.data  # each read of a bytes field copies it: read it once
    if len(data) != expected:
        raise WireError(
            f"{field}.data",
            f"{field}.data has {len(data)} bytes but rows={rows} x cols={cols} of "
            f"{dtype.name} needs {expected}",
        )
    return _native(np.frombuffer(data, dtype=dtype).reshape(rows, cols))


def encode_matrix(array: np.ndarray) -> pb.Matrix:
    """array : ndarray of shape (rows, cols), float32 or float64."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return pb.Matrix(
        dtype=dtype_number(array.dtype), rows=array.shape[0], cols=array.shape[1],
        data=little.tobytes(),
    )


def decode_vector(message: pb.Vector, field: str) -> np.ndarray:
    """A (length,) view of a Vector's bytes, read-only."""
    dtype = dtype_of(message.dtype, field)
    data = message.data
    if len(data) % dtype.itemsize:
        raise WireError(
            f"{field}.data", f"{field}.data has {len(data)} bytes, not a whole number of {dtype.name}"
        )
    return _native(np.frombuffer(data, dtype=dtype))


def encode_vector(values: np.ndarray) -> pb.Vector:
    """values : ndarray of shape (length,), float32 or float64."""
    little = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    return pb.Vector(dtype=dtype_number(values.dtype), data=little.tobytes())


# Label types by their width in bytes: int32 everywhere, narrower in Predict on request.
LABEL_TYPES = {1: np.dtype("u1"), 2: np.dtype("<u2"), 4: np.dtype("<i4")}


def narrowest_label_type(n_clusters: int) -> np.dtype:
    """The narrowest label type that holds every index below n_clusters."""
    for width in (1, 2):
        if n_clusters <= 1 << (8 * width):
            return LABEL_TYPES[width]
    return LABEL_TYPES[4]


def decode_labels(data: bytes, field: str = "labels", width: int = 4) -> np.ndarray:
    """Little-endian labels of ``width`` bytes each (1: uint8, 2: uint16, 4 or 0: int32) as a
    (n,) array of that type in native byte order."""
    dtype = LABEL_TYPES.get(width or 4)
    if dtype is None:
        raise WireError("label_bytes", f"label_bytes must be 1, 2 or 4, got {width}")
    if len(data) % dtype.itemsize:
        raise WireError(field, f"{field} has {len(data)} bytes, not a whole number of {dtype.itemsize}-byte labels")
    return _native(np.frombuffer(data, dtype=dtype))


def encode_labels(labels: np.ndarray) -> bytes:
    return np.ascontiguousarray(labels, dtype="<i4").tobytes()


def decode_palette(data: bytes, field: str = "palette") -> np.ndarray:
    """n_colors x 3 uint8 RGB."""
    if len(data) % 3:
        raise WireError(field, f"{field} has {len(data)} bytes, not n_colors x 3")
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)


# ---- bulk requests, hand-encoded ------------------------------------------------------

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
        dtype=dtype_number(array.dtype), rows=array.shape[0], cols=array.shape[1]
    ).SerializeToString() + _field_header(_MATRIX_DATA, payload.nbytes)
    return head, payload


def serialize_with_matrix(head: Message, field: str, array: np.ndarray) -> bytes:
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


def serialize_batch_request(
    producer_id: str, sequence: int, points: np.ndarray, weights: np.ndarray | None
) -> bytes:
    """A serialised MiniBatchRequest carrying one batch."""
    head = pb.MiniBatch(producer_id=producer_id, sequence=sequence)
    if weights is not None:
        head.sample_weight.CopyFrom(encode_vector(weights))
    batch = serialize_with_matrix(head, "points", points)
    return _field_header(_REQUEST_BATCH, len(batch)) + batch


# ---- messages -------------------------------------------------------------------------


def _optional(message: Message, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _matrix_or_none(message: Message, name: str, field: str) -> np.ndarray | None:
    return decode_matrix(getattr(message, name), field) if message.HasField(name) else None


@dataclass(frozen=True)
class KMeansConfig:
    """init_centers : ndarray of shape (n_clusters, n_features), or None."""

    n_clusters: int = 0
    algorithm: str = "kmeans"
    init: str = "k-means++"
    init_centers: np.ndarray | None = None
    n_init: int = 0  # 0: the default
    max_iter: int = 0  # 0: the default
    tol: float | None = None
    seed: int | None = None
    metric: str = "euclidean"
    n_neighbors: int = 0  # 0: the default (spectral only)


def decode_kmeans_config(message: pb.KMeansConfig, field: str = "config", lenient: bool = False) -> KMeansConfig:
    return KMeansConfig(
        n_clusters=int(message.n_clusters),
        algorithm=ALGORITHMS.name(message.algorithm, f"{field}.algorithm", lenient=lenient),
        init=INIT_METHODS.name(message.init, f"{field}.init", lenient=lenient),
        init_centers=_matrix_or_none(message, "init_centers", f"{field}.init_centers"),
        n_init=int(message.n_init),
        max_iter=int(message.max_iter),
        tol=_optional(message, "tol"),
        seed=_optional(message, "seed"),
        metric=METRICS.name(message.metric, f"{field}.metric", lenient=lenient),
        n_neighbors=int(message.n_neighbors),
    )


def encode_kmeans_config(config: KMeansConfig) -> pb.KMeansConfig:
    message = pb.KMeansConfig(
        algorithm=ALGORITHMS.number(config.algorithm),
        n_clusters=config.n_clusters,
        init=INIT_METHODS.number(config.init),
        n_init=config.n_init,
        max_iter=config.max_iter,
        metric=METRICS.number(config.metric),
        n_neighbors=config.n_neighbors,
    )
    if config.init_centers is not None:
        message.init_centers.CopyFrom(encode_matrix(config.init_centers))
    if config.tol is not None:
        message.tol = config.tol
    if config.seed is not None:
        message.seed = config.seed
    return message


@dataclass(frozen=True)
class FitSpec:
    model: str
    config: KMeansConfig
    n_samples: int = 0  # 0: not declared
    expected_version: int | None = None
    return_labels: bool = False


def decode_fit_spec(message: pb.FitSpec, field: str = "spec") -> FitSpec:
    return FitSpec(
        model=message.model,
        config=decode_kmeans_config(message.config, f"{field}.config"),
        n_samples=int(message.n_samples),
        expected_version=_optional(message, "expected_version"),
        return_labels=message.return_labels,
    )


def encode_fit_spec(spec: FitSpec) -> pb.FitSpec:
    message = pb.FitSpec(
        model=spec.model, config=encode_kmeans_config(spec.config), n_samples=spec.n_samples,
        return_labels=spec.return_labels,
    )
    if spec.expected_version is not None:
        message.expected_version = spec.expected_version
    return message


@dataclass(frozen=True)
class FitChunk:
    """One FitRequest: the spec (first message only), rows, and their weights."""

    spec: FitSpec | None = None
    points: np.ndarray | None = None
    sample_weight: np.ndarray | None = None


def decode_fit_request(message: pb.FitRequest) -> FitChunk:
    return FitChunk(
        spec=decode_fit_spec(message.spec) if message.HasField("spec") else None,
        points=_matrix_or_none(message, "points", "points"),
        sample_weight=(
            decode_vector(message.sample_weight, "sample_weight")
            if message.HasField("sample_weight") else None
        ),
    )


def encode_fit_request(chunk: FitChunk) -> pb.FitRequest:
    message = pb.FitRequest()
    if chunk.spec is not None:
        message.spec.CopyFrom(encode_fit_spec(chunk.spec))
    if chunk.points is not None:
        message.points.CopyFrom(encode_matrix(chunk.points))
    if chunk.sample_weight is not None:
        message.sample_weight.CopyFrom(encode_vector(chunk.sample_weight))
    return message


@dataclass(frozen=True)
class FitProgress:
    """One progress event of a fit; stage is a STAGES name."""

    stage: str
    restart: int = 0
    n_init: int = 0
    iteration: int = 0
    inertia: float = 0.0
    center_shift: float = 0.0
    points_received: int = 0
    elapsed_seconds: float = 0.0
    n_clusters: int = 0  # a SuggestK's k
    distances_skipped: float = 0.0  # share of an iteration's distances the bounds skipped


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
class MiniBatchConfig:
    n_clusters: int = 0
    init_size: int = 0  # 0: the default
    reassignment_ratio: float | None = None
    half_life: float | None = None
    half_life_unit: str = "batches"
    seed: int | None = None
    metric: str = "euclidean"


def decode_minibatch_config(message: pb.MiniBatchConfig, field: str, lenient: bool = False) -> MiniBatchConfig:
    return MiniBatchConfig(
        n_clusters=int(message.n_clusters),
        init_size=int(message.init_size),
        reassignment_ratio=_optional(message, "reassignment_ratio"),
        half_life=_optional(message, "half_life"),
        half_life_unit=HALF_LIFE_UNITS.name(message.half_life_unit, f"{field}.half_life_unit", lenient=lenient),
        seed=_optional(message, "seed"),
        metric=METRICS.name(message.metric, f"{field}.metric", lenient=lenient),
    )


def encode_minibatch_config(config: MiniBatchConfig) -> pb.MiniBatchConfig:
    message = pb.MiniBatchConfig(
        n_clusters=config.n_clusters,
        init_size=config.init_size,
        half_life_unit=HALF_LIFE_UNITS.number(config.half_life_unit),
        metric=METRICS.number(config.metric),
    )
    for name in ("reassignment_ratio", "half_life", "seed"):
        value = getattr(config, name)
        if value is not None:
            setattr(message, name, value)
    return message


@dataclass(frozen=True)
class Model:
    """A stored model as described on the wire; times are seconds since the epoch.

    centers : ndarray of shape (n_clusters, n_features), or None when not sent
    """

    name: str
    version: int
    kind: str
    n_features: int
    n_clusters: int
    dtype: np.dtype
    inertia: float = 0.0
    n_iter: int = 0
    n_samples_seen: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    config: KMeansConfig | None = None  # kmeans models
    minibatch: MiniBatchConfig | None = None  # minibatch-kmeans models
    centers: np.ndarray | None = None
    durable_version: int = 0
    n_batches: int = 0
    init_points_buffered: int = 0
    metric: str = "euclidean"


def _seconds(stamp: Any) -> float:
    return float(stamp.seconds) + stamp.nanos / 1e9


def decode_model(message: pb.Model, field: str = "model") -> Model:
    """Models are only ever answers: unknown enum values from a newer server read as "unknown"."""
    return Model(
        name=message.name,
        version=int(message.version),
        kind=MODEL_KINDS.name(message.kind, f"{field}.kind", lenient=True),
        n_features=int(message.n_features),
        n_clusters=int(message.n_clusters),
        dtype=DTYPES.get(message.dtype, np.dtype("<f8")).newbyteorder("="),
        inertia=float(message.inertia),
        n_iter=int(message.n_iter),
        n_samples_seen=int(message.n_samples_seen),
        created_at=_seconds(message.created_at),
        updated_at=_seconds(message.updated_at),
        config=(
            decode_kmeans_config(message.config, f"{field}.config", lenient=True)
            if message.HasField("config") else None
        ),
        minibatch=(
            decode_minibatch_config(message.minibatch, f"{field}.minibatch", lenient=True)
            if message.HasField("minibatch") else None
        ),
        centers=_matrix_or_none(message, "centers", f"{field}.centers"),
        durable_version=int(message.durable_version),
        n_batches=int(message.n_batches),
        init_points_buffered=int(message.init_points_buffered),
        metric=METRICS.name(message.metric, f"{field}.metric", lenient=True),
    )


def encode_model(model: Model) -> pb.Model:
    message = pb.Model(
        name=model.name,
        version=model.version,
        kind=MODEL_KINDS.number(model.kind),
        n_features=model.n_features,
        n_clusters=model.n_clusters,
        dtype=dtype_number(model.dtype),
        inertia=model.inertia,
        n_iter=model.n_iter,
        n_samples_seen=model.n_samples_seen,
        durable_version=model.durable_version,
        n_batches=model.n_batches,
        init_points_buffered=model.init_points_buffered,
        metric=METRICS.number(model.metric),
    )
    message.created_at.FromNanoseconds(int(round(model.created_at * 1e9)))
    message.updated_at.FromNanoseconds(int(round(model.updated_at * 1e9)))
    if model.config is not None:
        message.config.CopyFrom(encode_kmeans_config(model.config))
    if model.minibatch is not None:
        message.minibatch.CopyFrom(encode_minibatch_config(model.minibatch))
    if model.centers is not None:
        message.centers.CopyFrom(encode_matrix(model.centers))
    return message


@dataclass(frozen=True)
class FitResult:
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
        version=_optional(message, "version"),
        points=_matrix_or_none(message, "points", "points"),
        options=decode_predict_options(message.options) if message.HasField("options") else None,
    )


def encode_predict_request(request: PredictRequest) -> pb.PredictRequest:
    message = pb.PredictRequest(model=request.model)
    if request.version is not None:
        message.version = request.version
    if request.points is not None:
        message.points.CopyFrom(encode_matrix(request.points))
    if request.options is not None:
        message.options.CopyFrom(encode_predict_options(request.options))
    return message


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
        distances=_matrix_or_none(message, "distances", "distances"),
        transform=_matrix_or_none(message, "transform", "transform"),
    )


def _label_payload(labels: np.ndarray) -> tuple[int, memoryview]:
    """A PredictResponse's labels as (label_bytes, little-endian payload), kept in their type
    when it is one of LABEL_TYPES, else as int32."""
    dtype = labels.dtype.newbyteorder("<") if labels.dtype.kind in "iu" else LABEL_TYPES[4]
    if dtype not in LABEL_TYPES.values():
        dtype = LABEL_TYPES[4]
    little = np.ascontiguousarray(labels, dtype=dtype)
    return dtype.itemsize, little.data.cast("B") if little.size else memoryview(b"")


def encode_predict_response(response: PredictResponse) -> pb.PredictResponse:
    width, payload = _label_payload(response.labels)
    message = pb.PredictResponse(
        version=response.version, offset=response.offset, labels=bytes(payload), label_bytes=width
    )
    if response.distances is not None:
        message.distances.CopyFrom(encode_matrix(response.distances))
    if response.transform is not None:
        message.transform.CopyFrom(encode_matrix(response.transform))
    return message


_RESPONSE_LABELS = pb.PredictResponse.DESCRIPTOR.fields_by_name["labels"].number
_RESPONSE_DISTANCES = pb.PredictResponse.DESCRIPTOR.fields_by_name["distances"].number
_RESPONSE_TRANSFORM = pb.PredictResponse.DESCRIPTOR.fields_by_name["transform"].number


def serialize_predict_response(response: PredictResponse) -> bytes:
    """``encode_predict_response(response).SerializeToString()``, written by hand: the labels
    and arrays go in with one copy each instead of protobuf's slower one."""
    width, labels = _label_payload(response.labels)
    parts: list[bytes | memoryview] = [
        pb.PredictResponse(version=response.version, offset=response.offset, label_bytes=width)
        .SerializeToString(),
        _field_header(_RESPONSE_LABELS, labels.nbytes),
        labels,
    ]
    for number, array in ((_RESPONSE_DISTANCES, response.distances), (_RESPONSE_TRANSFORM, response.transform)):
        if array is not None:
            head, payload = _matrix_parts(array)
            parts += [_field_header(number, len(head) + payload.nbytes), head, payload]
    return b"".join(parts)


@dataclass(frozen=True)
class MiniBatchOpen:
    model: str
    create_if_missing: MiniBatchConfig | None = None


def decode_minibatch_open(message: pb.MiniBatchOpen) -> MiniBatchOpen:
    return MiniBatchOpen(
        model=message.model,
        create_if_missing=(
            decode_minibatch_config(message.create_if_missing, "open.create_if_missing")
            if message.HasField("create_if_missing") else None
        ),
    )


def encode_minibatch_open(open_: MiniBatchOpen) -> pb.MiniBatchOpen:
    message = pb.MiniBatchOpen(model=open_.model)
    if open_.create_if_missing is not None:
        message.create_if_missing.CopyFrom(encode_minibatch_config(open_.create_if_missing))
    return message


@dataclass(frozen=True)
class MiniBatch:
    """points (n, n_features) or None when missing; sample_weight (n,) or None."""

    producer_id: str
    sequence: int
    points: np.ndarray | None = None
    sample_weight: np.ndarray | None = None


def decode_minibatch(message: pb.MiniBatch) -> MiniBatch:
    return MiniBatch(
        producer_id=message.producer_id,
        sequence=int(message.sequence),
        points=_matrix_or_none(message, "points", "batch.points"),
        sample_weight=(
            decode_vector(message.sample_weight, "batch.sample_weight")
            if message.HasField("sample_weight") else None
        ),
    )


def encode_minibatch(batch: MiniBatch) -> pb.MiniBatch:
    message = pb.MiniBatch(producer_id=batch.producer_id, sequence=batch.sequence)
    if batch.points is not None:
        message.points.CopyFrom(encode_matrix(batch.points))
    if batch.sample_weight is not None:
        message.sample_weight.CopyFrom(encode_vector(batch.sample_weight))
    return message


def decode_minibatch_request(message: pb.MiniBatchRequest) -> MiniBatchOpen | MiniBatch | None:
    item = message.WhichOneof("item")
    if item == "open":
        return decode_minibatch_open(message.open)
    if item == "batch":
        return decode_minibatch(message.batch)
    return None


def encode_minibatch_request(item: MiniBatchOpen | MiniBatch) -> pb.MiniBatchRequest:
    if isinstance(item, MiniBatchOpen):
        return pb.MiniBatchRequest(open=encode_minibatch_open(item))
    return pb.MiniBatchRequest(batch=encode_minibatch(item))


@dataclass(frozen=True)
class BatchError:
    """code is the canonical gRPC status number."""

    code: int
    message: str
    field: str = ""


def decode_batch_error(message: pb.BatchError) -> BatchError:
    return BatchError(int(message.code), message.message, message.field)


def encode_batch_error(error: BatchError) -> pb.BatchError:
    return pb.BatchError(code=error.code, message=error.message, field=error.field)


@dataclass(frozen=True)
class MiniBatchAck:
    producer_id: str
    sequence: int
    version: int = 0
    batch_inertia: float = 0.0
    n_samples_seen: int = 0
    durable_version: int = 0
    duplicate: bool = False
    error: BatchError | None = None


def decode_minibatch_ack(message: pb.MiniBatchAck) -> MiniBatchAck:
    return MiniBatchAck(
        producer_id=message.producer_id,
        sequence=int(message.sequence),
        version=int(message.version),
        batch_inertia=float(message.batch_inertia),
        n_samples_seen=int(message.n_samples_seen),
        durable_version=int(message.durable_version),
        duplicate=message.duplicate,
        error=decode_batch_error(message.error) if message.HasField("error") else None,
    )


def encode_minibatch_ack(ack: MiniBatchAck) -> pb.MiniBatchAck:
    message = pb.MiniBatchAck(
        producer_id=ack.producer_id,
        sequence=ack.sequence,
        version=ack.version,
        batch_inertia=ack.batch_inertia,
        n_samples_seen=ack.n_samples_seen,
        durable_version=ack.durable_version,
        duplicate=ack.duplicate,
    )
    if ack.error is not None:
        message.error.CopyFrom(encode_batch_error(ack.error))
    return message


@dataclass(frozen=True)
class QuantizeSpec:
    n_colors: int
    seed: int | None = None
    max_samples: int = 0  # 0: the server's default
    color_space: str = "rgb"
    dither: str = "none"
    output_format: str = "PNG"
    palette_model: str = ""
    save_palette_as: str = ""


def decode_quantize_spec(message: pb.QuantizeSpec) -> QuantizeSpec:
    return QuantizeSpec(
        n_colors=int(message.n_colors),
        seed=_optional(message, "seed"),
        max_samples=int(message.max_samples),
        color_space=COLOR_SPACES.name(message.color_space, "spec.color_space"),
        dither=DITHERS.name(message.dither, "spec.dither"),
        output_format=IMAGE_FORMATS.name(message.output_format, "spec.output_format"),
        palette_model=message.palette_model,
        save_palette_as=message.save_palette_as,
    )


def encode_quantize_spec(spec: QuantizeSpec) -> pb.QuantizeSpec:
    message = pb.QuantizeSpec(
        n_colors=spec.n_colors,
        max_samples=spec.max_samples,
        color_space=COLOR_SPACES.number(spec.color_space),
        dither=DITHERS.number(spec.dither),
        output_format=IMAGE_FORMATS.number(spec.output_format),
        palette_model=spec.palette_model,
        save_palette_as=spec.save_palette_as,
    )
    if spec.seed is not None:
        message.seed = spec.seed
    return message


@dataclass(frozen=True)
class QuantizeImageRequest:
    spec: QuantizeSpec | None = None
    image: bytes = b""


def decode_quantize_request(message: pb.QuantizeImageRequest) -> QuantizeImageRequest:
    return QuantizeImageRequest(
        spec=decode_quantize_spec(message.spec) if message.HasField("spec") else None,
        image=message.image,
    )


def encode_quantize_request(request: QuantizeImageRequest) -> pb.QuantizeImageRequest:
    message = pb.QuantizeImageRequest(image=request.image)
    if request.spec is not None:
        message.spec.CopyFrom(encode_quantize_spec(request.spec))
    return message


@dataclass(frozen=True)
class QuantizeSummary:
    """palette (n_colors, 3) uint8 RGB; pixel_counts (n_colors,) int64."""

    palette: np.ndarray
    pixel_counts: np.ndarray
    mse: float
    psnr: float
    width: int
    height: int
    format: str
    notes: tuple[str, ...] = ()
    saved_version: int = 0


def decode_quantize_summary(message: pb.QuantizeSummary) -> QuantizeSummary:
    return QuantizeSummary(
        palette=decode_palette(message.palette, "summary.palette"),
        pixel_counts=np.array(message.pixel_counts, dtype=np.int64),
        mse=float(message.mse),
        psnr=float(message.psnr),
        width=int(message.width),
        height=int(message.height),
        format=IMAGE_FORMATS.name(message.format, "summary.format", lenient=True),
        notes=tuple(message.notes),
        saved_version=int(message.saved_version),
    )


def encode_quantize_summary(summary: QuantizeSummary) -> pb.QuantizeSummary:
    return pb.QuantizeSummary(
        palette=np.ascontiguousarray(summary.palette, dtype=np.uint8).tobytes(),
        pixel_counts=[int(count) for count in summary.pixel_counts],
        mse=summary.mse,
        psnr=summary.psnr,
        width=summary.width,
        height=summary.height,
        format=IMAGE_FORMATS.number(summary.format),
        notes=list(summary.notes),
        saved_version=summary.saved_version,
    )


@dataclass(frozen=True)
class QuantizeImageResponse:
    image: bytes
    summary: QuantizeSummary | None = None


def decode_quantize_response(message: pb.QuantizeImageResponse) -> QuantizeImageResponse:
    return QuantizeImageResponse(
        image=message.image,
        summary=decode_quantize_summary(message.summary) if message.HasField("summary") else None,
    )


def encode_quantize_response(response: QuantizeImageResponse) -> pb.QuantizeImageResponse:
    message = pb.QuantizeImageResponse(image=response.image)
    if response.summary is not None:
        message.summary.CopyFrom(encode_quantize_summary(response.summary))
    return message


@dataclass(frozen=True)
class GetModelRequest:
    name: str
    include_centers: bool = False
    version: int | None = None


def decode_get_model_request(message: pb.GetModelRequest) -> GetModelRequest:
    return GetModelRequest(message.name, message.include_centers, _optional(message, "version"))


def encode_get_model_request(request: GetModelRequest) -> pb.GetModelRequest:
    message = pb.GetModelRequest(name=request.name, include_centers=request.include_centers)
    if request.version is not None:
        message.version = request.version
    return message


@dataclass(frozen=True)
class ListModelsRequest:
    page_size: int = 0  # 0: the default
    page_token: str = ""


def decode_list_models_request(message: pb.ListModelsRequest) -> ListModelsRequest:
    return ListModelsRequest(int(message.page_size), message.page_token)


def encode_list_models_request(request: ListModelsRequest) -> pb.ListModelsRequest:
    return pb.ListModelsRequest(page_size=request.page_size, page_token=request.page_token)


@dataclass(frozen=True)
class ListModelsResponse:
    models: tuple[Model, ...]
    next_page_token: str = ""


def decode_list_models_response(message: pb.ListModelsResponse) -> ListModelsResponse:
    return ListModelsResponse(
        tuple(decode_model(model, "models") for model in message.models), message.next_page_token
    )


def encode_list_models_response(response: ListModelsResponse) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(
        models=[encode_model(model) for model in response.models],
        next_page_token=response.next_page_token,
    )


@dataclass(frozen=True)
class DeleteModelRequest:
    name: str
    expected_version: int | None = None


def decode_delete_model_request(message: pb.DeleteModelRequest) -> DeleteModelRequest:
    return DeleteModelRequest(message.name, _optional(message, "expected_version"))


def encode_delete_model_request(request: DeleteModelRequest) -> pb.DeleteModelRequest:
    message = pb.DeleteModelRequest(name=request.name)
    if request.expected_version is not None:
        message.expected_version = request.expected_version
    return message


@dataclass(frozen=True)
class DeleteModelResponse:
    name: str
    version: int


def decode_delete_model_response(message: pb.DeleteModelResponse) -> DeleteModelResponse:
    return DeleteModelResponse(message.name, int(message.version))


def encode_delete_model_response(response: DeleteModelResponse) -> pb.DeleteModelResponse:
    return pb.DeleteModelResponse(name=response.name, version=response.version)


# ---- Evaluate and SuggestK ---------------------------------------------------------------


@dataclass(frozen=True)
class SilhouetteOptions:
    sample_size: int = 0  # 0: the default
    all_rows: bool = False
    seed: int | None = None


def decode_silhouette_options(message: pb.SilhouetteOptions) -> SilhouetteOptions:
    return SilhouetteOptions(int(message.sample_size), message.all_rows, _optional(message, "seed"))


def encode_silhouette_options(options: SilhouetteOptions) -> pb.SilhouetteOptions:
    message = pb.SilhouetteOptions(sample_size=options.sample_size, all_rows=options.all_rows)
    if options.seed is not None:
        message.seed = options.seed
    return message


@dataclass(frozen=True)
class EvaluateSpec:
    model: str
    version: int | None = None
    silhouette: SilhouetteOptions = SilhouetteOptions()
    n_samples: int = 0  # 0: not declared


def decode_evaluate_spec(message: pb.EvaluateSpec) -> EvaluateSpec:
    return EvaluateSpec(
        model=message.model,
        version=_optional(message, "version"),
        silhouette=decode_silhouette_options(message.silhouette),
        n_samples=int(message.n_samples),
    )


def encode_evaluate_spec(spec: EvaluateSpec) -> pb.EvaluateSpec:
    message = pb.EvaluateSpec(
        model=spec.model, silhouette=encode_silhouette_options(spec.silhouette), n_samples=spec.n_samples,
    )
    if spec.version is not None:
        message.version = spec.version
    return message


@dataclass(frozen=True)
class EvaluateChunk:
    """One EvaluateRequest: the spec (first message only) and rows."""

    spec: EvaluateSpec | None = None
    points: np.ndarray | None = None


def decode_evaluate_request(message: pb.EvaluateRequest) -> EvaluateChunk:
    return EvaluateChunk(
        spec=decode_evaluate_spec(message.spec) if message.HasField("spec") else None,
        points=_matrix_or_none(message, "points", "points"),
    )


def encode_evaluate_request(chunk: EvaluateChunk) -> pb.EvaluateRequest:
    message = pb.EvaluateRequest()
    if chunk.spec is not None:
        message.spec.CopyFrom(encode_evaluate_spec(chunk.spec))
    if chunk.points is not None:
        message.points.CopyFrom(encode_matrix(chunk.points))
    return message


@dataclass(frozen=True)
class ClusterScores:
    """None where a score is undefined."""

    silhouette: float | None = None
    silhouette_rows: int = 0
    calinski_harabasz: float | None = None
    davies_bouldin: float | None = None
    n_clusters_present: int = 0


def decode_cluster_scores(message: pb.ClusterScores) -> ClusterScores:
    return ClusterScores(
        silhouette=_optional(message, "silhouette"),
        silhouette_rows=int(message.silhouette_rows),
        calinski_harabasz=_optional(message, "calinski_harabasz"),
        davies_bouldin=_optional(message, "davies_bouldin"),
        n_clusters_present=int(message.n_clusters_present),
    )


def encode_cluster_scores(scores: ClusterScores) -> pb.ClusterScores:
    message = pb.ClusterScores(
        silhouette_rows=scores.silhouette_rows, n_clusters_present=scores.n_clusters_present
    )
    for name in ("silhouette", "calinski_harabasz", "davies_bouldin"):
        value = getattr(scores, name)
        if value is not None:
            setattr(message, name, value)
    return message


@dataclass(frozen=True)
class EvaluateResponse:
    version: int
    n_samples: int
    inertia: float
    scores: ClusterScores
    elapsed_seconds: float = 0.0


def decode_evaluate_response(message: pb.EvaluateResponse) -> EvaluateResponse:
    return EvaluateResponse(
        version=int(message.version),
        n_samples=int(message.n_samples),
        inertia=float(message.inertia),
        scores=decode_cluster_scores(message.scores),
        elapsed_seconds=float(message.elapsed_seconds),
    )


def encode_evaluate_response(response: EvaluateResponse) -> pb.EvaluateResponse:
    return pb.EvaluateResponse(
        version=response.version, n_samples=response.n_samples, inertia=response.inertia,
        scores=encode_cluster_scores(response.scores), elapsed_seconds=response.elapsed_seconds,
    )


@dataclass(frozen=True)
class SuggestKSpec:
    k_min: int
    k_max: int
    config: KMeansConfig = KMeansConfig()
    silhouette: SilhouetteOptions = SilhouetteOptions()
    n_samples: int = 0  # 0: not declared
    save_best_as: str = ""


def decode_suggest_k_spec(message: pb.SuggestKSpec, field: str = "spec") -> SuggestKSpec:
    return SuggestKSpec(
        k_min=int(message.k_min),
        k_max=int(message.k_max),
        config=decode_kmeans_config(message.config, f"{field}.config"),
        silhouette=decode_silhouette_options(message.silhouette),
        n_samples=int(message.n_samples),
        save_best_as=message.save_best_as,
    )


def encode_suggest_k_spec(spec: SuggestKSpec) -> pb.SuggestKSpec:
    return pb.SuggestKSpec(
        k_min=spec.k_min, k_max=spec.k_max, config=encode_kmeans_config(spec.config),
        silhouette=encode_silhouette_options(spec.silhouette), n_samples=spec.n_samples,
        save_best_as=spec.save_best_as,
    )


@dataclass(frozen=True)
class SuggestKChunk:
    """One SuggestKRequest: the spec (first message only) and rows."""

    spec: SuggestKSpec | None = None
    points: np.ndarray | None = None


def decode_suggest_k_request(message: pb.SuggestKRequest) -> SuggestKChunk:
    return SuggestKChunk(
        spec=decode_suggest_k_spec(message.spec) if message.HasField("spec") else None,
        points=_matrix_or_none(message, "points", "points"),
    )


def encode_suggest_k_request(chunk: SuggestKChunk) -> pb.SuggestKRequest:
    message = pb.SuggestKRequest()
    if chunk.spec is not None:
        message.spec.CopyFrom(encode_suggest_k_spec(chunk.spec))
    if chunk.points is not None:
        message.points.CopyFrom(encode_matrix(chunk.points))
    return message


@dataclass(frozen=True)
class KScore:
    n_clusters: int
    inertia: float
    n_iter: int
    scores: ClusterScores


def decode_k_score(message: pb.KScore) -> KScore:
    return KScore(
        int(message.n_clusters), float(message.inertia), int(message.n_iter),
        decode_cluster_scores(message.scores),
    )


def encode_k_score(score: KScore) -> pb.KScore:
    return pb.KScore(
        n_clusters=score.n_clusters, inertia=score.inertia, n_iter=score.n_iter,
        scores=encode_cluster_scores(score.scores),
    )


@dataclass(frozen=True)
class SuggestKResult:
    recommended_k: int
    elbow_k: int
    rule: str
    per_k: tuple[KScore, ...]
    saved: Model | None = None
    elapsed_seconds: float = 0.0


def decode_suggest_k_result(message: pb.SuggestKResult) -> SuggestKResult:
    return SuggestKResult(
        recommended_k=int(message.recommended_k),
        elbow_k=int(message.elbow_k),
        rule=message.rule,
        per_k=tuple(decode_k_score(entry) for entry in message.per_k),
        saved=decode_model(message.saved, "saved") if message.HasField("saved") else None,
        elapsed_seconds=float(message.elapsed_seconds),
    )


def encode_suggest_k_result(result: SuggestKResult) -> pb.SuggestKResult:
    message = pb.SuggestKResult(
        recommended_k=result.recommended_k, elbow_k=result.elbow_k, rule=result.rule,
        per_k=[encode_k_score(entry) for entry in result.per_k],
        elapsed_seconds=result.elapsed_seconds,
    )
    if result.saved is not None:
        message.saved.CopyFrom(encode_model(result.saved))
    return message


SuggestKEvent = Union[FitProgress, KScore, SuggestKResult]


def decode_suggest_k_response(message: pb.SuggestKResponse) -> SuggestKEvent | None:
    kind = message.WhichOneof("event")
    if kind == "progress":
        return decode_fit_progress(message.progress)
    if kind == "k_score":
        return decode_k_score(message.k_score)
    if kind == "result":
        return decode_suggest_k_result(message.result)
    return None


def encode_suggest_k_response(event: SuggestKEvent) -> pb.SuggestKResponse:
    if isinstance(event, FitProgress):
        return pb.SuggestKResponse(progress=encode_fit_progress(event))
    if isinstance(event, KScore):
        return pb.SuggestKResponse(k_score=encode_k_score(event))
    return pb.SuggestKResponse(result=encode_suggest_k_result(event))


# Every message of the contract: its decoder and encoder. The round-trip test walks this.
MESSAGES: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "Matrix": ((lambda m: decode_matrix(m, "matrix")), encode_matrix),
    "Vector": ((lambda m: decode_vector(m, "vector")), encode_vector),
    "KMeansConfig": (decode_kmeans_config, encode_kmeans_config),
    "FitSpec": (decode_fit_spec, encode_fit_spec),
    "FitRequest": (decode_fit_request, encode_fit_request),
    "FitProgress": (decode_fit_progress, encode_fit_progress),
    "LabelsChunk": (decode_labels_chunk, encode_labels_chunk),
    "FitResult": (decode_fit_result, encode_fit_result),
    "FitResponse": (decode_fit_response, encode_fit_response),
    "Model": (decode_model, encode_model),
    "PredictOptions": (decode_predict_options, encode_predict_options),
    "PredictRequest": (decode_predict_request, encode_predict_request),
    "PredictResponse": (decode_predict_response, encode_predict_response),
    "MiniBatchConfig": ((lambda m: decode_minibatch_config(m, "config")), encode_minibatch_config),
    "MiniBatchOpen": (decode_minibatch_open, encode_minibatch_open),
    "MiniBatch": (decode_minibatch, encode_minibatch),
    "MiniBatchRequest": (decode_minibatch_request, encode_minibatch_request),
    "BatchError": (decode_batch_error, encode_batch_error),
    "MiniBatchAck": (decode_minibatch_ack, encode_minibatch_ack),
    "QuantizeSpec": (decode_quantize_spec, encode_quantize_spec),
    "QuantizeImageRequest": (decode_quantize_request, encode_quantize_request),
    "QuantizeSummary": (decode_quantize_summary, encode_quantize_summary),
    "QuantizeImageResponse": (decode_quantize_response, encode_quantize_response),
    "GetModelRequest": (decode_get_model_request, encode_get_model_request),
    "ListModelsRequest": (decode_list_models_request, encode_list_models_request),
    "ListModelsResponse": (decode_list_models_response, encode_list_models_response),
    "DeleteModelRequest": (decode_delete_model_request, encode_delete_model_request),
    "DeleteModelResponse": (decode_delete_model_response, encode_delete_model_response),
    "SilhouetteOptions": (decode_silhouette_options, encode_silhouette_options),
    "EvaluateSpec": (decode_evaluate_spec, encode_evaluate_spec),
    "EvaluateRequest": (decode_evaluate_request, encode_evaluate_request),
    "ClusterScores": (decode_cluster_scores, encode_cluster_scores),
    "EvaluateResponse": (decode_evaluate_response, encode_evaluate_response),
    "SuggestKSpec": (decode_suggest_k_spec, encode_suggest_k_spec),
    "SuggestKRequest": (decode_suggest_k_request, encode_suggest_k_request),
    "KScore": (decode_k_score, encode_k_score),
    "SuggestKResult": (decode_suggest_k_result, encode_suggest_k_result),
    "SuggestKResponse": (decode_suggest_k_response, encode_suggest_k_response),
}

