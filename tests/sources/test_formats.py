"""Reading Parquet and .npy datasets: their shape, their partitions, and their rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from centroidal.sources import DatasetInvalid, Roots, open_dataset, read_rows
from tests.sources.datasets import blobs, split_parquet, write_parquet


def whole(dataset) -> tuple[np.ndarray, np.ndarray | None]:  # type: ignore[no-untyped-def]
    parts = [read_rows(dataset, partition) for partition in dataset.partitions]
    weights = [w for _, w in parts if w is not None]
    return np.concatenate([X for X, _ in parts]), (np.concatenate(weights) if weights else None)


def test_parquet_columns_and_weights_read_back_in_order(tmp_path: Path) -> None:
    X = blobs(5000, 4)
    weights = np.linspace(0.5, 2.0, 5000)
    split_parquet(tmp_path / "points", X, 3, weights=weights, row_group_size=300)
    dataset = open_dataset(str(tmp_path / "points" / "*.parquet"), Roots([str(tmp_path)]), weight_column="w",
                           partition_bytes=4096)
    assert (dataset.n_rows, dataset.n_features, dataset.dtype) == (5000, 4, np.float32)
    assert dataset.columns == ("f0", "f1", "f2", "f3")
    # Partitions are runs of whole row groups, never across files, offsets contiguous.
    assert len(dataset.partitions) > 3
    assert [p.offset for p in dataset.partitions] == list(np.cumsum([0] + [p.rows for p in dataset.partitions])[:-1])
    rows, read_weights = whole(dataset)
    np.testing.assert_array_equal(rows, X)
    np.testing.assert_array_equal(read_weights, weights)


def test_a_fixed_size_list_column_is_one_row_per_embedding(tmp_path: Path) -> None:
    X = blobs(1000, 16)
    write_parquet(tmp_path / "emb.parquet", X, as_list=True, row_group_size=128)
    dataset = open_dataset(str(tmp_path / "emb.parquet"), Roots([str(tmp_path)]))
    assert dataset.list_column and dataset.n_features == 16 and dataset.dtype == np.float32
    np.testing.assert_array_equal(whole(dataset)[0], X)


def test_chosen_columns_and_mixed_types_read_as_float64(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"a": np.arange(10, dtype=np.float32), "b": np.arange(10, dtype=np.int64) * 2,
                      "label": [f"x{i}" for i in range(10)]})
    pq.write_table(table, tmp_path / "mixed.parquet")
    dataset = open_dataset(str(tmp_path / "mixed.parquet"), Roots([str(tmp_path)]), columns=["b", "a"])
    assert dataset.dtype == np.float64
    np.testing.assert_array_equal(whole(dataset)[0], np.column_stack([np.arange(10) * 2, np.arange(10)]))
    with pytest.raises(DatasetInvalid, match="'label' is string") as refused:
        open_dataset(str(tmp_path / "mixed.parquet"), Roots([str(tmp_path)]), columns=["a", "label"])
    assert refused.value.field == "source.columns"
    with pytest.raises(DatasetInvalid, match="'missing' is not a column"):
        open_dataset(str(tmp_path / "mixed.parquet"), Roots([str(tmp_path)]), columns=["missing"])


def test_a_null_is_refused_naming_its_row_in_the_dataset(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = [float(i) for i in range(20)]
    pq.write_table(pa.table({"a": values}), tmp_path / "0.parquet")
    pq.write_table(pa.table({"a": values[:7] + [None] + values[8:]}), tmp_path / "1.parquet")
    dataset = open_dataset(str(tmp_path / "*.parquet"), Roots([str(tmp_path)]))
    with pytest.raises(DatasetInvalid, match="null at row 27"):
        whole(dataset)


def test_files_with_other_columns_are_refused(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", blobs(10, 3))
    write_parquet(tmp_path / "b.parquet", blobs(10, 4))
    with pytest.raises(DatasetInvalid, match="every file must hold the same"):
        open_dataset(str(tmp_path / "*.parquet"), Roots([str(tmp_path)]))


def test_npy_files_are_partitioned_by_rows_and_columns_chosen_by_number(tmp_path: Path) -> None:
    X = blobs(3000, 5, dtype=np.float64)
    np.save(tmp_path / "a.npy", X[:1000])
    np.save(tmp_path / "b.npy", np.asfortranarray(X[1000:]))  # Fortran order reads the same
    roots = Roots([str(tmp_path)])
    dataset = open_dataset(str(tmp_path), roots, format="npy", partition_bytes=8 * 5 * 300)
    assert dataset.n_rows == 3000 and len(dataset.partitions) == 4 + 7
    np.testing.assert_array_equal(whole(dataset)[0], X)
    chosen = open_dataset(str(tmp_path / "*.npy"), roots, columns=["4", "0"])
    np.testing.assert_array_equal(whole(chosen)[0], X[:, [4, 0]])
    with pytest.raises(DatasetInvalid, match="column 9 is not among"):
        open_dataset(str(tmp_path / "*.npy"), roots, columns=["9"])
    with pytest.raises(DatasetInvalid, match="weights need Parquet"):
        open_dataset(str(tmp_path / "*.npy"), roots, weight_column="w")


def test_one_npy_file_read_whole_is_memory_mapped(tmp_path: Path) -> None:
    X = blobs(100, 3)
    np.save(tmp_path / "x.npy", X)
    dataset = open_dataset(str(tmp_path / "x.npy"), Roots([str(tmp_path)]))
    mapped = dataset.memory_mapped()
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, X)
    np.save(tmp_path / "y.npy", X)
    assert open_dataset(str(tmp_path / "*.npy"), Roots([str(tmp_path)])).memory_mapped() is None
    np.save(tmp_path / "f.npy", np.asfortranarray(X))  # not as the rows lie: read, not mapped
    fortran = open_dataset(str(tmp_path / "f.npy"), Roots([str(tmp_path)]))
    assert not fortran.mappable and fortran.memory_mapped() is None


@pytest.mark.parametrize("array, message", [
    (np.zeros(5), "a dataset needs 2-D rows"),
    (np.array([["a", "b"]]), "not numbers"),
])
def test_npy_files_that_are_not_rows_are_refused(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DatasetInvalid, match=message):
        open_dataset(str(tmp_path / "bad.npy"), Roots([str(tmp_path)]))


def test_a_file_that_is_not_its_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "x.npy").write_bytes(b"not npy")
    for name in ("x.parquet", "x.npy"):
        with pytest.raises(DatasetInvalid, match="is not a"):
            open_dataset(str(tmp_path / name), Roots([str(tmp_path)]))
