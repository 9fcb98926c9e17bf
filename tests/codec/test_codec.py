"""The codec round-trips every message of the contract with every field set, and every enum value.

``MESSAGES`` names, for every message of the .proto, how the SDK or the server reads it and
how it writes it: a field added to the .proto and forgotten in the codec fails the round trip.
Messages that travel only inside another are written through that one, as the product does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from centroidal import codec
from centroidal.v1 import clustering_pb2 as pb


def _inside(outer: type[Message], field: str, write: Callable[[Any], Any], wrap: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Write a message as the product does, inside ``outer`` (by ``write`` of ``wrap(value)``),
    and take it back out of the bytes."""
    return lambda value: getattr(_parsed(outer, write(wrap(value))), field)


def _parsed(message_type: type[Message], written: Any) -> Message:
    return message_type.FromString(written) if isinstance(written, bytes) else written


MESSAGES: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "Matrix": ((lambda m: codec.decode_matrix(m, "matrix")), codec.encode_matrix),
    "Vector": ((lambda m: codec.decode_vector(m, "vector")), codec.encode_vector),
    "KMeansConfig": (codec.decode_kmeans_config, codec.encode_kmeans_config),
    "DatasetSource": ((lambda m: codec.decode_dataset_source(m, "source")), codec.encode_dataset_source),
    "FitSpec": (codec.decode_fit_spec, codec.encode_fit_spec),
    "PredictDatasetRequest": (codec.decode_predict_dataset_request, codec.encode_predict_dataset_request),
    "PredictDatasetProgress": (codec.decode_predict_dataset_progress, codec.encode_predict_dataset_progress),
    "PredictDatasetResult": (codec.decode_predict_dataset_result, codec.encode_predict_dataset_result),
    "PredictDatasetResponse": (codec.decode_predict_dataset_response, codec.encode_predict_dataset_response),
    "FitRequest": (codec.decode_fit_request, codec.serialize_fit_request),
    "FitProgress": (codec.decode_fit_progress, codec.encode_fit_progress),
    "LabelsChunk": (codec.decode_labels_chunk, codec.encode_labels_chunk),
    "FitResult": (codec.decode_fit_result, codec.encode_fit_result),
    "FitResponse": (codec.decode_fit_response, codec.encode_fit_response),
    "Model": (codec.decode_model, codec.encode_model),
    "PredictOptions": (codec.decode_predict_options, codec.encode_predict_options),
    "PredictRequest": (codec.decode_predict_request, codec.serialize_predict_request),
    "PredictResponse": (codec.decode_predict_response, codec.serialize_predict_response),
    "SharedRows": ((lambda m: codec.decode_predict_request(pb.PredictRequest(
        points=pb.Matrix(dtype=pb.DTYPE_FLOAT32, rows=2, cols=3), points_shared=m))),
        _inside(pb.PredictRequest, "points_shared", codec.serialize_predict_request, lambda request: request)),
    "MiniBatchConfig": ((lambda m: codec.decode_minibatch_config(m, "config")), codec.encode_minibatch_config),
    "MiniBatchOpen": (codec.decode_minibatch_open, codec.encode_minibatch_open),
    "MiniBatch": (codec.decode_minibatch, _inside(pb.MiniBatchRequest, "batch",
                                                  codec.serialize_minibatch_request, lambda batch: batch)),
    "MiniBatchRequest": (codec.decode_minibatch_request, codec.serialize_minibatch_request),
    "BatchError": (codec.decode_batch_error, codec.encode_batch_error),
    "MiniBatchAck": (codec.decode_minibatch_ack, codec.encode_minibatch_ack),
    "QuantizeSpec": (codec.decode_quantize_spec, codec.encode_quantize_spec),
    "QuantizeImageRequest": (codec.decode_quantize_request, codec.encode_quantize_request),
    "QuantizeSummary": (codec.decode_quantize_summary, codec.encode_quantize_summary),
    "QuantizeImageResponse": (codec.decode_quantize_response, codec.encode_quantize_response),
    "GetModelRequest": (codec.decode_get_model_request, codec.encode_get_model_request),
    "ListModelsRequest": (codec.decode_list_models_request, codec.encode_list_models_request),
    "ListModelsResponse": (codec.decode_list_models_response, codec.encode_list_models_response),
    "DeleteModelRequest": (codec.decode_delete_model_request, codec.encode_delete_model_request),
    "DeleteModelResponse": (codec.decode_delete_model_response, codec.encode_delete_model_response),
    "SilhouetteOptions": (codec.decode_silhouette_options, codec.encode_silhouette_options),
    "EvaluateSpec": (codec.decode_evaluate_spec, codec.encode_evaluate_spec),
    "EvaluateRequest": (codec.decode_evaluate_request, codec.serialize_evaluate_request),
    "ClusterScores": (codec.decode_cluster_scores, codec.encode_cluster_scores),
    "EvaluateResponse": (codec.decode_evaluate_response, codec.encode_evaluate_response),
    "SuggestKSpec": (codec.decode_suggest_k_spec, codec.encode_suggest_k_spec),
    "SuggestKRequest": (codec.decode_suggest_k_request, codec.serialize_suggest_k_request),
    "KScore": (codec.decode_k_score, codec.encode_k_score),
    "SuggestKResult": (codec.decode_suggest_k_result, codec.encode_suggest_k_result),
    "SuggestKResponse": (codec.decode_suggest_k_response, codec.encode_suggest_k_response),
}

_MESSAGES = dict(pb.DESCRIPTOR.message_types_by_name)
_ENUMS = [pb.DESCRIPTOR.enum_types_by_name[name] for name in pb.DESCRIPTOR.enum_types_by_name] + [
    enum for message in _MESSAGES.values() for enum in message.enum_types
]
# Enough variants that every enum takes every non-zero value in one of them.
_VARIANTS = max(len(enum.values) for enum in _ENUMS)


def _fill(message: Message, variant: int) -> Message:
    """Set every field of ``message`` to a non-default value; oneofs take member ``variant``."""
    descriptor: Descriptor = message.DESCRIPTOR
    if descriptor.full_name == "centroidal.v1.Matrix":
        dtype = (np.float32, np.float64)[variant % 2]
        array = np.arange(6, dtype=dtype).reshape(3, 2) + variant
        message.CopyFrom(codec.encode_matrix(array))
        return message
    if descriptor.full_name == "centroidal.v1.Vector":
        message.CopyFrom(codec.encode_vector(np.arange(4, dtype=np.float64) * 0.5 + variant))
        return message
    if descriptor.full_name == "google.protobuf.Timestamp":
        message.seconds, message.nanos = 1_234_567 + variant, 250_000_000
        return message
    chosen = {
        oneof.name: oneof.fields[variant % len(oneof.fields)].name for oneof in descriptor.oneofs
        if not oneof.name.startswith("_")  # proto3 optional fields are synthetic oneofs
    }
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.name in chosen and chosen[oneof.name] != field.name:
            continue
        value = _value(field, variant)
        if field.is_repeated:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for _ in range(2):
                    _fill(getattr(message, field.name).add(), variant)
            else:
                getattr(message, field.name).extend([value, value])
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            _fill(getattr(message, field.name), variant)
        else:
            setattr(message, field.name, value)
    return message


def _value(field: FieldDescriptor, variant: int) -> object:
    if field.type == FieldDescriptor.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values if value.number]
        return numbers[variant % len(numbers)]
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"text-{variant}"
    if field.type == FieldDescriptor.TYPE_BYTES:
        # labels are int32, a palette RGB triples, an image anything.
        return {"labels": b"\x01\x00\x00\x00" * 3, "palette": bytes(range(6))}.get(field.name, b"img")
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 0.5 + variant
    if field.name == "label_bytes":  # the width of the labels above: 1, 2 or 4
        return (1, 2, 4)[variant % 3]
    return 7 + variant


def test_every_message_has_a_codec() -> None:
    assert set(MESSAGES) == set(_MESSAGES)


@pytest.mark.parametrize("variant", range(_VARIANTS))
@pytest.mark.parametrize("name", sorted(_MESSAGES))
def test_message_round_trips_with_every_field_set(name: str, variant: int) -> None:
    decode, write = MESSAGES[name]
    message_type = getattr(pb, name)
    original = _fill(message_type(), variant)
    again = _parsed(message_type, write(decode(original)))
    assert again == original, f"{name} lost fields: {original} became {again}"


def test_every_enum_value_has_a_name_and_back() -> None:
    tables = {table.enum_name: table for table in codec.ENUM_TABLES.values()}
    covered = set()
    for enum in _ENUMS:
        name = enum.full_name.removeprefix("centroidal.v1.")
        if name == "DType":
            numbers = {value.number for value in enum.values if value.number}
            assert numbers == set(codec.DTYPES)
            covered.add(name)
            continue
        table = tables[name]
        for value in enum.values:
            decoded = table.name(value.number, "field")
            if value.number:
                assert table.number(decoded) == value.number
            else:
                assert decoded == table.default
        covered.add(name)
    assert covered == {enum.full_name.removeprefix("centroidal.v1.") for enum in _ENUMS}


def test_unknown_enum_number_names_the_field() -> None:
    with pytest.raises(codec.WireError) as caught:
        codec.decode_quantize_spec(pb.QuantizeSpec(n_colors=4, dither=99))
    assert caught.value.field == "spec.dither"


def test_matrix_with_wrong_byte_count_names_the_field() -> None:
    message = pb.Matrix(dtype=pb.DTYPE_FLOAT32, rows=2, cols=3, data=b"\x00" * 20)
    with pytest.raises(codec.WireError) as caught:
        codec.decode_matrix(message, "batch.points")
    assert caught.value.field == "batch.points.data"


def test_hand_encoded_batch_parses_as_the_message() -> None:
    points = np.arange(12, dtype=np.float32).reshape(4, 3)
    weights = np.array([1.0, 2.0, 0.5, 1.0])
    raw = codec.serialize_minibatch_request(codec.MiniBatch("p-1", 9, points, weights))
    batch = codec.decode_minibatch_request(pb.MiniBatchRequest.FromString(raw))
    assert isinstance(batch, codec.MiniBatch)
    assert (batch.producer_id, batch.sequence) == ("p-1", 9)
    assert batch.points is not None and batch.sample_weight is not None
    np.testing.assert_array_equal(batch.points, points)
    np.testing.assert_array_equal(batch.sample_weight, weights)


def test_answers_from_a_newer_server_read_unknown_values_as_unknown() -> None:
    model = codec.decode_model(pb.Model(name="m", kind=99, config=pb.KMeansConfig(init=42)))
    assert (model.kind, model.config.init if model.config else None) == ("unknown", "unknown")
    assert codec.decode_fit_progress(pb.FitProgress(stage=77)).stage == "unknown"


@pytest.mark.parametrize("n_clusters, width", [(2, 1), (256, 1), (257, 2), (65_536, 2), (65_537, 4)])
def test_narrow_labels_take_the_narrowest_type_and_survive_the_wire(n_clusters: int, width: int) -> None:
    label_type = codec.narrowest_label_type(n_clusters)
    assert label_type.itemsize == width
    labels = np.array([0, n_clusters - 1, n_clusters // 2], dtype=label_type)
    response = codec.PredictResponse(version=3, offset=10, labels=labels,
                                     distances=np.ones((3, 1), dtype=np.float32))
    wire = codec.serialize_predict_response(response)
    # The hand-written bytes parse as the message protobuf itself would write.
    expected = pb.PredictResponse(
        version=3, offset=10, labels=labels.astype(label_type.newbyteorder("<")).tobytes(),
        label_bytes=width, distances=codec.encode_matrix(response.distances),
    )
    assert pb.PredictResponse.FromString(wire) == expected
    decoded = codec.decode_predict_response(pb.PredictResponse.FromString(wire))
    assert decoded.labels.dtype == label_type
    np.testing.assert_array_equal(decoded.labels, labels)
    np.testing.assert_array_equal(decoded.distances, response.distances)


def test_a_label_width_other_than_1_2_or_4_is_refused() -> None:
    with pytest.raises(codec.WireError) as caught:
        codec.decode_predict_response(pb.PredictResponse(labels=b"\0" * 6, label_bytes=3))
    assert caught.value.field == "label_bytes"


@pytest.mark.parametrize(
    "engine_names, table",
    [
        ("centroidal.engine.cosine:METRICS", codec.METRICS),
        ("centroidal.engine.minibatch:HALF_LIFE_UNITS", codec.HALF_LIFE_UNITS),
        ("centroidal.engine.palette:COLOR_SPACES", codec.COLOR_SPACES),
    ],
)
def test_engine_names_are_the_codecs(engine_names: str, table: codec.EnumTable) -> None:
    """The server hands the codec's names to the engine as they are: the two lists must agree."""
    import importlib

    module, name = engine_names.split(":")
    assert set(getattr(importlib.import_module(module), name)) == set(table.numbers)
