"""A mini-batch step's numbers: the batch's values checked, every row assigned to its nearest
center, and the centers moved (``MiniBatchState`` commits them).

A small step, or one on a thread that numba gives one thread, runs in one compiled call
(``whole_step``); a larger one deals its chunks out to the engine's threads
(``chunks.run``) and moves the centers in a second call. Both do the same arithmetic on the
same chunks, so the centers are the same to the bit whichever runs.

Why one call: a step in a server shares the interpreter with the event loop receiving the
next batches. Each compiled call lets go of the GIL and must take it back, and while the
loop holds it the step waits. Chunks dealt to two threads made about ten such hand-overs a
step: the values' two numpy reductions, a kernel call per run of chunks on each thread,
the helper's start and the wait for it, and the centers' update. In process, with another
thread holding the GIL 86% of the time, 159 steps of 8192x16 at k=64 took 79 ms in one
call on one thread, against 99 dealt to one thread and 177 to two (medians of 9, taking
turns). With the machine to itself the three took 68, 73 and 73 ms.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _common, _lloyd, _sums, chunks
from ._validation import count_unfit
from .seeding import shift_for
from .validation import check_finite, value_limit

# Steps of at most this many row-center-feature products run on one thread in one call
# even where numba gives the thread more: a second thread does not pay for waking it. On
# the Xeon host, a step of 1024x16 at k=64 (1.0 million) took 93 us on one thread and 96
# on two, one of 8192x3 at k=16 144 against 179, and one of 8192x16 at k=64 (8.4 million)
# 580 against 484.
WHOLE_STEP_WORK = 2_000_000


@njit(nogil=True, cache=True)
def whole_step(
    X, values, limit, sample_weight, centers, shift, labels, partial_sums, partial_weights, partial_inertia,
    partial_changed, partial_computed, counts, moved, new_centers, new_counts, touched,
):
    """A step in one call: ``count_unfit`` of X's values (``values``, X flattened) against
    ``limit``; then, if none is unfit, ``_lloyd.plain_step`` over all of X's chunks and
    ``_sums.moved_centers``. Returns (unfit values, the batch's inertia, whether the moved
    centers and counts are finite); with unfit values nothing else was done."""
    unfit = count_unfit(values, limit)
    if unfit:
        return unfit, math.nan, False
    _lloyd.plain_step(
        0, partial_sums.shape[0], X, sample_weight, centers, shift, False, True, labels,
        partial_sums, partial_weights, partial_inertia, partial_changed, partial_computed,
    )
    inertia, finite = _sums.moved_centers(
        partial_sums, partial_weights, partial_inertia, centers, counts, moved, new_centers, new_counts, touched,
    )
    return unfit, inertia, finite


def moved_centers(
    X: np.ndarray, sample_weight: np.ndarray, centers: np.ndarray, counts: np.ndarray,
    moved: np.ndarray, new_centers: np.ndarray, new_counts: np.ndarray, touched: np.ndarray,
    in_one_call: bool | None = None,
) -> tuple[float, bool]:
    """The step of the read-only batch X from ``centers`` holding ``counts`` (decayed), into
    the other arrays (as ``_sums.moved_centers``); returns the batch's inertia and whether
    the results are finite. Raises InvalidInputError("points") for NaN, Inf or values too
    large, before anything is computed.

    in_one_call: run ``whole_step`` (True) or deal the chunks out (False); by default, as
    the step's size and the calling thread's thread count say."""
    n_samples, n_features = X.shape
    n_clusters = centers.shape[0]
    n_chunks = _common.n_chunks_for(n_samples, n_clusters, n_features)
    if in_one_call is None:
        in_one_call = n_samples * n_clusters * n_features <= WHOLE_STEP_WORK or chunks.threads_for(n_chunks) == 1
    if in_one_call:
        buffers = _buffers(n_samples, n_clusters, n_features, n_chunks)
        unfit, inertia, finite = whole_step(
            X, X.reshape(-1), value_limit(X.dtype), sample_weight, centers, shift_for(centers), *buffers,
            counts, moved, new_centers, new_counts, touched,
        )
        if unfit:
            check_finite(X, "points")  # raises, saying what is wrong
            raise AssertionError("the compiled check found unfit values that check_finite did not")
        return float(inertia), bool(finite)
    check_finite(X, "points")
    inertia, finite = _sums.moved_centers(
        *assigned_sums(X, sample_weight, centers), centers, counts, moved, new_centers, new_counts, touched,
    )
    return inertia, finite


def assigned_sums(
    X: np.ndarray, sample_weight: np.ndarray, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row assigned to its nearest center: the per-chunk weighted sums (c, k, d) and
    weights (c, k) of the rows by center, and their weighted inertia (c,), by one pass of the
    Lloyd step's kernel on the engine's threads (the chunks are added in their order by
    ``_sums.moved_centers``, so the thread count changes nothing).

    The inertia is read off the values that chose each row's center, as a fit's iterations
    read theirs: good to the dtype's rounding, which an ack's figure and the estimator's
    early stopping do not notice. Computing each row's distance again took a quarter of a
    step: 8192x16 at k=64, 806 us against 600 on one thread, 545 against 428 on two
    (medians of 30, taking turns)."""
    n_samples, n_features = X.shape
    n_clusters = centers.shape[0]
    n_chunks = _common.n_chunks_for(n_samples, n_clusters, n_features)
    labels, sums, weights, inertia, changed, computed = _buffers(n_samples, n_clusters, n_features, n_chunks)
    chunks.run(_lloyd.plain_step, n_chunks, X, sample_weight, centers, shift_for(centers), False, True,
               labels, sums, weights, inertia, changed, computed)
    return sums, weights, inertia


def _buffers(
    n_samples: int, n_clusters: int, n_features: int, n_chunks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The Lloyd step kernel's outputs for one step: labels, and per chunk the sums, weights,
    inertia, and its counts of changed labels and of distances computed."""
    return (
        np.empty(n_samples, dtype=np.int32),
        np.empty((n_chunks, n_clusters, n_features), dtype=np.float64),
        np.empty((n_chunks, n_clusters), dtype=np.float64),
        np.empty(n_chunks, dtype=np.float64),
        np.empty(n_chunks, dtype=np.int64),
        np.empty(n_chunks, dtype=np.int64),
    )
