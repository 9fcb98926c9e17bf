"""Datasets made in a temporary directory, as the tests of every layer need them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def blobs(n: int = 20_000, n_features: int = 8, centers: int = 12, seed: int = 0,
          dtype: type = np.float32) -> np.ndarray:
    """Separated Gaussian blobs, shuffled: ndarray of shape (n, n_features)."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-20, 20, size=(centers, n_features))
    X = means[rng.integers(centers, size=n)] + rng.normal(size=(n, n_features))
    return X.astype(dtype)


def write_parquet(path: Path, X: np.ndarray, *, weights: np.ndarray | None = None, row_group_size: int = 1000,
                  as_list: bool = False) -> Path:
    """X as Parquet: a float column per feature (f0, f1, ...), or one fixed-size list column
    "embedding"; weights in a column "w"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if as_list:
        columns = {"embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])}
    else:
        columns = {f"f{i}": X[:, i] for i in range(X.shape[1])}
    if weights is not None:
        columns["w"] = weights
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def split_parquet(folder: Path, X: np.ndarray, parts: int, **options: object) -> list[Path]:
    """X written as ``parts`` Parquet files part-000.parquet, ... in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, rows in enumerate(np.array_split(np.arange(X.shape[0]), parts)):
        weights = options.get("weights")
        more = dict(options, weights=None if weights is None else np.asarray(weights)[rows])
        paths.append(write_parquet(folder / f"part-{index:03d}.parquet", X[rows], **more))  # type: ignore[arg-type]
    return paths
