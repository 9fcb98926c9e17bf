"""A dataset kept in the workers' memory by one Dask actor per worker, which runs a step on
each of its partitions when asked.

A call to an actor goes to its worker directly, not through the scheduler: a Lloyd
iteration costs about 2 ms of coordination here, where a round of tasks costs about 20 ms
(four no-op tasks, submitted and gathered, on this 2-core machine). The results are the
tasks' own (the holder calls the same functions), returned by partition and reduced in
partition order by the caller, so the model does not depend on which worker held what.

An actor is not rebuilt when its worker dies: the holders then raise HoldersLost, and the
fit starts again on tasks, which Dask does run again elsewhere.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from centroidal.sources import Dataset

from . import tasks
from .partitions import STOP_POLL_S, Stall, Stopped, workers_of


class HoldersLost(Exception):
    """A worker holding partitions is gone (or stopped answering)."""


class Holder:
    """The partitions one worker holds, and what steps keep per partition between calls."""

    def __init__(self) -> None:
        self.pieces: dict[int, tasks.Piece] = {}
        self.kept: dict[str, dict[int, Any]] = {}

    def load(self, refs: list[tasks.PieceRef]) -> int:
        for ref in refs:
            self.pieces[ref.partition.index] = tasks.load(ref)
        return len(self.pieces)

    def apply(self, task: str, args: tuple[Any, ...], per: str | None, seed: tuple[int, ...] | None,
              keep_as: str | None, from_kept: str | None) -> dict[int, Any]:
        """``tasks.<task>`` on each partition: its source is the partition's rows, or what
        ``from_kept`` kept for it; ``per`` adds what that name kept as the next argument;
        ``seed`` gets the partition's index appended. Kept as ``keep_as`` (and not
        returned), or returned by partition."""
        run = getattr(tasks, task)
        out = {}
        for index in sorted(self.pieces):
            source = self.kept[from_kept][index] if from_kept else self.pieces[index]
            head = (source,) if per is None else (source, self.kept[per][index])
            tail = () if seed is None else ((*seed, index),)
            out[index] = run(*head, *args, *tail)
        if keep_as:
            self.kept[keep_as] = out
            return {}
        return out

    def forget(self, name: str) -> None:
        self.kept.pop(name, None)

    def drop(self) -> None:
        self.pieces.clear()
        self.kept.clear()


class Kept:
    """A name under which the holders keep a step's per-partition results."""

    def __init__(self, name: str) -> None:
        self.name = name


class HeldPartitions:
    """The partitions of a dataset held by one actor per worker, assigned in turn."""

    persisted = True

    def __init__(self, client: Any, dataset: Dataset, spherical: bool, stop: threading.Event | None) -> None:
        self._client = client
        self._stop = stop
        self.key = f"centroidal-{uuid.uuid4().hex[:12]}"
        self.count = len(dataset.partitions)
        workers = sorted(workers_of(client))
        if not workers:
            raise HoldersLost("the cluster has no workers")
        self._futures = [client.submit(Holder, actor=True, workers=[worker], allow_other_workers=False,
                                       key=f"{self.key}-holder-{number}")
                         for number, worker in enumerate(workers)]
        refs = [tasks.piece_ref(dataset, partition, spherical) for partition in dataset.partitions]
        self._names = 0
        try:
            with client.as_current():  # an actor's handle finds its client there
                self._holders = self._results(self._futures)
                shares = [refs[number :: len(self._holders)] for number in range(len(self._holders))]
                self._results([holder.load(share) for holder, share in zip(self._holders, shares)])
        except BaseException:  # a bad row, a stop: the actors made so far go too
            self.release()
            raise

    def _wait(self, future: Any, stall: Stall) -> Any:
        while True:
            if self._stop is not None and self._stop.is_set():
                raise Stopped("the call ended")
            try:
                result = future.result(timeout=STOP_POLL_S)
                stall.finished()
                return result
            except TimeoutError:
                stall.check()
                continue
            except (OSError, KeyError, ValueError) as exc:  # the worker went away with its actor
                raise HoldersLost(f"{type(exc).__name__}: {exc}") from None
            except Exception as exc:
                if type(exc).__name__ in ("CommClosedError", "FutureCancelledError", "KilledWorker"):
                    raise HoldersLost(f"{type(exc).__name__}: {exc}") from None
                raise

    def _results(self, calls: list[Any]) -> list[Any]:
        stall = Stall(self._client)
        return [self._wait(call, stall) for call in calls]

    def _apply(self, task: Any, args: tuple[Any, ...], *, per: Kept | None = None, seed: tuple[int, ...] | None = None,
               keep_as: str | None = None, from_kept: Kept | None = None) -> list[Any]:
        with self._client.as_current():  # an actor's handle finds its client there
            calls = [holder.apply(task.__name__, args, per.name if per else None, seed, keep_as,
                                  from_kept.name if from_kept else None) for holder in self._holders]
            parts = self._results(calls)
        merged: dict[int, Any] = {}
        for part in parts:
            merged.update(part)
        return [merged[index] for index in sorted(merged)]

    def run(self, task: Any, *args: Any, per: Kept | None = None, seed: tuple[int, ...] | None = None) -> list[Any]:
        """``task`` on every partition, its results in partition order."""
        return self._apply(task, args, per=per, seed=seed)

    def keep(self, task: Any, *args: Any, per: Kept | None = None) -> Kept:
        """``task`` on every partition, its results kept by the holders under a new name."""
        self._names += 1
        name = f"{task.__name__}-{self._names}"
        self._apply(task, args, per=per, keep_as=name)
        if per is not None:
            with self._client.as_current():
                self._results([holder.forget(per.name) for holder in self._holders])
        return Kept(name)

    def run_on(self, kept: Kept, task: Any, *args: Any) -> list[Any]:
        """``task`` on what ``kept`` holds for each partition."""
        return self._apply(task, args, from_kept=kept)

    def release(self) -> None:
        if self._client.status != "running":
            return
        with self._client.as_current():
            for holder in getattr(self, "_holders", []):
                try:
                    holder.drop().result(timeout=10)
                except Exception:  # noqa: BLE001 - a holder whose worker is gone has nothing to drop
                    pass
        self._client.run(tasks.drop_workspaces, self.key, wait=True)
        self._client.cancel(getattr(self, "_futures", []))
