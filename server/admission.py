"""What a call may hold, and how long it may keep the server waiting.

- ``Slots`` admits fits and quantisations when their spec arrives, before any
  data: past ``--max-concurrent-fits`` a call is refused with Busy (RESOURCE_EXHAUSTED
  with a RetryInfo detail).
- ``Incoming`` reads a client's stream with ``--idle-timeout`` between messages: a
  client that goes quiet ends its call with IdleTimeout (DEADLINE_EXCEEDED) instead
  of holding what the call holds forever. ``ahead`` reads a few messages in advance,
  so that receiving and parsing the next one overlaps the work on this one.
- ``Workers`` are the bounded executors that CPU work and SQLite writes run on, so
  the event loop stays free for every other call, health checks included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from .config import ServerConfig
from .exceptions import Busy, IdleTimeout

T = TypeVar("T")
R = TypeVar("R")

# What a refused fit or quantisation is told to wait before it tries again.
RETRY_AFTER_S = 1.0
# Messages a stream receives ahead of the one being worked on (each up to
# --max-message-bytes, so this bounds the memory a stream holds).
READ_AHEAD = 2
_END = object()


class Slots:
    """A fixed number of slots for one kind of heavy work; taking one never waits."""

    def __init__(self, count: int, what: str) -> None:
        self.count = count
        self.in_use = 0
        self._what = what

    @contextlib.contextmanager
    def take(self, field: str) -> Iterator[None]:
        """Hold a slot for the block; raises Busy at once when none is free."""
        if self.in_use >= self.count:
            raise Busy(
                f"{self.count} {self._what} are already running, the server's limit "
                f"(--max-concurrent-fits); retry in {RETRY_AFTER_S:g} s",
                retry_after=RETRY_AFTER_S,
                field=field,
                reason="TOO_MANY_FITS",
            )
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


class Incoming(Generic[T]):
    """A client's request stream, read with a limit on the wait for each message."""

    def __init__(self, messages: AsyncIterator[T], idle_timeout: float) -> None:
        self._messages = messages.__aiter__()
        self._idle_timeout = idle_timeout

    async def next(self) -> T | None:
        """The next message, or None when the client has finished sending."""
        try:
            return await asyncio.wait_for(self._messages.__anext__(), self._idle_timeout)
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise IdleTimeout(
                f"the client sent nothing for {self._idle_timeout:g} s (the server's "
                "--idle-timeout); the call was ended"
            ) from None

    def __aiter__(self) -> AsyncIterator[T]:
        return self._each()

    async def _each(self) -> AsyncIterator[T]:
        while (message := await self.next()) is not None:
            yield message

    async def ahead(self, depth: int = READ_AHEAD) -> AsyncIterator[T]:
        """The same messages, received up to ``depth`` ahead of the consumer by another task."""
        received: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth)

        async def receive() -> None:
            try:
                async for message in self:
                    await received.put(message)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer
                await received.put(exc)
            else:
                await received.put(_END)

        reader = asyncio.get_running_loop().create_task(receive())
        try:
            while True:
                item = await received.get()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            reader.cancel()


class Workers:
    """The executors CPU work and storage run on.

    - ``compute``: Predict kernels and streamed batches, one thread per core (numba
      kernels release the GIL). A batch may wait there for its model's writer lock.
    - ``fits``: fit steps and quantisations, one thread per fit slot, so fits never
      queue in front of a Predict.
    - ``storage``: SQLite commits, deletes and checkpoints.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.compute = ThreadPoolExecutor(config.cpu_workers, thread_name_prefix="centroidal-compute")
        self.fits = ThreadPoolExecutor(config.max_concurrent_fits, thread_name_prefix="centroidal-fit")
        self.storage = ThreadPoolExecutor(2, thread_name_prefix="centroidal-store")

    @staticmethod
    async def run(executor: ThreadPoolExecutor, work: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(executor, work, *args)

    def shutdown(self) -> None:
        for executor in (self.compute, self.fits, self.storage):
            executor.shutdown(wait=True, cancel_futures=True)
