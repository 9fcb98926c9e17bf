"""Datasets the service reads by reference: a URI under a root the operator allows, in
Parquet or ``.npy`` files, split into partitions that can be read one at a time, anywhere.

``locations`` turns a URI into the files it names, refusing anything outside the roots;
``formats`` reads their metadata and their rows. Numpy, pyarrow and fsspec only: no engine,
no gRPC, so the SDK's ``stream --source`` and a Dask worker can use it too.
"""

from .errors import DatasetError, DatasetInvalid, DatasetMissing, DatasetRefused, DatasetUnreadable
from .formats import FORMATS, Dataset, Partition, open_dataset, read_rows
from .locations import DatasetFile, Roots, find_files

__all__ = [
    "FORMATS", "Dataset", "DatasetError", "DatasetFile", "DatasetInvalid", "DatasetMissing", "DatasetRefused",
    "DatasetUnreadable", "Partition", "Roots", "find_files", "open_dataset", "read_rows",
]
