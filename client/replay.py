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
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np

# Requests up to this size stay bytes objects: malloc reuses small blocks by itself. So do
# those larger than a slab, rare enough that a slab of their own would save nothing.
SMALL_REQUEST = 64 << 10
SLAB_BYTES = 8 << 20
IDLE_BYTES = 64 << 20

# A kept request: bytes, or a view (1-D uint8 ndarray) of a slab.
Kept = bytes | np.ndarray
# What a slab's memory is.
M = TypeVar("M")


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


class Slab(Generic[M]):
    """Memory a stream fills with kept requests (a pool's buffer, a shared-memory object),
    and how many holders it has: its kept requests, and the stream that fills it while it
    does. The last to go hands the memory to ``give_back``."""

    __slots__ = ("memory", "size", "used", "holders", "lock", "_give_back")

    def __init__(self, memory: M, size: int, give_back: Callable[[M], None]) -> None:
        self.memory = memory
        self.size = size
        self.used = 0
        self.holders = 1  # the stream filling it
        self.lock = threading.Lock()
        self._give_back = give_back

    def hold(self, kept: object) -> None:
        """``kept`` (a request kept in the slab) holds it until ``kept`` is garbage."""
        with self.lock:
            self.holders += 1
        weakref.finalize(kept, self.let_go)

    def let_go(self) -> None:
        with self.lock:
            self.holders -= 1
            free = self.holders == 0
        if free:
            self._give_back(self.memory)


class SlabFiller(Generic[M]):
    """The slab a stream is filling, held until it moves on to a new one or closes."""

    def __init__(self) -> None:
        self._slab: Slab[M] | None = None
        self._let_go: weakref.finalize[[], SlabFiller[M]] | None = None  # the stream's hold on its slab

    def _slab_for(self, nbytes: int, new: Callable[[], Slab[M]]) -> Slab[M]:
        """The current slab when it has ``nbytes`` free, else a ``new`` one, now current."""
        slab = self._slab
        if slab is None or nbytes > slab.size - slab.used:
            slab = new()
            self._switch_to(slab)
        return slab

    def _switch_to(self, slab: Slab[M] | None) -> None:
        if self._let_go is not None:
            self._let_go()  # once only: a finalizer that ran is dead
        self._slab = slab
        self._let_go = None if slab is None else weakref.finalize(self, slab.let_go)

    def close(self) -> None:
        """Nothing more to keep: the current slab goes back once its requests are gone (as
        it does when this filler is garbage)."""
        self._switch_to(None)


class ReplayBuffer(SlabFiller[np.ndarray]):
    """One stream's kept requests: each large one copied into the stream's current slab."""

    def keep(self, parts: Sequence[bytes | memoryview]) -> Kept:
        """The request made of ``parts`` (bytes-like, a byte an item), copied out of them."""
        size = sum(len(part) for part in parts)
        if size <= SMALL_REQUEST or size > SLAB_BYTES:
            return b"".join(parts)
        slab = self._slab_for(size, lambda: Slab(POOL.take(), SLAB_BYTES, POOL.give_back))
        buffer = slab.memory
        start = stop = slab.used
        for part in parts:
            stop += len(part)
            buffer[stop - len(part):stop] = np.frombuffer(part, dtype=np.uint8)
        slab.used = stop
        view = buffer[start:stop]
        slab.hold(view)
        return view
