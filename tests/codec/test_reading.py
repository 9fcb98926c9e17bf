"""Messages read without protobuf (bulk bytes left in place) say exactly what protobuf's
parse says: the same batch, the same malformed batch, or the same refusal, for valid
messages, for ones cut short or run together, and for bytes that are no message at all."""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from centroidal import codec
from centroidal.codec.wire import read_fields
from centroidal.v1 import clustering_pb2 as pb

DTYPES = st.sampled_from([pb.DTYPE_FLOAT32, pb.DTYPE_FLOAT64, 0, 7, -1])


@st.composite
def matrices(draw: Any) -> pb.Matrix:
    dtype, rows, cols = draw(DTYPES), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    itemsize = 8 if dtype == pb.DTYPE_FLOAT64 else 4
    size = rows * cols * itemsize if draw(st.booleans()) else draw(st.integers(0, 40))
    data = np.random.default_rng(draw(st.integers(0, 99))).normal(size=size).astype(np.float64).tobytes()[:size]
    return pb.Matrix(dtype=dtype, rows=rows, cols=cols, data=data.ljust(size, b"\0"))


@st.composite
def vectors(draw: Any) -> pb.Vector:
    weights = draw(matrices())
    return pb.Vector(dtype=weights.dtype, data=weights.data)


@st.composite
def requests(draw: Any) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return pb.MiniBatchRequest(open=pb.MiniBatchOpen(model=draw(st.text(max_size=8)))).SerializeToString()
    batch = pb.MiniBatch(producer_id=draw(st.text(max_size=8)), sequence=draw(st.integers(0, 2**64 - 1)))
    if draw(st.booleans()):
        batch.points.CopyFrom(draw(matrices()))
    if draw(st.booleans()):
        batch.sample_weight.CopyFrom(draw(vectors()))
    return draw(changed(pb.MiniBatchRequest(batch=batch).SerializeToString()))


@st.composite
def changed(draw: Any, data: bytes) -> bytes:
    """A message's bytes as they are (most often), cut short, twice over (protobuf merges the
    two), with bytes after, or replaced by noise."""
    change = draw(st.sampled_from(["none", "none", "cut", "twice", "extra", "noise"]))
    if change == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if change == "twice":
        return data + data
    if change == "extra":
        return data + draw(st.binary(max_size=6))
    if change == "noise":
        return draw(st.binary(max_size=40))
    return data


def _read(read: Any, data: bytes) -> Any:
    """What ``read`` makes of ``data``: its result, or the error it raises, comparably."""
    try:
        return read(data)
    except DecodeError:
        return "DecodeError"
    except codec.WireError as error:
        return ("WireError", error.field, str(error))


def _array(array: np.ndarray | None) -> Any:
    """An array read from a message, comparably: its dtype, shape and bytes."""
    return None if array is None else (array.dtype.str, array.shape, array.tobytes())


def _outcome(read: Any, data: bytes) -> Any:
    item = _read(read, data)
    if isinstance(item, codec.MiniBatch):
        return ("batch", item.producer_id, item.sequence, _array(item.points), _array(item.sample_weight))
    if isinstance(item, codec.MalformedBatch):
        return ("malformed", item.producer_id, item.sequence, item.error.field, str(item.error))
    return item


@settings(max_examples=400, deadline=None)
@given(requests())
def test_reading_a_batch_says_what_protobuf_says(data: bytes) -> None:
    expected = _outcome(lambda raw: codec.decode_minibatch_request(pb.MiniBatchRequest.FromString(raw)), data)
    assert _outcome(lambda raw: codec.read_minibatch_request(raw, in_place_from=0), data) == expected


def test_a_batchs_rows_are_read_in_place() -> None:
    points = np.arange(12, dtype=np.float32).reshape(4, 3)
    data = codec.serialize_minibatch_request(codec.MiniBatch("p", 3, points))
    item = codec.read_minibatch_request(data, in_place_from=0)
    assert isinstance(item, codec.MiniBatch) and item.points is not None
    assert np.array_equal(item.points, points) and not item.points.flags.writeable
    assert np.shares_memory(item.points, np.frombuffer(data, dtype=np.uint8))


def test_fields_past_the_usual_shape_are_left_to_protobuf() -> None:
    assert read_fields(memoryview(b"\x08\x01"), {1: 0}) == {1: 1}
    assert read_fields(memoryview(b"\x08\x01\x08\x02"), {1: 0}) is None  # set twice
    assert read_fields(memoryview(b"\x10\x01"), {1: 0}) is None  # a field it does not expect
    assert read_fields(memoryview(b"\x0a\x05ab"), {1: 2}) is None  # cut short
    assert read_fields(memoryview(b"\x08" + b"\xff" * 10 + b"\x01"), {1: 0}) is None  # past 64 bits


@st.composite
def predict_requests(draw: Any) -> bytes:
    message = pb.PredictRequest(model=draw(st.text(max_size=8)))
    if draw(st.booleans()):
        message.version = draw(st.integers(0, 2**64 - 1))
    if draw(st.booleans()):
        message.points.CopyFrom(draw(matrices()))
    if draw(st.booleans()):
        message.options.CopyFrom(pb.PredictOptions(
            return_distances=draw(st.booleans()), return_transform=draw(st.booleans()),
            narrow_labels=draw(st.booleans())))
    if draw(st.integers(0, 4)) == 0:
        message.points_shared.CopyFrom(pb.SharedRows(name=draw(st.text(max_size=8)), offset=draw(st.integers(0, 99))))
    return draw(changed(message.SerializeToString()))


def _predict_outcome(read: Any, data: bytes) -> Any:
    request = _read(read, data)
    if not isinstance(request, codec.PredictRequest):
        return request
    return (request.model, request.version, request.options, request.shared, _array(request.points))


@settings(max_examples=400, deadline=None)
@given(predict_requests())
def test_reading_a_predict_request_says_what_protobuf_says(data: bytes) -> None:
    expected = _predict_outcome(lambda raw: codec.decode_predict_request(pb.PredictRequest.FromString(raw)), data)
    assert _predict_outcome(lambda raw: codec.read_predict_request(raw, in_place_from=0), data) == expected


def test_predict_rows_are_read_in_place() -> None:
    points = np.arange(12, dtype=np.float64).reshape(3, 4)
    data = codec.serialize_predict_request(codec.PredictRequest("m", 4, points, codec.PredictOptions(narrow_labels=True)))
    request = codec.read_predict_request(data, in_place_from=0)
    assert (request.model, request.version, request.options) == ("m", 4, codec.PredictOptions(narrow_labels=True))
    assert request.points is not None and np.shares_memory(request.points, np.frombuffer(data, dtype=np.uint8))


@st.composite
def fit_requests(draw: Any) -> bytes:
    message = pb.FitRequest()
    if draw(st.integers(0, 4)) == 0:
        message.spec.CopyFrom(pb.FitSpec(model=draw(st.text(max_size=8))))
    if draw(st.booleans()):
        message.points.CopyFrom(draw(matrices()))
    if draw(st.booleans()):
        message.sample_weight.CopyFrom(draw(vectors()))
    return draw(changed(message.SerializeToString()))


def _fit_outcome(read: Any, data: bytes) -> Any:
    chunk = _read(read, data)
    if not isinstance(chunk, codec.FitChunk):
        return chunk
    return chunk.spec, _array(chunk.points), _array(chunk.sample_weight)


@settings(max_examples=400, deadline=None)
@given(fit_requests())
def test_reading_a_fit_request_says_what_protobuf_says(data: bytes) -> None:
    expected = _fit_outcome(lambda raw: codec.decode_fit_request(pb.FitRequest.FromString(raw)), data)
    assert _fit_outcome(lambda raw: codec.read_fit_request(raw, in_place_from=0), data) == expected


def test_fit_rows_are_read_in_place() -> None:
    points, weights = np.arange(12, dtype=np.float32).reshape(4, 3), np.arange(4, dtype=np.float64)
    data = codec.serialize_fit_request(codec.FitChunk(points=points, sample_weight=weights))
    chunk = codec.read_fit_request(data, in_place_from=0)
    assert chunk.spec is None and chunk.points is not None and chunk.sample_weight is not None
    assert np.array_equal(chunk.points, points) and np.array_equal(chunk.sample_weight, weights)
    for array in (chunk.points, chunk.sample_weight):
        assert np.shares_memory(array, np.frombuffer(data, dtype=np.uint8))


# Evaluate and SuggestK: a spec (first message only) and rows, read as a FitRequest's are.
ROWS_REQUESTS = {
    "evaluate": (pb.EvaluateRequest, pb.EvaluateSpec(model="m"), codec.decode_evaluate_request,
                 codec.read_evaluate_request, codec.serialize_evaluate_request, codec.EvaluateChunk),
    "suggest_k": (pb.SuggestKRequest, pb.SuggestKSpec(k_min=2, k_max=4), codec.decode_suggest_k_request,
                  codec.read_suggest_k_request, codec.serialize_suggest_k_request, codec.SuggestKChunk),
}


@st.composite
def rows_requests(draw: Any) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(ROWS_REQUESTS)))
    message_type, spec = ROWS_REQUESTS[kind][:2]
    message = message_type()
    if draw(st.integers(0, 4)) == 0:
        message.spec.CopyFrom(spec)
    if draw(st.booleans()):
        message.points.CopyFrom(draw(matrices()))
    return kind, draw(changed(message.SerializeToString()))


def _rows_outcome(read: Any, data: bytes) -> Any:
    chunk = _read(read, data)
    if not isinstance(chunk, (codec.EvaluateChunk, codec.SuggestKChunk)):
        return chunk
    return chunk.spec, _array(chunk.points)


@settings(max_examples=400, deadline=None)
@given(rows_requests())
def test_reading_an_evaluate_or_suggest_k_request_says_what_protobuf_says(request: tuple[str, bytes]) -> None:
    kind, data = request
    message_type, _, decode, read = ROWS_REQUESTS[kind][:4]
    expected = _rows_outcome(lambda raw: decode(message_type.FromString(raw)), data)
    assert _rows_outcome(lambda raw: read(raw, in_place_from=0), data) == expected


def test_evaluate_and_suggest_k_rows_are_read_in_place() -> None:
    points = np.arange(12, dtype=np.float32).reshape(4, 3)
    for kind, (_, _, _, read, serialize, chunk_type) in ROWS_REQUESTS.items():
        data = serialize(chunk_type(points=points))
        chunk = read(data, in_place_from=0)
        assert chunk.spec is None and chunk.points is not None, kind
        assert np.array_equal(chunk.points, points), kind
        assert np.shares_memory(chunk.points, np.frombuffer(data, dtype=np.uint8)), kind
