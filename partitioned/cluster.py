"""The Dask cluster fits of datasets run on: an existing scheduler's, or a LocalCluster of
worker processes this server starts. Connected (or started) on first use and kept."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from centroidal.sources import Dataset

from .partitions import ClusterError, workers_of
from .tasks import TASK_THREADS_ENV

log = logging.getLogger("centroidal.server")

# A dataset is kept in the workers' memory across iterations when it takes at most this share
# of their memory limits; otherwise each iteration's tasks read it again (out of core).
PERSIST_SHARE = 0.5
# A cluster that could not be reached is tried again on the next call after this long; until
# then calls are told at once.
RETRY_AFTER_S = 5.0


class DaskCluster:
    """``scheduler``: a tcp:// (or tls://) address; or ``local_workers`` > 0 worker processes
    started here, each with one task thread and the machine's memory shared among them."""

    def __init__(self, scheduler: str = "", local_workers: int = 0, *, connect_timeout: float = 10.0,
                 processes: bool = True, memory_limit: str | int = "auto") -> None:
        if bool(scheduler) == bool(local_workers):
            raise ValueError("a Dask cluster is a scheduler's address or a number of local workers, one of them")
        self.scheduler = scheduler
        self.local_workers = local_workers
        self._connect_timeout = connect_timeout
        self._processes = processes
        self._memory_limit = memory_limit
        self._lock = threading.Lock()
        self._client: Any = None
        self._cluster: Any = None
        self._failure: ClusterError | None = None
        self._failed_at = 0.0

    def __str__(self) -> str:
        if self.scheduler:
            return f"the Dask scheduler at {self.scheduler}"
        return f"a local Dask cluster of {self.local_workers} worker processes"

    def client(self) -> Any:
        """The distributed.Client, connecting or starting the cluster the first time."""
        with self._lock:
            if self._client is not None and self._client.status == "running":
                return self._client
            if self._failure is not None and time.monotonic() - self._failed_at < RETRY_AFTER_S:
                raise self._failure  # the attempt that just failed (the start-up's, say) answers for now
            try:
                from distributed import Client, LocalCluster
            except ImportError:
                raise ClusterError("this server has no Dask: pip install 'centroidal[dask]'", "DASK_UNAVAILABLE") from None
            try:
                if self.scheduler:
                    self._client = Client(self.scheduler, timeout=self._connect_timeout, set_as_default=False)
                else:
                    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
                    threads = str(max(1, cores // self.local_workers))
                    # Worker processes get the variable in their environment; threads read it here.
                    more = {"env": {TASK_THREADS_ENV: threads}} if self._processes else {}
                    self._cluster = LocalCluster(
                        n_workers=self.local_workers, threads_per_worker=1, processes=self._processes,
                        dashboard_address="127.0.0.1:0", memory_limit=self._memory_limit, silence_logs=logging.WARNING,
                        **more,
                    )
                    self._client = Client(self._cluster, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                self._client = None
                self._failure = ClusterError(f"{self} cannot be reached: {exc}", "DASK_UNAVAILABLE")
                self._failed_at = time.monotonic()
                raise self._failure from None
            self._failure = None
            log.info("fits of datasets run on %s (%d workers)", self, len(workers_of(self._client)))
            return self._client

    def persist(self, dataset: Dataset) -> bool:
        """Whether the dataset is kept in the workers' memory (else read at every iteration)."""
        workers = workers_of(self.client()).values()
        limit = sum(int(worker.get("memory_limit") or 0) for worker in workers)
        needed = dataset.nbytes + (dataset.n_rows * 8 if dataset.weighted else 0)
        return limit == 0 or needed <= PERSIST_SHARE * limit

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None
