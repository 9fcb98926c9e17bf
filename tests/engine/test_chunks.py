"""chunks.run: every chunk done once, on several threads, errors raised after every run
ended, and results bitwise the same at any thread count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import numba
import pytest

from centroidal.engine import chunks


class Recorder:
    """A kernel in Python: notes each run it is given, and the thread that did it."""

    def __init__(self, fail_at: int = -1, fail_on: int | None = None) -> None:
        self.runs: list[tuple[int, int]] = []
        self.threads: set[int] = set()
        self.running = 0
        self.fail_at = fail_at
        self.fail_on = fail_on  # the thread whose first run fails
        self.lock = threading.Lock()

    def __call__(self, first: int, stop: int, tag: str) -> None:
        assert tag == "args"
        with self.lock:
            self.running += 1
            self.threads.add(threading.get_ident())
        try:
            threading.Event().wait(0.002)  # long enough for the other threads to take runs too
            if first <= self.fail_at < stop:
                raise ValueError(f"chunk {self.fail_at}")
            if threading.get_ident() == self.fail_on:
                self.fail_on = None
                raise ValueError(f"chunks {first}..{stop - 1}")
            with self.lock:
                self.runs.append((first, stop))
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("n_chunks", [0, 1, 2, 3, 7, 8, 9, 100, 1000])
@pytest.mark.parametrize("on_caller", [False, True])
def test_every_chunk_is_done_once(n_chunks: int, on_caller: bool) -> None:
    kernel = Recorder()
    chunks.run(kernel, n_chunks, "args", on_caller=on_caller)
    runs = sorted(kernel.runs)
    covered = [chunk for first, stop in runs for chunk in range(first, stop)]
    assert covered == list(range(n_chunks))
    assert all(first < stop for first, stop in runs)
    if on_caller or n_chunks == 0:
        assert len(runs) == min(n_chunks, 1) and kernel.threads <= {threading.get_ident()}
    else:
        threads = chunks.threads_for(n_chunks)
        assert len(runs) == (1 if threads == 1 else min(n_chunks, threads * chunks.RUNS_PER_THREAD))


def test_a_failed_run_raises_once_every_other_run_ended() -> None:
    kernel = Recorder(fail_at=37)
    with pytest.raises(ValueError, match="chunk 37"):
        chunks.run(kernel, 100, "args")
    assert kernel.running == 0
    done = {chunk for first, stop in kernel.runs for chunk in range(first, stop)}
    missing = sorted(set(range(100)) - done)
    # Only the failed run is missing: the threads left did every other one.
    assert 37 in missing and missing == list(range(missing[0], missing[-1] + 1))
    if chunks.threads_for(100) > 1:
        assert len(missing) < 100


def test_a_run_failed_on_the_calling_thread_raises_once_the_helpers_ended() -> None:
    kernel = Recorder(fail_on=threading.get_ident())
    with pytest.raises(ValueError, match="chunks"):
        chunks.run(kernel, 100, "args")
    assert kernel.running == 0  # no helper still at work on the caller's buffers
    done = {chunk for first, stop in kernel.runs for chunk in range(first, stop)}
    missing = sorted(set(range(100)) - done)
    assert missing == list(range(missing[0], missing[-1] + 1))


THREADS = textwrap.dedent(
    """
    import json, threading
    import numba
    import numpy as np
    from centroidal.engine import chunks, kmeans
    from tests.engine.test_chunks import Recorder

    kernel = Recorder()
    chunks.run(kernel, 64, "args")
    used = len(kernel.threads)
    X = np.random.default_rng(0).normal(size=(30_000, 5)).astype(np.float32)
    X[::3] += 6.0
    fits = []
    for threads in (1, 3, 5):
        numba.set_num_threads(threads)
        model = kmeans.fit(X, 8, seed=1, n_init=2, max_iter=30)
        fits.append([model.centers.tobytes().hex(), model.labels.tobytes().hex(),
                     float(model.inertia).hex()])
    numba.set_num_threads(1)
    single = Recorder()
    chunks.run(single, 64, "args")
    print(json.dumps({"used": used, "same": all(fit == fits[0] for fit in fits),
                      "single": [len(single.threads), len(single.runs)]}))
    """
)


def test_five_threads_share_the_work_and_give_bitwise_the_same_fit() -> None:
    done = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True,
                          env={**os.environ, "NUMBA_NUM_THREADS": "5"}, timeout=600)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["used"] > 1  # helpers took runs alongside the caller
    assert found["same"]  # centers, labels and inertia at 1, 3 and 5 threads
    assert found["single"] == [1, 1]  # numba.set_num_threads(1): one call on the caller


def test_the_thread_count_follows_numba() -> None:
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert chunks.threads_for(100) == 1
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        assert chunks.threads_for(100) == min(100, numba.config.NUMBA_NUM_THREADS)
        assert chunks.threads_for(1) == 1
    finally:
        numba.set_num_threads(before)
