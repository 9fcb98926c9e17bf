"""k-means over a dataset's partitions on a real Dask cluster: the same model as the engine
on one machine, the same on any number of workers, k-means|| as good as k-means++, and a
fit that stops when asked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import numpy as np
import pytest

from centroidal.engine import kmeans
from centroidal.engine.kmeans import KMeansParams
from centroidal.engine.progress import Stage, run_to_end
from centroidal.engine.validation import InvalidInputError
from centroidal.partitioned import kmeans as partitioned
from centroidal.partitioned.partitions import Stopped
from centroidal.sources import Dataset, Roots, open_dataset
from tests.sources.datasets import blobs, split_parquet

# Small partitions, so that even these datasets are split many ways.
PARTITION_BYTES = 64 << 10


def in_process_cluster(workers: int) -> Any:
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=False,
                                    dashboard_address="127.0.0.1:0")


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    with in_process_cluster(2) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


def dataset_of(folder: Path, X: np.ndarray, *, weights: np.ndarray | None = None, parts: int = 3) -> Dataset:
    split_parquet(folder, X, parts, weights=weights, row_group_size=500)
    return open_dataset(str(folder), Roots([str(folder)]), format="parquet", weight_column="w" if weights is not None
                        else "", partition_bytes=PARTITION_BYTES)


def fit(client: Any, dataset: Dataset, params: KMeansParams, persist: bool = True) -> kmeans.KMeansResult:
    result: kmeans.KMeansResult = run_to_end(partitioned.fit_steps(client, dataset, params, persist=persist))
    return result


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("weighted", [False, True])
def test_from_given_centers_the_dask_fit_is_the_engines(
    dask_client: Any, tmp_path: Path, dtype: type, metric: str, weighted: bool
) -> None:
    X = blobs(12_000, 6, centers=10, dtype=dtype) + (30 if metric == "cosine" else 0)
    weights = np.random.default_rng(1).uniform(0.1, 3.0, X.shape[0]) if weighted else None
    dataset = dataset_of(tmp_path, X, weights=weights)
    assert len(dataset.partitions) > 4
    init = X[np.random.default_rng(2).choice(X.shape[0], 10, replace=False)]
    params = KMeansParams(10, init="given", init_centers=init, tol=0.0, metric=metric)
    ours = fit(dask_client, dataset, params, persist=not weighted)
    local = kmeans.fit(X, 10, init=init, tol=0.0, sample_weight=weights, metric=metric)
    assert ours.centers.dtype == dtype
    assert ours.n_iter == local.n_iter
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(ours.centers, local.centers, rtol=tolerance, atol=tolerance)
    assert ours.inertia == pytest.approx(local.inertia, rel=tolerance)


def test_an_empty_cluster_takes_the_farthest_row_as_on_one_machine(dask_client: Any, tmp_path: Path) -> None:
    X = blobs(6000, 3, centers=4, dtype=np.float64)
    init = np.vstack([X[:3], X[:1]])  # two equal centers: one of them is empty at once
    dataset = dataset_of(tmp_path, X)
    params = KMeansParams(4, init="given", init_centers=init, tol=0.0)
    ours = fit(dask_client, dataset, params)
    local = kmeans.fit(X, 4, init=init, tol=0.0)
    np.testing.assert_allclose(ours.centers, local.centers, rtol=1e-10)
    assert ours.n_iter == local.n_iter


def test_the_same_seed_gives_the_same_model_on_any_number_of_workers(dask_client: Any, tmp_path: Path) -> None:
    dataset = dataset_of(tmp_path, blobs(8000, 5, centers=8))
    params = KMeansParams(8, seed=11, n_init=2)
    on_two = fit(dask_client, dataset, params)
    with in_process_cluster(1) as cluster, distributed.Client(cluster, set_as_default=False) as one:
        on_one = fit(one, dataset, params, persist=False)
    np.testing.assert_array_equal(on_one.centers, on_two.centers)
    assert (on_one.inertia, on_one.n_iter, on_one.best_restart) == (on_two.inertia, on_two.n_iter, on_two.best_restart)


def test_kmeans_parallel_seeds_as_well_as_kmeans_plusplus(dask_client: Any, tmp_path: Path) -> None:
    # Overlapping data, where seeding decides the result: k-means|| within a few percent.
    rng = np.random.default_rng(5)
    X = (rng.normal(size=(20_000, 8)) * rng.uniform(0.5, 2.0, 8)).astype(np.float32)
    dataset = dataset_of(tmp_path, X)
    ours = [fit(dask_client, dataset, KMeansParams(32, seed=seed, max_iter=1)).inertia for seed in range(3)]
    plusplus = [kmeans.fit(X, 32, seed=seed, max_iter=1).inertia for seed in range(3)]
    assert np.mean(ours) <= 1.05 * np.mean(plusplus)
    converged = fit(dask_client, dataset, KMeansParams(32, seed=0)).inertia
    assert converged <= 1.03 * kmeans.fit(X, 32, seed=0).inertia


def test_seeding_reports_its_rounds_then_every_iteration(dask_client: Any, tmp_path: Path) -> None:
    dataset = dataset_of(tmp_path, blobs(4000, 4, centers=6))
    events: list[Any] = []
    run_to_end(partitioned.fit_steps(dask_client, dataset, KMeansParams(6, seed=0), persist=True), events.append)
    seeding = [event for event in events if event.stage is Stage.SEEDING]
    assert [event.iteration for event in seeding] == list(range(1, len(seeding) + 1))
    assert 1 <= len(seeding) <= partitioned.ROUNDS
    iterations = [event for event in events if event.stage is Stage.ITERATION]
    assert iterations and [event.iteration for event in iterations] == list(range(1, len(iterations) + 1))
    assert events[-1].stage is Stage.RESTART_DONE


def test_random_init_draws_distinct_rows_of_positive_weight(dask_client: Any, tmp_path: Path) -> None:
    X = blobs(3000, 3, dtype=np.float64)
    weights = np.zeros(3000)
    weights[::100] = 1.0  # 30 rows may be drawn
    dataset = dataset_of(tmp_path, X, weights=weights)
    result = fit(dask_client, dataset, KMeansParams(5, init="random", n_init=1, max_iter=1, seed=3))
    assert result.centers.shape == (5, 3)
    with pytest.raises(InvalidInputError, match="at least n_clusters=40 rows with positive weight, got 30"):
        fit(dask_client, dataset, KMeansParams(40, init="random", seed=3))


def test_bad_rows_are_refused_naming_the_source_and_rows(dask_client: Any, tmp_path: Path) -> None:
    X = blobs(3000, 3, dtype=np.float64)
    X[2500, 1] = np.nan
    dataset = dataset_of(tmp_path / "nan", X)
    with pytest.raises(InvalidInputError, match="NaN or Inf") as refused:
        fit(dask_client, dataset, KMeansParams(3, seed=0))
    assert refused.value.field == "source.uri"
    weights = np.ones(3000)
    weights[10] = -1.0
    dataset = dataset_of(tmp_path / "negative", blobs(3000, 3), weights=weights)
    with pytest.raises(InvalidInputError, match="must be finite and >= 0") as refused:
        fit(dask_client, dataset, KMeansParams(3, seed=0))
    assert refused.value.field == "source.weight_column"


def test_a_fit_stops_soon_after_its_call_ends(dask_client: Any, tmp_path: Path) -> None:
    dataset = dataset_of(tmp_path, blobs(20_000, 8, centers=16))
    stop = threading.Event()
    steps = partitioned.fit_steps(dask_client, dataset, KMeansParams(16, seed=0, tol=0.0, max_iter=100_000),
                                  persist=False, stop=stop)
    for event in steps:
        if event.stage is Stage.ITERATION and event.iteration == 2:
            break
    stop.set()
    began = time.monotonic()
    with pytest.raises(Stopped):
        next(steps)
    assert time.monotonic() - began < 5
    steps.close()
    # Nothing of the fit is left on the cluster once it is closed.
    deadline = time.monotonic() + 10
    while dask_client.who_has() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not dask_client.who_has()


def test_worker_processes_fit_what_threads_fit(dask_client: Any, tmp_path: Path) -> None:
    # Every task, its arguments and its results cross a process boundary here (pickled).
    from centroidal.partitioned.cluster import DaskCluster

    X = blobs(10_000, 6, centers=8)
    X[::7] *= -1
    dataset = dataset_of(tmp_path, X, weights=np.linspace(0.5, 1.5, X.shape[0]))
    params = KMeansParams(8, seed=4, metric="cosine")
    cluster = DaskCluster(local_workers=2)
    try:
        client = cluster.client()
        assert all(worker["nthreads"] == 1 for worker in client.scheduler_info()["workers"].values())
        in_processes = fit(client, dataset, params, persist=cluster.persist(dataset))
    finally:
        cluster.close()
    in_threads = fit(dask_client, dataset, params)
    np.testing.assert_array_equal(in_processes.centers, in_threads.centers)
    assert in_processes.inertia == in_threads.inertia


def test_a_dataset_past_half_the_workers_memory_is_read_at_every_iteration(tmp_path: Path) -> None:
    from centroidal.partitioned.cluster import DaskCluster

    dataset = dataset_of(tmp_path, blobs(20_000, 8))
    cluster = DaskCluster(local_workers=1, processes=False, memory_limit=4 * dataset.nbytes)
    try:
        assert cluster.persist(dataset)
    finally:
        cluster.close()
    cluster = DaskCluster(local_workers=1, processes=False, memory_limit=dataset.nbytes)
    try:
        assert not cluster.persist(dataset)
    finally:
        cluster.close()


@pytest.mark.slow
def test_a_worker_killed_mid_fit_costs_nothing_but_time(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import os
    import signal

    from centroidal.partitioned.cluster import DaskCluster

    dataset = dataset_of(tmp_path, blobs(40_000, 8, centers=16))
    params = KMeansParams(16, seed=7, tol=0.0)
    cluster = DaskCluster(local_workers=2)
    try:
        client = cluster.client()
        uninterrupted = fit(client, dataset, params)
        steps = partitioned.fit_steps(client, dataset, params, persist=True)
        for event in steps:
            if event.stage is Stage.ITERATION and event.iteration == 2:
                break
        victim = sorted(client.run(os.getpid).items())[0][1]
        os.kill(victim, signal.SIGKILL)  # its kept partitions are lost with it
        result = run_to_end(steps)
    finally:
        cluster.close()
    np.testing.assert_array_equal(result.centers, uninterrupted.centers)
    assert result.inertia == uninterrupted.inertia
    # The partitions died with their holder: the fit started again on tasks.
    assert "the fit starts again, kept by tasks" in caplog.text
