"""Producer side of StreamMiniBatch: windowed sends, acks, reconnects and replay.

A ``MiniBatchStream`` numbers each batch it sends with the next sequence of its
producer id. ``send`` returns at once while fewer than ``window`` batches await
their ack, and blocks when the window is full, so a slow server slows the
producer down instead of filling its memory. An acknowledged batch is kept
until the server reports a durable version at or past the one that batch made
(at most ``max_replay_bytes`` of them: past that, ``send`` waits for the next
checkpoint).
If the connection drops, or the server restarts, the stream reconnects and
sends again every batch that is not yet durable, in order. The server applies
each (producer_id, sequence) once, so the replay never counts a batch twice,
and a batch lost with an un-checkpointed version is applied again.

A close is done when the server has checkpointed the model: it reports the
durable version in the ``centroidal-durable-version`` trailer, and ``last_ack``
shows it. If the server cannot store the model (a full disk, a read-only data
directory) the stream ends with that status; after the reconnect budget,
``flush`` and ``close`` raise it and keep every batch that is not stored, and
calling them again resends those batches.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from centroidal import codec

from .errors import CentroidalError, DeadlineExceeded
from .ledger import CLOSE, HANG_UP, Ledger, durable_from_trailer, reopening
from .results import BatchAck
from .reconnects import Backoff, Route, idle_timeout, owner_in, shared_memory_refused, stream_owner
from .shared_batches import SharedBatch, SharedReplay
from .transport import SyncTransport


DEFAULT_WINDOW = 16
DEFAULT_RECONNECT_TIMEOUT_S = 60.0
# Acknowledged batches are kept until a checkpoint stores them, for replay after a crash.
DEFAULT_MAX_REPLAY_BYTES = 256 * 1024 * 1024
# How long abort waits for the stream's thread to stop (it checks every 0.2 s).
ABORT_WAIT_S = 5.0


class MiniBatchStream:
    """Sends mini-batches of one producer to one model; use ``Client.stream`` to open one."""

    def __init__(
        self,
        client: SyncTransport,
        opening: codec.MiniBatchOpen,
        *,
        producer_id: str | None,
        first_sequence: int,
        window: int,
        reconnect_timeout: float,
        max_replay_bytes: int,
        on_ack: Callable[[BatchAck], None] | None,
        shared_memory: bool = False,
    ) -> None:
        """on_ack runs on the stream's receiving thread: it must not call send or flush.
        If it raises, the stream ends and send, flush and close raise that exception.
        shared_memory: the batches' rows go through shared memory (``shared_batches``)."""
        self.model = opening.model
        self._ledger = Ledger(producer_id or uuid.uuid4().hex, first_sequence, window, max_replay_bytes,
                              SharedReplay() if shared_memory else None)
        # The batches name their rows in shared memory, until a server says it cannot read them.
        self._sending_shared = shared_memory
        self.producer_id = self._ledger.producer_id
        self.reconnect_timeout = reconnect_timeout
        self.reconnects = 0
        # The service's address, or the owner of the model's stream once a replica named it.
        self._route = Route()
        self._client = client
        self._opening = opening
        self._method = client._methods.stream_mini_batch
        self._on_ack = on_ack
        self._cond = threading.Condition()
        # What ended the stream: a status, or an exception of the on_ack callback.
        self._fatal: BaseException | None = None
        self._closing = False
        self._done = False
        self._aborted = False
        self._queue: queue.Queue[Any] = queue.Queue()
        self._call: Any = None
        self._worker = self._start_worker()

    def _start_worker(self) -> threading.Thread:
        worker = threading.Thread(target=self._run, name=f"centroidal-stream-{self.model}", daemon=True)
        worker.start()
        return worker

    def _resend_if_worth_it(self) -> None:
        """After the stream ended on a condition that may have passed (the server unreachable,
        its disk full), connect again and resend every kept batch. Holds ``_cond``."""
        if self._aborted or not self._ledger.worth_resending(self._fatal) or self._worker.is_alive():
            return
        self._fatal, self._done = None, False
        self._worker = self._start_worker()

    # ---- producer API ---------------------------------------------------------------

    def send(self, X: Any, sample_weight: Any = None, *, timeout: float | None = None) -> int:
        """Queue one batch; returns its sequence number.

        Blocks while ``window`` batches await their ack, up to ``timeout`` seconds
        (None waits as long as it takes), then raises DeadlineExceeded.
        X : array-like of shape (n_points, n_features), float32 or float64
        sample_weight : array-like of shape (n_points,), or None
        """
        give_up = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._ledger.full() and self._fatal is None and not self._done:
                remaining = None if give_up is None else give_up - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceeded(self._ledger.full_message(timeout))
                self._cond.wait(remaining)
            self._raise_if_dead()
            sequence, request = self._ledger.add(X, sample_weight)
            self._queue.put(request)
            self._cond.notify_all()  # wakes a worker parked after an idle timeout
        return sequence

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every sent batch is acknowledged.

        Raises the first rejected batch's error (a CentroidalError with ``sequence``)
        not raised before, or the error that ended the stream. After an error worth
        retrying (UNAVAILABLE, or the server's store full), a new call reconnects and
        resends every batch not yet stored.
        """
        give_up = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._resend_if_worth_it()
            while self._ledger.unacked and self._fatal is None and not self._done:
                remaining = None if give_up is None else give_up - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceeded(
                        f"{len(self._ledger.unacked)} batches were still unacknowledged after "
                        f"{timeout} s"
                    )
                self._cond.wait(remaining)
            if self._fatal is not None:
                raise self._fatal
            error = self._ledger.unreported_error()
            if error is not None:
                raise error
            if self._ledger.unacked:
                raise RuntimeError(
                    f"the stream to model {self.model!r} is closed with "
                    f"{len(self._ledger.unacked)} batches unacknowledged"
                )

    def close(self, timeout: float | None = None) -> None:
        """Flush, end the stream and wait for the server's final checkpoint.

        Returns once the server has stored every batch (``last_ack.durable_version`` is then
        the model's stored version). Raises when it could not; the batches not stored are
        kept, and calling close again resends them.
        """
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closing = True
                self._queue.put(CLOSE)
                self._cond.notify_all()  # a worker parked after an idle timeout reconnects to close
                worker = self._worker
            worker.join(timeout)
        with self._cond:
            if self._fatal is not None:
                raise self._fatal

    def abort(self) -> None:
        """Drop the stream without waiting; unacknowledged batches may or may not be applied."""
        with self._cond:
            self._closing = True
            self._done = True
            self._aborted = True
            self._queue.put(CLOSE)
            call = self._call
            self._cond.notify_all()
        if call is not None:
            call.cancel()
        # The worker may be waiting for the channel: let it stop before the caller closes that.
        if self._worker is not threading.current_thread():
            self._worker.join(ABORT_WAIT_S)

    def __enter__(self) -> MiniBatchStream:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ---- state ----------------------------------------------------------------------

    @property
    def window(self) -> int:
        return self._ledger.window

    @property
    def shared_memory(self) -> bool:
        """The batches' rows go through the client's shared memory: it was asked for
        (``Client(shared_memory=True)``), /dev/shm has had room for them, and the server
        has not refused it."""
        return self._sending_shared and self._ledger.keeps_shared

    @property
    def redirects(self) -> int:
        """Times a replica sent the stream to the one that owns its model."""
        return self._route.redirects

    @property
    def next_sequence(self) -> int:
        return self._ledger.next_sequence

    @property
    def durable_sequence(self) -> int:
        """Every batch of this stream up to this sequence is on the server's disk (or was
        rejected); a restarted producer resumes with ``first_sequence`` one past it."""
        with self._cond:
            return self._ledger.durable_sequence()

    @property
    def last_ack(self) -> BatchAck | None:
        return self._ledger.last_ack

    @property
    def ack_latencies(self) -> list[float]:
        """Seconds from each send to its ack (the first 100,000)."""
        return self._ledger.ack_latencies

    @property
    def errors(self) -> list[CentroidalError]:
        """Every rejected batch so far, as typed errors carrying ``sequence``."""
        with self._cond:
            return list(self._ledger.errors)

    @property
    def pending(self) -> int:
        """Batches sent and not yet acknowledged."""
        with self._cond:
            return len(self._ledger.unacked)

    def _raise_if_dead(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._done or self._closing:
            raise RuntimeError(f"the stream to model {self.model!r} is closed")

    # ---- connection -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._connect_and_receive()
        except BaseException as failure:  # noqa: BLE001 - an on_ack callback or a closed channel
            self._fail(failure)
            call = self._call
            if call is not None:
                call.cancel()

    def _connect_and_receive(self) -> None:
        backoff = Backoff(self.reconnect_timeout)
        self._route.settle()
        while True:
            with self._cond:
                if self._done:
                    return
                if self._ledger.model_stored():
                    self._opening = reopening(self._opening)
                # Everything not yet durable goes first on the new connection, in order.
                connection: queue.Queue[Any] = queue.Queue()
                for request in self._ledger.replay():
                    connection.put(request)
                if self._closing:
                    connection.put(CLOSE)
                # send() and close() queue onto the new connection from here on.
                self._queue = connection
                method = self._route.method(self._client, self._method)
                call = method(self._requests(connection))
                self._call = call
            try:
                if self._route.follow(owner_in(call.initial_metadata())):
                    # Another replica owns the model's stream: open it there at once (the
                    # status that follows says the same, once the server drained the call).
                    call.cancel()
                    continue
                for message in call:
                    with self._cond:
                        ack = self._ledger.record(message)
                        self._cond.notify_all()
                    if ack is not None and self._on_ack is not None:
                        self._on_ack(ack)
                    backoff.succeeded()
                    self._route.settle()
            except grpc.RpcError as error:
                if self._sending_shared and shared_memory_refused(error):
                    # The server ended the stream at the first batch it could not read, before
                    # any later one: from there on, everything kept goes again with its rows.
                    self._sending_shared = False
                    continue
                owner = stream_owner(error)
                if self._route.follow(owner):
                    continue
                if owner is None:
                    self._route.fall_back(self._client, error)
                with self._cond:
                    if idle_timeout(error):
                        # The server ended a quiet stream: hold none open until there is a
                        # batch to send or the stream closes (its close reconnects at once).
                        while not (self._ledger.unacked or self._closing or self._done):
                            self._cond.wait()
                    closing = self._done
                wait = backoff.next_wait(error, lost_connection=owner is not None)
                if closing or wait is None:
                    self._fail(self._client.failure(error))
                    return
                time.sleep(wait)
                if not self._wait_for_channel(backoff):
                    self._fail(self._client.failure(error))
                    return
                self.reconnects += 1
                continue
            finally:
                connection.put(HANG_UP)  # frees the request thread of a dead call
            with self._cond:
                if self._ledger.unacked and not self._done:
                    # The server ended the stream with batches unanswered: resend them.
                    continue
                unstored = self._ledger.closed(durable_from_trailer(call.trailing_metadata()))
                if unstored is not None:
                    self._fatal = unstored
                self._done = True
                self._cond.notify_all()
            return

    def _wait_for_channel(self, backoff: Backoff) -> bool:
        """Wait until the channel connects again; False past reconnect_timeout or on abort."""
        ready = grpc.channel_ready_future(self._client._plain_channel)
        try:
            while True:
                remaining = backoff.remaining()
                if remaining <= 0 or self._done:
                    break
                try:
                    ready.result(timeout=min(remaining, 0.2))
                    return True
                except grpc.FutureTimeoutError:
                    continue
        finally:
            ready.cancel()  # stops gRPC's polling thread, which outlives a closed channel otherwise
        # That thread wakes every 0.2 s: a channel closed before it sees the cancel makes it
        # raise. Only a stream that gives up waits for it.
        time.sleep(0.25)
        return False

    def _requests(self, connection: queue.Queue[Any]) -> Iterator[bytes]:
        yield codec.serialize_minibatch_request(self._opening)
        while True:
            item = connection.get()
            if item is CLOSE or item is HANG_UP:
                return
            if isinstance(item, SharedBatch):
                yield item.request if self._sending_shared else item.inline()
            else:
                yield bytes(item)  # a kept request: bytes already, or a view of a slab

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            self._fatal = error
            self._done = True
            self._cond.notify_all()
