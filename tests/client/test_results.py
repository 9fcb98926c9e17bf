"""Every public result type of the SDK is the codec's type for its message, or extends it:
the two cannot drift apart, since a field added to the codec is a field of the SDK's type."""

from __future__ import annotations

import dataclasses

import pytest

import centroidal.client as sdk
from centroidal import codec

# Each public result type, and the codec type it is or extends.
CODEC_TYPES: dict[str, type] = {
    "BatchAck": codec.MiniBatchAck,
    "ClusterScores": codec.ClusterScores,
    "Evaluation": codec.EvaluateResponse,
    "FitProgress": codec.FitProgress,
    "FitResult": codec.FitResult,
    "KScore": codec.KScore,
    "LabellingProgress": codec.PredictDatasetProgress,
    "LabellingResult": codec.PredictDatasetResult,
    "ModelInfo": codec.Model,
    "QuantizedImage": codec.QuantizeSummary,
    "Suggestion": codec.SuggestKResult,
}
# What the SDK adds: upload progress, training labels, the encoded image.
ADDED_FIELDS = {"FitProgress": {"points_total"}, "FitResult": {"labels"}, "QuantizedImage": {"image"}}


def _public_result_types() -> dict[str, type]:
    exported = {name: getattr(sdk, name) for name in sdk.__all__ if not name.startswith("Remote")}
    return {
        name: value for name, value in exported.items()
        if isinstance(value, type) and dataclasses.is_dataclass(value)
        and value is not sdk.FieldViolation  # google.rpc's BadRequest detail, not our contract
    }


def test_every_public_result_type_is_tied_to_a_codec_type() -> None:
    assert set(_public_result_types()) == set(CODEC_TYPES)


@pytest.mark.parametrize("name", sorted(CODEC_TYPES))
def test_result_type_is_its_codec_type_or_extends_it(name: str) -> None:
    sdk_type, codec_type = getattr(sdk, name), CODEC_TYPES[name]
    assert sdk_type is codec_type or issubclass(sdk_type, codec_type)
    ours = {field.name: field.type for field in dataclasses.fields(sdk_type)}
    theirs = {field.name: field.type for field in dataclasses.fields(codec_type)}
    assert {key: ours[key] for key in theirs} == theirs
    assert set(ours) - set(theirs) == ADDED_FIELDS.get(name, set())

