"""Producer side of StreamMiniBatch for asyncio: ``await send``, ``await flush``, ``await
close``, with the same window, acks, reconnects and replay as ``stream.MiniBatchStream``
(both keep their batches in a ``ledger.Ledger``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio

from centroidal import codec

from ._calls import get_model_request
from .errors import (
    CentroidalError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    Unavailable,
)
from .ledger import CLOSE, HANG_UP, Ledger, durable_from_trailer, reopening
from .results import BatchAck
from .reconnects import Backoff, Route, idle_timeout, owner_in, stream_owner
from .transport import AsyncTransport, status_lost


class AsyncMiniBatchStream:
    """MiniBatchStream for asyncio: ``await send``, ``await flush``, ``await close``."""

    def __init__(
        self,
        client: AsyncTransport,
        opening: codec.MiniBatchOpen,
        *,
        producer_id: str | None,
        first_sequence: int,
        window: int,
        reconnect_timeout: float,
        max_replay_bytes: int,
        on_ack: Callable[[BatchAck], None] | None,
    ) -> None:
        self.model = opening.model
        self._creates = opening.create_if_missing is not None
        self._ledger = Ledger(producer_id or uuid.uuid4().hex, first_sequence, window, max_replay_bytes)
        self.producer_id = self._ledger.producer_id
        self.reconnect_timeout = reconnect_timeout
        self.reconnects = 0
        # The service's address, or the owner of the model's stream once a replica named it.
        self._route = Route()
        self._client = client
        self._opening = opening
        self._method = client._methods.stream_mini_batch
        self._on_ack = on_ack
        self._cond: asyncio.Condition | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._call: Any = None
        self._fatal: BaseException | None = None
        self._closing = False
        self._done = False
        self._aborted = False

    def _start(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return self._cond

    def _resend_if_worth_it(self) -> None:
        """As MiniBatchStream's: after an error that may have passed, connect again and
        resend every kept batch."""
        worker = self._worker
        if self._aborted or not self._ledger.worth_resending(self._fatal) or worker is None or not worker.done():
            return
        self._fatal, self._done = None, False
        self._worker = asyncio.get_running_loop().create_task(self._run(preflight=False))

    async def __aenter__(self) -> AsyncMiniBatchStream:
        self._start()
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()

    async def _wait(self, ready: Callable[[], bool], timeout: float | None, message: str) -> None:
        cond = self._start()
        async with cond:
            try:
                await asyncio.wait_for(
                    cond.wait_for(lambda: ready() or self._fatal is not None or self._done), timeout
                )
            except asyncio.TimeoutError:
                raise DeadlineExceeded(message) from None

    async def send(self, X: Any, sample_weight: Any = None, *, timeout: float | None = None) -> int:
        """Queue one batch; waits while the window is full. Returns its sequence."""
        ledger = self._ledger
        await self._wait(lambda: not ledger.full(), timeout, ledger.full_message(timeout))
        if self._fatal is not None:
            raise self._fatal
        if self._done or self._closing:
            raise RuntimeError(f"the stream to model {self.model!r} is closed")
        sequence, request = ledger.add(X, sample_weight)
        assert self._queue is not None
        self._queue.put_nowait(request)
        await self._notify()  # wakes a worker parked after an idle timeout
        return sequence

    async def flush(self, timeout: float | None = None) -> None:
        """Wait for every ack; raises, and tries again when called again, as
        MiniBatchStream.flush does."""
        ledger = self._ledger
        self._start()
        self._resend_if_worth_it()
        await self._wait(
            lambda: not ledger.unacked, timeout,
            f"batches were still unacknowledged after {timeout} s",
        )
        if self._fatal is not None:
            raise self._fatal
        error = ledger.unreported_error()
        if error is not None:
            raise error
        if ledger.unacked:
            raise RuntimeError(
                f"the stream to model {self.model!r} is closed with {len(ledger.unacked)} "
                "batches unacknowledged"
            )

    async def close(self, timeout: float | None = None) -> None:
        """Flush, end the stream and wait for the server's final checkpoint; raises, keeps
        what is not stored and resends it when called again, as MiniBatchStream.close does."""
        try:
            await self.flush(timeout)
        finally:
            self._closing = True
            if self._queue is not None:
                self._queue.put_nowait(CLOSE)
            if self._cond is not None:
                await self._notify()
            if self._worker is not None:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout)
        if self._fatal is not None:
            raise self._fatal

    async def abort(self) -> None:
        """Drop the stream without waiting."""
        self._closing = self._done = self._aborted = True
        if self._call is not None:
            self._call.cancel()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - dropping it
                pass

    @property
    def redirects(self) -> int:
        """Times a replica sent the stream to the one that owns its model."""
        return self._route.redirects

    @property
    def next_sequence(self) -> int:
        return self._ledger.next_sequence

    @property
    def durable_sequence(self) -> int:
        return self._ledger.durable_sequence()

    @property
    def last_ack(self) -> BatchAck | None:
        return self._ledger.last_ack

    @property
    def ack_latencies(self) -> list[float]:
        return self._ledger.ack_latencies

    @property
    def errors(self) -> list[CentroidalError]:
        return list(self._ledger.errors)

    async def _notify(self) -> None:
        assert self._cond is not None
        async with self._cond:
            self._cond.notify_all()

    async def _requests(self, connection: asyncio.Queue[Any]) -> AsyncIterator[bytes]:
        yield codec.serialize_minibatch_request(self._opening)
        while True:
            item = await connection.get()
            if item is CLOSE or item is HANG_UP:
                return
            yield bytes(item)  # a kept request: bytes already, or a view of a slab

    async def _preflight(self) -> None:
        """Refuse an unknown model or one of the wrong kind with a unary call first.

        A server that refuses a stream's opening while batches are being written can
        reach a grpc.aio client as INTERNAL (grpc/grpc#36066); a unary call reports it as is.
        """
        give_up = time.monotonic() + self.reconnect_timeout
        while True:
            try:
                request = get_model_request(self.model, None, include_centers=False)
                model = codec.decode_model(await self._client.unary(self._client._methods.get_model, request, None))
                break
            except Unavailable:
                # Not up yet: wait for it as a reconnect would.
                remaining = give_up - time.monotonic()
                if remaining <= 0:
                    raise
                try:
                    await asyncio.wait_for(self._client._channel.channel_ready(), remaining)
                except asyncio.TimeoutError:
                    raise DeadlineExceeded(
                        f"the server at {self._client.target} stayed unreachable for "
                        f"{self.reconnect_timeout} s"
                    ) from None
            except NotFound as missing:
                if not self._creates:
                    missing.field_violations = (FieldViolation("open.model", missing.message),)
                    raise
                return
        if model.kind != "minibatch-kmeans":
            raise FailedPrecondition(
                f"model {self.model!r} is a {model.kind} model; StreamMiniBatch feeds "
                "mini-batch models only",
                field_violations=(FieldViolation("open.model", "wrong model kind"),),
                reason="WRONG_MODEL_KIND",
            )

    async def _run(self, preflight: bool = True) -> None:
        backoff = Backoff(self.reconnect_timeout)
        self._route.settle()
        try:
            try:
                if preflight:
                    await self._preflight()
            except CentroidalError as refused:
                self._fatal = refused
                return
            while not self._done:
                if self._ledger.model_stored():
                    self._opening = reopening(self._opening)
                connection: asyncio.Queue[Any] = asyncio.Queue()
                for request in self._ledger.replay():
                    connection.put_nowait(request)
                if self._closing:
                    connection.put_nowait(CLOSE)
                self._queue = connection
                method = self._route.method(self._client, self._method)
                call = method(self._requests(connection))
                self._call = call
                try:
                    if self._route.follow(owner_in(await call.initial_metadata())):
                        # Another replica owns the model's stream: open it there at once.
                        call.cancel()
                        continue
                    async for message in call:
                        ack = self._ledger.record(message)
                        await self._notify()
                        if ack is not None and self._on_ack is not None:
                            self._on_ack(ack)
                        backoff.succeeded()
                        self._route.settle()
                except grpc.aio.AioRpcError as error:
                    owner = stream_owner(error)
                    if self._route.follow(owner):
                        continue
                    if owner is None:
                        self._route.fall_back(self._client, error)
                    if idle_timeout(error):
                        # A quiet stream the server ended: hold none open until a batch or
                        # the close needs one.
                        await self._wait(lambda: bool(self._ledger.unacked) or self._closing, None, "")
                    wait = backoff.next_wait(error, status_lost(error) or owner is not None)
                    if self._done or wait is None:
                        self._fatal = self._client.failure(error)
                        return
                    await asyncio.sleep(wait)
                    try:
                        await asyncio.wait_for(self._client._channel.channel_ready(), max(backoff.remaining(), 0.0))
                    except asyncio.TimeoutError:
                        self._fatal = self._client.failure(error)
                        return
                    self.reconnects += 1
                    continue
                finally:
                    connection.put_nowait(HANG_UP)
                if self._ledger.unacked and not self._done:
                    continue  # the server ended the stream early: resend what is unanswered
                unstored = self._ledger.closed(durable_from_trailer(await call.trailing_metadata()))
                if unstored is not None:
                    self._fatal = unstored
                return
        except asyncio.CancelledError:
            raise
        except BaseException as failure:  # noqa: BLE001 - an on_ack callback or a closed channel
            self._fatal = failure
            if self._call is not None:
                self._call.cancel()
        finally:
            self._done = True
            await self._notify()
