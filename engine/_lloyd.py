"""Compiled k-means kernels: a Lloyd step without bounds (plain, or narrow for few
features), the nearest-center assignment, and the distances and column sums the driver
needs. The step that keeps bounds is in ``_bounded``.

Every kernel here fills buffers its caller allocated and does no checking: the public
functions in ``kmeans.py`` and ``lloyd.py`` validate and prepare the arrays. A kernel does
chunks first..stop-1 of its problem, and ``chunks.run`` spreads them over threads. Partial
results are per chunk (``_common.n_chunks_for``), reduced by the caller in chunk order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._common import (
    TILE_ROWS,
    assign_setup,
    chunk_bounds,
    kernel,
    new_tile,
    sq_distance,
    step_setup,
    tile_buffers,
    zeroed,
)
from ._nearest import tile_nearest
from ._sums import accumulate_tile, move_narrow_rows, move_tile, narrow_tile_sums, tile_inertia, value_sum

# How lloyd.Workspace.step runs a step: plain_step (or narrow_step) keeping no bounds, or
# _bounded.bounded_step setting them, or using them.
MODE_PLAIN = 0
MODE_SET_BOUNDS = 1
MODE_USE_BOUNDS = 2


@kernel
def plain_step(
    first_chunk, stop_chunk, X, sample_weight, centers, shift, exact_inertia, afresh, labels,
    partial_sums, partial_weights, partial_inertia, partial_changed, partial_computed,
):
    """Assign every row to its nearest center, by contiguous tiles, and accumulate per-chunk
    sums: a Lloyd step without bounds (fastest while many labels still change; narrow_step
    does it for narrow unit-weight data, bounded_step with bounds).

    X (n, d), centers (k, d) and shift (d,) in one float dtype; sample_weight (n,) float64,
    or empty for unit weights; labels (n,) int32 are written.
    Out per chunk: partial_sums (c, k, d), partial_weights (c, k), partial_inertia (c,)
    float64, partial_changed and partial_computed (rows searched: all of them) (c,) int64.
    Inertia is the float64 sum of w * |x - c|^2: exact with exact_inertia, else with each
    row's term from the values that chose its center, good to the dtype's rounding (a fit's
    iterations report that; its final assignment is exact).

    With afresh the sums are taken anew. Without, partial_sums and partial_weights must hold
    the sums by the labels as they are, from a step on this X and weights, and only the rows
    whose label changes are moved (_sums.move_to_cluster): after the first steps a few
    percent of them (lloyd.Workspace.step chooses).
    """
    n_clusters = centers.shape[0]
    n_chunks = partial_inertia.shape[0]
    centers_s, half_sq_norms, center_ids = step_setup(X, centers, shift)
    tile, dots, best_value, best_id, tile_sq = tile_buffers(X, n_clusters, exact_inertia)
    previous = np.empty(TILE_ROWS, dtype=np.int32)
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(X.shape[0], chunk, n_chunks)
        sums, weights = partial_sums[chunk], partial_weights[chunk]
        if afresh:
            zeroed(sums, weights)
        inertia = 0.0
        changed = 0
        for tile_start in range(start, stop, TILE_ROWS):
            rows = min(TILE_ROWS, stop - tile_start)
            if not afresh:
                _copy_labels(labels[tile_start:tile_start + rows], previous)
            changed += tile_nearest(
                X, tile_start, rows, shift, centers_s, half_sq_norms, center_ids, tile, dots,
                best_value, best_id, labels, tile_sq,
            )
            if afresh:
                inertia += accumulate_tile(
                    X, sample_weight, tile_start, rows, labels, centers, sums, weights, tile_sq,
                    best_value,
                )
            else:
                inertia += move_tile(
                    X, sample_weight, tile_start, rows, previous, labels, centers, sums, weights,
                    tile_sq, best_value,
                )
        partial_inertia[chunk] = inertia
        partial_changed[chunk] = changed
        partial_computed[chunk] = stop - start


@njit(inline="always", nogil=True, cache=True)
def _copy_labels(labels, previous):
    """previous[:n] = labels (n,) int32, in previous's dtype (the narrow step's ids are
    floats). From a slice that starts at 0, so that the copy vectorises: indexed from a
    start read at run time it took 0.65 ms for 1e6 rows."""
    for r in range(labels.shape[0]):
        previous[r] = labels[r]


@kernel
def narrow_step(
    first_chunk, stop_chunk, X, centers, shift, exact_inertia, afresh, labels, totals, sq_totals,
    partial_sums, partial_weights, partial_inertia, partial_changed, partial_computed,
):
    """plain_step for unit-weight rows of at most TILE_SUMS_FEATURES features, the same
    arguments but the weights: each tile of X - shift is summed by cluster, vectorised,
    instead of adding row by row. The sums then depend on the shift (lloyd.Workspace.step
    passes one that stays put). A kernel of its own, so that a server's first fit of wider
    data does not wait for its compilation.

    totals (c, k, 4) float64 hold each chunk's sums of X - shift by cluster, then its counts,
    for the labels as they are: with afresh they are summed anew; without, they must be a
    narrow step's with this X and shift, and only the rows whose label changes are moved
    (move_narrow_rows), which is cheaper once few change (lloyd.Workspace.step chooses).

    sq_totals (c,) float64, when not empty, hold each chunk's sum of |x - shift|^2 over its
    rows, NaN until a step without exact_inertia sets it: after that, such a step's inertia
    is that sum plus twice the sum of the scan's values, without each row's norm (the
    norms and the inertia of 1e6x3 took 0.5 ms of a 5.9 ms step on one thread).
    """
    n_features = X.shape[1]
    n_clusters = centers.shape[0]
    n_chunks = partial_inertia.shape[0]
    centers_s, half_sq_norms, center_ids = step_setup(X, centers, shift)
    tile, dots, best_value, best_id, norms = tile_buffers(X, n_clusters, exact_inertia)
    previous_id = np.empty(TILE_ROWS, dtype=X.dtype)
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(X.shape[0], chunk, n_chunks)
        changed = 0
        inertia = 0.0
        known_sq = sq_totals.shape[0] > 0 and not exact_inertia and not math.isnan(sq_totals[chunk])
        tile_sq = norms[:0] if known_sq else norms  # empty: no norms taken
        chunk_totals = totals[chunk]
        if afresh:
            chunk_totals[:, :] = 0.0
        sq_sum = 0.0
        for tile_start in range(start, stop, TILE_ROWS):
            rows = min(TILE_ROWS, stop - tile_start)
            if not afresh:
                _copy_labels(labels[tile_start:tile_start + rows], previous_id)
            tile_changed = tile_nearest(
                X, tile_start, rows, shift, centers_s, half_sq_norms, center_ids, tile, dots,
                best_value, best_id, labels, tile_sq,
            )
            if afresh:
                narrow_tile_sums(tile, rows, best_id, center_ids, chunk_totals)
            elif tile_changed:
                move_narrow_rows(tile, rows, best_id, previous_id, chunk_totals)
            changed += tile_changed
            if known_sq:
                inertia += 2.0 * value_sum(best_value, rows)
            else:
                inertia += tile_inertia(X, tile_start, rows, labels, centers, tile_sq, best_value)
                if tile_sq.shape[0] > 0:
                    sq_sum += value_sum(tile_sq, rows)
        if known_sq:
            inertia += sq_totals[chunk]
        elif sq_totals.shape[0] > 0 and not exact_inertia:
            sq_totals[chunk] = sq_sum
        sums = partial_sums[chunk]
        weights = partial_weights[chunk]
        for j in range(n_clusters):  # the tile held X - shift
            weights[j] = chunk_totals[j, 3]
            for f in range(n_features):
                sums[j, f] = chunk_totals[j, f] + chunk_totals[j, 3] * shift[f]
        partial_inertia[chunk] = inertia
        partial_changed[chunk] = changed
        partial_computed[chunk] = stop - start


@kernel
def assign(first_tile, stop_tile, X, centers, shift, labels, min_sq_dist):
    """Nearest center of the rows of tiles first_tile..stop_tile-1 (``_common.n_tiles_for``):
    labels (n,) int32 and exact min_sq_dist (n,) float64 out.

    An empty min_sq_dist asks for the labels alone.
    """
    n_samples = X.shape[0]
    n_clusters = centers.shape[0]
    centers_s, half_sq_norms = assign_setup(X, centers, shift)
    center_ids = np.arange(n_clusters).astype(X.dtype)
    tile = new_tile(X)
    dots = np.empty((n_clusters, TILE_ROWS), dtype=X.dtype)
    best_value = np.empty(TILE_ROWS, dtype=X.dtype)
    best_id = np.empty(TILE_ROWS, dtype=X.dtype)
    no_norms = np.empty(0, dtype=X.dtype)
    for t in range(first_tile, stop_tile):
        start = t * TILE_ROWS
        rows = min(TILE_ROWS, n_samples - start)
        tile_nearest(
            X, start, rows, shift, centers_s, half_sq_norms, center_ids, tile, dots,
            best_value, best_id, labels, no_norms,
        )
        if min_sq_dist.shape[0] > 0:
            for i in range(start, start + rows):
                min_sq_dist[i] = sq_distance(X, i, centers, labels[i])


@kernel
def all_distances(first_row, stop_row, X, centers, out):
    """Euclidean distance from rows first_row..stop_row-1 to every center: out (n, k) in X's
    dtype."""
    for i in range(first_row, stop_row):
        for j in range(centers.shape[0]):
            out[i, j] = math.sqrt(sq_distance(X, i, centers, j))


@kernel
def sq_distances_to_assigned(first_row, stop_row, X, centers, labels, out):
    """Squared distance of rows first_row..stop_row-1 to the center each is labelled with:
    out (n,) float64."""
    for i in range(first_row, stop_row):
        out[i] = sq_distance(X, i, centers, labels[i])


@kernel
def column_sums(first_chunk, stop_chunk, X, partial_sums, partial_sq_dev, mean):
    """Per-chunk column sums of X, then (when mean is given) of squared deviations.

    partial_sums and partial_sq_dev (c, d) float64 out; mean (d,) float64 or empty.
    """
    n_samples, n_features = X.shape
    n_chunks = partial_sums.shape[0]
    with_mean = mean.shape[0] == n_features
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(n_samples, chunk, n_chunks)
        sums = partial_sums[chunk]
        sq_dev = partial_sq_dev[chunk]
        sums[:] = 0.0
        sq_dev[:] = 0.0
        for i in range(start, stop):
            for f in range(n_features):
                value = X[i, f]
                sums[f] += value
                if with_mean:
                    dev = value - mean[f]
                    sq_dev[f] += dev * dev
