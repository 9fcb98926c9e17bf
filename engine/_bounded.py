"""The compiled Lloyd step that keeps bounds on each row's distances (Hamerly's, or with
groups of centers Yinyang's): set in a step that searches every row, then used to skip the
rows whose center cannot have changed. The step without bounds is in ``_lloyd``."""

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
    put_row,
    sq_distance,
    step_setup,
    tile_buffers,
    tile_dots,
    zeroed,
)
from ._groups import mid_scan_groups, scan_groups
from ._nearest import gemm_sq_distance
from ._sums import add_to_cluster, move_to_cluster


@njit(nogil=True, cache=True)
def _resolve_pending(
    X, sample_weight, centers, centers_s, half_sq_norms, center_ids, group_order, group_start,
    rel_margin, exact, afresh, tile, dots, group_best, group_second, group_id, best_value, best_id,
    best_group, pending_rows, pending_sq, pending, labels, lower, sums, weights,
):
    """Assign the queued rows by one GEMM (or, for 5 to MID features, the direct scan of each
    group, mid_scan_groups), and set each one's lower bound per group of centers: from the
    group's nearest center, or its second-nearest in the row's own group.

    Each row is moved into its cluster's sums as bounded_step says (afresh: added).
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
        previous = labels[i]
        if previous != best:
            changed += 1
        labels[i] = best
        w = sample_weight[i] if weighted else 1.0
        move_to_cluster(X, i, -1 if afresh else previous, best, w, sums, weights)
        if exact:
            inertia += w * sq_distance(X, i, centers, best)
        else:
            inertia += w * gemm_sq_distance(pending_sq[r], best_value[r])
    return changed, inertia


@njit(nogil=True, cache=True)
def _bounded_rows(
    X, sample_weight, centers, centers_s, half_sq_norms, center_ids, shift, half_gaps,
    group_order, group_start, group_move, rel_margin, use_bounds, exact, afresh, start, stop,
    tile, dots, best_value, best_id, labels, lower, sums, weights,
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
                if afresh:  # else its label, and so its sums, stay as they are
                    add_to_cluster(X, i, current, w, sums, weights)
                inertia += w * dist
        if not settled:
            pending_sq[pending] = put_row(X, i, shift, tile, pending)
            pending_rows[pending] = i
            pending += 1
        if pending == TILE_ROWS or (pending and i == stop - 1):
            tile_changed, tile_inertia = _resolve_pending(
                X, sample_weight, centers, centers_s, half_sq_norms, center_ids, group_order,
                group_start, rel_margin, exact, afresh, tile, dots, group_best, group_second,
                group_id, best_value, best_id, best_group, pending_rows, pending_sq, pending,
                labels, lower, sums, weights,
            )
            changed += tile_changed
            inertia += tile_inertia
            computed += pending
            pending = 0
    return inertia, changed, computed


@kernel
def bounded_step(
    first_chunk, stop_chunk, X, sample_weight, centers, shift, half_gaps, group_order,
    group_start, group_move, rel_margin, use_bounds, exact_inertia, afresh, labels, lower,
    partial_sums, partial_weights, partial_inertia, partial_changed, partial_computed,
):
    """_lloyd.plain_step, keeping bounds: with use_bounds, the search is skipped for rows
    whose bounds prove their center unchanged; without, every row is searched to set them.
    A kernel apart from plain_step, so that a first fit that keeps no bounds does not wait
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
    their bounds. partial_computed counts the rows searched; the rest, afresh included, as
    in plain_step: without afresh a settled row's sums stay as they are.
    """
    n_clusters = centers.shape[0]
    n_chunks = partial_inertia.shape[0]
    centers_s, half_sq_norms, center_ids = step_setup(X, centers, shift)
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(X.shape[0], chunk, n_chunks)
        sums, weights = partial_sums[chunk], partial_weights[chunk]
        if afresh:
            zeroed(sums, weights)
        tile, dots, best_value, best_id, _ = tile_buffers(X, n_clusters, exact_inertia)
        inertia, changed, computed = _bounded_rows(
            X, sample_weight, centers, centers_s, half_sq_norms, center_ids, shift, half_gaps,
            group_order, group_start, group_move, rel_margin, use_bounds, exact_inertia, afresh,
            start, stop, tile, dots, best_value, best_id, labels, lower, sums, weights,
        )
        partial_inertia[chunk] = inertia
        partial_changed[chunk] = changed
        partial_computed[chunk] = computed
