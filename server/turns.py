"""Jobs of many calls on one pool, each call's in order, the calls taking turns.

- ``TurnPool`` is a thread pool that counts the jobs waiting for a thread.
- ``InOrder`` runs one call's jobs in order on such a pool: a turn goes on with the
  call's next job while nobody else waits, and gives way when another call does.
- ``call_on`` hands a callback to the event loop from a worker thread, and ``settle_on``
  an outcome to settle there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

R = TypeVar("R")


class TurnPool(ThreadPoolExecutor):
    """A thread pool that knows how many of its jobs wait for a thread, so a call with
    more jobs of its own can tell whether another call is waiting for its turn."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers, thread_name_prefix=thread_name_prefix)
        self._count_lock = threading.Lock()
        self._waiting = 0

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        with self._count_lock:
            self._waiting += 1
        try:
            return super().submit(self._started, fn, *args, **kwargs)
        except BaseException:
            with self._count_lock:
                self._waiting -= 1
            raise

    def _started(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        with self._count_lock:
            self._waiting -= 1
        return fn(*args, **kwargs)

    @property
    def waiting(self) -> int:
        """Jobs queued that no thread has started yet."""
        return self._waiting


class InOrder:
    """The jobs of one call, run in order on a pool, taking turns with other calls.

    A turn runs the call's queued jobs one after another on one thread for as long as no
    other call's job waits for a thread; then the worker queues the call's next turn on
    the pool itself, behind the others, with no round trip through the event loop. Each
    job's outcome comes back as an asyncio future. A stream's batches run this way: in
    the order they arrived, on the thread that has the model's state in its cache while
    the stream is alone, and taking turns with the batches of other streams.
    """

    def __init__(self, executor: TurnPool) -> None:
        self._loop = asyncio.get_running_loop()
        self._executor = executor
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._turn: Future[None] | None = None  # the pool job that runs the next jobs, if any
        self._closed = False

    def submit(self, work: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        outcome: asyncio.Future[R] = self._loop.create_future()
        with self._lock:
            self._queue.append((outcome, work, args))
            if self._turn is None:
                self._turn = self._executor.submit(self._run_turn)
        return outcome

    def _run_turn(self) -> None:
        ran = False
        while True:
            with self._lock:
                if self._closed or not self._queue:
                    self._finish()
                    return
                if ran and self._executor.waiting:  # another call's turn first
                    try:
                        self._turn = self._executor.submit(self._run_turn)
                    except RuntimeError:  # the pool is shutting down: the server's last checkpoint follows
                        self._finish()
                    return
                outcome, work, args = self._queue.popleft()
            try:
                value = work(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting call
                settle_on(self._loop, outcome, exc=exc)
            else:
                settle_on(self._loop, outcome, value=value)
            ran = True

    def _finish(self) -> None:
        """No more turns: cancel what is still queued. The caller holds the lock."""
        for outcome, _, _ in self._queue:
            call_on(self._loop, outcome.cancel)
        self._queue.clear()
        self._turn = None

    def close(self) -> None:
        """Run no more queued jobs; the one running, if any, finishes."""
        with self._lock:
            self._closed = True

    def after(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the event loop once no job is running or queued (now if none is)."""
        with self._lock:
            turn = self._turn
        if turn is None:
            callback()
            return
        turn.add_done_callback(lambda _: call_on(self._loop, lambda: self.after(callback)))


def call_on(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run ``callback`` on ``loop`` from another thread; nothing once the loop has closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


def settle_on(
    loop: asyncio.AbstractEventLoop, outcome: asyncio.Future[Any], *, value: Any = None,
    exc: BaseException | None = None,
) -> None:
    """Set ``outcome``'s result (or ``exc``) on ``loop`` from another thread, unless it is
    done by then (cancelled, or settled by whoever got there first)."""

    def settle() -> None:
        if outcome.done():
            return
        if exc is not None:
            outcome.set_exception(exc)
        else:
            outcome.set_result(value)

    call_on(loop, settle)
