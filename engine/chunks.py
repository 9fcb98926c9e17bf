"""Running a compiled kernel over the chunks of a problem on the engine's threads.

A kernel here is a serial function, compiled without the GIL (``_common.kernel``), whose
first two arguments say which chunks to do: ``kernel(first, stop, *args)`` does chunks
first..stop-1 of the problem. ``run`` deals runs of chunks out to the calling thread and to a
pool the process shares, each taking the next run as it finishes one, until none is left.

Why not numba's ``prange``: a parallel kernel compiles its body twice over (the kernel and
the function numba outlines from its loop), each time with every function it calls, and
numba's parfor passes on top. On the Xeon host a Lloyd step took 16 s to compile so and 10.5 s
as a serial kernel; a cold server waits for that before its first fit. Which thread does a
chunk never changes what the chunk computes, and partial results are per chunk, reduced by
the caller in chunk order: the output stays bitwise the same whatever the thread count.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numba

# Runs dealt out per thread: enough that a thread slowed by a noisy neighbour takes fewer of
# them, few enough that calling into a kernel (microseconds each) stays out of sight.
RUNS_PER_THREAD = 4

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _shared_pool() -> ThreadPoolExecutor:
    """The pool of helper threads, made on first use (again in a forked child, where the
    parent's threads do not exist)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            size = max(1, numba.config.NUMBA_NUM_THREADS - 1)  # type: ignore[attr-defined]
            _pool = ThreadPoolExecutor(size, thread_name_prefix="centroidal-kernel")
            _pool_pid = os.getpid()
        return _pool


def threads_for(n_chunks: int) -> int:
    """How many threads ``run`` uses for n_chunks chunks: numba's thread count for the calling
    thread (NUMBA_NUM_THREADS, or numba.set_num_threads), at most one per chunk."""
    return max(1, min(n_chunks, numba.get_num_threads()))


def run(kernel: Callable[..., Any], n_chunks: int, *args: Any, on_caller: bool = False) -> None:
    """Do chunks 0..n_chunks-1 of ``kernel(first, stop, *args)``, spread over the threads;
    returns once every chunk is done, raising the first error a run raised.

    on_caller: run them all in one call on this thread, for work too small to be worth
    waking another thread.
    """
    threads = 1 if on_caller else threads_for(n_chunks)
    if threads == 1:
        if n_chunks > 0:
            kernel(0, n_chunks, *args)
        return
    n_runs = min(n_chunks, threads * RUNS_PER_THREAD)
    runs = iter(range(n_runs))  # next() on it is atomic under the GIL

    def work() -> None:
        for current in runs:
            kernel(current * n_chunks // n_runs, (current + 1) * n_chunks // n_runs, *args)

    pool = _shared_pool()
    helpers: list[Future[None]] = [pool.submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        # A helper still queued behind other calls' runs would find none left: drop it. One
        # that started is waited for, so that no run outlives the caller's buffers.
        started = [helper for helper in helpers if not helper.cancel()]
        for helper in started:
            helper.exception()
    for helper in started:
        helper.result()
