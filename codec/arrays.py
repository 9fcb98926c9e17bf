"""Arrays on the wire: Matrix and Vector as numpy, labels, palettes, and requests whose bulk
array is appended to their other fields by hand.

Decoded arrays are read-only views of the message's bytes (``frombuffer``), in native byte
order where that needs no copy. A malformed array raises ``WireError`` naming the field's
path, such as ``batch.points.data``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import Message

from centroidal.v1 import clustering_pb2 as pb

from .wire import LEN, VARINT, WireError, field_header, field_number, read_fields

DTYPES: dict[int, np.dtype[Any]] = {pb.DTYPE_FLOAT32: np.dtype("<f4"), pb.DTYPE_FLOAT64: np.dtype("<f8")}
_DTYPE_NUMBERS: dict[np.dtype[Any], int] = {
    np.dtype(np.float32): pb.DTYPE_FLOAT32, np.dtype(np.float64): pb.DTYPE_FLOAT64,
}


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
    # Each read of a bytes field copies it: read once.
    return matrix_from(message.dtype, message.rows, message.cols, message.data, field)


def matrix_from(dtype_code: int, rows: int, cols: int, data: bytes | memoryview, field: str) -> np.ndarray:
    """A Matrix's fields as a (rows, cols) read-only view of ``data``."""
    dtype = dtype_of(dtype_code, field)
    rows, cols = int(rows), int(cols)
    if cols < 1:
        raise WireError(f"{field}.cols", f"{field}.cols must be at least 1, got {cols}")
    expected = rows * cols * dtype.itemsize
    if len(data) != expected:
        raise WireError(
            f"{field}.data",
            f"{field}.data has {len(data)} bytes but rows={rows} x cols={cols} of "
            f"{dtype.name} needs {expected}",
        )
    return _native(np.frombuffer(data, dtype=dtype).reshape(rows, cols))


# A Matrix's and a Vector's fields by number, as read in place (wire.read_fields).
_MATRIX_FIELDS = {1: VARINT, 2: VARINT, 3: VARINT, 4: LEN}  # dtype, rows, cols, data
_VECTOR_FIELDS = {1: VARINT, 2: LEN}  # dtype, data
# Past these a value means something else to protobuf (a negative enum, a truncated uint32).
_INT32, _UINT32 = 1 << 31, 1 << 32


def matrix_fields(data: memoryview) -> dict[int, Any] | None:
    """A Matrix message's fields read in place, or None when protobuf should parse its
    bytes instead (see wire.read_fields); ``matrix_of`` makes the array."""
    found = read_fields(data, _MATRIX_FIELDS)
    if found is None or found.get(1, 0) >= _INT32 or found.get(3, 0) >= _UINT32:
        return None
    return found


def matrix_of(found: dict[int, Any], field: str) -> np.ndarray:
    """``decode_matrix`` of a Matrix read by ``matrix_fields``: a view of its bytes."""
    return matrix_from(found.get(1, 0), found.get(2, 0), found.get(3, 0), found.get(4, b""), field)


def vector_fields(data: memoryview) -> dict[int, Any] | None:
    """As ``matrix_fields``, for a Vector."""
    found = read_fields(data, _VECTOR_FIELDS)
    return None if found is None or found.get(1, 0) >= _INT32 else found


def vector_of(found: dict[int, Any], field: str) -> np.ndarray:
    return vector_from(found.get(1, 0), found.get(2, b""), field)


def rows_in_place(
    data: bytes, message_type: type[Message], in_place_from: int, weights: str = ""
) -> tuple[np.ndarray | None, np.ndarray | None] | None:
    """A request's Matrix ``points`` and, when named, its Vector ``weights``, as views of
    ``data``: (points, weights), each None where the message leaves it out. None instead
    where protobuf should parse the message: under ``in_place_from`` bytes (protobuf reads
    small messages faster), with any other field set (a spec), or bytes that are not one
    such message (protobuf's DecodeError says why)."""
    if len(data) < in_place_from:
        return None
    points_number = field_number(message_type, "points")
    kinds = {points_number: LEN}
    weights_number = field_number(message_type, weights) if weights else None
    if weights_number is not None:
        kinds[weights_number] = LEN
    fields = read_fields(memoryview(data), kinds)
    arrays = None if fields is None else array_fields(fields, points_number, weights_number)
    if arrays is None:
        return None
    points, found = arrays
    return (
        None if points is None else matrix_of(points, "points"),
        None if found is None else vector_of(found, weights),
    )


def array_fields(
    fields: dict[int, Any], points_number: int, weights_number: int | None
) -> tuple[dict[int, Any] | None, dict[int, Any] | None] | None:
    """The Matrix at ``points_number`` and the Vector at ``weights_number`` among a message's
    fields read in place, each read into its own fields (None where the message leaves it
    out); None when either is there but past the usual shape, for protobuf to read."""
    points = matrix_fields(fields[points_number]) if points_number in fields else None
    weights = vector_fields(fields[weights_number]) if weights_number in fields else None
    if (points_number in fields and points is None) or (weights_number in fields and weights is None):
        return None
    return points, weights


def matrix_or_none(message: Message, name: str, field: str) -> np.ndarray | None:
    """Matrix field ``name`` of ``message`` decoded, or None when it is not set."""
    return decode_matrix(getattr(message, name), field) if message.HasField(name) else None


def owned_or_none(message: Message, name: str, field: str) -> np.ndarray | None:
    """As ``matrix_or_none``, but a writable copy the caller owns: for the small arrays of
    answers (centers), which outlive their message."""
    array = matrix_or_none(message, name, field)
    return None if array is None else np.array(array)


def encode_matrix(array: np.ndarray) -> pb.Matrix:
    """array : ndarray of shape (rows, cols), float32 or float64."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return pb.Matrix(
        dtype=dtype_number(array.dtype), rows=array.shape[0], cols=array.shape[1],
        data=little.tobytes(),
    )


def decode_vector(message: pb.Vector, field: str) -> np.ndarray:
    """A (length,) view of a Vector's bytes, read-only."""
    return vector_from(message.dtype, message.data, field)


def vector_from(dtype_code: int, data: bytes | memoryview, field: str) -> np.ndarray:
    """A Vector's fields as a (length,) read-only view of ``data``."""
    dtype = dtype_of(dtype_code, field)
    if len(data) % dtype.itemsize:
        raise WireError(
            f"{field}.data", f"{field}.data has {len(data)} bytes, not a whole number of {dtype.name}"
        )
    return _native(np.frombuffer(data, dtype=dtype))


def vector_or_none(message: Message, name: str, field: str) -> np.ndarray | None:
    return decode_vector(getattr(message, name), field) if message.HasField(name) else None


def encode_vector(values: np.ndarray) -> pb.Vector:
    """values : ndarray of shape (length,), float32 or float64."""
    little = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    return pb.Vector(dtype=dtype_number(values.dtype), data=little.tobytes())


# Label types by their width in bytes: int32 everywhere, narrower in Predict on request.
LABEL_TYPES: dict[int, np.dtype[Any]] = {1: np.dtype("u1"), 2: np.dtype("<u2"), 4: np.dtype("<i4")}
_LABEL_WIDTHS = {dtype: width for width, dtype in LABEL_TYPES.items()}


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


def label_payload(labels: np.ndarray) -> tuple[int, memoryview]:
    """Labels as (width in bytes, little-endian payload), kept in their type when it is one
    of LABEL_TYPES, else as int32."""
    width = _LABEL_WIDTHS.get(labels.dtype)
    if width is not None and labels.flags.c_contiguous:  # the usual case, as the server makes them
        return width, labels.data.cast("B") if labels.size else memoryview(b"")
    dtype = labels.dtype.newbyteorder("<") if labels.dtype.kind in "iu" else LABEL_TYPES[4]
    if dtype not in LABEL_TYPES.values():
        dtype = LABEL_TYPES[4]
    little = np.ascontiguousarray(labels, dtype=dtype)
    return dtype.itemsize, little.data.cast("B") if little.size else memoryview(b"")


def decode_palette(data: bytes, field: str = "palette") -> np.ndarray:
    """n_colors x 3 uint8 RGB, a writable copy."""
    if len(data) % 3:
        raise WireError(field, f"{field} has {len(data)} bytes, not n_colors x 3")
    palette: np.ndarray = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).copy()
    return palette


# ---- bulk arrays, appended by hand --------------------------------------------------------

# Serialising a freshly built message that holds a large bytes field costs protobuf (upb)
# about 1 ms per 512 KiB here, 25 times a plain copy. Messages that carry bulk data are
# encoded by hand instead: the small fields by protobuf, the array appended as its own
# length-delimited Matrix field, which is the same wire format (a parser merges the parts).
_MATRIX_DATA = field_number(pb.Matrix, "data")


def matrix_parts(array: np.ndarray) -> tuple[bytes, memoryview]:
    """A Matrix message for ``array`` as its serialised head and its payload."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    payload = little.data.cast("B") if little.size else memoryview(b"")
    head = pb.Matrix(
        dtype=dtype_number(array.dtype), rows=array.shape[0], cols=array.shape[1]
    ).SerializeToString() + field_header(_MATRIX_DATA, payload.nbytes)
    return head, payload


def matrix_field(number: int, array: np.ndarray) -> list[bytes | memoryview]:
    """The parts of Matrix field ``number`` holding ``array``, payload included uncopied."""
    head, payload = matrix_parts(array)
    return [field_header(number, len(head) + payload.nbytes), head, payload]


def message_parts(
    head: Message, field: str, array: np.ndarray | None, within: int = 0
) -> list[bytes | memoryview]:
    """``head`` serialised, with ``array`` as its Matrix field ``field`` (unset in head); with
    ``within``, as field ``within`` of an outer message: the message's bytes in parts, the
    array's uncopied, for a caller that copies them where it keeps them."""
    parts: list[bytes | memoryview] = [head.SerializeToString()]
    if array is not None:
        parts += matrix_field(head.DESCRIPTOR.fields_by_name[field].number, array)
    if within:
        parts.insert(0, field_header(within, sum(len(part) for part in parts)))
    return parts


def with_matrix(head: Message, field: str, array: np.ndarray | None, within: int = 0) -> bytes:
    """``message_parts`` joined: the array is copied once, into the message's bytes (a
    request built as a message and then wrapped would copy it twice)."""
    return b"".join(message_parts(head, field, array, within))
