"""Compiled per-cluster sums of a Lloyd step: each row added to its cluster's float64 sums
and weight, or, for tiles of few features at unit weight, each tile summed by cluster in one
vectorised pass; the inertia of the rows summed; and a mini-batch's centers moved by its sums.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._blocks import VECTOR_BYTES, add_row
from ._common import sq_distance
from ._nearest import gemm_sq_distance

# Up to this many features, a plain step at unit weight sums each tile of X - shift by
# cluster (narrow_tile_sums) instead of adding row by row.
TILE_SUMS_FEATURES = 3


@njit(inline="always", nogil=True, cache=True)
def add_to_cluster(X, i, best, w, sums, weights):
    """Add row i, with weight w, to cluster best's running sums (_blocks.add_row: rows of 8
    and 16 values as vectors)."""
    add_row(X, i, w, sums, best)
    weights[best] += w


@njit(inline="always", nogil=True, cache=True)
def accumulate(X, i, best, w, centers, sums, weights):
    """Add row i to its cluster's sums; returns its exact squared distance to the center."""
    add_to_cluster(X, i, best, w, sums, weights)
    return sq_distance(X, i, centers, best)


@njit(nogil=True, cache=True)
def accumulate_tile(
    X, sample_weight, start, rows, labels, centers, sums, weights, tile_sq, best_value
):
    """Add rows start..start+rows to their clusters' sums; returns their weighted inertia.

    With an empty tile_sq each row's squared distance is exact; otherwise it is read off the
    tile's scan as |x - s|^2 + 2 * best_value (see gemm_sq_distance).
    A call rather than inlined into plain_step: compiled on its own, the loop runs about
    2.5x faster (2e5x64, k=256: 20 ms a step on one thread against 50 ms).
    """
    weighted = sample_weight.shape[0] > 0
    exact = tile_sq.shape[0] == 0
    inertia = 0.0
    for r in range(rows):
        i = start + r
        w = sample_weight[i] if weighted else 1.0
        if exact:
            inertia += w * accumulate(X, i, labels[i], w, centers, sums, weights)
        else:
            add_to_cluster(X, i, labels[i], w, sums, weights)
            inertia += w * gemm_sq_distance(tile_sq[r], best_value[r])
    return inertia


@njit(inline="always", nogil=True, cache=True)
def move_to_cluster(X, i, previous, best, w, sums, weights):
    """Row i, with weight w, labelled previous before best: moved from the one cluster's
    running sums to the other's, or added to best's when previous is -1 (none); nothing
    when they are the same.

    One call site of add_to_cluster serves both, in a loop, as _blocks.add_row keeps one
    call for every width (its docstring: the reference counts numba keeps around several).
    """
    if previous != best:
        for turn in range(2 if previous >= 0 else 1):
            add_to_cluster(X, i, best if turn == 0 else previous, w if turn == 0 else -w, sums, weights)


@njit(nogil=True, cache=True)
def move_tile(
    X, sample_weight, start, rows, previous, labels, centers, sums, weights, tile_sq, best_value
):
    """accumulate_tile for rows start..start+rows labelled previous (rows,) int32 before: each
    row whose label changed is moved from its previous cluster's sums to its new one's
    (move_to_cluster), the others left as they are; returns their weighted inertia. A
    function apart from accumulate_tile, whose every row is added: with the test for a
    change there, a plain step of 1e6x16 at k=64 took 38.4 ms on one thread against 35.8."""
    weighted = sample_weight.shape[0] > 0
    exact = tile_sq.shape[0] == 0
    inertia = 0.0
    for r in range(rows):
        i = start + r
        w = sample_weight[i] if weighted else 1.0
        best = labels[i]
        move_to_cluster(X, i, previous[r], best, w, sums, weights)
        if exact:
            inertia += w * sq_distance(X, i, centers, best)
        else:
            inertia += w * gemm_sq_distance(tile_sq[r], best_value[r])
    return inertia


# Reductions over a tile's rows that LLVM may split into lanes (reassociation): the order of
# the additions is then fixed by the compiled code, not by the data or the thread count.
_lanes = njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})


@njit(inline="always", nogil=True, cache=True)
def _add_if_member(best, cluster, x0, x1, x2, s0, s1, s2, count, one, zero):
    """One column's contribution to one cluster's running sums: itself if it is labelled with
    the cluster, else nothing (a multiply by 1 or 0, so that the loop vectorises)."""
    member = one if best == cluster else zero
    return s0 + member * x0, s1 + member * x1, s2 + member * x2, count + member


# Clusters a pass of narrow_tile_sums. Each holds four running sums, as many vector
# registers: four a pass fit AVX-512's 32, and with AVX2's 16 they spilled. Tiles of 1e6x3
# at k=16 on one thread of an AMD EPYC (AVX2), the scan and the sums side by side in one
# process: 6.8-7.1 ms four a pass, 5.9-6.1 two, 6.7 one.
CLUSTERS_A_PASS = 4 if VECTOR_BYTES == 64 else 2


@_lanes
def narrow_tile_sums(tile_t, rows, best_id, center_ids, totals):
    """Add the first rows columns of a narrow tile (rows of X - shift, a feature per tile row)
    of at most three features to their clusters' totals (k, 4) float64: the sums of the
    three tile rows, then the count (unit weights).

    Per cluster, a masked sum over the tile's columns in the tile's dtype (256 values at
    most, shifted near the data: float32 rounds them to about 1e-6 of their spread), then
    one float64 add; CLUSTERS_A_PASS clusters a pass share the loads. 1e6x3, k=16, one
    thread on the Xeon host: 1.1 ms four a pass, against 2.5 ms for adding each row to its
    cluster's float64 sums, and 1.8 ms a cluster a pass. The totals have a fixed width:
    with stores that depended on d after each pass, LLVM vectorised the pass itself 2.5
    times slower. The running sums must stay in the tile's dtype: promoted to float64, they
    took sixteen lanes' work in eight and a convert per load, and the step (1e6x3, k=16, on
    the Xeon host) took 4.9 ms on two threads against 4.1.
    """
    zero = center_ids[0]  # 0 and 1 in the tile's dtype (zero + 1 would be float64: the
    one = zero**0  # sums then ran in float64, eight lanes a vector and a convert per load)
    n_clusters = totals.shape[0]
    for j in range(0, n_clusters, CLUSTERS_A_PASS):
        # Past the last cluster a pass repeats it, and adds only its own totals once.
        last = min(j + CLUSTERS_A_PASS, n_clusters) - 1
        ca, cb = center_ids[j], center_ids[min(j + 1, last)]
        cc, cd = center_ids[min(j + 2, last)], center_ids[last]
        a0 = a1 = a2 = an = b0 = b1 = b2 = bn = c0 = c1 = c2 = cn = d0 = d1 = d2 = dn = zero
        for r in range(rows):
            x0, x1, x2, best = tile_t[0, r], tile_t[1, r], tile_t[2, r], best_id[r]
            a0, a1, a2, an = _add_if_member(best, ca, x0, x1, x2, a0, a1, a2, an, one, zero)
            b0, b1, b2, bn = _add_if_member(best, cb, x0, x1, x2, b0, b1, b2, bn, one, zero)
            if CLUSTERS_A_PASS == 4:
                c0, c1, c2, cn = _add_if_member(best, cc, x0, x1, x2, c0, c1, c2, cn, one, zero)
                d0, d1, d2, dn = _add_if_member(best, cd, x0, x1, x2, d0, d1, d2, dn, one, zero)
        _add_totals(totals[j], a0, a1, a2, an)
        if j + 1 <= last:
            _add_totals(totals[j + 1], b0, b1, b2, bn)
        if j + 2 <= last:
            _add_totals(totals[j + 2], c0, c1, c2, cn)
        if j + 3 <= last:
            _add_totals(totals[j + 3], d0, d1, d2, dn)


@njit(nogil=True, cache=True)
def move_narrow_rows(tile_t, rows, best_id, previous_id, totals):
    """Move the first rows columns of a narrow tile, labelled previous_id before best_id (ids
    as floats, -1 for none), from their previous cluster's totals to their new one's, as
    narrow_tile_sums adds them, a changed column at a time."""
    for r in range(rows):
        best, was = best_id[r], previous_id[r]
        if best != was:
            _add_column(tile_t, r, totals, np.int64(best), 1.0)
            if was >= 0:
                _add_column(tile_t, r, totals, np.int64(was), -1.0)


@njit(inline="always", nogil=True, cache=True)
def _add_column(tile_t, r, totals, cluster, sign):
    """A narrow tile's column r, times sign (1 or -1), added to one cluster's totals."""
    totals[cluster, 0] += sign * np.float64(tile_t[0, r])
    totals[cluster, 1] += sign * np.float64(tile_t[1, r])
    totals[cluster, 2] += sign * np.float64(tile_t[2, r])
    totals[cluster, 3] += sign


@njit(inline="always", nogil=True, cache=True)
def _add_totals(totals, s0, s1, s2, count):
    """One cluster's tile sums and count, added in float64."""
    totals[0] += s0
    totals[1] += s1
    totals[2] += s2
    totals[3] += count


@_lanes
def tile_inertia(X, start, rows, labels, centers, tile_sq, best_value):
    """The unit-weight inertia of rows start..start+rows: exact with an empty tile_sq, else
    from the tile's scan as in accumulate_tile."""
    inertia = 0.0
    if tile_sq.shape[0] == 0:
        for r in range(rows):
            inertia += sq_distance(X, start + r, centers, labels[start + r])
    else:
        for r in range(rows):
            inertia += gemm_sq_distance(tile_sq[r], best_value[r])
    return inertia


@_lanes
def value_sum(values, rows):
    """The float64 sum of values[:rows]."""
    total = 0.0
    for r in range(rows):
        total += np.float64(values[r])
    return total


@njit(nogil=True, cache=True)
def moved_centers(
    partial_sums, partial_weights, partial_inertia, centers, counts, moved, new_centers, new_counts, touched,
):
    """A mini-batch update from a step's per-chunk sums (c, k, d) and weights (c, k), float64.

    Each center the batch reached moves to (center * count + sums) / (count + weight): into
    moved (k, d) float64, and into new_centers (k, d) in the centers' dtype; its count becomes
    count + weight, and touched[j] says it was reached. The others keep their center and
    count. counts (k,) float64 are the weights the centers hold before the batch (decayed).
    Returns the batch's inertia (partial_inertia (c,) added in chunk order) and whether every
    new center, in its dtype, and every count is finite.

    One call in place of a dozen small numpy operations, each holding the GIL, which a server
    shares with its event loop: a step of 8192x16 at k=64 ran 4.7 million instructions
    against 5.6 (callgrind, one thread). The chunks are added in their order, starting from
    the first, as numpy's sum over them did, and the arithmetic is numpy's (no contraction
    into FMAs): the centers come out the same to the bit.
    """
    n_chunks, n_clusters, n_features = partial_sums.shape
    inertia = 0.0
    for chunk in range(n_chunks):
        inertia += partial_inertia[chunk]
    finite = True
    for j in range(n_clusters):
        weight = partial_weights[0, j]
        for chunk in range(1, n_chunks):
            weight += partial_weights[chunk, j]
        count = counts[j]
        touched[j] = weight > 0
        new_count = count + weight if touched[j] else count
        new_counts[j] = new_count
        finite &= math.isfinite(new_count)
        for f in range(n_features):
            value = np.float64(centers[j, f])
            if touched[j]:
                summed = partial_sums[0, j, f]
                for chunk in range(1, n_chunks):
                    summed += partial_sums[chunk, j, f]
                value = (value * count + summed) / new_count
            moved[j, f] = value
            new_centers[j, f] = value
            finite &= math.isfinite(new_centers[j, f])
    return inertia, finite
