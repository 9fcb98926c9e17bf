"""One StreamMiniBatch call: its model opened, its batches taken ahead and applied in order,
one ack per batch, and its close, which checkpoints the model.

A task reads and queues batches (up to READ_AHEAD + 1 waiting for their acks) while earlier
ones are applied on the streams pool (``InOrder``), and acks go out in order. Each batch
joins its model's queue as it arrives, where whoever applies a batch applies those of every
stream queued ahead of it, and their acks go out without waiting for their own jobs. A
refused batch is told in its ack and the stream goes on; what ends the stream instead (a
model replaced under it, a store that cannot take writes, a server that stops) is raised
once the client has stopped writing, so its status arrives intact.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import traceback
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass

from centroidal import codec

from .admission import READ_AHEAD, Incoming
from .turns import InOrder, settle_on
from .errors import refusal
from .exceptions import (
    Busy, InvalidRequest, LimitExceeded, ModelReplaced, SharedMemoryMissing, SharedMemoryRefused, ShuttingDown,
    StoreDamaged, StoreUnavailable, StreamElsewhere, StreamMoved,
)
from .limits import check_model_name
from .runtime import Runtime
from .live import BatchResult, LiveModel, Pending
from .shared_rows import StreamMaps
from .streaming import StreamHub

log = logging.getLogger("centroidal.server")

# A queued batch: its producer, its sequence, and what applying it came to.
_Queued = tuple[str, int, "asyncio.Future[BatchResult]"]
_Item = codec.MiniBatchOpen | codec.MiniBatch | codec.MalformedBatch
# These end the stream instead of refusing one batch: the SDK reconnects and resends.
STREAM_ENDING = (ModelReplaced, ShuttingDown, StoreUnavailable, StoreDamaged, StreamMoved)


@dataclass(frozen=True)
class OwnerElsewhere:
    """The address of the replica that owns a stream's model."""

    address: str


class StreamSessions:
    """Runs StreamMiniBatch calls over the hub of live models."""

    def __init__(self, runtime: Runtime, hub: StreamHub) -> None:
        self._runtime = runtime
        self._hub = hub

    async def run(self, items: Incoming[_Item], peer: str) -> AsyncIterator[codec.MiniBatchAck | int | OwnerElsewhere]:
        """One ack per batch, in order; then, once the client has closed its side and the
        close's checkpoint has stored the model, its durable version (an int). A stream whose
        model another replica owns yields that replica's address first (for the headers,
        which reach the client at once), then ends with StreamElsewhere. ``peer`` is the
        client's address (grpc's), which decides whether its batches may name shared memory."""
        first = await items.next()
        if first is None:
            return
        if not isinstance(first, codec.MiniBatchOpen):
            raise InvalidRequest("the first message of a StreamMiniBatch stream must be open", field="open")
        name = check_model_name(first.model, "open.model")
        # Loading a stored model's state is CPU work: off the event loop. A refusal waits for
        # the client's replayed batches to stop, or grpc.aio may lose it (see Incoming.drain).
        elsewhere: StreamElsewhere | None = None
        async with items.drained_on_refusal():
            try:
                live = await self._open(name, first.create_if_missing)
            except StreamElsewhere as owned:
                elsewhere = owned
        if elsewhere is not None:
            # Named in the headers at once, so the client need not wait for the drain.
            yield OwnerElsewhere(elsewhere.metadata["owner"])
            async with items.drained_on_refusal():
                raise elsewhere
        jobs = InOrder(self._runtime.workers.streams)
        queued: asyncio.Queue[_Queued | Exception | None] = asyncio.Queue(maxsize=READ_AHEAD + 1)
        # The batches a stream has on their way in count against the budget; while there is
        # no room for them the stream takes no more (see memory.py for who gives way).
        in_flight = self._runtime.memory.reservation("this stream's batches on their way in",
                                                     field="batch.points")
        sizes: collections.deque[int] = collections.deque()
        maps = StreamMaps()  # of the shared-memory objects its batches name

        async def take() -> None:
            index = 1
            try:
                async for item in items:
                    if not isinstance(item, (codec.MiniBatch, codec.MalformedBatch)):
                        raise InvalidRequest(f"message {index} is not a batch; only the first may be open",
                                             field="open")
                    held = _in_flight_bytes(item)
                    try:
                        await in_flight.wait_for(held, self._runtime.config.idle_timeout, stalls=False)
                        entry = self._queue_batch(live, item, jobs, peer, maps)
                    except (Busy, LimitExceeded) as no_room:  # refused in its ack; the stream goes on
                        held, entry = 0, _refused(item, no_room)
                    sizes.append(held)  # given back once its ack is sent
                    items.owe(1)  # until its ack is sent
                    await queued.put(entry)
                    index += 1
            except Exception as failure:  # noqa: BLE001 - ends the stream once the acks before it are sent
                await queued.put(failure)
            else:
                await queued.put(None)

        taker = asyncio.get_running_loop().create_task(take())
        ended = False  # the client half-closed and every ack went out
        try:
            while True:
                # One queue carries the batches, then the end or why taking them failed (a
                # message that is not a batch, an idle client): no wait on two things per batch.
                item = await queued.get()
                if item is None:
                    ended = True
                    break
                if isinstance(item, Exception):
                    raise item
                try:
                    ack = await self._ack(*item)
                except STREAM_ENDING:  # sent once the client stops writing, as above
                    taker.cancel()
                    await asyncio.wait({taker})
                    await items.drain()
                    raise
                in_flight.give_back(sizes.popleft())
                yield ack
                items.owe(-1)
        finally:
            in_flight.release()
            taker.cancel()
            # The stream's end runs as a task of its own: a call cancelled again while it
            # runs must not skip it, or the model would count an open stream forever.
            ending = asyncio.ensure_future(self._end(live, taker, jobs, queued, maps))
            closing = await asyncio.shield(ending)
            if not ended:  # the call already ends with its own status; the close only logs
                closing.add_done_callback(_log_close_failure)
        # The close checkpoints the model: a failure is the stream's status, so the producer
        # keeps every batch that is not stored; success tells it the durable version.
        # Shielded: a cancel that lands while the close waits for a storage thread must not
        # cancel the queued close with it, or the model would count this stream forever.
        durable: int = await asyncio.shield(asyncio.wrap_future(closing))
        yield durable

    async def _open(self, name: str, create: codec.MiniBatchConfig | None) -> LiveModel:
        """The stream's live model. The open counts the stream on the model; a call cancelled
        while it runs must not leave that count behind, so the close follows it there."""
        opening = self._runtime.workers.storage.submit(self._hub.open, name, create)
        try:
            return await asyncio.wrap_future(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(self._close_orphan)
            raise

    def _close_orphan(self, opening: Future[LiveModel]) -> None:
        if not opening.cancelled() and opening.exception() is None:
            self._close(opening.result()).add_done_callback(_log_close_failure)

    async def _end(
        self, live: LiveModel, taker: asyncio.Task[None], jobs: InOrder,
        queued: asyncio.Queue[_Queued | Exception | None], maps: StreamMaps,
    ) -> Future[int]:
        """Stop taking batches, drop the unsent acks, and close the stream once the batch in
        flight is applied (and unmap what its batches named); returns the close (a
        checkpoint) as it runs."""
        await asyncio.wait({taker})
        jobs.close()
        while not queued.empty():  # acks nobody will send: their outcomes are not needed
            left = queued.get_nowait()
            if isinstance(left, tuple):
                left[2].add_done_callback(lambda outcome: outcome.cancelled() or outcome.exception())
        # After the batch in flight, if any: closing under it could orphan a new model.
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        jobs.after(lambda: closed.set_result(None))
        await closed
        live.withdraw(jobs)  # batches no job of this stream will apply, nor ack
        maps.close()
        return self._close(live)

    def _close(self, live: LiveModel) -> Future[int]:
        try:
            return self._runtime.workers.storage.submit(self._hub.close, live)
        except RuntimeError:  # the server is stopping: its last checkpoint may store this model
            done: Future[int] = Future()
            done.set_exception(ShuttingDown(
                f"the server is stopping before model {live.name!r} was checkpointed for this "
                "stream; reconnect and resend what is not durable"
            ))
            return done

    def _queue_batch(
        self, live: LiveModel, batch: codec.MiniBatch | codec.MalformedBatch, jobs: InOrder, peer: str,
        maps: StreamMaps,
    ) -> _Queued:
        """Queue a batch for its model; a malformed one is refused in order. Shared memory the
        server may not or cannot read ends the stream instead, before a later batch is
        queued, so that a client can send this one and the rest again with their rows."""
        try:
            if isinstance(batch, codec.MalformedBatch):
                raise batch.error
            entry = self._hub.queue(live, batch, jobs, peer, maps)  # the stream's jobs stand for the stream
            outcome = jobs.submit(self._hub.apply, live, entry)
            # Another stream's job may apply it first: its ack need not wait for this one's.
            entry.applied = functools.partial(_applied, outcome)
        except (SharedMemoryMissing, SharedMemoryRefused):
            raise
        except Exception as exc:  # noqa: BLE001 - told in the batch's ack
            return _refused(batch, exc)
        return batch.producer_id, batch.sequence, outcome

    async def _ack(self, producer: str, sequence: int, outcome: asyncio.Future[BatchResult]) -> codec.MiniBatchAck:
        metrics = self._runtime.metrics
        try:
            result = await outcome
        except Exception as exc:  # noqa: BLE001 - a refused batch is told in its ack
            refused = refusal(exc, "StreamMiniBatch")
            if refused is None or isinstance(exc, STREAM_ENDING):
                raise
            # Its frames hold the batch's rows in a cycle with the exception: let them go now.
            traceback.clear_frames(exc.__traceback__)
            metrics.batches.labels(refused.code.name).inc()
            error = codec.BatchError(refused.code.value[0], refused.message, refused.field or "")
            return codec.MiniBatchAck(producer, sequence, error=error)
        (metrics.batches_duplicate if result.duplicate else metrics.batches_ok).inc()
        return codec.MiniBatchAck(
            producer, sequence, result.version, result.batch_inertia, result.n_samples_seen,
            result.durable_version, result.duplicate,
        )


def _applied(outcome: asyncio.Future[BatchResult], entry: Pending) -> None:
    """Settle a batch's outcome once another stream's job has applied it (its own job,
    running later, then finds it settled). Given the batch rather than holding it, so that
    the batch and its rows hold no cycle through their callback."""
    settle_on(outcome.get_loop(), outcome, value=entry.result, exc=entry.error)


def _refused(batch: codec.MiniBatch | codec.MalformedBatch, failure: Exception) -> _Queued:
    """A batch refused before it was queued, in its place among the acks."""
    outcome: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
    # Without its traceback: that runs through the frame still taking batches, which the
    # ack's clean-up of frames must not reach (clearing a suspended frame ends its coroutine).
    outcome.set_exception(failure.with_traceback(None))
    return batch.producer_id, batch.sequence, outcome


# A batch taken from a stream is held, until its ack, as its rows and as the copy the
# model makes of them. (The one batch read and waiting for room is not counted: a stream's
# budget share would otherwise exceed a small budget outright.)
COPIES_PER_BATCH = 2


def _in_flight_bytes(item: codec.MiniBatch | codec.MalformedBatch) -> int:
    """What a batch holds from when it is taken until its ack is sent: rows in shared memory
    once (mapped while the batch is applied)."""
    if not isinstance(item, codec.MiniBatch):
        return 0
    weights = item.sample_weight.nbytes if item.sample_weight is not None else 0
    if item.shared is not None:
        return item.shared.nbytes + COPIES_PER_BATCH * weights
    if item.points is None:
        return 0
    return COPIES_PER_BATCH * (item.points.nbytes + weights)


def _log_close_failure(closing: Future[int]) -> None:
    failure = None if closing.cancelled() else closing.exception()
    if failure is not None:
        log.warning("checkpoint at the close of a failed stream did not store: %s",
                    getattr(failure, "message", None) or repr(failure))
