"""A dataset's partitions on a Dask cluster: tasks submitted one per partition, their results
gathered in partition order, a wait that gives up when the call ends or when no worker can
run a task, and the cluster's failures as one error."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from centroidal.sources import Dataset

from . import tasks

# Arguments larger than this go to the workers once per step, not once per task.
SCATTER_BYTES = 1 << 20
# How often a wait for the cluster looks whether the call has ended.
STOP_POLL_S = 0.25
# How often a wait in which no task finishes asks the scheduler whether every worker is paused.
PAUSE_CHECK_S = 5.0
# Every worker paused this long, and none of the call's tasks finished meanwhile, ends the call.
PAUSED_LIMIT_S = 60.0

log = logging.getLogger("centroidal.server")


class ClusterError(Exception):
    """The cluster could not run the fit: a worker died more often than Dask retries, or
    the scheduler cannot be reached. Nothing was stored."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ClusterPaused(ClusterError):
    """Every worker of the cluster stayed paused at its memory limit: nothing could run."""


class Stopped(Exception):
    """The fit's call ended while the cluster was working for it."""


class Partitions:
    """A dataset's partitions on a cluster, each either kept in a worker's memory by a ``load``
    task (``persist``) or read again by every task that needs it."""

    def __init__(self, client: Any, dataset: Dataset, spherical: bool, persist: bool,
                 stop: threading.Event | None) -> None:
        self._client = client
        self._stop = stop
        self._prefix = f"centroidal-{uuid.uuid4().hex[:12]}"
        self._step = 0
        self._kept: list[Any] = []
        refs = [tasks.piece_ref(dataset, partition, spherical) for partition in dataset.partitions]
        self.sources: list[Any] = refs
        self.persisted = persist
        if persist:
            self.sources = self._kept = self.each(tasks.load, sources=refs)

    def each(self, task: Callable[..., Any], *args: Any, per: Sequence[Any] | None = None,
             seed: tuple[int, ...] | None = None, sources: Sequence[Any] | None = None) -> list[Any]:
        """``task(source, [per[i]], *args, [seed + (i,)])`` submitted for every partition i."""
        self._step += 1
        shared = [self._client.scatter(arg, broadcast=True, hash=False)
                  if isinstance(arg, np.ndarray) and arg.nbytes > SCATTER_BYTES else arg for arg in args]
        futures = []
        for index, source in enumerate(self.sources if sources is None else sources):
            head = (source,) if per is None else (source, per[index])
            tail = () if seed is None else ((*seed, index),)
            key = f"{self._prefix}-{task.__name__}-{self._step}-{index}"
            futures.append(self._client.submit(task, *head, *shared, *tail, key=key, pure=False))
        return futures

    def gather(self, futures: list[Any]) -> list[Any]:
        """The futures' results in partition order; a worker's error is raised as itself."""
        for _ in self.as_done(futures, results=False):
            pass
        with _cluster_errors():
            return list(self._client.gather(futures))

    def as_done(self, futures: list[Any], *, results: bool = True) -> Iterator[Any]:
        """Each future as it finishes (with ``results``, its result, or its error raised),
        giving up and cancelling them all once the call ends or the cluster stalls."""
        finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for future in futures:
            future.add_done_callback(finished.put)
        stall = Stall(self._client)
        with _cluster_errors():
            for _ in range(len(futures)):
                future = self._next(finished, futures, stall)
                yield future.result() if results else future

    def _next(self, finished: queue.SimpleQueue[Any], futures: list[Any], stall: Stall) -> Any:
        """The next of ``futures`` to finish, waited for STOP_POLL_S at a time; every one is
        cancelled if the call ends (Stopped) or no worker can run them (ClusterPaused)."""
        try:
            while True:
                if self._stop is not None and self._stop.is_set():
                    raise Stopped("the call ended")
                try:
                    future = finished.get(timeout=STOP_POLL_S)
                except queue.Empty:
                    stall.check()
                    continue
                stall.finished()
                return future
        except (Stopped, ClusterPaused):
            self._client.cancel(futures)
            raise

    def run(self, task: Callable[..., Any], *args: Any, **options: Any) -> list[Any]:
        """``task`` on every partition (see ``each``), its results in partition order."""
        return self.gather(self.each(task, *args, **options))

    def keep(self, task: Callable[..., Any], *args: Any, per: Sequence[Any] | None = None) -> list[Any]:
        """``task`` on every partition, its results left on the cluster (their futures)."""
        return self.each(task, *args, per=per)

    def run_on(self, kept: Sequence[Any], task: Callable[..., Any], *args: Any) -> list[Any]:
        """``task`` on what ``keep`` left for each partition."""
        return self.gather(self.each(task, *args, sources=kept))

    @property
    def key(self) -> str:
        """This run's name on the cluster: its tasks' keys and its kept workspaces start so."""
        return self._prefix

    def release(self) -> None:
        """Let go of everything this run keeps on the cluster."""
        if self._client.status != "running":
            return
        if self._kept:
            self._client.cancel(self._kept)
        if self.persisted:
            self._client.run(tasks.drop_workspaces, self._prefix, wait=True)
        self._kept = []


class Stall:
    """Notices a cluster on which nothing can run. Dask pauses a worker whose process uses
    more than a share of its memory limit (80% by default), and resumes it only once that
    falls: a worker whose libraries, kernels and caches alone take that much never runs a
    task again, and a call would wait for ever without a word."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._checked = time.monotonic()
        self._since: float | None = None

    def finished(self) -> None:
        """A task of the call finished: the cluster is working."""
        self._since = None
        self._checked = time.monotonic()

    def check(self) -> None:
        """Raise ClusterPaused once every worker has been paused for PAUSED_LIMIT_S with
        none of the call's tasks finished. Asks the scheduler every PAUSE_CHECK_S."""
        now = time.monotonic()
        if now - self._checked < PAUSE_CHECK_S:
            return
        self._checked = now
        try:
            workers = workers_of(self._client)
        except OSError:  # the scheduler is gone: the wait for the tasks says so
            return
        if not workers or any(worker.get("status") != "paused" for worker in workers.values()):
            self._since = None
            return
        memory = ", ".join(f"{address} {worker.get('metrics', {}).get('memory', 0) >> 20} of "
                           f"{(worker.get('memory_limit') or 0) >> 20} MiB" for address, worker in workers.items())
        if self._since is None:
            self._since = now
            log.warning("every Dask worker is paused at its memory limit (%s); waiting up to %.0f s", memory,
                        PAUSED_LIMIT_S)
        if now - self._since >= PAUSED_LIMIT_S:
            raise ClusterPaused(
                f"every Dask worker has been paused at its memory limit for {PAUSED_LIMIT_S:.0f} s, so none "
                f"could run this call's tasks (process memory: {memory}; Dask pauses a worker above 80% of "
                "its limit by default): give the workers more memory; nothing was stored", "DASK_WORKERS_PAUSED")


def workers_of(client: Any) -> dict[str, Any]:
    """Every worker as the scheduler describes it (some versions of distributed give five
    unless asked for all; older ones take no such argument, and give all)."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:
        info = client.scheduler_info()
    workers: dict[str, Any] = info["workers"]
    return workers


@contextlib.contextmanager
def _cluster_errors() -> Iterator[None]:
    """The cluster's own failures as ClusterError; a task's error passes as itself."""
    from distributed.scheduler import KilledWorker
    from distributed.utils import CancelledError

    try:
        yield
    except KilledWorker as exc:
        raise ClusterError(f"a Dask worker died each time it ran a task of this call ({exc}); nothing was "
                           "stored", "DASK_WORKER_DIED") from None
    except (OSError, CancelledError) as exc:
        raise ClusterError(f"the Dask cluster stopped answering: {exc or type(exc).__name__}",
                           "DASK_UNAVAILABLE") from None
