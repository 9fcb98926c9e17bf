"""A fit on a cluster whose workers Dask has paused at their memory limit: it fails with a
status that says so once they stay paused, and goes on if they resume. The workers are
real in-process Dask workers, paused as Dask's memory manager pauses them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import grpc
import numpy as np
import pytest
from distributed.core import Status

from centroidal.engine.kmeans import KMeansParams
from centroidal.engine.progress import run_to_end
from centroidal.partitioned import kmeans as partitioned
from centroidal.partitioned import partitions
from centroidal.partitioned.partitions import ClusterPaused
from centroidal.server.errors import refusal
from tests.partitioned.test_kmeans import dataset_of, fit, in_process_cluster
from tests.sources.datasets import blobs


def _pause(dask_worker: Any) -> None:
    # Dask's own memory monitor would resume a worker whose memory is low: it is turned off,
    # so the worker stays paused until _resume.
    dask_worker.memory_manager.memory_pause_fraction = False
    dask_worker.status = Status.paused


def _resume(dask_worker: Any) -> None:
    dask_worker.status = Status.running


@pytest.fixture
def paused_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(partitions, "PAUSE_CHECK_S", 0.1)
    with in_process_cluster(2) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        client.run(_pause)
        yield client


@pytest.mark.parametrize("persist", [False, True])
def test_a_fit_on_workers_that_stay_paused_fails_naming_their_memory(
    paused_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, persist: bool
) -> None:
    monkeypatch.setattr(partitions, "PAUSED_LIMIT_S", 1.0)
    dataset = dataset_of(tmp_path, blobs(6_000, 4, centers=4))
    stop = threading.Event()
    give_up = threading.Timer(60, stop.set)  # a fit that waited on would end Stopped, not paused
    give_up.start()
    try:
        with pytest.raises(ClusterPaused) as failed:
            run_to_end(partitioned.fit_steps(paused_client, dataset, KMeansParams(4, seed=0), persist=persist,
                                             stop=stop))
    finally:
        give_up.cancel()
    assert failed.value.reason == "DASK_WORKERS_PAUSED"
    message = str(failed.value)
    assert "paused at its memory limit" in message
    assert all(address in message for address in paused_client.scheduler_info()["workers"])
    answer = refusal(failed.value, "Fit")
    assert answer is not None and answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert answer.reason == "DASK_WORKERS_PAUSED"


def test_a_fit_goes_on_when_paused_workers_resume(
    paused_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partitions, "PAUSED_LIMIT_S", 600.0)
    X = blobs(6_000, 4, centers=4)
    dataset = dataset_of(tmp_path, X)
    seen = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "is paused at its memory limit" in record.getMessage():
                seen.set()

    handler = Seen()
    logging.getLogger("centroidal.server").addHandler(handler)
    try:
        # Resumed once the fit has seen every worker paused (or after a minute, if it never says).
        resumer = threading.Thread(target=lambda: (seen.wait(60), paused_client.run(_resume)))
        resumer.start()
        result = fit(paused_client, dataset, KMeansParams(4, seed=0), persist=False)
        resumer.join()
    finally:
        logging.getLogger("centroidal.server").removeHandler(handler)
    assert seen.is_set()
    assert result.centers.shape == (4, 4) and np.isfinite(result.inertia)
