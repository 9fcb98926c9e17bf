"""A Fit of a dataset named by reference (FitSpec.source): the files found under the allowed
roots and checked, then the engine's steps, either here on the rows read into memory (or
memory-mapped) within the server's limits and budget, or on the Dask cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

import numpy as np

from centroidal import codec
from centroidal.engine import InvalidInputError, kmeans
from centroidal.engine.progress import Progress
from centroidal.engine.validation import check_finite, check_sample_weight
from centroidal.partitioned import kmeans as partitioned
from centroidal.sources import Dataset, open_dataset, read_rows

from .admission import CallWork
from .exceptions import InvalidRequest, LimitExceeded
from .gathering import FitData, check_width
from .memory import Reservation
from .runtime import Runtime

FIELD = "spec.source"


def open_source(runtime: Runtime, source: codec.DatasetSource, field: str = FIELD) -> Dataset:
    """The dataset a request names (``field``: where, in errors), its files found under the
    roots and their metadata read (blocking: run it on a worker thread)."""
    return open_dataset(source.uri, runtime.datasets, format=source.format, columns=source.columns,
                        weight_column=source.weight_column, field=field)


def check_dataset(runtime: Runtime, dataset: Dataset, params: kmeans.KMeansParams, declared: int,
                  return_labels: bool) -> None:
    """The dataset against the spec and the server's limits (those on the rows held here apply
    only when they are: a Dask fit's rows stay on its workers)."""
    limits = runtime.config
    if declared and declared != dataset.n_rows:
        raise InvalidRequest(f"spec.n_samples={declared} but {dataset.uri} holds {dataset.n_rows} rows",
                             field="spec.n_samples")
    if dataset.n_features > limits.max_features:
        raise LimitExceeded(f"{dataset.uri} has {dataset.n_features} features, over the server's limit of "
                            f"{limits.max_features}", field=f"{FIELD}.columns")
    check_width(limits, params.n_clusters, "spec.config.n_clusters", params.init_centers, dataset.n_features,
                dataset.dtype, f"{dataset.uri} has {dataset.n_features} features")
    if runtime.dask is not None:
        if params.algorithm == "spectral":
            raise InvalidRequest("a spectral fit runs in one process (at most 20,000 rows): it is not run on "
                                 "the Dask cluster; upload the rows instead", field="spec.config.algorithm")
        if return_labels:
            raise InvalidRequest("a fit on the Dask cluster sends no training labels (200 million of them "
                                 "would not fit a stream): use PredictDataset to write them",
                                 field="spec.return_labels")
        return
    if dataset.n_rows > limits.max_points:
        raise LimitExceeded(f"{dataset.uri} holds {dataset.n_rows} rows, over the server's limit of "
                            f"{limits.max_points} points (a Dask cluster, --dask-local or --dask-scheduler, "
                            "fits more)", field=f"{FIELD}.uri")
    if dataset.nbytes > limits.max_fit_bytes:
        raise LimitExceeded(f"{dataset.uri} holds {dataset.nbytes} bytes of rows, over the server's limit of "
                            f"{limits.max_fit_bytes} bytes per fit", field=f"{FIELD}.uri")


async def local_rows(runtime: Runtime, dataset: Dataset, params: kmeans.KMeansParams, memory: Reservation,
                     work: CallWork) -> FitData:
    """The dataset in this process: memory-mapped when it is one .npy file read whole, else read
    into one array; its memory asked for first, like an upload's."""
    mapped = dataset.mappable and params.metric == "euclidean"  # cosine scales the rows: a copy
    held = 0 if mapped else dataset.nbytes + (dataset.n_rows * 8 if dataset.weighted else 0)
    working = kmeans.working_bytes(dataset.n_rows, params.n_clusters, dataset.n_features, dataset.dtype)
    await memory.wait_for(held + working, runtime.config.idle_timeout)
    if mapped:
        return await work.run(runtime.workers.fits, _mapped, dataset)
    return await work.run(runtime.workers.fits, _read_whole, dataset, params.metric == "cosine")


def _mapped(dataset: Dataset) -> FitData:
    X = dataset.memory_mapped()
    assert X is not None
    return _checked(dataset, X, None, False)


def _read_whole(dataset: Dataset, spherical: bool) -> FitData:
    X = np.empty((dataset.n_rows, dataset.n_features), dtype=dataset.dtype)
    weights = np.empty(dataset.n_rows, dtype=np.float64) if dataset.weighted else None
    for partition in dataset.partitions:
        rows, row_weights = read_rows(dataset, partition)
        X[partition.offset : partition.offset + partition.rows] = rows
        if weights is not None and row_weights is not None:
            weights[partition.offset : partition.offset + partition.rows] = row_weights
        del rows, row_weights
    return _checked(dataset, X, weights, spherical)


def _checked(dataset: Dataset, X: np.ndarray, weights: np.ndarray | None, spherical: bool) -> FitData:
    """Values checked here, so that errors name the source rather than an upload's fields."""
    check_finite(X, f"{FIELD}.uri")
    if spherical:  # the engine scales the rows; a row it cannot scale is named here, by the source
        zero = np.flatnonzero(~X.any(axis=1))
        if zero.size:
            raise InvalidRequest(f"{FIELD}.uri row {int(zero[0])} has zero length: the cosine metric needs every "
                                 "row to have a direction", field=f"{FIELD}.uri")
    if weights is not None:
        try:
            check_sample_weight(weights, X.shape[0])
        except InvalidInputError as exc:
            raise InvalidRequest(f"{FIELD}.weight_column {dataset.weight_column!r}: {exc}",
                                 field=f"{FIELD}.weight_column") from None
    return FitData(X, weights)


def dask_steps(runtime: Runtime, dataset: Dataset, params: kmeans.KMeansParams,
               stop: threading.Event) -> Generator[Progress, None, Any]:
    """The fit on the Dask cluster; its first step connects (or starts the cluster)."""
    dask = runtime.dask
    assert dask is not None
    persist = dask.persist(dataset)
    return (yield from partitioned.fit_steps(dask.client(), dataset, params, persist=persist, stop=stop))
