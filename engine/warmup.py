"""Compiling every kernel the server runs into numba's cache: at a server's start (in the
background, or before SERVING), and when the container image is built
(``python -m centroidal.engine.warmup``). One list, so neither misses a kernel.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from . import kmeans, lloyd, minibatch, nearest, scoring
from ._sums import TILE_SUMS_FEATURES
from .cosine import unit_rows
from .seeding import kmeans_plusplus
from .threads import configure_threads
from .validation import FLOAT_DTYPES, check_finite, read_only, scan_values


def _predict(X: np.ndarray, copies: int) -> None:
    centers = X[:2].copy()
    for points in (X, np.repeat(X, copies, axis=0)):
        nearest.predict(points, centers, return_distance=True)
        nearest.predict(points, centers)
    check_finite(X, "X")


def _lloyd(X: np.ndarray) -> None:
    kmeans.fit(X, 3, init=X[:3], n_init=1, max_iter=3)


def _seeding(X: np.ndarray) -> None:
    # The seeding kernels alone: the Lloyd step is the fit group's, which another process
    # may be compiling at the same time from a cold cache.
    kmeans_plusplus(X, 3, np.random.default_rng(0), np.empty(0))


def _narrow(X: np.ndarray) -> None:
    # Unit-weight data of at most TILE_SUMS_FEATURES features has a Lloyd step of its own.
    narrow = np.ascontiguousarray(X[:, :TILE_SUMS_FEATURES])
    kmeans.fit(narrow, 3, init=narrow[:3], n_init=1, max_iter=3)


def _bounded_steps(X: np.ndarray) -> None:
    # A step that sets bounds and one that uses them, on rows wide enough to keep bounds.
    X = read_only(np.hstack([X] * 5))
    n_clusters = 16
    work = lloyd.Workspace(X.shape[0], n_clusters, X.shape[1], X.dtype)
    assert work.use_bounds
    centers = X[:n_clusters].copy()
    for _ in range(2):
        work.changed_share = 0.0  # as if the labels had settled
        work.step(X, kmeans.UNIT_WEIGHTS, centers, exact_inertia=False)


def _other_inits(X: np.ndarray, copies: int) -> None:
    # Apart from the first groups: only a cosine call, or one with NaN or Inf values to
    # describe, needs these two (about 1 s of a cold start's first predict).
    unit_rows(X, "X")
    scan_values(X)
    nearest.transform(np.repeat(X, copies, axis=0), X[:2].copy())
    kmeans.fit(X, 3, init="random", n_init=1, max_iter=3, seed=0)
    kmeans.fit(X, 2, init=X[:2], n_init=1, max_iter=3)
    # A center far from every point starts empty: compiles the relocation path.
    kmeans.fit(X, 2, init=np.vstack([X[:1], np.full((1, X.shape[1]), 1e6, dtype=X.dtype)]), max_iter=2)


def _groups() -> list[tuple[str, Callable[[], object]]]:
    """The kernels in groups, those a first request most likely needs first: float32 predict
    and fit, then float64, then narrow data's step, the transform, the other inits and the
    checks of bad values and cosine rows, then bounds and the rest. Kernels read data
    through read-only views only (``validation.read_only``), so one signature per dtype
    serves every caller."""
    rng = np.random.default_rng(0)
    # Wider than TILE_SUMS_FEATURES, so that the first groups leave the narrow step out.
    n_features = TILE_SUMS_FEATURES + 1
    samples = {dtype: rng.normal(size=(64, n_features)).astype(dtype) for dtype in FLOAT_DTYPES}
    # Enough rows to take the parallel path as well as the one on the caller's thread.
    copies = nearest.ON_CALLER_WORK // (64 * 2 * n_features) + 1
    groups: list[tuple[str, Callable[[], object]]] = []
    for dtype, X in samples.items():
        groups.append((f"predict {dtype.name}", functools.partial(_predict, X, copies)))
        # Apart, so that two processes compiling from a cold cache share a first fit's kernels.
        groups.append((f"fit {dtype.name}", functools.partial(_lloyd, X)))
        groups.append((f"seeding {dtype.name}", functools.partial(_seeding, X)))
    for dtype, X in samples.items():
        groups.append((f"narrow fit {dtype.name}", functools.partial(_narrow, X)))
    for dtype, X in samples.items():
        groups.append((f"transform, other inits and checks {dtype.name}", functools.partial(_other_inits, X, copies)))
    for dtype, X in samples.items():
        groups.append((f"bounds {dtype.name}", functools.partial(_bounded_steps, X)))
    # Groups of bounds (k >= 20 and d >= 32) are formed by a product on the centers.
    groups.append(("bound groups", functools.partial(lloyd.group_centers, rng.normal(size=(40, 32)), 2)))
    groups.append(("mini-batch", minibatch.warmup))
    groups.append(("scoring", scoring.warmup))
    return groups


def groups_for(dtype: np.dtype, fit: bool) -> list[str]:
    """The groups that compile what a predict (or a fit) of ``dtype`` rows runs first."""
    name = np.dtype(dtype).name
    return [f"predict {name}", f"fit {name}", f"seeding {name}"] if fit else [f"predict {name}"]


def group_names() -> list[str]:
    return [name for name, _ in _groups()]


def steps(helpers: int = 0, stopping: threading.Event | None = None) -> Generator[tuple[int, int, str], None, None]:
    """Compile the kernels a group at a time; yields (groups done, groups in all, the group's
    name) after each, in the order of ``_groups``.

    helpers : compile in this many processes of their own instead, the groups dealt out in
        turn, each loaded here from numba's cache as its process reports it compiled (or
        compiled here if its process fails). Only worth it on a cache without the kernels:
        compilation holds one lock per process, so one process compiles on one core.
    stopping : once set, the steps end (helpers killed) instead of waiting for the next group.
    """
    configure_threads()
    groups = _groups()
    compiled = _Helpers([name for name, _ in groups], helpers) if helpers > 1 else None
    try:
        for done, (name, compile_group) in enumerate(groups, start=1):
            if compiled is not None and not compiled.wait(name, stopping):
                return
            compile_group()
            yield done, len(groups), name
    finally:
        if compiled is not None:
            compiled.stop()


def cache_is_cold() -> bool:
    """Whether numba's cache has no usable entry for the first kernel a request runs: a
    fresh install or cache directory, or one an earlier version of the code filled (numba
    keeps the index and ignores it: its module changed). Then every kernel is to be compiled."""
    from . import _lloyd

    try:
        dispatcher: Any = _lloyd.assign
        index = dispatcher._cache._cache_file  # numba's own layout, stable for years
        if not os.path.exists(index._index_path):
            return True
        # Empty when the index was written for another source or numba version.
        return not index._load_index()
    except AttributeError:  # another numba's layout: assume warm and compile here as before
        return False


class _Helpers:
    """Processes compiling groups into numba's cache; ``wait(name)`` returns once the group is
    there, or its process has ended without it."""

    def __init__(self, names: list[str], count: int) -> None:
        self._done: dict[str, threading.Event] = {name: threading.Event() for name in names}
        self._processes: list[subprocess.Popen[str]] = []
        for first in range(min(count, len(names))):
            mine = names[first::count]
            process = subprocess.Popen(
                [sys.executable, "-m", "centroidal.engine.warmup", "--for", str(os.getpid()), *mine],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            )
            self._processes.append(process)
            threading.Thread(target=self._follow, args=(process, mine), name="centroidal-compiler",
                             daemon=True).start()

    def _follow(self, process: subprocess.Popen[str], names: list[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            name = line.strip().removeprefix(_COMPILED)
            if line.startswith(_COMPILED) and name in self._done:
                self._done[name].set()
        process.wait()
        for name in names:  # whatever it did not report is compiled by the caller
            self._done[name].set()

    def wait(self, name: str, stopping: threading.Event | None) -> bool:
        """True once group ``name`` is compiled (or its process gone); False if stopped first."""
        while not self._done[name].wait(0.1):
            if stopping is not None and stopping.is_set():
                return False
        return True

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait()


_COMPILED = "compiled "


def compile_all() -> None:
    """Configure threads and compile every kernel."""
    for _ in steps():
        pass


def _compile_named(parent: int, names: list[str]) -> None:
    """A helper process of ``steps``: compile these groups, saying so after each; it ends
    with the process it works for."""

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    configure_threads()
    groups = dict(_groups())
    for name in names:
        groups[name]()
        print(f"{_COMPILED}{name}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--for":
        _compile_named(int(sys.argv[2]), sys.argv[3:])
    else:
        compile_all()
        print("every kernel compiled")
