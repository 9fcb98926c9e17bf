"""Datasets named by reference on the wire: where the files are, their format and columns."""

from __future__ import annotations

from dataclasses import dataclass

from centroidal.v1 import clustering_pb2 as pb

from .enums import DATASET_FORMATS


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
