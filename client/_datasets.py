"""The requests of calls on datasets the server reads, for both clients: a Fit's source, and
PredictDataset's request with the progress and result its answers carry."""

from __future__ import annotations

from collections.abc import Sequence

from centroidal import codec
from centroidal.v1 import clustering_pb2 as pb

from ._calls import optional_int
from .errors import CentroidalError
from .results import LabellingProgress, LabellingResult


def dataset_source(uri: str | None, columns: Sequence[str], format: str, weight_column: str) -> codec.DatasetSource | None:
    """A Fit's source, or None without a URI (columns and the rest need one)."""
    if uri is None:
        if columns or format or weight_column:
            raise ValueError("columns, format and weight_column describe a source: give source= too")
        return None
    if isinstance(columns, str):
        raise ValueError(f"columns must be a list of column names, got the string {columns!r}")
    if format:
        codec.DATASET_FORMATS.choice(format, "format")
    return codec.DatasetSource(uri, format, tuple(str(column) for column in columns), weight_column)


class LabellingPlan:
    """One PredictDataset: its request's bytes, and the progress and result its answers carry."""

    def __init__(self, name: str, source: str, output: str, columns: Sequence[str], format: str,
                 version: int | None, return_distances: bool, overwrite: bool) -> None:
        dataset = dataset_source(source, columns, format, "")
        assert dataset is not None
        request = codec.PredictDatasetRequest(name, dataset, output, optional_int(version), return_distances,
                                              overwrite)
        self.request = bytes(codec.encode_predict_dataset_request(request).SerializeToString())
        self._result: LabellingResult | None = None

    def take(self, response: pb.PredictDatasetResponse) -> LabellingProgress | None:
        """Absorb one response; returns the progress event it carries, if any."""
        event = codec.decode_predict_dataset_response(response)
        if isinstance(event, codec.PredictDatasetProgress):
            return event
        if event is not None:
            self._result = event
        return None

    def result(self) -> LabellingResult:
        if self._result is None:
            raise CentroidalError("the server ended PredictDataset without a result")
        return self._result
