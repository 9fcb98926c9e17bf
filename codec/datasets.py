"""Datasets named by reference on the wire: where the files are, their format and columns;
and PredictDataset, which labels one into files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from centroidal.v1 import clustering_pb2 as pb

from .enums import DATASET_FORMATS
from .wire import optional, set_optional


@dataclass(frozen=True)
class DatasetSource:
    """Rows the server reads itself: ``uri`` (a path, file:/// or fsspec URL, a directory or a
    glob), ``format`` ("parquet", "npy", or "" for the URI's extension), the feature
    ``columns`` (names, or .npy column numbers; empty for all) and an optional Parquet
    ``weight_column``."""

    uri: str
    format: str = ""
    columns: tuple[str, ...] = ()
    weight_column: str = ""


def decode_dataset_source(message: pb.DatasetSource, field: str) -> DatasetSource:
    return DatasetSource(
        uri=message.uri, format=DATASET_FORMATS.name(message.format, f"{field}.format"),
        columns=tuple(message.columns), weight_column=message.weight_column,
    )


def encode_dataset_source(source: DatasetSource) -> pb.DatasetSource:
    return pb.DatasetSource(
        uri=source.uri, format=DATASET_FORMATS.number(source.format) if source.format else 0,
        columns=list(source.columns), weight_column=source.weight_column,
    )


@dataclass(frozen=True)
class PredictDatasetRequest:
    """Label every row of ``input`` with model ``model`` (``version`` pinned, or the current)
    and write Parquet files under ``output_uri``."""

    model: str
    input: DatasetSource
    output_uri: str
    version: int | None = None
    return_distances: bool = False
    overwrite: bool = False


def decode_predict_dataset_request(message: pb.PredictDatasetRequest) -> PredictDatasetRequest:
    return PredictDatasetRequest(
        model=message.model, input=decode_dataset_source(message.input, "input"), output_uri=message.output_uri,
        version=optional(message, "version"), return_distances=message.return_distances, overwrite=message.overwrite,
    )


def encode_predict_dataset_request(request: PredictDatasetRequest) -> pb.PredictDatasetRequest:
    message = pb.PredictDatasetRequest(
        model=request.model, input=encode_dataset_source(request.input), output_uri=request.output_uri,
        return_distances=request.return_distances, overwrite=request.overwrite,
    )
    set_optional(message, version=request.version)
    return message


@dataclass(frozen=True)
class PredictDatasetProgress:
    rows_done: int
    rows_total: int
    partitions_done: int
    partitions_total: int
    elapsed_seconds: float = 0.0


def decode_predict_dataset_progress(message: pb.PredictDatasetProgress) -> PredictDatasetProgress:
    return PredictDatasetProgress(int(message.rows_done), int(message.rows_total), int(message.partitions_done),
                                  int(message.partitions_total), float(message.elapsed_seconds))


def encode_predict_dataset_progress(progress: PredictDatasetProgress) -> pb.PredictDatasetProgress:
    return pb.PredictDatasetProgress(
        rows_done=progress.rows_done, rows_total=progress.rows_total, partitions_done=progress.partitions_done,
        partitions_total=progress.partitions_total, elapsed_seconds=progress.elapsed_seconds,
    )


@dataclass(frozen=True)
class PredictDatasetResult:
    model_version: int
    rows: int
    files: int
    output_uri: str
    elapsed_seconds: float


def decode_predict_dataset_result(message: pb.PredictDatasetResult) -> PredictDatasetResult:
    return PredictDatasetResult(int(message.model_version), int(message.rows), int(message.files),
                                message.output_uri, float(message.elapsed_seconds))


def encode_predict_dataset_result(result: PredictDatasetResult) -> pb.PredictDatasetResult:
    return pb.PredictDatasetResult(
        model_version=result.model_version, rows=result.rows, files=result.files, output_uri=result.output_uri,
        elapsed_seconds=result.elapsed_seconds,
    )


PredictDatasetEvent = Union[PredictDatasetProgress, PredictDatasetResult]


def decode_predict_dataset_response(message: pb.PredictDatasetResponse) -> PredictDatasetEvent | None:
    """The event a PredictDatasetResponse carries; None for one this SDK does not know."""
    kind = message.WhichOneof("event")
    if kind == "progress":
        return decode_predict_dataset_progress(message.progress)
    if kind == "result":
        return decode_predict_dataset_result(message.result)
    return None


def encode_predict_dataset_response(event: PredictDatasetEvent) -> pb.PredictDatasetResponse:
    if isinstance(event, PredictDatasetProgress):
        return pb.PredictDatasetResponse(progress=encode_predict_dataset_progress(event))
    return pb.PredictDatasetResponse(result=encode_predict_dataset_result(event))
