"""Compiling every kernel the server runs into numba's cache: at a server's start (in the
background, or before SERVING), and when the container image is built
(``python -m centroidal.engine.warmup``). One list, so neither misses a kernel.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from . import kmeans, minibatch, scoring
from .cosine import unit_rows
from .threads import configure_threads, threading_layer
from .lloyd import group_centers
from .validation import FLOAT_DTYPES, check_finite, scan_values


def steps() -> Generator[str, None, None]:
    """Compile a group of kernels at a time, yielding after each, named.

    The kernels a first request most likely needs come first: float32 predict and fit,
    then float64, then the transform and the other inits, then mini-batch and scoring.
    Kernels read data through read-only views only (``validation.read_only``), so one
    signature per dtype serves every caller.
    """
    configure_threads()
    rng = np.random.default_rng(0)
    samples = {dtype: rng.normal(size=(64, 3)).astype(dtype) for dtype in FLOAT_DTYPES}
    # Enough rows to take the parallel path as well as the one on the caller's thread.
    copies = kmeans.ON_CALLER_WORK // (64 * 2 * 3) + 1
    for dtype, X in samples.items():
        centers = X[:2].copy()
        for points in (X, np.repeat(X, copies, axis=0)):
            kmeans.predict(points, centers, return_distance=True)
            kmeans.predict(points, centers)
        check_finite(X, "X")
        unit_rows(X, "X")
        scan_values(X)  # what describes a request's NaN or Inf values
        yield f"predict {dtype.name}"
        kmeans.fit(X, 3, n_init=1, max_iter=3, seed=0)
        yield f"fit {dtype.name}"
    for dtype, X in samples.items():
        kmeans.transform(np.repeat(X, copies, axis=0), X[:2].copy())
        kmeans.fit(X, 3, init="random", n_init=1, max_iter=3, seed=0)
        kmeans.fit(X, 2, init=X[:2], n_init=1, max_iter=3)
        # A center far from every point starts empty: compiles the relocation path.
        kmeans.fit(X, 2, init=np.vstack([X[:1], np.full((1, 3), 1e6, dtype=dtype)]), max_iter=2)
        yield f"transform and other inits {dtype.name}"
    # Groups of bounds (k >= 20 and d >= 32) are formed by a product on the centers.
    group_centers(rng.normal(size=(40, 32)), 2)
    yield "bounds"
    minibatch.warmup()
    yield "mini-batch"
    scoring.warmup()
    yield "scoring"


def compile_all() -> str:
    """Configure threads and compile every kernel; returns numba's threading layer."""
    for _ in steps():
        pass
    return threading_layer()


if __name__ == "__main__":
    print(f"every kernel compiled; threading layer {compile_all()}")
