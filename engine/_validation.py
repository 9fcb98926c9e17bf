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
def largest_magnitude(X):
    """The largest |value| of X (inf if any is infinite), or NaN as soon as one is NaN: the
    check of a small array in one call, where numpy's two reductions cost more than the scan."""
    largest = 0.0
    for i in range(X.shape[0]):
        for f in range(X.shape[1]):
            magnitude = abs(np.float64(X[i, f]))
            if magnitude > largest:
                largest = magnitude
            elif magnitude != magnitude:
                return np.nan
    return largest
