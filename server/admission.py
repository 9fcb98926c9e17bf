"""What a call may hold, and how long it may keep the server waiting.

- ``Slots`` admits fits and quantisations when their spec arrives, before any
  data: past ``--max-concurrent-fits`` a call is refused with Busy (RESOURCE_EXHAUSTED
  with a RetryInfo detail). ``CallWork`` releases a slot only once the call's work
  has stopped.
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
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from centroidal.engine import InvalidInputError
from centroidal.codec import WireError

from .config import ServerConfig
from .exceptions import Busy, DomainError, IdleTimeout
from .turns import TurnPool, call_on

T = TypeVar("T")
R = TypeVar("R")

# What a refused fit or quantisation is told to wait before it tries again.
RETRY_AFTER_S = 1.0
# How long a refused upload is read and dropped before the refusal is sent.
DRAIN_S = 2.0
DRAIN_GAP_S = 0.2
# Messages a stream receives ahead of the one being worked on (each up to
# --max-message-bytes, so this bounds the memory a stream holds).
READ_AHEAD = 2
# The bytes gRPC takes in for a stream before the server reads them (a fixed HTTP/2 window,
# the server's grpc.http2.lookahead_bytes, so that a call that waits holds a known amount).
STREAM_WINDOW_BYTES = 4 * 1024 * 1024
_END = object()


class Slots:
    """A fixed number of slots for one kind of heavy work; taking one never waits.

    Used from the event loop thread only.
    """

    def __init__(self, count: int, what: str) -> None:
        self.count = count
        self.in_use = 0
        self._what = what

    def take(self) -> Slot:
        """A slot, held until released; raises Busy at once when none is free. No field of the
        request is at fault, so the refusal names none (reason BUSY, with a RetryInfo)."""
        if self.in_use >= self.count:
            raise Busy(
                f"{self.count} {self._what} are already running, the server's limit "
                f"(--max-concurrent-fits); retry in {RETRY_AFTER_S:g} s",
                retry_after=RETRY_AFTER_S,
            )
        self.in_use += 1
        return Slot(self)


class Slot:
    """One taken slot; releasing it twice is harmless."""

    def __init__(self, slots: Slots) -> None:
        self._slots: Slots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.in_use -= 1
            self._slots = None


class CallWork:
    """The worker jobs of one call, run one at a time.

    A call that ends early leaves its current job running (a kernel cannot be
    interrupted); ``after`` runs clean-up, such as releasing the call's slot, once that
    job has stopped, so a new call never overlaps the abandoned work.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._last: Future[Any] | None = None

    async def run(self, executor: ThreadPoolExecutor, work: Callable[..., R], *args: Any) -> R:
        return await self.start(executor, work, *args)

    def start(self, executor: ThreadPoolExecutor, work: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Queue a job and return its outcome without waiting for it; the caller awaits it
        before it starts the call's next job, so the jobs still run one at a time."""
        job = executor.submit(work, *args)
        self._last = job
        return asyncio.wrap_future(job)

    def busy(self) -> bool:
        """A job of this call is still queued or running."""
        return self._last is not None and not self._last.done()

    def after(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the event loop once the last job has stopped (now if it has)."""
        job = self._last
        if job is None or job.done():
            callback()
            return

        job.add_done_callback(lambda _: call_on(self._loop, callback))


class Incoming(Generic[T]):
    """A client's request stream, read with a limit on the wait for each message."""

    def __init__(self, messages: AsyncIterator[T], idle_timeout: float) -> None:
        self._messages = messages.__aiter__()
        self._idle_timeout = idle_timeout
        # Messages read ahead and not yet answered: while the server owes the client an
        # answer, a client that sends nothing is waiting, not idle.
        self._owed = 0
        self._answered_at = 0.0  # loop time when the last owed answer went out
        self._received: asyncio.Queue[Any] | None = None
        # The read in progress: the task awaiting it, since when, and its idle timer.
        self._reading: asyncio.Task[Any] | None = None
        self._read_since = 0.0
        self._timed_out = False
        self._watch: asyncio.TimerHandle | None = None

    def owe(self, answers: int) -> None:
        """Count answers the server owes beyond those ``ahead`` counts (positive or negative)."""
        self._owed += answers
        if self._owed == 0:
            self._answered_at = asyncio.get_running_loop().time()

    async def next(self) -> T | None:
        """The next message, or None when the client has finished sending.

        The read is awaited in the calling task, watched by one timer: no task and no wait
        of its own per message, which a stream of many messages would pay each time."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "Incoming is read from a task"
        self._reading = task
        self._read_since = loop.time()
        self._timed_out = False
        self._watch = loop.call_at(self._read_since + self._idle_timeout, self._check_idle)
        try:
            return await self._messages.__anext__()
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if not self._timed_out:
                raise
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: the cancel was ours
            if uncancel is not None:
                uncancel()
            raise IdleTimeout(
                f"the client sent nothing for {self._idle_timeout:g} s (the server's "
                "--idle-timeout); the call was ended"
            ) from None
        finally:
            if self._watch is not None:
                self._watch.cancel()
            self._reading = None

    def _check_idle(self) -> None:
        """The read's timer: the call is idle once the client has sent nothing for the idle
        timeout since the read began or the last owed answer went out, whichever is later,
        while the server owes it no answer (a client that waits for one is not idle)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._owed:
            deadline = now + self._idle_timeout
        else:
            deadline = max(self._read_since, self._answered_at) + self._idle_timeout
        if now < deadline:
            self._watch = loop.call_at(deadline, self._check_idle)
        elif self._reading is not None:
            self._timed_out = True
            self._reading.cancel()

    async def drain(self, seconds: float = DRAIN_S) -> None:
        """Read and drop what the client is still sending, for up to ``seconds``, and until
        it pauses for DRAIN_GAP_S (a client waiting for an answer sends nothing).

        A refusal sent while the client is still writing can reach a grpc.aio client as
        INTERNAL with the status lost (grpc/grpc#36066); once the client has finished
        writing, the status arrives as sent.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + seconds
        received = self._received
        with contextlib.suppress(Exception):
            while (remaining := give_up - loop.time()) > 0:
                wait = min(remaining, DRAIN_GAP_S)
                if received is None:
                    await asyncio.wait_for(self._messages.__anext__(), wait)
                else:  # a reader task is reading ahead: take from it
                    item = await asyncio.wait_for(received.get(), wait)
                    if item is _END or isinstance(item, Exception):
                        return

    async def poll(self, seconds: float) -> T | None:
        """A message the client sent meanwhile, waited for up to ``seconds``; None when it has
        finished sending, or sent nothing more in that time."""
        read: asyncio.Future[T] = asyncio.ensure_future(self._messages.__anext__())
        try:
            done, _ = await asyncio.wait({read}, timeout=seconds)
            return read.result() if done else None
        except StopAsyncIteration:
            return None
        finally:
            _let_go(read)

    @contextlib.asynccontextmanager
    async def drained_on_refusal(self, let_go: Callable[[], None] | None = None) -> AsyncIterator[None]:
        """Around an upload: a refusal raised in the block is sent once the client has
        stopped writing (see ``drain``); ``let_go`` first drops what the upload holds."""
        try:
            yield
        except (DomainError, InvalidInputError, WireError):
            if let_go is not None:
                let_go()
            await self.drain()
            raise

    def __aiter__(self) -> AsyncIterator[T]:
        return self._each()

    async def _each(self) -> AsyncIterator[T]:
        while (message := await self.next()) is not None:
            yield message

    async def ahead(self, depth: int = READ_AHEAD) -> AsyncIterator[T]:
        """The same messages, received up to ``depth`` ahead of the consumer by another task."""
        received: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth)
        self._received = received

        async def receive() -> None:
            try:
                async for message in self:
                    self._owed += 1
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
                self.owe(-1)
        finally:
            reader.cancel()
            await asyncio.wait({reader})
            self._received = None


def _let_go(read: asyncio.Future[Any]) -> None:
    """A read no longer waited for: cancelled if still pending, its outcome seen if not."""
    if not read.done():
        read.cancel()
    elif not read.cancelled():
        read.exception()  # seen: the call ended meanwhile, and nobody else will look


class Workers:
    """The executors CPU work and storage run on.

    - ``compute``: Predict kernels, one thread per core (numba kernels release the GIL).
    - ``streams``: streamed batches, one thread per core. A batch may wait there for its
      model's writer lock, so batches have their own pool and never hold up a Predict.
    - ``fits``: fit steps and quantisations, one thread per fit slot, so fits never
      queue in front of a Predict.
    - ``storage``: SQLite reads and writes, and loading a streamed model's state.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.compute = ThreadPoolExecutor(config.cpu_workers, thread_name_prefix="centroidal-compute")
        self.streams = TurnPool(config.cpu_workers, thread_name_prefix="centroidal-stream")
        self.fits = ThreadPoolExecutor(config.max_concurrent_fits, thread_name_prefix="centroidal-fit")
        self.storage = ThreadPoolExecutor(2, thread_name_prefix="centroidal-store")

    @staticmethod
    async def run(executor: ThreadPoolExecutor, work: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(executor, work, *args)

    def shutdown(self, *, storage: bool) -> None:
        """Let queued work finish and stop the compute pools, or the storage pool."""
        pools = (self.storage,) if storage else (self.compute, self.streams, self.fits)
        for executor in pools:
            executor.shutdown(wait=True)
