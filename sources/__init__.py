"""Datasets the service reads by reference: a URI under a root the operator allows, in
Parquet or ``.npy`` files, split into partitions that can be read one at a time, anywhere.

``locations`` turns a URI into the files it names, refusing anything outside the roots;
``formats`` reads their metadata and their rows; ``outputs`` writes labels beside them. Numpy, pyarrow and fsspec only: no engine,
no gRPC, so the SDK's ``stream --source`` and a Dask worker can use it too.
"""

from .errors import DatasetError, DatasetExists, DatasetInvalid, DatasetMissing, DatasetRefused, DatasetUnreadable
from .formats import FORMATS, Dataset, Partition, open_dataset, read_rows
from .locations import DatasetFile, Roots, find_files
from .outputs import SUCCESS, OutputDir, output_dir, part_name

__all__ = [
    "FORMATS", "SUCCESS", "Dataset", "DatasetError", "DatasetExists", "DatasetFile", "DatasetInvalid",
    "DatasetMissing", "DatasetRefused", "DatasetUnreadable", "OutputDir", "Partition", "Roots", "find_files",
    "open_dataset", "output_dir", "part_name", "read_rows",
]
