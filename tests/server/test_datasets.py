"""Fits of datasets named by reference, through a real server: read here when the server has
no cluster, on a real Dask cluster when it has one, and only from under the allowed roots."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import numpy as np
import pytest

from centroidal.client import (
    AlreadyExists,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from centroidal.engine import kmeans
from tests.conftest import ServerFactory
from tests.sources.datasets import blobs, split_parquet


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "datasets"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[Any]:
    """A Dask cluster of two in-process workers on a real TCP address, as a server would reach
    an existing scheduler."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://",
                                  dashboard_address="127.0.0.1:0") as cluster:
        with distributed.Client(cluster, set_as_default=False) as watcher:
            yield cluster.scheduler_address, watcher


def sdk(server: Any) -> Client:
    return Client(f"127.0.0.1:{server.port}", timeout=60)


def test_a_parquet_dataset_fits_as_the_same_rows_uploaded(start_server: ServerFactory, root: Path) -> None:
    X = blobs(6000, 5)
    weights = np.random.default_rng(0).uniform(0.5, 2.0, X.shape[0])
    split_parquet(root / "points", X, 3, weights=weights)
    server = start_server(dataset_root=(str(root),))
    with sdk(server) as client:
        stages: list[str] = []
        named = client.fit("named", source=f"file://{root}/points/*.parquet", weight_column="w", n_clusters=7,
                           seed=3, return_labels=True, on_progress=lambda event: stages.append(event.stage))
        uploaded = client.fit("uploaded", X, 7, seed=3, sample_weight=weights, return_labels=True)
    np.testing.assert_array_equal(named.centers, uploaded.centers)
    np.testing.assert_array_equal(named.labels, uploaded.labels)
    assert named.n_samples == 6000 and named.inertia == uploaded.inertia
    assert "data_received" in stages and "iteration" in stages


def test_one_npy_file_is_fitted_through_a_memory_map(start_server: ServerFactory, root: Path) -> None:
    X = blobs(4000, 3, dtype=np.float64)
    np.save(root / "x.npy", X)
    server = start_server(dataset_root=(str(root),))
    with sdk(server) as client:
        named = client.fit("x", source=str(root / "x.npy"), n_clusters=5, seed=1, metric="cosine")
    reference = kmeans.fit(X, 5, seed=1, metric="cosine")
    np.testing.assert_array_equal(named.centers, reference.centers)
    assert named.model.metric == "cosine"


def test_paths_outside_the_roots_are_permission_denied_and_change_nothing(
    start_server: ServerFactory, root: Path, tmp_path: Path
) -> None:
    np.save(tmp_path / "outside.npy", blobs(100, 2))
    server = start_server(dataset_root=(str(root),))
    with sdk(server) as client:
        client.fit("kept", blobs(300, 2), 3, seed=0)
        for uri in (str(tmp_path / "outside.npy"), f"{root}/../outside.npy", "/etc/passwd"):
            with pytest.raises(PermissionDenied) as refused:
                client.fit("kept", source=uri, n_clusters=3)
            assert refused.value.field == "spec.source.uri"
            assert refused.value.reason == "DATASET_NOT_ALLOWED"
        with pytest.raises(NotFound, match="matches no .npy file"):
            client.fit("kept", source=str(root / "*.npy"), n_clusters=3)
        assert client.get_model("kept").version == 1


def test_a_server_without_roots_reads_no_dataset(client: Client, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", blobs(100, 2))
    with pytest.raises(PermissionDenied, match="allows no --dataset-root"):
        client.fit("x", source=str(tmp_path / "x.npy"), n_clusters=2)


def test_a_fit_of_a_source_carries_no_rows_and_stays_within_the_limits(
    start_server: ServerFactory, root: Path
) -> None:
    np.save(root / "x.npy", blobs(2000, 4))
    server = start_server(dataset_root=(str(root),), max_points=1000)
    with sdk(server) as client:
        with pytest.raises(ResourceExhausted, match="over the server's limit of 1000 points") as refused:
            client.fit("x", source=str(root / "x.npy"), n_clusters=2)
        assert refused.value.field == "spec.source.uri"
        with pytest.raises(InvalidArgument, match="columns: column 7 is not among"):
            client.fit("x", source=str(root / "x.npy"), columns=["7"], n_clusters=2)
    with pytest.raises(ValueError, match="one of them"):
        client.fit("x", blobs(10, 4), 2, source=str(root / "x.npy"))


def test_on_dask_the_fit_is_the_engines_from_the_same_centers(
    start_server: ServerFactory, root: Path, dask_scheduler: Any
) -> None:
    address, _ = dask_scheduler
    X = blobs(20_000, 6, centers=9)
    split_parquet(root / "points", X, 4, row_group_size=1000)
    init = X[:9]
    server = start_server(dataset_root=(str(root),), dask_scheduler=address)
    with sdk(server) as client:
        stages: list[str] = []
        result = client.fit("on-dask", source=str(root / "points"), format="parquet", n_clusters=9, init=init,
                            tol=0.0, on_progress=lambda event: stages.append(event.stage))
        seeded = client.fit("seeded", source=str(root / "points"), format="parquet", n_clusters=9, seed=2)
        with pytest.raises(InvalidArgument, match="PredictDataset") as refused:
            client.fit("x", source=str(root / "points"), format="parquet", n_clusters=9, return_labels=True)
        assert refused.value.field == "spec.return_labels"
        with pytest.raises(InvalidArgument, match="one process"):
            client.fit("x", source=str(root / "points"), format="parquet", n_clusters=9, algorithm="spectral")
    local = kmeans.fit(X, 9, init=init, tol=0.0)
    np.testing.assert_allclose(result.centers, local.centers, rtol=1e-4, atol=1e-4)
    assert result.n_samples == 20_000 and result.n_iter == local.n_iter
    assert "iteration" in stages
    assert seeded.inertia <= 1.03 * kmeans.fit(X, 9, seed=2).inertia


def test_a_dask_fit_past_its_deadline_stops_and_stores_nothing(
    start_server: ServerFactory, root: Path, dask_scheduler: Any
) -> None:
    address, watcher = dask_scheduler
    rng = np.random.default_rng(0)
    split_parquet(root / "points", rng.normal(size=(300_000, 16)).astype(np.float32), 4)
    server = start_server(dataset_root=(str(root),), dask_scheduler=address)
    with sdk(server) as client:
        with pytest.raises(DeadlineExceeded):
            client.fit("slow", source=str(root / "points"), format="parquet", n_clusters=256, tol=0.0,
                       max_iter=100_000, seed=0, timeout=2)
        with pytest.raises(NotFound):
            client.get_model("slow")
    deadline = time.monotonic() + 10  # the fit's tasks and kept partitions are let go of
    while watcher.who_has() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not watcher.who_has()


def test_a_scheduler_that_cannot_be_reached_is_unavailable(start_server: ServerFactory, root: Path) -> None:
    np.save(root / "x.npy", blobs(100, 2))
    server = start_server(dataset_root=(str(root),), dask_scheduler="tcp://127.0.0.1:9")
    with sdk(server) as client:
        with pytest.raises(Unavailable, match="cannot be reached") as refused:
            client.fit("x", source=str(root / "x.npy"), n_clusters=2)
        assert refused.value.reason == "DASK_UNAVAILABLE"


def test_the_cli_fits_a_source(start_server: ServerFactory, root: Path) -> None:
    np.save(root / "x.npy", blobs(500, 3))
    server = start_server(dataset_root=(str(root),))
    done = subprocess.run(
        [sys.executable, "-m", "centroidal.client.cli", "fit", "--target", f"127.0.0.1:{server.port}", "--model",
         "cli", "--source", str(root / "x.npy"), "--columns", "0,2", "-k", "4", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "model cli version 1: 500 points, 4 clusters" in done.stdout
    with sdk(server) as client:
        assert client.get_model("cli").n_features == 2


def read_labels(folder: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    parts = sorted(folder.glob("part-*.parquet"))
    table = [pq.read_table(part) for part in parts]
    return {name: np.concatenate([part.column(name).to_numpy() for part in table]) for name in table[0].column_names}


@pytest.mark.parametrize("on_dask", [False, True])
def test_predict_dataset_writes_what_predict_answers(
    start_server: ServerFactory, root: Path, tmp_path: Path, dask_scheduler: Any, on_dask: bool
) -> None:
    X = blobs(9000, 4, centers=6)
    split_parquet(root / "points", X, 3, row_group_size=500)
    out_root = tmp_path / "labels"
    out_root.mkdir()
    server = start_server(dataset_root=(str(root),), dataset_output_root=(str(out_root),),
                          dask_scheduler=dask_scheduler[0] if on_dask else "")
    with sdk(server) as client:
        client.fit("m", X[:3000], 6, seed=0, metric="cosine")
        progress: list[Any] = []
        result = client.predict_dataset("m", str(root / "points"), str(out_root / "run"), format="parquet",
                                        return_distances=True, on_progress=progress.append)
        labels, distances = client.predict("m", X, return_distance=True)
        assert (result.rows, result.model_version, result.output_uri) == (9000, 1, str(out_root / "run"))
        written = read_labels(out_root / "run")
        np.testing.assert_array_equal(written["row"], np.arange(9000))
        np.testing.assert_array_equal(written["label"], labels)
        np.testing.assert_allclose(written["distance"], distances, rtol=1e-5, atol=1e-6)
        assert written["distance"].dtype == np.float32 and result.files == len(list((out_root / "run").glob("*.parquet")))
        summary = json.loads((out_root / "run" / "_SUCCESS").read_text())
        assert summary["rows"] == 9000 and summary["model_version"] == 1
        assert progress[0].rows_done == 0 and progress[0].rows_total == 9000
        # An earlier run's files are kept unless overwrite is asked for.
        with pytest.raises(AlreadyExists, match="already holds") as refused:
            client.predict_dataset("m", str(root / "points"), str(out_root / "run"), format="parquet")
        assert refused.value.field == "output_uri"
        again = client.predict_dataset("m", str(root / "points"), str(out_root / "run"), format="parquet",
                                       overwrite=True)
        assert again.rows == 9000 and "distance" not in read_labels(out_root / "run")


def test_predict_dataset_refuses_what_it_cannot_do(start_server: ServerFactory, root: Path, tmp_path: Path) -> None:
    np.save(root / "x.npy", blobs(500, 3))
    out_root = tmp_path / "labels"
    out_root.mkdir()
    server = start_server(dataset_root=(str(root),), dataset_output_root=(str(out_root),))
    with sdk(server) as client:
        client.fit("four", blobs(300, 4), 2, seed=0)
        with pytest.raises(PermissionDenied) as refused:
            client.predict_dataset("four", str(root / "x.npy"), str(tmp_path / "elsewhere"))
        assert refused.value.field == "output_uri"
        with pytest.raises(PermissionDenied) as refused:  # the input's roots are not the output's
            client.predict_dataset("four", str(root / "x.npy"), str(root / "out"))
        with pytest.raises(FailedPrecondition, match="has 3 features but model 'four'") as refused:
            client.predict_dataset("four", str(root / "x.npy"), str(out_root / "a"))
        assert refused.value.reason == "FEATURE_MISMATCH"
        with pytest.raises(NotFound):
            client.predict_dataset("missing", str(root / "x.npy"), str(out_root / "a"))
    assert not (root / "out").exists() and not (tmp_path / "elsewhere").exists()


def test_the_cli_labels_a_dataset(start_server: ServerFactory, root: Path, tmp_path: Path) -> None:
    X = blobs(800, 3)
    np.save(root / "x.npy", X)
    out_root = tmp_path / "labels"
    out_root.mkdir()
    server = start_server(dataset_root=(str(root),), dataset_output_root=(str(out_root),))
    with sdk(server) as client:
        client.fit("m", X, 5, seed=0)
        expected = client.predict("m", X)
    done = subprocess.run(
        [sys.executable, "-m", "centroidal.client.cli", "predict-dataset", "--target", f"127.0.0.1:{server.port}",
         "--model", "m", "--source", str(root / "x.npy"), "--output", f"file://{out_root}/cli", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "800 rows labelled by m version 1: 1 files" in done.stdout
    np.testing.assert_array_equal(read_labels(out_root / "cli")["label"], expected)
