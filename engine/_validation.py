"""Compiled scan of an array's values, for the checks in ``validation``."""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import chunk_bounds, kernel


@kernel
def _scan_values(first_chunk, stop_chunk, X, partial_bad, partial_first, partial_max_abs):
    """Per chunk: count of NaN/Inf entries, first row holding one, largest finite |value|.

    partial_bad (c,) int64, partial_first (c,) int64 (-1 for none), partial_max_abs (c,) float64 out.
    """
    n_samples, n_features = X.shape
    n_chunks = partial_bad.shape[0]
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(n_samples, chunk, n_chunks)
        bad = 0
        first = -1
        largest = 0.0
        for i in range(start, stop):
            for f in range(n_features):
                value = X[i, f]
                if np.isfinite(value):
                    magnitude = abs(value)
                    if magnitude > largest:
                        largest = magnitude
                else:
                    bad += 1
                    if first < 0:
                        first = i
        partial_bad[chunk] = bad
        partial_first[chunk] = first
        partial_max_abs[chunk] = largest


@njit(nogil=True, cache=True)
def count_unfit(values, limit):
    """How many values of the 1-D array ``values`` are NaN, or of magnitude ``limit`` (of
    their dtype) or more: the check of an array's values in one pass over its memory.

    Adding up a comparison leaves no iteration waiting on the one before, so the loop runs
    in vector registers; numpy's max and min, two passes, took 5.0 ms against 2.8 on
    1e6 x 16 float32 on the Xeon host, and 2.4 us against 0.4 on 8 x 16."""
    unfit = 0
    for i in range(values.shape[0]):
        unfit += not abs(values[i]) < limit  # a NaN compares False
    return unfit
