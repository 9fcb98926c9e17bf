"""StreamMiniBatch on the wire: the open message, batches with their rows, and acks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from centroidal.v1 import clustering_pb2 as pb

from .arrays import (
    array_fields,
    dtype_number,
    encode_vector,
    matrix_of,
    matrix_or_none,
    message_parts,
    vector_of,
    vector_or_none,
)
from .models import MiniBatchConfig, decode_minibatch_config, encode_minibatch_config
from .predict import SharedRows, shared_rows_of
from .wire import (
    LEN,
    READ_IN_PLACE_BYTES,
    VARINT,
    WireError,
    field_number,
    read_fields,
    text_of,
)


@dataclass(frozen=True)
class MiniBatchOpen:
    """The first message of a stream: the model, and how to create it when it is missing."""

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
    """points (n, n_features) or None when missing (or when ``shared`` names them in shared
    memory); sample_weight (n,) or None."""

    producer_id: str
    sequence: int
    points: np.ndarray | None = None
    sample_weight: np.ndarray | None = None
    shared: SharedRows | None = None


def decode_minibatch(message: pb.MiniBatch) -> MiniBatch:
    """With points_shared, points gives only the shape unless it carries data too (which the
    server refuses, but the message still says)."""
    shared = shared_rows_of(message, "batch.points") if message.HasField("points_shared") else None
    return MiniBatch(
        producer_id=message.producer_id,
        sequence=int(message.sequence),
        points=(None if shared is not None and not message.points.data
                else matrix_or_none(message, "points", "batch.points")),
        sample_weight=vector_or_none(message, "sample_weight", "batch.sample_weight"),
        shared=shared,
    )


@dataclass(frozen=True)
class MalformedBatch:
    """A batch whose arrays do not decode: still a batch of its producer and sequence, so
    that the server refuses it in its own ack and the stream goes on."""

    producer_id: str
    sequence: int
    error: WireError


def decode_minibatch_request(message: pb.MiniBatchRequest) -> MiniBatchOpen | MiniBatch | MalformedBatch:
    """The open message or the batch a request carries."""
    item = message.WhichOneof("item")
    if item == "open":
        return decode_minibatch_open(message.open)
    if item == "batch":
        try:
            return decode_minibatch(message.batch)
        except WireError as error:
            return MalformedBatch(message.batch.producer_id, int(message.batch.sequence), error)
    raise WireError("item", "a MiniBatchRequest must carry open or batch; this one carries neither")


_REQUEST_BATCH = field_number(pb.MiniBatchRequest, "batch")
_BATCH_FIELDS = {field_number(pb.MiniBatch, name): kind for name, kind in
                 (("producer_id", LEN), ("sequence", VARINT), ("points", LEN), ("sample_weight", LEN))}
_PRODUCER, _SEQUENCE, _POINTS, _WEIGHTS = (field_number(pb.MiniBatch, name) for name in
                                           ("producer_id", "sequence", "points", "sample_weight"))


def read_minibatch_request(
    data: bytes, in_place_from: int = READ_IN_PLACE_BYTES
) -> MiniBatchOpen | MiniBatch | MalformedBatch:
    """``decode_minibatch_request`` of the message in ``data``, read without protobuf for a
    batch: its arrays are views of ``data`` instead of two copies of it (protobuf's parse,
    then each read of a bytes field). Anything else (the open message, a field set twice,
    bytes that are not the message) goes through protobuf, whose DecodeError says why, and
    so do messages under ``in_place_from`` bytes, which protobuf reads faster."""
    batch = _batch_fields(memoryview(data)) if len(data) >= in_place_from else None
    if batch is None:
        return decode_minibatch_request(pb.MiniBatchRequest.FromString(data))
    fields, points, weights = batch
    producer_id = text_of(fields.get(_PRODUCER, b""))
    if producer_id is None:  # protobuf refuses it, naming the field
        return decode_minibatch_request(pb.MiniBatchRequest.FromString(data))
    sequence = int(fields.get(_SEQUENCE, 0))
    try:
        return MiniBatch(
            producer_id, sequence,
            None if points is None else matrix_of(points, "batch.points"),
            None if weights is None else vector_of(weights, "batch.sample_weight"),
        )
    except WireError as error:
        return MalformedBatch(producer_id, sequence, error)


Fields = dict[int, Any]


def _batch_fields(data: memoryview) -> tuple[Fields, Fields | None, Fields | None] | None:
    """A batch request's fields, its points' and its weights'; None for anything that is not
    a batch in the usual shape."""
    top = read_fields(data, {_REQUEST_BATCH: LEN})
    batch = top.get(_REQUEST_BATCH) if top else None
    fields = read_fields(batch, _BATCH_FIELDS) if isinstance(batch, memoryview) else None
    if fields is None:
        return None
    arrays = array_fields(fields, _POINTS, _WEIGHTS)
    return None if arrays is None else (fields, *arrays)


def serialize_minibatch_request(item: MiniBatchOpen | MiniBatch) -> bytes:
    """A MiniBatchRequest's bytes; a batch's rows are appended without protobuf's copy."""
    if isinstance(item, MiniBatchOpen):
        serialized: bytes = pb.MiniBatchRequest(open=encode_minibatch_open(item)).SerializeToString()
        return serialized
    return b"".join(minibatch_request_parts(item))


def minibatch_request_parts(item: MiniBatch) -> list[bytes | memoryview]:
    """A batch's MiniBatchRequest in parts, its rows uncopied (see ``message_parts``)."""
    head = pb.MiniBatch(producer_id=item.producer_id, sequence=item.sequence)
    if item.sample_weight is not None:
        head.sample_weight.CopyFrom(encode_vector(item.sample_weight))
    shared = item.shared
    if shared is not None:
        head.points_shared.CopyFrom(pb.SharedRows(name=shared.name, offset=shared.offset))
        if item.points is None:
            head.points.CopyFrom(pb.Matrix(dtype=dtype_number(shared.dtype), rows=shared.rows, cols=shared.cols))
    return message_parts(head, "points", item.points, within=_REQUEST_BATCH)


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
    """The server's answer to one batch.

    version is the model version after the batch; durable_version the newest version on
    disk when the ack was sent. A duplicate was applied before. A rejected batch carries
    its error, and the other numbers are 0.
    """

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
