"""What a producer has sent into a stream and what became of it, shared by the threaded
(``stream.MiniBatchStream``) and the asyncio (``aio_stream.AsyncMiniBatchStream``) stream,
which differ only in how they wait.

Each batch is numbered with the next sequence of its producer id and kept until the server
reports a durable version at or past the one that batch made, so that a reconnect can send
again everything not yet stored.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from centroidal import codec
from centroidal.v1 import clustering_pb2 as pb

from ._calls import as_points
from .errors import CentroidalError, Unavailable, error_from_code
from .results import BatchAck
from .reconnects import worth_resending
from .replay import Kept, ReplayBuffer
from .shared_batches import SharedBatch, SharedReplay

# What a connection's request queue may hold besides requests.
CLOSE = object()  # the producer is done: end the stream
HANG_UP = object()  # this connection is dead: stop feeding it
_LATENCIES_KEPT = 100_000
# A kept batch's request: whole (bytes, or a view of a slab), or naming its rows in shared memory.
Request = Kept | SharedBatch
# The version of a kept batch whose ack is awaited again after a reconnect.
UNKNOWN_VERSION = 2**63


def durable_from_trailer(metadata: Sequence[Any] | None) -> int | None:
    """The durable version a clean close reported; None from a server that does not say."""
    for key, value in metadata or ():
        if key == codec.DURABLE_VERSION_TRAILER:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def reopening(opening: codec.MiniBatchOpen) -> codec.MiniBatchOpen:
    """The open message for a reconnect once the model exists: without create_if_missing,
    so a model deleted meanwhile is reported (NOT_FOUND) instead of silently re-created."""
    return codec.MiniBatchOpen(opening.model)


class Ledger:
    """What a producer has sent and what became of it; the caller synchronises access.

    Shared by the threaded and the asyncio stream, which differ only in how they wait.
    """

    def __init__(self, producer_id: str, first_sequence: int, window: int, max_replay_bytes: int,
                 shared: SharedReplay | None = None) -> None:
        """shared: where the batches' rows are kept in shared memory, their requests naming
        them there; without it, each request is kept whole (``ReplayBuffer``)."""
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if first_sequence < 1:
            raise ValueError(f"first_sequence must be at least 1, got {first_sequence}")
        self.producer_id = producer_id
        self.window = window
        self.max_replay_bytes = max_replay_bytes
        self.next_sequence = first_sequence
        # Sent, not acknowledged: sequence -> (request, monotonic send time).
        self.unacked: OrderedDict[int, tuple[Request, float]] = OrderedDict()
        # Acknowledged, not yet durable: sequence -> (request, version it made).
        self.volatile: OrderedDict[int, tuple[Request, int]] = OrderedDict()
        self.durable_version = 0
        self.replay_bytes = 0
        self.errors: list[CentroidalError] = []
        self.unreported = 0
        self.last_ack: BatchAck | None = None
        self.ack_latencies: list[float] = []
        self._kept = ReplayBuffer()  # where the requests are kept
        self._shared = shared

    @property
    def keeps_shared(self) -> bool:
        """New batches go into shared memory (until it has no room for them)."""
        return self._shared is not None

    def full(self) -> bool:
        """No room for another batch: the window is full, or too much awaits a checkpoint."""
        return len(self.unacked) >= self.window or self.replay_bytes > self.max_replay_bytes

    def full_message(self, timeout: float | None) -> str:
        return (
            f"the window of {self.window} unacknowledged batches (or {self.max_replay_bytes} "
            f"bytes kept for replay) stayed full for {timeout} s"
        )

    def add(self, X: Any, sample_weight: Any) -> tuple[int, Request]:
        """Number and encode the next batch; returns (sequence, request)."""
        points = as_points(X)
        weights = None
        if sample_weight is not None:
            weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        sequence = self.next_sequence
        request: Request
        try:
            shared = None if self._shared is None else self._shared.keep(self.producer_id, sequence, points, weights)
        except OSError:  # /dev/shm has no room for a slab: this batch and the next carry their rows
            self._shared = shared = None
        if shared is not None:
            request = shared
        else:
            request = self._kept.keep(
                codec.minibatch_request_parts(codec.MiniBatch(self.producer_id, sequence, points, weights))
            )
        self.next_sequence += 1
        self.unacked[sequence] = (request, time.monotonic())
        return sequence, request

    def replay(self) -> list[Request]:
        """Every request not yet durable, in sequence order, for a new connection.

        The versions acked before are forgotten: after a server crash the same numbers
        may be given to other batches, so a kept batch waits for its new ack.
        """
        for sequence, (request, _) in self.volatile.items():
            self.volatile[sequence] = (request, UNKNOWN_VERSION)
        return [
            (self.volatile.get(sequence) or self.unacked[sequence])[0]
            for sequence in sorted([*self.volatile, *self.unacked])
        ]

    def durable_sequence(self) -> int:
        pending = [seq for seqs in (self.unacked, self.volatile) for seq in seqs]
        return (min(pending) if pending else self.next_sequence) - 1

    def record(self, message: pb.MiniBatchAck) -> BatchAck | None:
        """Account for one ack; returns it, or None for a rejected batch."""
        now = time.monotonic()
        ack = codec.decode_minibatch_ack(message)
        sequence = ack.sequence
        sent = self.unacked.pop(sequence, None)
        if sent is not None:
            if len(self.ack_latencies) < _LATENCIES_KEPT:
                self.ack_latencies.append(now - sent[1])
            request: Request | None = sent[0]
        else:  # a replayed batch that was acknowledged before
            previous = self.volatile.get(sequence)
            request = previous[0] if previous is not None else None
        if ack.error is not None:
            error = error_from_code(ack.error.code, ack.error.message, ack.error.field)
            error.sequence = sequence  # type: ignore[attr-defined]
            self.errors.append(error)
            dropped = self.volatile.pop(sequence, None)
            if dropped is not None:
                self.replay_bytes -= len(dropped[0])
            return None
        if request is not None:
            if sequence not in self.volatile:
                self.replay_bytes += len(request)
            self.volatile[sequence] = (request, ack.version)
        self.durable_version = max(self.durable_version, ack.durable_version)
        self._drop_durable()
        self.last_ack = ack
        return ack

    def _drop_durable(self) -> None:
        """Forget kept batches the server has stored; versions grow with sequences."""
        volatile = self.volatile
        while volatile:
            sequence, (request, version) = next(iter(volatile.items()))
            if version > self.durable_version:
                break
            volatile.popitem(last=False)
            self.replay_bytes -= len(request)

    def model_stored(self) -> bool:
        """The server has stored the model: a reconnect must not create it again.

        Before any checkpoint, a server crash loses the model together with every batch,
        and all of them are still kept here: re-creating it then replays the same model.
        """
        return self.durable_version > 0

    def closed(self, durable_version: int | None) -> CentroidalError | None:
        """The server ended the stream cleanly after its closing checkpoint. Returns an error
        when batches it acknowledged are still not stored (they stay kept)."""
        self._kept.close()  # no batch follows: the last slab goes back once its requests do
        if self._shared is not None:
            self._shared.close()
        if durable_version is None:  # a server that predates the trailer stored everything
            self.volatile.clear()
            self.replay_bytes = 0
            return None
        self.durable_version = max(self.durable_version, durable_version)
        self._drop_durable()
        if self.last_ack is not None and self.last_ack.durable_version < self.durable_version:
            self.last_ack = replace(self.last_ack, durable_version=self.durable_version)
        if not self.volatile:
            return None
        return Unavailable(
            f"the server closed the stream with the model stored at version "
            f"{self.durable_version}, before {len(self.volatile)} acknowledged batches; they are "
            "kept, and flush() or close() resends them"
        )

    def worth_resending(self, fatal: BaseException | None) -> bool:
        """The stream ended with ``fatal``, a condition that may pass (the server unreachable,
        its disk full), and batches are still not stored: connecting again would resend them."""
        return fatal is not None and worth_resending(fatal) and bool(self.unacked or self.volatile)

    def unreported_error(self) -> CentroidalError | None:
        if self.unreported < len(self.errors):
            error = self.errors[self.unreported]
            self.unreported = len(self.errors)
            return error
        return None
