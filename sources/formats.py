"""Parquet and ``.npy`` datasets: their shape from the files' metadata, their partitions,
and a partition's rows read on demand.

A partition is a run of whole Parquet row groups, or of ``.npy`` rows, of about
``PARTITION_BYTES``; the split depends on the files alone, never on who reads them, so a
fit's sums are reduced in the same order on any number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DatasetInvalid, DatasetMissing, DatasetUnreadable
from .locations import DatasetFile, Roots, check_allowed, find_files

FORMATS = ("parquet", "npy")
SUFFIXES = {"parquet": (".parquet", ".parq", ".pq"), "npy": (".npy",)}
# About this many bytes of rows per partition: large enough that a task's overhead (about a
# millisecond on Dask) is small beside its work; small enough that a worker holds several,
# and that a dataset of some hundred MB has a partition for every worker (a task runs on one
# core of its worker's share, so a cluster's cores work only on as many partitions).
PARTITION_BYTES = 16 << 20


@dataclass(frozen=True)
class Partition:
    """Rows ``offset .. offset + rows`` of the dataset: row groups ``first .. stop`` of a
    Parquet file, or rows ``first .. stop`` of a ``.npy`` file."""

    index: int
    file: int
    first: int
    stop: int
    offset: int
    rows: int


@dataclass(frozen=True)
class Dataset:
    """A dataset's files, what to read from them, and its shape.

    columns : Parquet column names (one feature each, or one fixed-size list column holding
        every feature), or ``.npy`` column indices; the dtype is float32 when every column is,
        else float64
    """

    uri: str
    format: str
    files: tuple[DatasetFile, ...]
    columns: tuple[str, ...]
    weight_column: str
    n_rows: int
    n_features: int
    dtype: np.dtype
    partitions: tuple[Partition, ...]
    list_column: bool = False
    npy_columns: tuple[int, ...] | None = None
    field: str = "source"
    shapes: tuple[tuple[int, int], ...] = ()
    c_ordered: bool = False  # every .npy file C-ordered in the rows' dtype

    @property
    def nbytes(self) -> int:
        return self.n_rows * self.n_features * self.dtype.itemsize

    @property
    def weighted(self) -> bool:
        return bool(self.weight_column)

    @property
    def mappable(self) -> bool:
        """A single ``.npy`` file read whole, C-ordered and of the rows' dtype: it can be used
        as it lies on disk, through a memory map."""
        return self.format == "npy" and len(self.files) == 1 and self.npy_columns is None and self.c_ordered

    def memory_mapped(self) -> np.ndarray | None:
        """The whole dataset as one read-only memory map when it is ``mappable``; else None."""
        if not self.mappable:
            return None
        with self.files[0].open(f"{self.field}.uri") as handle:
            header = _npy_header(handle, self.files[0], self.field)
            if header.fortran or header.dtype != self.dtype or header.shape != self.shapes[0]:
                raise DatasetInvalid(f"{self.field}.uri: {self.files[0].uri} changed while it was read",
                                     f"{self.field}.uri")
            return np.memmap(handle, dtype=header.dtype, mode="r", offset=header.offset, shape=header.shape)


def open_dataset(
    uri: str, roots: Roots, *, format: str = "", columns: tuple[str, ...] | list[str] = (), weight_column: str = "",
    field: str = "source", partition_bytes: int = PARTITION_BYTES,
) -> Dataset:
    """The dataset ``uri`` names, its metadata read and checked; ``field`` prefixes the
    request fields errors name (``source.uri``, ``source.columns``...)."""
    check_allowed(uri, roots, f"{field}.uri")  # before anything else is said about it
    format = format or _format_of(uri)
    if not format:
        format, files = _format_of_files(uri, roots, field)
    elif format in FORMATS:
        files = find_files(uri, roots, SUFFIXES[format], f"{field}.uri")
    else:
        raise DatasetInvalid(f"{field}.format must be one of {FORMATS}, got {format!r}", f"{field}.format")
    if format == "npy" and weight_column:
        raise DatasetInvalid(f"{field}.weight_column: .npy files have no named columns; weights need Parquet",
                             f"{field}.weight_column")
    opener = _open_parquet if format == "parquet" else _open_npy
    return opener(uri, tuple(files), tuple(columns), weight_column, field, max(1, partition_bytes))


def _format_of(uri: str) -> str:
    """The format the URI's extension names, or "" when it names none."""
    for name, suffixes in SUFFIXES.items():
        if uri.rstrip("*/").endswith(suffixes):
            return name
    return ""


def _format_of_files(uri: str, roots: Roots, field: str) -> tuple[str, list[DatasetFile]]:
    """The one format whose files a directory or glob holds, and those files."""
    found = {}
    for name, suffixes in SUFFIXES.items():
        try:
            found[name] = find_files(uri, roots, suffixes, f"{field}.uri")
        except DatasetMissing:
            continue
    if len(found) != 1:
        holds = f"holds both {' and '.join(found)} files" if found else "holds no .parquet or .npy file"
        raise DatasetInvalid(f"{field}.format is not set and {uri!r} {holds}: say which format to read",
                             f"{field}.format")
    [(format, files)] = found.items()
    return format, files


def read_rows(dataset: Dataset, partition: Partition) -> tuple[np.ndarray, np.ndarray | None]:
    """One partition's rows, C-contiguous in the dataset's dtype, and their weights (float64)
    when the dataset has a weight column."""
    file = dataset.files[partition.file]
    reader = _read_parquet if dataset.format == "parquet" else _read_npy
    try:
        return reader(dataset, file, partition)
    except OSError as exc:
        raise DatasetUnreadable(f"{dataset.field}.uri: reading {file.uri} failed: {exc}", f"{dataset.field}.uri") from None


# ---- Parquet -----------------------------------------------------------------------------


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetUnreadable("reading Parquet needs pyarrow: pip install 'centroidal[datasets]'", "source.format") from None
    return pq


def _open_parquet(uri: str, files: tuple[DatasetFile, ...], columns: tuple[str, ...], weight_column: str,
                  field: str, partition_bytes: int) -> Dataset:
    pq = _pyarrow()
    import pyarrow as pa

    chosen: tuple[str, ...] | None = None
    list_column = False
    dtype: np.dtype | None = None
    n_features = 0
    partitions: list[Partition] = []
    offset = 0
    for index, file in enumerate(files):
        with file.open(f"{field}.uri") as handle:
            try:
                metadata = pq.ParquetFile(handle).metadata
            except (pa.ArrowInvalid, OSError) as exc:
                raise DatasetInvalid(f"{field}.uri: {file.uri} is not a Parquet file: {exc}", f"{field}.uri") from None
            schema = metadata.schema.to_arrow_schema()
        picked = _pick_columns(schema, columns, weight_column, file, field)
        if chosen is None:
            chosen, list_column, dtype, n_features = picked
        elif picked != (chosen, list_column, dtype, n_features):
            raise DatasetInvalid(
                f"{field}.uri: {file.uri} has other columns than {files[0].uri} ({picked[0]} of {picked[2]}, "
                f"not {chosen} of {dtype}): every file must hold the same", f"{field}.columns",
            )
        assert dtype is not None
        row_bytes = n_features * dtype.itemsize
        first, rows = 0, 0
        for group in range(metadata.num_row_groups):
            rows += metadata.row_group(group).num_rows
            if rows * row_bytes >= partition_bytes or group == metadata.num_row_groups - 1:
                if rows:
                    partitions.append(Partition(len(partitions), index, first, group + 1, offset, rows))
                offset += rows
                first, rows = group + 1, 0
    assert chosen is not None and dtype is not None
    return Dataset(uri, "parquet", files, chosen, weight_column, offset, n_features, dtype, tuple(partitions),
                   list_column=list_column, field=field)


def _pick_columns(schema: Any, columns: tuple[str, ...], weight_column: str, file: DatasetFile,
                  field: str) -> tuple[tuple[str, ...], bool, np.dtype, int]:
    """(columns, whether it is one list column, dtype, n_features) for one file's schema."""
    import pyarrow as pa

    types = {name: schema.field(name).type for name in schema.names}
    if weight_column:
        if weight_column not in types:
            raise DatasetInvalid(f"{field}.weight_column {weight_column!r} is not a column of {file.uri}",
                                 f"{field}.weight_column")
        if not _numeric(types[weight_column]):
            raise DatasetInvalid(f"{field}.weight_column {weight_column!r} is {types[weight_column]}, not a number",
                                 f"{field}.weight_column")
    if not columns:
        columns = tuple(name for name, kind in types.items() if pa.types.is_floating(kind) and name != weight_column)
        if not columns:
            columns = tuple(name for name, kind in types.items() if _float_list(kind))[:1]
        if not columns:
            raise DatasetInvalid(f"{field}.columns is empty and {file.uri} has no floating-point column to use",
                                 f"{field}.columns")
    for name in columns:
        if name not in types:
            raise DatasetInvalid(f"{field}.columns: {name!r} is not a column of {file.uri}", f"{field}.columns")
    lists = [name for name in columns if _float_list(types[name])]
    if lists:
        if len(columns) != 1:
            raise DatasetInvalid(f"{field}.columns: the list column {lists[0]!r} must be the only column",
                                 f"{field}.columns")
        kind = types[columns[0]]
        single = np.float32 if kind.value_type in (pa.float32(), pa.float16()) else np.float64
        return columns, True, np.dtype(single), int(kind.list_size)
    for name in columns:
        if not _numeric(types[name]):
            raise DatasetInvalid(f"{field}.columns: {name!r} is {types[name]}, not a number or a fixed-size "
                                 "list of floats", f"{field}.columns")
    all_single = all(types[name] in (pa.float32(), pa.float16()) for name in columns)
    return columns, False, np.dtype(np.float32 if all_single else np.float64), len(columns)


def _numeric(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_floating(kind) or pa.types.is_integer(kind))


def _float_list(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_fixed_size_list(kind) and pa.types.is_floating(kind.value_type))


def _read_parquet(dataset: Dataset, file: DatasetFile, partition: Partition) -> tuple[np.ndarray, np.ndarray | None]:
    pq = _pyarrow()
    wanted = list(dataset.columns) + ([dataset.weight_column] if dataset.weighted else [])
    with file.open(f"{dataset.field}.uri") as handle:
        table = pq.ParquetFile(handle).read_row_groups(range(partition.first, partition.stop), columns=wanted,
                                                       use_threads=False)
    rows = table.num_rows
    if rows != partition.rows:
        raise DatasetInvalid(f"{dataset.field}.uri: {file.uri} changed while it was read "
                             f"({rows} rows where its metadata said {partition.rows})", f"{dataset.field}.uri")
    if dataset.list_column:
        column = table.column(0).combine_chunks()
        _no_nulls(column, dataset, partition, dataset.columns[0])
        values = column.flatten()
        _no_nulls(values, dataset, partition, dataset.columns[0])
        X = np.ascontiguousarray(values.to_numpy(zero_copy_only=False).reshape(rows, dataset.n_features),
                                 dtype=dataset.dtype)
    else:
        X = np.empty((rows, dataset.n_features), dtype=dataset.dtype)
        for index, name in enumerate(dataset.columns):
            column = table.column(index)
            _no_nulls(column, dataset, partition, name)
            X[:, index] = column.to_numpy()
    weights = None
    if dataset.weighted:
        column = table.column(len(dataset.columns))
        _no_nulls(column, dataset, partition, dataset.weight_column)
        weights = np.asarray(column.to_numpy(), dtype=np.float64)
    return X, weights


def _no_nulls(column: Any, dataset: Dataset, partition: Partition, name: str) -> None:
    if column.null_count:
        import pyarrow.compute as pc

        at = int(pc.index(pc.is_null(column), True).as_py())
        raise DatasetInvalid(f"{dataset.field}.columns: column {name!r} is null at row {partition.offset + at} "
                             "of the dataset", f"{dataset.field}.columns")


# ---- .npy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NpyHeader:
    shape: tuple[int, int]
    dtype: np.dtype
    fortran: bool
    offset: int


def _npy_header(handle: Any, file: DatasetFile, field: str) -> _NpyHeader:
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(handle)
        else:  # 3.0 exists only for structured dtypes with unicode names, which are not rows
            raise ValueError(f".npy format version {version} is not supported")
    except ValueError as exc:
        raise DatasetInvalid(f"{field}.uri: {file.uri} is not a .npy file: {exc}", f"{field}.uri") from None
    if len(shape) != 2:
        raise DatasetInvalid(f"{field}.uri: {file.uri} holds an array of shape {shape}; a dataset needs 2-D rows",
                             f"{field}.uri")
    if dtype.hasobject or dtype.kind not in "fiu":
        raise DatasetInvalid(f"{field}.uri: {file.uri} holds {dtype}, not numbers", f"{field}.uri")
    return _NpyHeader((int(shape[0]), int(shape[1])), np.dtype(dtype), bool(fortran), handle.tell())


def _open_npy(uri: str, files: tuple[DatasetFile, ...], columns: tuple[str, ...], weight_column: str,
              field: str, partition_bytes: int) -> Dataset:
    headers = []
    for file in files:
        with file.open(f"{field}.uri") as handle:
            headers.append(_npy_header(handle, file, field))
    width = headers[0].shape[1]
    for file, header in zip(files, headers):
        if header.shape[1] != width:
            raise DatasetInvalid(f"{field}.uri: {file.uri} has {header.shape[1]} columns but {files[0].uri} has "
                                 f"{width}: every file must hold the same", f"{field}.uri")
    picked: tuple[int, ...] | None = None
    if columns:
        try:
            picked = tuple(int(name) for name in columns)
        except ValueError:
            raise DatasetInvalid(f"{field}.columns of .npy files are column numbers, got {list(columns)}",
                                 f"{field}.columns") from None
        bad = [index for index in picked if not 0 <= index < width]
        if bad:
            raise DatasetInvalid(f"{field}.columns: column {bad[0]} is not among the files' {width}",
                                 f"{field}.columns")
    single = all(header.dtype == np.float32 for header in headers)
    dtype = np.dtype(np.float32 if single else np.float64)
    n_features = len(picked) if picked is not None else width
    step = max(1, partition_bytes // max(1, n_features * dtype.itemsize))
    partitions: list[Partition] = []
    offset = 0
    for index, header in enumerate(headers):
        for first in range(0, header.shape[0], step):
            stop = min(first + step, header.shape[0])
            partitions.append(Partition(len(partitions), index, first, stop, offset, stop - first))
            offset += stop - first
    names = tuple(str(index) for index in picked) if picked is not None else ()
    c_ordered = all(not header.fortran and header.dtype == dtype for header in headers)
    return Dataset(uri, "npy", files, names, "", offset, n_features, dtype, tuple(partitions),
                   npy_columns=picked, field=field, shapes=tuple(header.shape for header in headers),
                   c_ordered=c_ordered)


def _read_npy(dataset: Dataset, file: DatasetFile, partition: Partition) -> tuple[np.ndarray, np.ndarray | None]:
    with file.open(f"{dataset.field}.uri") as handle:
        header = _npy_header(handle, file, dataset.field)
        if header.shape != dataset.shapes[partition.file]:
            raise DatasetInvalid(f"{dataset.field}.uri: {file.uri} changed while it was read", f"{dataset.field}.uri")
        mapped = np.memmap(handle, dtype=header.dtype, mode="r", offset=header.offset, shape=header.shape,
                           order="F" if header.fortran else "C")
        rows = mapped[partition.first : partition.stop]
        if dataset.npy_columns is not None:
            rows = rows[:, list(dataset.npy_columns)]
        X = np.array(rows, dtype=dataset.dtype, order="C", copy=True)
        del rows, mapped
    return X, None
