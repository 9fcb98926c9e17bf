"""Compiled k-means kernels: a Lloyd step with its bounds, the nearest-center assignment,
and the distances and column sums the driver needs.

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
    chunk_bounds,
    is_narrow,
    is_transposed,
    kernel,
    new_tile,
    put_row,
    shifted_centers,
    sq_distance,
    tile_dots,
    tile_width,
)
from ._groups import mid_scan_groups, scan_groups
from ._nearest import gemm_sq_distance, tile_nearest
from ._sums import (
    accumulate,
    accumulate_tile,
    add_to_cluster,
    narrow_tile_sums,
    tile_inertia,
)

# How lloyd.Workspace.step runs a step: plain_step (or narrow_step) keeping no bounds, or
# bounded_step setting them, or using them.
MODE_PLAIN = 0
MODE_SET_BOUNDS = 1
MODE_USE_BOUNDS = 2


@njit(nogil=True, cache=True)
def _resolve_pending(
    X, sample_weight, centers, centers_s, half_sq_norms, center_ids, group_order, group_start,
    rel_margin, exact, tile, dots, group_best, group_second, group_id, best_value, best_id,
    best_group, pending_rows, pending_sq, pending, labels, lower, sums, weights,
):
    """Assign the queued rows by one GEMM (or, for 5 to MID features, the direct scan of each
    group, mid_scan_groups), and set each one's lower bound per group of centers: from the
    group's nearest center, or its second-nearest in the row's own group.

    Returns (number of labels changed, weighted inertia of those rows: exact, or with
    ``exact`` False from the scan's values).
    """
    weighted = sample_weight.shape[0] > 0
    n_groups = group_start.shape[0] - 1
    if is_transposed(X) and not is_narrow(X):
        mid_scan_groups(
            centers_s, half_sq_norms, tile, pending, X.shape[1], center_ids, group_order, group_start,
            group_best, group_second, group_id, best_value, best_id, best_group,
        )
    else:
        tile_dots(X, centers_s, tile, dots)
        scan_groups(
            dots, pending, half_sq_norms, center_ids, group_order, group_start, group_best,
            group_second, group_id, best_value, best_id, best_group,
        )
    max_half = 0.0
    for j in range(half_sq_norms.shape[0]):
        max_half = max(max_half, np.float64(half_sq_norms[j]))
    changed = 0
    inertia = 0.0
    for r in range(pending):
        i = pending_rows[r]
        best = np.int32(best_id[r])
        # |x - c|^2 = |x - s|^2 + 2 * value; widen by the rounding error of that sum.
        margin = rel_margin * (pending_sq[r] + 2.0 * max_half) + 1e-300
        for g in range(n_groups):
            value = group_second[g, r] if g == best_group[r] else group_best[g, r]
            sq = pending_sq[r] + 2.0 * np.float64(value)
            lower[i, g] = math.sqrt(sq - margin) if sq > margin else 0.0
        if labels[i] != best:
            changed += 1
        labels[i] = best
        w = sample_weight[i] if weighted else 1.0
        if exact:
            inertia += w * accumulate(X, i, best, w, centers, sums, weights)
        else:
            add_to_cluster(X, i, best, w, sums, weights)
            inertia += w * gemm_sq_distance(pending_sq[r], best_value[r])
    return changed, inertia


@njit(nogil=True, cache=True)
def _bounded_rows(
    X, sample_weight, centers, centers_s, half_sq_norms, center_ids, shift, half_gaps,
    group_order, group_start, group_move, rel_margin, use_bounds, exact, start, stop, tile,
    dots, best_value, best_id, labels, lower, sums, weights,
):
    """Rows start..stop of one chunk in a bounded step: with use_bounds, a row whose bounds
    prove its label keeps it; every other row is queued for a full search that also sets
    its bounds. Returns (weighted inertia, labels changed, rows searched)."""
    weighted = sample_weight.shape[0] > 0
    n_groups = group_start.shape[0] - 1
    group_best = np.empty((n_groups, TILE_ROWS), dtype=X.dtype)
    group_second = np.empty((n_groups, TILE_ROWS), dtype=X.dtype)
    group_id = np.empty(TILE_ROWS, dtype=X.dtype)
    best_group = np.empty(TILE_ROWS, dtype=np.int64)
    pending_rows = np.empty(TILE_ROWS, dtype=np.int64)
    pending_sq = np.empty(TILE_ROWS, dtype=np.float64)
    pending = 0
    inertia = 0.0
    changed = 0
    computed = 0
    for i in range(start, stop):
        current = labels[i]
        settled = False
        if use_bounds and current >= 0:
            bound = np.inf
            for g in range(n_groups):
                bound = min(bound, np.float64(lower[i, g]) - group_move[g])
            dist = sq_distance(X, i, centers, current)
            if math.sqrt(dist) <= max(bound, half_gaps[current]):
                settled = True
                for g in range(n_groups):
                    lower[i, g] = max(np.float64(lower[i, g]) - group_move[g], 0.0)
                w = sample_weight[i] if weighted else 1.0
                add_to_cluster(X, i, current, w, sums, weights)
                inertia += w * dist
        if not settled:
            pending_sq[pending] = put_row(X, i, shift, tile, pending)
            pending_rows[pending] = i
            pending += 1
        if pending == TILE_ROWS or (pending and i == stop - 1):
            tile_changed, tile_inertia = _resolve_pending(
                X, sample_weight, centers, centers_s, half_sq_norms, center_ids, group_order,
                group_start, rel_margin, exact, tile, dots, group_best, group_second,
                group_id, best_value, best_id, best_group, pending_rows, pending_sq, pending,
                labels, lower, sums, weights,
            )
            changed += tile_changed
            inertia += tile_inertia
            computed += pending
            pending = 0
    return inertia, changed, computed


@njit(inline="always", nogil=True, cache=True)
def _step_setup(X, centers, shift):
    """What every chunk of a step shares: the shifted centers, half their squared norms,
    and the center ids 0..k-1 in X's dtype."""
    centers_s, half_sq_norms = _assign_setup(X, centers, shift)
    return centers_s, half_sq_norms, np.arange(centers.shape[0]).astype(X.dtype)


@njit(inline="always", nogil=True, cache=True)
def _zeroed(sums, weights):
    """A chunk's sums and weights, set to zero for a step to add to."""
    sums[:, :] = 0.0
    weights[:] = 0.0
    return sums, weights


@njit(inline="always", nogil=True, cache=True)
def _tile_buffers(X, n_clusters, exact_inertia):
    """A chunk's scratch for labelling its tiles: the tile, its dots (k, T), each column's
    best value and center id, and (unless the inertia is exact) each row's |x - s|^2."""
    return (
        new_tile(X), np.empty((n_clusters, TILE_ROWS), dtype=X.dtype),
        np.empty(TILE_ROWS, dtype=X.dtype), np.empty(TILE_ROWS, dtype=X.dtype),
        np.empty(0 if exact_inertia else TILE_ROWS, dtype=X.dtype),
    )


@kernel
def plain_step(
    first_chunk, stop_chunk, X, sample_weight, centers, shift, exact_inertia, labels,
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
    """
    n_clusters = centers.shape[0]
    n_chunks = partial_inertia.shape[0]
    centers_s, half_sq_norms, center_ids = _step_setup(X, centers, shift)
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(X.shape[0], chunk, n_chunks)
        sums, weights = _zeroed(partial_sums[chunk], partial_weights[chunk])
        inertia = 0.0
        changed = 0
        tile, dots, best_value, best_id, tile_sq = _tile_buffers(X, n_clusters, exact_inertia)
        for tile_start in range(start, stop, TILE_ROWS):
            rows = min(TILE_ROWS, stop - tile_start)
            changed += tile_nearest(
                X, tile_start, rows, shift, centers_s, half_sq_norms, center_ids, tile, dots,
                best_value, best_id, labels, tile_sq,
            )
            inertia += accumulate_tile(
                X, sample_weight, tile_start, rows, labels, centers, sums, weights, tile_sq,
                best_value,
            )
        partial_inertia[chunk] = inertia
        partial_changed[chunk] = changed
        partial_computed[chunk] = stop - start


@kernel
def bounded_step(
    first_chunk, stop_chunk, X, sample_weight, centers, shift, half_gaps, group_order,
    group_start, group_move, rel_margin, use_bounds, exact_inertia, labels, lower, partial_sums,
    partial_weights, partial_inertia, partial_changed, partial_computed,
):
    """plain_step, keeping bounds: with use_bounds, the search is skipped for rows whose
    bounds prove their center unchanged; without, every row is searched to set them. A
    kernel apart from plain_step, so that a first fit that keeps no bounds does not wait
    for its compilation.

    The centers are split into G groups: group g is
    group_order[group_start[g]:group_start[g + 1]] (int64, ascending within a group).
    labels (n,) int32 (-1: no bound yet) and lower (n, G), a lower bound on each row's
    distance to every center of each group but its own center, are read and updated
    (G = 1 is Hamerly's single bound; more groups are Yinyang's global filter).
    half_gaps (k,) float64 is half the distance from each center to its nearest other one;
    group_move (G,) float64 is how far any center of each group moved since the bounds
    were set. A row whose exact distance to its center is within
    max(min over g of lower[g] - group_move[g], half_gap) keeps its label unexamined; the rest
    are queued into tiles, each searched in full (see _resolve_pending), which also resets
    their bounds. partial_computed counts the rows searched; the rest as in plain_step.
    """
    n_clusters = centers.shape[0]
    n_chunks = partial_inertia.shape[0]
    centers_s, half_sq_norms, center_ids = _step_setup(X, centers, shift)
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(X.shape[0], chunk, n_chunks)
        sums, weights = _zeroed(partial_sums[chunk], partial_weights[chunk])
        tile, dots, best_value, best_id, _ = _tile_buffers(X, n_clusters, exact_inertia)
        inertia, changed, computed = _bounded_rows(
            X, sample_weight, centers, centers_s, half_sq_norms, center_ids, shift, half_gaps,
            group_order, group_start, group_move, rel_margin, use_bounds, exact_inertia, start,
            stop, tile, dots, best_value, best_id, labels, lower, sums, weights,
        )
        partial_inertia[chunk] = inertia
        partial_changed[chunk] = changed
        partial_computed[chunk] = computed


@kernel
def narrow_step(
    first_chunk, stop_chunk, X, centers, shift, exact_inertia, labels, partial_sums,
    partial_weights, partial_inertia, partial_changed, partial_computed,
):
    """plain_step for unit-weight rows of at most TILE_SUMS_FEATURES features, the same
    arguments but the weights: each tile of X - shift is summed by cluster, vectorised,
    instead of adding row by row. The sums then depend on the shift (lloyd.Workspace.step
    passes one that stays put). A kernel of its own, so that a server's first fit of wider
    data does not wait for its compilation.
    """
    n_features = X.shape[1]
    n_clusters = centers.shape[0]
    n_chunks = partial_inertia.shape[0]
    centers_s, half_sq_norms, center_ids = _step_setup(X, centers, shift)
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(X.shape[0], chunk, n_chunks)
        changed = 0
        inertia = 0.0
        tile, dots, best_value, best_id, tile_sq = _tile_buffers(X, n_clusters, exact_inertia)
        totals = np.zeros((n_clusters, 4), dtype=np.float64)
        for tile_start in range(start, stop, TILE_ROWS):
            rows = min(TILE_ROWS, stop - tile_start)
            changed += tile_nearest(
                X, tile_start, rows, shift, centers_s, half_sq_norms, center_ids, tile, dots,
                best_value, best_id, labels, tile_sq,
            )
            narrow_tile_sums(tile, rows, best_id, center_ids, totals)
            inertia += tile_inertia(X, tile_start, rows, labels, centers, tile_sq, best_value)
        sums = partial_sums[chunk]
        weights = partial_weights[chunk]
        for j in range(n_clusters):  # the tile held X - shift
            weights[j] = totals[j, 3]
            for f in range(n_features):
                sums[j, f] = totals[j, f] + totals[j, 3] * shift[f]
        partial_inertia[chunk] = inertia
        partial_changed[chunk] = changed
        partial_computed[chunk] = stop - start


@njit(nogil=True, cache=True)
def _assign_setup(X, centers, shift):
    """The shifted centers and half their squared norms, in X's dtype."""
    n_clusters, n_features = centers.shape
    centers_s = np.zeros((n_clusters, tile_width(n_features)), dtype=X.dtype)
    half_sq_norms = np.empty(n_clusters, dtype=X.dtype)
    shifted_centers(centers, shift, centers_s, half_sq_norms)
    return centers_s, half_sq_norms


@kernel
def assign(first_tile, stop_tile, X, centers, shift, labels, min_sq_dist):
    """Nearest center of the rows of tiles first_tile..stop_tile-1 (``_common.n_tiles_for``):
    labels (n,) int32 and exact min_sq_dist (n,) float64 out.

    An empty min_sq_dist asks for the labels alone.
    """
    n_samples = X.shape[0]
    n_clusters = centers.shape[0]
    centers_s, half_sq_norms = _assign_setup(X, centers, shift)
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
