"""Compiled k-means++ kernels: distances to one center, candidate potentials, weighted picks.

Like ``_lloyd``, each kernel fills buffers its caller allocated and does no
checking (prior validation of data is assumed); chunks depend only on the problem
size, so results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import TILE_ROWS, chunk_bounds, kernel, shifted_centers, sq_distance


@kernel
def _sq_distances_to_center(first_row, stop_row, X, centers, j, out):
    """Squared distance of rows first_row..stop_row-1 to centers[j]: out (n,) float64."""
    for i in range(first_row, stop_row):
        out[i] = sq_distance(X, i, centers, j)


@kernel
def _candidate_potentials(
    first_chunk, stop_chunk, X, sample_weight, candidates, shift, closest_sq_dist, partial_pots
):
    """Potential each k-means++ candidate would leave: partial_pots (c, t) out, per chunk.

    The potential of candidate t is sum_i w_i * min(closest_sq_dist_i, |x_i - cand_t|^2);
    an empty sample_weight means unit weights. Distances come from one GEMM per tile,
    relative to ``shift`` (a point near the data) to keep float32 accurate.
    """
    n_samples, n_features = X.shape
    n_candidates = candidates.shape[0]
    n_chunks = partial_pots.shape[0]
    weighted = sample_weight.shape[0] > 0
    candidates_s = np.empty((n_candidates, n_features), dtype=X.dtype)
    half_sq_norms = np.empty(n_candidates, dtype=X.dtype)
    shifted_centers(candidates, shift, candidates_s, half_sq_norms)
    candidates_t = np.ascontiguousarray(candidates_s.T)
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(n_samples, chunk, n_chunks)
        pots = partial_pots[chunk]
        pots[:] = 0.0
        tile = np.empty((TILE_ROWS, n_features), dtype=X.dtype)
        dots = np.empty((TILE_ROWS, n_candidates), dtype=X.dtype)
        sq_norms = np.empty(TILE_ROWS, dtype=np.float64)
        for tile_start in range(start, stop, TILE_ROWS):
            rows = min(TILE_ROWS, stop - tile_start)
            for r in range(rows):
                norm = 0.0
                for f in range(n_features):
                    value = X[tile_start + r, f] - shift[f]
                    tile[r, f] = value
                    norm += value * value
                sq_norms[r] = norm
            if rows == TILE_ROWS:
                np.dot(tile, candidates_t, dots)
            else:
                np.dot(tile[:rows], candidates_t, dots[:rows])
            for r in range(rows):
                i = tile_start + r
                w = sample_weight[i] if weighted else 1.0
                closest = closest_sq_dist[i]
                for t in range(n_candidates):
                    dist = max(sq_norms[r] - 2.0 * (dots[r, t] - half_sq_norms[t]), 0.0)
                    pots[t] += w * min(dist, closest)


@kernel
def _lower_closest(first_row, stop_row, X, centers, j, closest_sq_dist):
    """closest_sq_dist[i] = min(closest_sq_dist[i], |x_i - centers[j]|^2), in place, for rows
    first_row..stop_row-1."""
    for i in range(first_row, stop_row):
        dist = sq_distance(X, i, centers, j)
        if dist < closest_sq_dist[i]:
            closest_sq_dist[i] = dist


@kernel
def _chunk_mass(first_chunk, stop_chunk, closest_sq_dist, sample_weight, partial_mass):
    """Per chunk, the sum of w_i * closest_sq_dist_i (w_i = 1 for an empty sample_weight)."""
    n_samples = closest_sq_dist.shape[0]
    n_chunks = partial_mass.shape[0]
    weighted = sample_weight.shape[0] > 0
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(n_samples, chunk, n_chunks)
        mass = 0.0
        for i in range(start, stop):
            mass += (sample_weight[i] if weighted else 1.0) * closest_sq_dist[i]
        partial_mass[chunk] = mass


@njit(nogil=True, cache=True)
def _pick_rows(closest_sq_dist, sample_weight, partial_mass, targets, rows):
    """Rows where the running sum of w_i * closest_sq_dist_i first exceeds each target.

    Walks chunk totals, then one chunk: the same choice as a search in the full cumulative
    sum, without allocating it.
    """
    n_samples = closest_sq_dist.shape[0]
    n_chunks = partial_mass.shape[0]
    chunk_rows = (n_samples + n_chunks - 1) // n_chunks
    weighted = sample_weight.shape[0] > 0
    for t in range(targets.shape[0]):
        remaining = targets[t]
        chunk = 0
        while chunk < n_chunks - 1 and remaining >= partial_mass[chunk]:
            remaining -= partial_mass[chunk]
            chunk += 1
        row = min(chunk * chunk_rows, n_samples - 1)
        stop = min(row + chunk_rows, n_samples)
        while row < stop - 1:
            remaining -= (sample_weight[row] if weighted else 1.0) * closest_sq_dist[row]
            if remaining < 0:
                break
            row += 1
        rows[t] = row
