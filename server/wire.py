"""Conversion between wire messages (Matrix, Vector, Model) and numpy, with validation.

Decoding checks everything a client could get wrong and raises ServiceError
naming the field; arrays are read with ``frombuffer`` and not copied.
"""

from __future__ import annotations

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from centroidal.engine import kmeans
from centroidal.engine.minibatch import MiniBatchParams
from centroidal.v1 import clustering_pb2 as pb

from .errors import exhausted, invalid
from .registry import ModelSnapshot

DTYPES: dict[int, np.dtype] = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_FLOAT64: np.dtype("<f8"),
}
WIRE_DTYPES: dict[np.dtype, int] = {np.dtype(np.float32): pb.DTYPE_FLOAT32, np.dtype(np.float64): pb.DTYPE_FLOAT64}

INIT_NAMES = {
    pb.INIT_METHOD_UNSPECIFIED: "k-means++",
    pb.INIT_METHOD_KMEANS_PLUS_PLUS: "k-means++",
    pb.INIT_METHOD_RANDOM: "random",
    pb.INIT_METHOD_GIVEN: "given",
}
INIT_ENUMS = {
    "k-means++": pb.INIT_METHOD_KMEANS_PLUS_PLUS,
    "random": pb.INIT_METHOD_RANDOM,
    "given": pb.INIT_METHOD_GIVEN,
}


def dtype_of(code: int, field: str) -> np.dtype:
    try:
        return DTYPES[code]
    except KeyError:
        name = pb.DType.Name(code) if code in pb.DType.values() else str(code)
        raise invalid(
            f"{field}.dtype", f"{field}.dtype must be DTYPE_FLOAT32 or DTYPE_FLOAT64, got {name}"
        ) from None


def decode_matrix(
    message: pb.Matrix, field: str, *, max_rows: int, max_cols: int, allow_empty: bool = False
) -> np.ndarray:
    """A read-only (rows, cols) view of a Matrix's bytes; checks shape, size and limits."""
    dtype = dtype_of(message.dtype, field)
    rows, cols = int(message.rows), int(message.cols)
    if cols < 1:
        raise invalid(f"{field}.cols", f"{field}.cols must be at least 1, got {cols}")
    if cols > max_cols:
        raise exhausted(
            f"{field}.cols", f"{field}.cols={cols} exceeds the server's limit of {max_cols} features"
        )
    if rows == 0 and not allow_empty:
        raise invalid(f"{field}.rows", f"{field} is empty: rows must be at least 1")
    if rows > max_rows:
        raise exhausted(
            f"{field}.rows", f"{field}.rows={rows} exceeds the server's limit of {max_rows} points"
        )
    expected = rows * cols * dtype.itemsize
    if len(message.data) != expected:
        raise invalid(
            f"{field}.data",
            f"{field}.data has {len(message.data)} bytes but rows={rows} x cols={cols} of "
            f"{dtype.name} needs {expected}",
        )
    array = np.frombuffer(message.data, dtype=dtype).reshape(rows, cols)
    return array.astype(dtype.newbyteorder("="), copy=False)


def check_finite(array: np.ndarray, field: str) -> None:
    """Refuse NaN and Inf (naming the first offending row) and float32 values that would overflow."""
    try:
        kmeans.check_finite(array, field)
    except kmeans.InvalidInputError as exc:
        raise invalid(f"{field}.data", str(exc)) from None


def decode_vector(message: pb.Vector, field: str, length: int) -> np.ndarray:
    """Sample weights: finite, >= 0, exactly ``length`` of them."""
    dtype = dtype_of(message.dtype, field)
    if len(message.data) != length * dtype.itemsize:
        raise invalid(
            f"{field}.data",
            f"{field} has {len(message.data) // dtype.itemsize} values for {length} rows",
        )
    values = np.frombuffer(message.data, dtype=dtype)
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        raise invalid(
            f"{field}.data",
            f"{field} must be finite and >= 0, but value {bad[0]} of this chunk is {values[bad[0]]}",
        )
    return values


def encode_matrix(array: np.ndarray) -> pb.Matrix:
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<")
    return pb.Matrix(
        dtype=WIRE_DTYPES[np.dtype(array.dtype.newbyteorder("="))],
        rows=array.shape[0],
        cols=array.shape[1],
        data=array.astype(dtype, copy=False).tobytes(),
    )


def encode_labels(labels: np.ndarray) -> bytes:
    return np.ascontiguousarray(labels, dtype="<i4").tobytes()


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def model_message(
    snapshot: ModelSnapshot, *, include_centers: bool, durable_version: int | None = None
) -> pb.Model:
    """The wire description of a model; durable_version when it differs from version."""
    message = pb.Model(
        name=snapshot.name,
        version=snapshot.version,
        n_features=snapshot.n_features,
        n_clusters=snapshot.n_clusters,
        dtype=WIRE_DTYPES[snapshot.centers.dtype],
        inertia=snapshot.inertia,
        n_iter=snapshot.n_iter,
        n_samples_seen=snapshot.n_samples_seen,
        created_at=_timestamp(snapshot.created_at),
        updated_at=_timestamp(snapshot.updated_at),
        durable_version=snapshot.version if durable_version is None else durable_version,
    )
    config = snapshot.config
    if snapshot.kind == "minibatch_kmeans":
        params = MiniBatchParams(**config)
        message.kind = pb.MODEL_KIND_MINIBATCH_KMEANS
        message.minibatch.CopyFrom(params_message(params))
        message.n_clusters = params.n_clusters  # also while it has no centers yet
        message.n_batches = int(snapshot.extra.get("n_batches", 0))
        message.init_points_buffered = int(snapshot.extra.get("init_points_buffered", 0))
    elif snapshot.kind == "palette":
        message.kind = pb.MODEL_KIND_PALETTE
    else:
        message.kind = pb.MODEL_KIND_KMEANS
        message.config.CopyFrom(
            pb.KMeansConfig(
                algorithm=pb.ALGORITHM_KMEANS,
                n_clusters=snapshot.n_clusters,
                init=INIT_ENUMS[config["init"]],
                n_init=config["n_init"],
                max_iter=config["max_iter"],
                tol=config["tol"],
                seed=config["seed"],
            )
        )
    if include_centers and snapshot.centers.shape[0]:
        message.centers.CopyFrom(encode_matrix(snapshot.centers))
    return message


def params_message(params: MiniBatchParams) -> pb.MiniBatchConfig:
    message = pb.MiniBatchConfig(
        n_clusters=params.n_clusters,
        init_size=params.init_size,
        reassignment_ratio=params.reassignment_ratio,
        half_life_unit=(
            pb.MiniBatchConfig.HALF_LIFE_UNIT_POINTS
            if params.half_life_unit == "points"
            else pb.MiniBatchConfig.HALF_LIFE_UNIT_BATCHES
        ),
        seed=params.seed,
    )
    if params.half_life is not None:
        message.half_life = params.half_life
    return message
