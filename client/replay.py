"""Where producers keep the requests of their batches until the server stores them.

A stream keeps every batch it sent until a checkpoint makes it durable, a second or more of
its traffic (``ledger.Ledger``). Kept as a bytes object each, every large request took
memory the process had never touched, and faulted its pages in: bench.streaming's stream of
159 batches of 512 KiB cost the producer's process 141 ms of CPU, with about 100 page
faults a batch, against 87 ms when the requests were made before the stream started.
With the slabs below: 116 ms, and 9 faults a batch (medians of 6, taking turns, against a
server that applied nothing).

Large requests (up to SLAB_BYTES) are copied instead into slabs the process reuses: a slab
whose requests are all gone goes back to a pool shared by every stream of the process, and
the next batches are copied into it. A stream that runs for long reuses the slabs its
durable batches freed; streams opened one after another reuse each other's. The pool keeps
at most IDLE_BYTES of slabs nobody uses. A slab goes back only once no view of it is left
anywhere (a view queued for sending included), so a kept request is never overwritten
while something can still read it.

Sending copies a request once more, into the bytes object gRPC takes, as the stream's
request iterator hands it over; that object lives only until gRPC has copied it in turn,
so its memory is reused too.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import numpy as np

# Requests up to this size stay bytes objects: malloc reuses small blocks by itself. So do
# those larger than a slab, rare enough that a slab of their own would save nothing.
SMALL_REQUEST = 64 << 10
SLAB_BYTES = 8 << 20
IDLE_BYTES = 64 << 20

# A kept request: bytes, or a view (1-D uint8 ndarray) of a slab.
Kept = bytes | np.ndarray


class _Pool:
    """Slabs of SLAB_BYTES that no request uses any more, for the next ones to reuse."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[np.ndarray] = []

    def take(self) -> np.ndarray:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return np.empty(SLAB_BYTES, dtype=np.uint8)

    def give_back(self, slab: np.ndarray) -> None:
        with self._lock:
            if (len(self._idle) + 1) * SLAB_BYTES <= IDLE_BYTES:
                self._idle.append(slab)

    def idle_bytes(self) -> int:
        with self._lock:
            return len(self._idle) * SLAB_BYTES


POOL = _Pool()


class _Slab:
    """A slab and how many holders it has: its kept requests' views, and the stream that
    fills it while it does. The last to go gives it back to the pool."""

    __slots__ = ("buffer", "used", "holders", "lock")

    def __init__(self, buffer: np.ndarray) -> None:
        self.buffer = buffer
        self.used = 0
        self.holders = 1  # the stream filling it
        self.lock = threading.Lock()

    def hold(self) -> None:
        with self.lock:
            self.holders += 1

    def let_go(self) -> None:
        with self.lock:
            self.holders -= 1
            free = self.holders == 0
        if free:
            POOL.give_back(self.buffer)


class ReplayBuffer:
    """One stream's kept requests: each large one copied into the stream's current slab."""

    def __init__(self) -> None:
        self._slab: _Slab | None = None
        self._let_go: weakref.finalize[[], ReplayBuffer] | None = None  # the stream's hold on its slab

    def keep(self, parts: Sequence[bytes | memoryview]) -> Kept:
        """The request made of ``parts`` (bytes-like, a byte an item), copied out of them."""
        size = sum(len(part) for part in parts)
        if size <= SMALL_REQUEST or size > SLAB_BYTES:
            return b"".join(parts)
        slab = self._slab
        if slab is None or size > slab.buffer.size - slab.used:
            slab = _Slab(POOL.take())
            self._switch_to(slab)
        start = stop = slab.used
        for part in parts:
            stop += len(part)
            slab.buffer[stop - len(part):stop] = np.frombuffer(part, dtype=np.uint8)
        slab.used = stop
        view = slab.buffer[start:stop]
        slab.hold()
        weakref.finalize(view, slab.let_go)
        return view

    def _switch_to(self, slab: _Slab | None) -> None:
        if self._let_go is not None:
            self._let_go()  # once only: a finalizer that ran is dead
        self._slab = slab
        self._let_go = None if slab is None else weakref.finalize(self, slab.let_go)

    def close(self) -> None:
        """No more requests: the current slab goes back once its requests are gone (as it
        does when this buffer is garbage)."""
        self._switch_to(None)
