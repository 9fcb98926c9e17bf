"""The memory budget: what a request may hold is counted before it is taken.

Two kinds of memory count against ``--memory-budget``:
- **resident**: every model's centers in the registry, and each streamed model's
  learning state with the init points it still buffers, asked of their owners;
- **reserved**: what calls hold while they run: a Fit's upload as it arrives and its
  working arrays, an image's encoded bytes as they arrive and its decoded pixels,
  estimated from the header before a pixel is decoded.

A call whose data would take the total past the budget waits for room, without
reading more of its upload (``Reservation.wait_for``): other calls end and give theirs
back. When every call that holds memory is waiting for more, none could ever get it,
so the youngest is refused with RESOURCE_EXHAUSTED and a RetryInfo and lets go of what
it holds; so is a call that waited its whole limit. One that could never fit, even into
an idle server, is refused at once, without a RetryInfo.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .exceptions import Busy, LimitExceeded

log = logging.getLogger("centroidal.server")

MIB = 1024 * 1024
# The default budget: this share of the memory the process may use.
DEFAULT_SHARE = 0.6
RETRY_AFTER_S = 2.0
# How often a call waiting for room looks again.
WAIT_POLL_S = 0.05


# Blocks from this size up are mapped on their own and unmapped when freed (glibc's
# M_MMAP_THRESHOLD), so a call's arrays go back to the system when it ends. Lower costs
# speed: at 1 MiB every mid-sized buffer of a Predict was a fresh mapping, and an SDK
# Predict of 1e6x16 points took 254 ms against 168 ms; at 4 MiB, 154 ms.
MMAP_THRESHOLD = 4 * MIB
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


_LIBC: ctypes.CDLL | None = None
# A call that held at least this much asks malloc to hand back its heaps' free pages when
# it lets go.
TRIM_AFTER = 32 * MIB
# The trim waits until no call has asked for one for TRIM_QUIET_S, and at most TRIM_LATEST_S
# after the first request, as jemalloc's decay does. Trimmed after each call, SDK fits of
# 1e6x16 rows sent back to back each found the last one's buffers handed back: they came
# again as fresh pages, faulted in and zeroed. Trimmed once quiet, such a fit took 62.9 ms
# against 68.5 (and 66.6 against 71.2), its rows arriving in 28 ms against 32-33.
TRIM_QUIET_S = 0.5
TRIM_LATEST_S = 5.0
# Free memory at the top of one of malloc's heaps goes back to the system at once past this
# much (M_TRIM_THRESHOLD); less stays for the next calls until a trim. At 8 MiB, four
# producers streaming 512 KiB batches into one model (each stream's messages in flight,
# its 4 MiB HTTP/2 window among them, spread over the heaps of gRPC's threads) crossed it
# again and again, and every batch came in fresh pages, faulted in and zeroed: 7,700 to
# 10,800 page faults a stream of 79 batches, against a few hundred at this size. It is as
# much as a call may hold without asking for a trim when it ends: past it, the call asks.
HEAP_TOP_KEPT = TRIM_AFTER


def arena_limit() -> int:
    """How many heaps malloc may keep (M_ARENA_MAX): one per core the process may use.

    glibc gives a thread that allocates while the heaps are busy a heap of its own, up to 8
    per core, and each keeps up to HEAP_TOP_KEPT free at its top. The engine's kernels
    allocate on the server's worker threads and on its pool of kernel threads: under
    `make soak` on 2 cores the server held 395 MiB with glibc's limit, against 237 MiB
    with one heap per core; its calls' medians and p99s moved by 8% or less.
    """
    return max(2, usable_cores())


def give_freed_memory_back() -> bool:
    """Make glibc's malloc return large freed blocks to the system at once.

    By default glibc raises its mmap threshold to the size of the largest block freed (up
    to 32 MiB): after the first upload, every chunk of the next comes from the heap, whose
    freed pages stay with the process. A refused 400 MiB upload then left the server 300
    MiB larger for good. A fixed threshold keeps every block of MMAP_THRESHOLD or more
    mapped on its own, and ``trim`` hands back what smaller ones leave in the heaps.
    Returns False where the C library is not glibc (musl maps large blocks anyway).
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    global _LIBC
    try:
        libc = ctypes.CDLL("libc.so.6")
        fixed = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        fixed &= libc.mallopt(_M_TRIM_THRESHOLD, HEAP_TOP_KEPT) == 1
        fixed &= libc.mallopt(_M_ARENA_MAX, arena_limit()) == 1
    except (OSError, AttributeError):
        fixed = False
    if not fixed:
        log.warning("could not set malloc's thresholds: freed memory may stay with the process")
        return False
    _LIBC = libc
    return True


def trim() -> None:
    """Hand the free pages inside malloc's heaps back to the system (what a call's small
    allocations, protobuf's among them, left there), where glibc is in use, once the server
    is quiet: TRIM_QUIET_S after the last request, TRIM_LATEST_S after the first at most.

    A thread of its own does it, and this returns at once: malloc_trim walks every heap
    (about 2 ms after a 64 MB fit), which on the event loop would delay the call's answer.
    Requests made meanwhile are served by the same trim, one for all."""
    if _LIBC is not None:
        _TRIMMER.request()


def when_quiet(let_go: Callable[[], object]) -> None:
    """Run ``let_go`` (which drops something kept for calls that come back to back) on the
    trimming thread at the next quiet moment, as ``trim`` would trim, just before it."""
    _TRIMMER.request(let_go)


class _Trimmer:
    """The thread that runs malloc_trim, and what waits for the same quiet moment, when
    asked; started at the first request."""

    def __init__(self) -> None:
        self._wanted = threading.Condition()
        self._first: float | None = None  # when the oldest request not yet served came
        self._last = 0.0
        self._let_go: list[Callable[[], object]] = []
        self._thread: threading.Thread | None = None

    def request(self, let_go: Callable[[], object] | None = None) -> None:
        with self._wanted:
            now = time.monotonic()
            self._last = now
            if self._first is None:
                self._first = now
            if let_go is not None and let_go not in self._let_go:
                self._let_go.append(let_go)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="centroidal-trim", daemon=True)
                self._thread.start()
            self._wanted.notify()

    def _due(self) -> float | None:
        """When the pending requests are to be served; None when there are none."""
        if self._first is None:
            return None
        return min(self._last + TRIM_QUIET_S, self._first + TRIM_LATEST_S)

    def _run(self) -> None:
        while True:
            with self._wanted:
                while (due := self._due()) is None or (wait := due - time.monotonic()) > 0:
                    self._wanted.wait(None if due is None else wait)
                self._first = None  # a request from now on asks for another trim
                let_go, self._let_go = self._let_go, []
            for drop in let_go:
                try:
                    drop()
                except Exception:  # the thread must go on trimming
                    log.exception("letting go of memory kept between calls failed")
            if _LIBC is not None:
                _LIBC.malloc_trim(0)  # ctypes lets go of the GIL meanwhile


_TRIMMER = _Trimmer()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_memory() -> int:
    """Bytes the process may use: the machine's memory, or the cgroup's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return int(total)


def default_budget() -> int:
    return int(machine_memory() * DEFAULT_SHARE)


class MemoryBudget:
    """Counts resident and reserved bytes against one limit; thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._reserved = 0
        self._resident: list[Callable[[], int]] = []
        self._shedders: list[Callable[[int], int]] = []
        # Reservations holding memory, and those of them waiting for more (event loop only).
        self._holders: set[Reservation] = set()
        self._waiting: set[Reservation] = set()
        self._ages = itertools.count()

    def add_resident(self, source: Callable[[], int]) -> None:
        """A function that tells the bytes some part of the server keeps in memory."""
        self._resident.append(source)

    def add_shedder(self, shed: Callable[[int], int]) -> None:
        """A function that lets go of up to ``nbytes`` of what it keeps (models it can load
        again), returning what it freed; asked before a call is refused or made to wait."""
        self._shedders.append(shed)

    def _shed(self, nbytes: int) -> int:
        freed = 0
        for shed in self._shedders:
            if freed >= nbytes:
                break
            freed += shed(nbytes - freed)
        return freed

    def make_room(self) -> None:
        """After something became resident (a model loaded on use): shed others until the
        budget holds again, as far as they can be."""
        over = self.used() - self.limit
        if over > 0:
            self._shed(over)

    def resident(self) -> int:
        return sum(source() for source in self._resident)

    @property
    def reserved(self) -> int:
        return self._reserved

    def used(self) -> int:
        return self.resident() + self._reserved

    def check(self, nbytes: int, what: str, field: str | None = None) -> None:
        """Refuse, as ``Reservation.grow`` would, memory that is about to become resident."""
        self._take(nbytes, nbytes, what, field)
        self._give_back(nbytes)

    def reservation(self, what: str, field: str | None = None) -> Reservation:
        """An empty reservation for one call, grown as its data arrives."""
        return Reservation(self, what, field)

    def _take(self, nbytes: int, call_total: int, what: str, field: str | None) -> None:
        """Reserve ``nbytes`` more for a call that would then hold ``call_total``."""
        for attempt in range(2):
            with self._lock:
                resident = self.resident()
                over = resident + self._reserved + nbytes - self.limit
                if over <= 0:
                    self._reserved += nbytes
                    return
            if attempt or not self._shed(over):
                break
        if resident + call_total > self.limit:  # even with every other call gone
            raise LimitExceeded(
                f"{what} needs {_size(call_total)} of memory, and the models held take {_size(resident)} "
                f"of the server's {_size(self.limit)} budget (--memory-budget): it cannot fit; send "
                "less data, or delete models",
                field=field, reason="MEMORY_BUDGET",
            )
        raise Busy(
            f"{what} needs {_size(call_total)} of memory; the server's {_size(self.limit)} budget "
            f"(--memory-budget) has {_size(max(0, self.limit - resident - self._reserved))} free "
            "while other calls run; nothing was kept, retry later",
            retry_after=RETRY_AFTER_S, field=field, reason="MEMORY_BUDGET",
        )

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self._reserved -= nbytes

    def _must_yield(self, waiter: Reservation) -> bool:
        """Whether ``waiter`` should give up: every call holding memory waits for more, so
        none can finish, and it is the youngest of them."""
        with self._lock:
            stuck = self._holders <= self._waiting
            return stuck and waiter in self._holders and waiter.age == max(r.age for r in self._holders)


class Reservation:
    """Bytes one call holds; grows as data arrives, released once at the end."""

    def __init__(self, budget: MemoryBudget, what: str, field: str | None) -> None:
        self._budget = budget
        self.what = what
        self.field = field
        self.nbytes = 0
        self.largest = 0  # the most it held: a call that held much trims malloc when it lets go
        self.age = next(budget._ages)

    def grow(self, nbytes: int, what: str | None = None) -> None:
        """Hold ``nbytes`` more, or raise Busy / LimitExceeded and hold nothing more."""
        if nbytes <= 0:
            return
        self._budget._take(nbytes, self.nbytes + nbytes, what or self.what, self.field)
        if not self.nbytes:
            with self._budget._lock:
                self._budget._holders.add(self)
        self.nbytes += nbytes
        self.largest = max(self.largest, self.nbytes)

    async def wait_for(self, nbytes: int, longest: float, what: str | None = None, *, stalls: bool = True) -> None:
        """As ``grow``, but while other calls hold the room, wait up to ``longest`` seconds
        for them to give it back (see the module's note for who gives up). ``stalls``: the
        call makes no progress while it waits; False for one that gives back memory as it
        goes on (a stream whose earlier batches are still being applied)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + longest
        budget = self._budget
        while True:
            try:
                self.grow(nbytes, what)
                return
            except Busy:
                if stalls:
                    budget._waiting.add(self)
                if loop.time() >= give_up or (stalls and budget._must_yield(self)):
                    budget._waiting.discard(self)
                    raise
            try:
                await asyncio.sleep(WAIT_POLL_S)
            finally:
                budget._waiting.discard(self)

    def give_back(self, nbytes: int) -> None:
        """Hold ``nbytes`` less (part of what the call held is gone)."""
        nbytes = min(nbytes, self.nbytes)
        if nbytes > 0:
            self._budget._give_back(nbytes)
            self.nbytes -= nbytes
            if not self.nbytes:
                with self._budget._lock:
                    self._budget._holders.discard(self)

    def release(self) -> None:
        """Hold nothing more; called when the call's data goes, and again when the call ends
        (a refusal's upload may still be drained in between): each time, a call that held
        much hands malloc's free pages back to the system."""
        self.give_back(self.nbytes)
        if self.largest >= TRIM_AFTER:
            trim()

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _size(nbytes: int) -> str:
    if nbytes >= 10 * 1024 * MIB:
        return f"{nbytes / (1024 * MIB):.1f} GiB"
    if nbytes >= 10 * MIB:
        return f"{nbytes / MIB:.0f} MiB"
    return f"{nbytes} bytes"
