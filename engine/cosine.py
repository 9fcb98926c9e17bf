"""Cosine (spherical) k-means: rows and centers on the unit sphere.

For unit vectors x and c, |x - c|^2 = 2 * (1 - x.c): the nearest center in Euclidean
distance is the one with the largest dot product, so the Euclidean kernels assign
unit rows to unit centers exactly as cosine similarity would. What changes is
- every row is scaled to unit length first; a row of zero length has no direction and
  is refused, naming the row;
- a center is the mean of its rows scaled back to unit length (spherical k-means);
- inertia and distances are cosine distances, 1 - cos(x, c): half the squared
  Euclidean distance between the unit vectors.
"""

from __future__ import annotations

import math

import numpy as np

from . import chunks
from ._common import chunk_bounds, kernel, n_chunks_for
from .validation import InvalidInputError, read_only

METRICS = ("euclidean", "cosine")
# For unit vectors, a cosine distance is this times the squared Euclidean distance.
COSINE_PER_SQ_EUCLIDEAN = 0.5


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InvalidInputError("metric", f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def unit_rows(X: np.ndarray, field: str, *, in_place: bool = False) -> np.ndarray:
    """X with every row scaled to unit Euclidean length, in X's dtype: a copy, or X itself
    when ``in_place`` and X is writable.

    X : ndarray of shape (n_samples, n_features), float32 or float64, C-contiguous, finite
    Raises InvalidInputError(field) naming the first row of zero length.
    """
    out = X if in_place and X.flags.writeable else np.empty_like(X, order="C")
    n_chunks = n_chunks_for(X.shape[0])
    first_zero = np.empty(n_chunks, dtype=np.int64)
    chunks.run(_unit_rows, n_chunks, read_only(X), out, first_zero)
    zero = first_zero[first_zero >= 0]
    if zero.size:
        row = int(zero.min())
        raise InvalidInputError(
            field,
            f"{field} row {row} has zero length: the cosine metric needs every row to have a "
            "direction; drop such rows or use metric='euclidean'",
        )
    return out


def unit_centers(centers: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Centers scaled to unit length, in their dtype. A center of zero length (its rows
    cancel out) keeps its previous direction when one is given."""
    centers64 = centers.astype(np.float64)
    norms = np.sqrt((centers64**2).sum(axis=1))
    zero = norms == 0
    if zero.any():
        if previous is None:
            raise InvalidInputError("init", f"init center {int(np.flatnonzero(zero)[0])} has zero length")
        centers64[zero] = previous[zero]
        norms[zero] = np.sqrt((centers64[zero] ** 2).sum(axis=1))
    return (centers64 / norms[:, None]).astype(centers.dtype)


@kernel
def _unit_rows(first_chunk, stop_chunk, X, out, first_zero):
    """out = X with unit rows; first_zero (chunks,) int64 out: the first zero row of each
    chunk, or -1."""
    n_samples, n_features = X.shape
    n_chunks = first_zero.shape[0]
    for chunk in range(first_chunk, stop_chunk):
        first_zero[chunk] = -1
        start, stop = chunk_bounds(n_samples, chunk, n_chunks)
        for i in range(start, stop):
            sq_norm = 0.0
            for f in range(n_features):
                value = np.float64(X[i, f])
                sq_norm += value * value
            if sq_norm == 0.0 or sq_norm == np.inf:
                # Too small (or large) to square: measure the row relative to its largest value.
                largest = 0.0
                for f in range(n_features):
                    largest = max(largest, abs(np.float64(X[i, f])))
                if largest == 0.0:
                    if first_zero[chunk] < 0:
                        first_zero[chunk] = i
                    out[i, :] = 0
                    continue
                sq_norm = 0.0
                for f in range(n_features):
                    value = np.float64(X[i, f]) / largest
                    sq_norm += value * value
                scale = 1.0 / math.sqrt(sq_norm)
                for f in range(n_features):
                    out[i, f] = np.float64(X[i, f]) / largest * scale
                continue
            scale = 1.0 / math.sqrt(sq_norm)
            for f in range(n_features):
                out[i, f] = X[i, f] * scale
