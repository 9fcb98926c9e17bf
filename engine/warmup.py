"""Compiling every kernel the server runs into numba's cache: at a server's start (in the
background, or before SERVING), and when the container image is built
(``python -m centroidal.engine.warmup``). One list, so neither misses a kernel.
"""

from __future__ import annotations

import functools
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

import numpy as np

from . import bounds, kmeans, lloyd, minibatch, nearest, scoring
from ._common import MID, TILE_ROWS, tile_width
from ._nearest import _narrow_sq_norms, _put_labels, _scan_direct, _scan_nearest, _wide_sq_norms, tile_nearest
from ._sums import TILE_SUMS_FEATURES
from .cosine import unit_rows
from .seeding import kmeans_plusplus
from .threads import configure_threads
from .validation import FLOAT_DTYPES, check_finite, read_only, scan_values


def _tile(X: np.ndarray) -> None:
    # The labelling of a tile, which every Lloyd step and predict of this dtype calls: alone,
    # so that one helper process compiles it (and its callees) while another compiles its
    # scans (_tile_scans) and the seeding, and each later group loads it from the cache. The
    # arrays as ``_lloyd.assign`` passes them: the one signature every caller uses.
    X = read_only(X)
    dtype, (rows, n_features) = X.dtype, X.shape
    k, width = 2, tile_width.py_func(n_features)  # the kernel's own rule, run as Python
    tile = np.zeros((width, TILE_ROWS) if n_features <= MID else (TILE_ROWS, n_features), dtype)
    tile_nearest(
        X, 0, rows, np.zeros(n_features, dtype), np.zeros((k, width), dtype), np.zeros(k, dtype),
        np.arange(k).astype(dtype), tile, np.empty((k, TILE_ROWS), dtype), np.empty(TILE_ROWS, dtype),
        np.empty(TILE_ROWS, dtype), np.empty(rows, np.int32), np.empty(0, dtype),
    )


def _tile_scans(X: np.ndarray) -> None:
    # The tile labelling's scans and the storing of its labels, in the reverse of the order
    # it calls them: one helper compiles these while another compiles the labelling from its
    # other end, and the labelling loads those it reaches here already compiled.
    dtype, n_features = X.dtype, X.shape[1]
    k, width = 2, tile_width.py_func(n_features)
    values, ids = np.empty(TILE_ROWS, dtype), np.empty(TILE_ROWS, dtype)
    tile, centers = np.zeros((width, TILE_ROWS), dtype), np.zeros((k, width), dtype)
    _put_labels(ids, 0, np.empty(0, np.int32))
    _wide_sq_norms(np.zeros((TILE_ROWS, MID + 1), dtype), 0, values)
    _scan_nearest(np.zeros((k, TILE_ROWS), dtype), 0, np.zeros(k, dtype), np.zeros(k, dtype), values, ids)
    _narrow_sq_norms(tile, n_features, values)
    _scan_direct(centers, np.zeros(k, dtype), tile, 0, n_features, values, ids, np.zeros(k, dtype))


def _many(X: np.ndarray) -> np.ndarray:
    """X repeated into enough rows to take the parallel path, not the caller's thread."""
    return np.repeat(X, nearest.ON_CALLER_WORK // (X.size * 2) + 1, axis=0)


def _predict(X: np.ndarray) -> None:
    centers = X[:2].copy()
    for points in (X, _many(X)):
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


def _other_inits(X: np.ndarray) -> None:
    # Apart from the first groups: only a cosine call, or one with NaN or Inf values to
    # describe, needs these two (about 1 s of a cold start's first predict).
    unit_rows(X, "X")
    scan_values(X)
    nearest.transform(_many(X), X[:2].copy())
    kmeans.fit(X, 3, init="random", n_init=1, max_iter=3, seed=0)
    kmeans.fit(X, 2, init=X[:2], n_init=1, max_iter=3)
    # A center far from every point starts empty: compiles the relocation path.
    kmeans.fit(X, 2, init=np.vstack([X[:1], np.full((1, X.shape[1]), 1e6, dtype=X.dtype)]), max_iter=2)


class Group(NamedTuple):
    name: str
    compile: Callable[[], object]
    # Groups whose kernels this one calls: a helper process takes it once they are compiled
    # (and loads them from the cache), rather than compile them again at the same time.
    after: tuple[str, ...] = ()


def _mini_batch(X: np.ndarray) -> None:
    minibatch.warmup(X.dtype)


def _scoring(X: np.ndarray) -> None:
    scoring.warmup(X.dtype)


def _groups() -> list[Group]:
    """The kernels in groups, in the order helper processes take them (``steps``): what a
    first float32 fit and predict need, then float64's, then narrow data's step, the
    transform, the other inits and the checks of bad values and cosine rows, then bounds,
    the mini-batch step and scoring.

    A Lloyd step and a predict both label tiles (``tile_nearest``): from a cold cache one
    helper compiles the labelling and another its scans from the other end, then the
    seeding; the fit and the predict follow once the labelling is in the cache. Kernels read
    data through read-only views only (``validation.read_only``), so one signature per dtype
    serves every caller."""
    rng = np.random.default_rng(0)
    # Wider than TILE_SUMS_FEATURES, so that the first groups leave the narrow step out.
    n_features = TILE_SUMS_FEATURES + 1
    samples = {dtype: rng.normal(size=(64, n_features)).astype(dtype) for dtype in FLOAT_DTYPES}
    groups: list[Group] = []
    for dtype, X in samples.items():
        tile = (f"tile {dtype.name}",)
        groups += [
            Group(tile[0], functools.partial(_tile, X)),
            Group(f"tile scans {dtype.name}", functools.partial(_tile_scans, X)),
            Group(f"seeding {dtype.name}", functools.partial(_seeding, X)),
            Group(f"fit {dtype.name}", functools.partial(_lloyd, X), tile),
            Group(f"predict {dtype.name}", functools.partial(_predict, X), tile),
        ]
    later = [
        ("narrow fit", _narrow), ("transform, other inits and checks", _other_inits),
        # The longest groups before the shorter ones, so that the helpers end close together.
        ("bounds", _bounded_steps), ("mini-batch", _mini_batch), ("scoring", _scoring),
    ]
    for kind, compile_kind in later:
        for dtype, X in samples.items():
            after = (f"tile {dtype.name}",)
            groups.append(Group(f"{kind} {dtype.name}", functools.partial(compile_kind, X), after))
    # Groups of bounds (k >= 20 and d >= 32) are formed by a product on the centers.
    groups.append(Group("bound groups", functools.partial(bounds.group_centers, rng.normal(size=(40, 32)), 2)))
    return groups


def groups_for(dtype: np.dtype, fit: bool) -> list[str]:
    """The groups that compile what a predict (or a fit) of ``dtype`` rows runs first."""
    name = np.dtype(dtype).name
    first = [f"tile {name}", f"tile scans {name}", f"predict {name}"]
    return first + [f"seeding {name}", f"fit {name}"] if fit else first


def group_names() -> list[str]:
    return [group.name for group in _groups()]


def steps(helpers: int = 0, stopping: threading.Event | None = None) -> Generator[tuple[int, int, str], None, None]:
    """Compile the kernels a group at a time; yields (groups done, groups in all, the group's
    name) after each, in the order of ``_groups``, or with helpers in the order they finish.

    helpers : compile in this many processes of their own instead, each taking the next
        group it may (``Group.after``) as it finishes one; each group is loaded here from
        numba's cache as its process reports it compiled (or compiled here if its process
        fails). Only worth it on a cache without the kernels: compilation holds one lock per
        process, so one process compiles on one core.
    stopping : once set, the steps end (helpers killed) instead of waiting for the next group.
    """
    configure_threads()
    groups = _groups()
    if helpers < 2:
        for done, group in enumerate(groups, start=1):
            group.compile()
            yield done, len(groups), group.name
        return
    compile_groups = {group.name: group.compile for group in groups}
    compiled = _Helpers(groups, helpers)
    try:
        for done in range(1, len(groups) + 1):
            name = compiled.next(stopping)
            if name is None:
                return
            compile_groups[name]()
            yield done, len(groups), name
    finally:
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
    """Processes compiling groups into numba's cache. Each is given the first group (in the
    order of ``groups``) whose ``after`` groups are compiled as it reports its last one, or
    waits until one is; ``next()`` returns the groups as they are reported, and those a
    process ended without, for the caller to compile."""

    def __init__(self, groups: list[Group], count: int) -> None:
        earlier: set[str] = set()
        for group in groups:  # a group after one never dealt would wait for ever
            if not earlier.issuperset(group.after):
                raise ValueError(f"group {group.name!r} is to follow {group.after}, not all earlier groups")
            earlier.add(group.name)
        self._waiting = list(groups)
        self._compiled: set[str] = set()
        self._working: dict[subprocess.Popen[str], str | None] = {}
        self._idle: list[subprocess.Popen[str]] = []
        self._lock = threading.Lock()
        self._finished: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._processes: list[subprocess.Popen[str]] = []
        for _ in range(min(count, len(groups))):
            process = subprocess.Popen(
                [sys.executable, "-m", "centroidal.engine.warmup", "--for", str(os.getpid())],
                stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
            )
            self._processes.append(process)
            self._working[process] = None
        for process in self._processes:
            threading.Thread(target=self._follow, args=(process,), name="centroidal-compiler",
                             daemon=True).start()

    def _deal(self, process: subprocess.Popen[str]) -> None:
        """Send the process the next group it may take; end its input once none is left, or
        leave it idle until a group it may take is compiled."""
        with self._lock:
            if process not in self._working:  # it has ended
                return
            ready = [group for group in self._waiting if self._compiled.issuperset(group.after)]
            if self._waiting and not ready:
                self._idle.append(process)
                return
            name = ready[0].name if ready else None
            if ready:
                self._waiting.remove(ready[0])
            self._working[process] = name
        assert process.stdin is not None
        try:
            if name is None:
                process.stdin.close()
            else:
                process.stdin.write(name + "\n")
                process.stdin.flush()
        except OSError:  # it has ended: _follow reports the group, for the caller to compile
            pass

    def _report(self, name: str) -> None:
        with self._lock:
            self._compiled.add(name)
            idle, self._idle = self._idle, []
        self._finished.put(name)
        for process in idle:
            self._deal(process)

    def _follow(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._deal(process)
        for line in process.stdout:
            with self._lock:
                working = self._working.get(process)
                if working is None or line.strip() != f"{_COMPILED}{working}":
                    continue
                self._working[process] = None
            self._report(working)
            self._deal(process)
        process.wait()
        with self._lock:
            working = self._working.pop(process, None)
            if process in self._idle:
                self._idle.remove(process)
            rest: list[str] = []
            if not self._working:  # no process is left to deal the rest to
                rest, self._waiting = [group.name for group in self._waiting], []
        for name in ([working] if working is not None else []) + rest:
            self._report(name)  # what no process reported is compiled by the caller

    def next(self, stopping: threading.Event | None) -> str | None:
        """The next group compiled (or left to the caller); None if stopped first."""
        while True:
            try:
                return self._finished.get(timeout=0.1)
            except queue.Empty:
                if stopping is not None and stopping.is_set():
                    return None

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()


_COMPILED = "compiled "


def compile_all() -> None:
    """Configure threads and compile every kernel."""
    for _ in steps():
        pass


def _compile_named(parent: int) -> None:
    """A helper process of ``steps``: compile the groups named on its input, a line each,
    saying so after each; it ends with its input, or with the process it works for."""

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    configure_threads()
    groups = {group.name: group.compile for group in _groups()}
    for line in sys.stdin:
        name = line.strip()
        groups[name]()
        print(f"{_COMPILED}{name}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--for":
        _compile_named(int(sys.argv[2]))
    else:
        compile_all()
        print("every kernel compiled")
