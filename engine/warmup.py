"""Compiling every kernel the server runs into numba's cache: at a server's start (in the
background, or before SERVING), and when the container image is built
(``python -m centroidal.engine.warmup``). One list, so neither misses a kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator

import numpy as np

from . import kmeans, minibatch, scoring
from .cosine import unit_rows
from .threads import configure_threads, threading_layer
from .lloyd import group_centers
from .validation import FLOAT_DTYPES, check_finite, scan_values


def _predict(X: np.ndarray, copies: int) -> None:
    centers = X[:2].copy()
    for points in (X, np.repeat(X, copies, axis=0)):
        kmeans.predict(points, centers, return_distance=True)
        kmeans.predict(points, centers)
    check_finite(X, "X")
    unit_rows(X, "X")
    scan_values(X)  # what describes a request's NaN or Inf values


def _fit(X: np.ndarray) -> None:
    kmeans.fit(X, 3, n_init=1, max_iter=3, seed=0)


def _other_inits(X: np.ndarray, copies: int) -> None:
    kmeans.transform(np.repeat(X, copies, axis=0), X[:2].copy())
    kmeans.fit(X, 3, init="random", n_init=1, max_iter=3, seed=0)
    kmeans.fit(X, 2, init=X[:2], n_init=1, max_iter=3)
    # A center far from every point starts empty: compiles the relocation path.
    kmeans.fit(X, 2, init=np.vstack([X[:1], np.full((1, 3), 1e6, dtype=X.dtype)]), max_iter=2)


def _groups() -> list[tuple[str, Callable[[], object]]]:
    """The kernels in groups, those a first request most likely needs first: float32 predict
    and fit, then float64, then the transform and the other inits, then the rest. Kernels
    read data through read-only views only (``validation.read_only``), so one signature per
    dtype serves every caller."""
    rng = np.random.default_rng(0)
    samples = {dtype: rng.normal(size=(64, 3)).astype(dtype) for dtype in FLOAT_DTYPES}
    # Enough rows to take the parallel path as well as the one on the caller's thread.
    copies = kmeans.ON_CALLER_WORK // (64 * 2 * 3) + 1
    groups: list[tuple[str, Callable[[], object]]] = []
    for dtype, X in samples.items():
        groups.append((f"predict {dtype.name}", functools.partial(_predict, X, copies)))
        groups.append((f"fit {dtype.name}", functools.partial(_fit, X)))
    for dtype, X in samples.items():
        groups.append((f"transform and other inits {dtype.name}", functools.partial(_other_inits, X, copies)))
    # Groups of bounds (k >= 20 and d >= 32) are formed by a product on the centers.
    groups.append(("bounds", functools.partial(group_centers, rng.normal(size=(40, 32)), 2)))
    groups.append(("mini-batch", minibatch.warmup))
    groups.append(("scoring", scoring.warmup))
    return groups


def steps() -> Generator[tuple[int, int, str], None, None]:
    """Compile the kernels a group at a time; yields (groups done, groups in all, the group's
    name) after each."""
    configure_threads()
    groups = _groups()
    for done, (name, compile_group) in enumerate(groups, start=1):
        compile_group()
        yield done, len(groups), name


def compile_all() -> str:
    """Configure threads and compile every kernel; returns numba's threading layer."""
    for _ in steps():
        pass
    return threading_layer()


if __name__ == "__main__":
    print(f"every kernel compiled; threading layer {compile_all()}")
