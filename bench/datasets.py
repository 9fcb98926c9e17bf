"""Fits of Parquet datasets on a Dask cluster: ours against dask-ml's KMeans on the same
LocalCluster (two worker processes, one task thread each) and the same files, in one run.

- A Lloyd iteration on 1e7 x 16 float32, k = 64, from the same initial centers, the data
  kept in the workers' memory by both: the difference between runs of 12 and 2 iterations,
  over 10, so reading and persisting cancel out.
- A full fit of the same data from the files (read, seeded by each one's k-means||, Lloyd
  to each one's tolerance, both capped at MAX_ITER): time and inertia.
- Out of core: a dataset three times the workers' memory limits, fitted to completion;
  the workers' peak resident memory against their limit.
- Dask's overhead on data that fits one machine (1e6 x 16, k = 64, 20 iterations from the
  same centers): dataset to model on the cluster, against the server's own path (read the
  files, fit with the local engine).
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from centroidal.engine import kmeans
from centroidal.engine.kmeans import KMeansParams
from centroidal.engine.progress import run_to_end
from centroidal.partitioned import kmeans as partitioned
from centroidal.partitioned.cluster import DaskCluster
from centroidal.sources import Roots, open_dataset, read_rows

WORKERS = 2
# Rows per file: 16 MiB of 16 float32 columns, one of our partitions and one dask-ml chunk.
FILE_ROWS = 1 << 18
ROW_GROUP = 1 << 16
MAX_ITER = 60


def _write(folder: Path, n_rows: int, n_features: int, seed: int = 0) -> Path:
    """Blobs of 64 centers with unit noise, written a file at a time (never held whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    means = rng.uniform(-10, 10, size=(64, n_features)).astype(np.float32)
    for index, start in enumerate(range(0, n_rows, FILE_ROWS)):
        rows = min(FILE_ROWS, n_rows - start)
        X = means[rng.integers(64, size=rows)] + rng.normal(size=(rows, n_features)).astype(np.float32)
        table = pa.table({f"f{i}": X[:, i] for i in range(n_features)})
        pq.write_table(table, folder / f"part-{index:05d}.parquet", row_group_size=ROW_GROUP)
    return folder


@contextmanager
def _files_on_a_cluster(n_rows: int, n_features: int, memory_limit: int | str) -> Iterator[tuple[Path, DaskCluster]]:
    """Parquet files of blobs in a temporary folder, and a LocalCluster of WORKERS worker
    processes with ``memory_limit`` each; both gone afterwards."""
    root = Path(tempfile.mkdtemp(prefix="centroidal-bench-datasets-"))
    cluster = DaskCluster(local_workers=WORKERS, memory_limit=memory_limit)
    try:
        yield _write(root / "points", n_rows, n_features), cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


def _dataset(folder: Path) -> Any:
    return open_dataset(str(folder), Roots([str(folder)]), format="parquet")


def _ours(client: Any, folder: Path, params: KMeansParams, persist: bool = True) -> tuple[float, Any]:
    began = time.perf_counter()
    result = run_to_end(partitioned.fit_steps(client, _dataset(folder), params, persist=persist))
    return time.perf_counter() - began, result


def _dask_array(folder: Path) -> Any:
    import dask.dataframe as dd

    return dd.read_parquet(str(folder)).to_dask_array(lengths=True)  # lengths: one pass over the files


def _inertia(client: Any, dataset: Any, centers: np.ndarray) -> float:
    """Sum of squared distances from every row to its nearest center, exact, in float64."""
    from centroidal.partitioned import tasks
    from centroidal.partitioned.partitions import Partitions

    partitions = Partitions(client, dataset, False, False, None)
    return float(sum(part[2] for part in partitions.run(tasks.lloyd_sums, np.ascontiguousarray(centers), True)))


def _persisted(client: Any, folder: Path) -> Any:
    """The files as a dask array kept in the workers' memory (not this process's)."""
    from distributed import wait

    with client.as_current():
        X = client.persist(_dask_array(folder))
        wait(X)
    return X


def _theirs(client: Any, X: Any, **options: Any) -> tuple[float, Any]:
    from dask_ml.cluster import KMeans

    with client.as_current():
        began = time.perf_counter()
        model = KMeans(**options).fit(X)
        return time.perf_counter() - began, model


def _first_rows(folder: Path, count: int) -> np.ndarray:
    dataset = _dataset(folder)
    rows, _ = read_rows(dataset, dataset.partitions[0])
    return np.ascontiguousarray(rows[:count])


def lloyd_and_full_fit(n_rows: int = 10_000_000, n_features: int = 16, k: int = 64) -> tuple[list[str], dict[str, float]]:
    with _files_on_a_cluster(n_rows, n_features, "6GiB") as (folder, cluster):
        client = cluster.client()
        init = _first_rows(folder, k)
        given = [KMeansParams(k, init="given", init_centers=init, tol=0.0, max_iter=iters) for iters in (2, 12)]
        _ours(client, folder, given[0])  # every worker imports and loads its kernels once
        ours = [_ours(client, folder, params)[0] for params in given]
        X = _persisted(client, folder)
        _theirs(client, X, n_clusters=k, init=init, max_iter=2, tol=0.0)
        theirs = [_theirs(client, X, n_clusters=k, init=init, max_iter=iters, tol=0.0)[0] for iters in (2, 12)]
        ours_iter, theirs_iter = (ours[1] - ours[0]) / 10, (theirs[1] - theirs[0]) / 10
        del X
        ours_s, ours_fit = _ours(client, folder, KMeansParams(k, seed=0, max_iter=MAX_ITER))
        began = time.perf_counter()  # the read is inside both fits' times
        X = _persisted(client, folder)
        _, theirs_fit = _theirs(client, X, n_clusters=k, random_state=0, max_iter=MAX_ITER)
        theirs_s = time.perf_counter() - began
        del X
        # Both models' inertia computed alike, exactly, on the cluster (dask-ml's own inertia_
        # is not the sum of squared distances to its final centers).
        dataset = _dataset(folder)
        ours_inertia = _inertia(client, dataset, ours_fit.centers)
        theirs_inertia = _inertia(client, dataset, np.asarray(theirs_fit.cluster_centers_, dtype=np.float32))
        label = f"{n_rows:.0e}x{n_features} k={k}"
        lines = [
            f"Dask, {WORKERS} worker processes, Parquet {label} (dask-ml {_version('dask_ml')} on the same cluster)",
            f"  Lloyd iteration      ours {ours_iter * 1e3:8.1f} ms   dask-ml {theirs_iter * 1e3:8.1f} ms   "
            f"ratio {ours_iter / theirs_iter:.2f} (target <= 0.5)",
            f"  full fit from files  ours {ours_s:8.2f} s ({ours_fit.n_iter} iterations, k-means||)   dask-ml "
            f"{theirs_s:8.2f} s ({theirs_fit.n_iter_} iterations)   ratio {ours_s / theirs_s:.2f} (target <= 0.5)",
            f"  inertia              ours {ours_inertia:.6g}   dask-ml {theirs_inertia:.6g}   "
            f"ratio {ours_inertia / theirs_inertia:.4f} (target <= 1; dask-ml's own inertia_ "
            f"{float(theirs_fit.inertia_):.6g})",
        ]
        facts = {"dask_lloyd_iter_ratio": ours_iter / theirs_iter, "dask_full_fit_ratio": ours_s / theirs_s,
                 "dask_inertia_ratio": ours_inertia / theirs_inertia}
        return lines, facts


# Each worker's limit. A worker that has loaded distributed, pyarrow, numba and our kernels
# holds about 415 MiB resident on the Xeon host (358 MiB at its peak on the EPYC one), over
# the 80% of 512 MiB at which Dask pauses a worker: with 512 MiB, no task ever ran there.
OUT_OF_CORE_LIMIT = 768 << 20


def out_of_core(memory_limit: int = OUT_OF_CORE_LIMIT, times: float = 3.0, n_features: int = 16, k: int = 64,
                max_iter: int = 10) -> tuple[list[str], dict[str, float]]:
    """A dataset ``times`` the workers' memory limits together, fitted with k-means|| and
    ``max_iter`` Lloyd iterations; every iteration reads it again."""
    n_rows = int(times * WORKERS * memory_limit / (n_features * 4))
    with _files_on_a_cluster(n_rows, n_features, memory_limit) as (folder, cluster):
        dataset = _dataset(folder)
        client = cluster.client()
        persisted = cluster.persist(dataset)
        began = time.perf_counter()
        result = run_to_end(partitioned.fit_steps(client, dataset, KMeansParams(k, seed=0, max_iter=max_iter),
                                                  persist=persisted))
        seconds = time.perf_counter() - began
        peaks = client.run(_peak_rss)
        peak = max(peaks.values())
        lines = [
            f"Out of core: {dataset.nbytes / 2**30:.2f} GiB ({n_rows:.3g}x{n_features} float32, "
            f"{len(dataset.partitions)} partitions) on {WORKERS} workers limited to {memory_limit / 2**20:.0f} MiB each "
            f"({dataset.nbytes / (WORKERS * memory_limit):.1f}x their memory; kept in memory: {persisted})",
            f"  fitted in {seconds:.1f} s, {result.n_iter} iterations, inertia {result.inertia:.6g}; peak worker RSS "
            f"{peak / 2**20:.0f} MiB of {memory_limit / 2**20:.0f} MiB ({', '.join(f'{v / 2**20:.0f}' for v in peaks.values())})",
        ]
        return lines, {"dask_out_of_core_peak_share": peak / memory_limit, "dask_out_of_core_s": seconds}


def _peak_rss() -> int:
    """This process's peak resident memory: VmHWM, which starts afresh at exec. (ru_maxrss
    does not: a spawned worker's starts at its parent's resident size when it forked.)"""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def overhead(n_rows: int = 1_000_000, n_features: int = 16, k: int = 64, iterations: int = 20) -> tuple[list[str], dict[str, float]]:
    with _files_on_a_cluster(n_rows, n_features, "4GiB") as (folder, cluster):
        client = cluster.client()
        init = _first_rows(folder, k)
        params = KMeansParams(k, init="given", init_centers=init, tol=0.0, max_iter=iterations)
        _ours(client, folder, params)
        on_dask = min(_ours(client, folder, params)[0] for _ in range(3))

        def local() -> float:
            began = time.perf_counter()
            dataset = _dataset(folder)
            X = np.concatenate([read_rows(dataset, partition)[0] for partition in dataset.partitions])
            kmeans.fit(X, k, init=init, tol=0.0, max_iter=iterations)
            return time.perf_counter() - began

        local()
        here = min(local() for _ in range(3))
        lines = [f"Dask overhead, {n_rows:.0e}x{n_features} k={k}, {iterations} iterations from the files: on "
                 f"{WORKERS} workers {on_dask:.2f} s, local engine {here:.2f} s, ratio {on_dask / here:.2f} "
                 "(target <= 1.5)"]
        return lines, {"dask_overhead_ratio": on_dask / here}


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return "missing"


def run(quick: bool = False) -> tuple[list[str], dict[str, float]]:
    lines: list[str] = []
    facts: dict[str, float] = {}
    suites = [overhead] if quick else [overhead, lloyd_and_full_fit, out_of_core]
    for suite in suites:
        more, more_facts = suite()
        lines += more + [""]
        facts.update(more_facts)
    return lines, facts


if __name__ == "__main__":
    for line in run()[0]:
        print(line)
