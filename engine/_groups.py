"""Compiled scans for the bounded Lloyd step: per group of centers, each row's nearest
center and the best and second-best values that set its bounds, from a tile's GEMM dots or,
for data of 5 to MID features, directly as _nearest's mid scan forms them. Ties go to the
lowest center index."""

from __future__ import annotations

import numpy as np
from numba import njit

from ._blocks import BLOCK_BYTES, LOWER, make_scan_block
from ._common import MID, scan

# The group scan's blocks, over all MID features or the lower LOWER.
group_block_all = make_scan_block(MID, with_second=True)
group_block_lower = make_scan_block(LOWER, with_second=True)


@njit(inline="always", nogil=True, cache=True)
def _best_and_second(best, second, current, value, candidate):
    """_nearest._nearer, also keeping the second-smallest value: as selects, so that it
    vectorises."""
    second = min(second, max(value, best))
    return min(value, best), second, candidate if value < best else current


@scan
def _scan_group(dots, rows, half_sq_norms, center_ids, members, best_value, second_value, best_id):
    """As _nearest._scan_nearest over the centers ``members`` (ascending indices) only, and
    also each column's second-smallest value among them in second_value (inf if there is
    none)."""
    first = members[0]
    for r in range(rows):
        best_value[r] = half_sq_norms[first] - dots[first, r]
        second_value[r] = np.inf
        best_id[r] = center_ids[first]
    for m in range(1, members.shape[0]):
        j = members[m]
        half = half_sq_norms[j]
        candidate = center_ids[j]
        for r in range(rows):
            best_value[r], second_value[r], best_id[r] = _best_and_second(
                best_value[r], second_value[r], best_id[r], half - dots[j, r], candidate
            )


@scan
def _scan_mid_group(centers_s, half_sq_norms, tile_t, rows, upper, members, best_value, second_value, best_id,
                    center_ids):
    """_scan_group for a mid tile without the GEMM: each column's smallest value among the
    centers ``members`` (ascending indices), its center id, and the second-smallest value
    (inf if there is none), formed as _nearest._scan_direct forms them, four centers a pass,
    by the block that keeps the second value too (_blocks.make_scan_block), a block of
    columns at a time: the arrays hold whole blocks (TILE_ROWS columns).

    A short last pass gives its missing centers an infinite value (_four_members), which
    changes neither value. Choosing between a value and inf inside the loop instead made the
    scan 1.6 times slower (one thread, 4,000 (16, 256) tiles, k=64, two centers a pass: 21.2
    against 13.1 ms, on the Xeon host, in a loop LLVM vectorised). By blocks on the AMD EPYC
    with AVX2, 4,000 tiles at 16 members: 11.9 ms, against 16.2 by that loop."""
    for r in range(rows):
        best_value[r] = np.inf
        second_value[r] = np.inf
        best_id[r] = center_ids[members[0]]
    block = BLOCK_BYTES // tile_t.itemsize
    for m in range(0, members.shape[0], 4):
        rows_of, halves, ids = _four_members(m, members, half_sq_norms, center_ids)
        for r in range(0, rows, block):
            if upper:
                group_block_all(tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id, second_value)
            else:
                group_block_lower(tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id,
                                  second_value)


@njit(inline="always", nogil=True, cache=True)
def _four_members(m, members, half_sq_norms, center_ids):
    """The four centers of a group scan's pass from members[m]: their indices, half squared
    norms and ids. Past the last member the pass repeats it with an infinite half norm, so
    that its value (inf) is neither a best nor a second-best."""
    last = members.shape[0] - 1
    inf = half_sq_norms.dtype.type(np.inf)
    ja, jb, jc, jd = members[m], members[min(m + 1, last)], members[min(m + 2, last)], members[min(m + 3, last)]
    return (
        (ja, jb, jc, jd),
        (
            half_sq_norms[ja],
            half_sq_norms[jb] if m + 1 <= last else inf,
            half_sq_norms[jc] if m + 2 <= last else inf,
            half_sq_norms[jd] if m + 3 <= last else inf,
        ),
        (center_ids[ja], center_ids[jb], center_ids[jc], center_ids[jd]),
    )


@njit(nogil=True, cache=True)
def scan_groups(
    dots, rows, half_sq_norms, center_ids, group_order, group_start, group_best, group_second,
    group_id, best_value, best_id, best_group,
):
    """Per group of centers, each column's smallest and second-smallest value of
    half_sq_norms[j] - dots[j, r]; then over all groups the smallest, its center and group.

    The centers of group g are group_order[group_start[g]:group_start[g + 1]], ascending.
    group_best and group_second (G, T) and group_id (T,) are written as scratch too.
    A tie goes to the lowest center index, as in _nearest._scan_nearest.
    """
    _no_group(rows, best_value, best_id, best_group)
    for g in range(group_start.shape[0] - 1):
        members = group_order[group_start[g]:group_start[g + 1]]
        _scan_group(
            dots, rows, half_sq_norms, center_ids, members, group_best[g], group_second[g], group_id
        )
        _take_group(g, rows, group_best, group_id, best_value, best_id, best_group)


@njit(nogil=True, cache=True)
def mid_scan_groups(
    centers_s, half_sq_norms, tile_t, rows, n_features, center_ids, group_order, group_start,
    group_best, group_second, group_id, best_value, best_id, best_group,
):
    """scan_groups for a mid tile (NARROW < d <= MID), without the GEMM: each group's
    values formed as _nearest._scan_direct forms them (_scan_mid_group)."""
    upper = n_features > 8
    _no_group(rows, best_value, best_id, best_group)
    for g in range(group_start.shape[0] - 1):
        members = group_order[group_start[g]:group_start[g + 1]]
        _scan_mid_group(
            centers_s, half_sq_norms, tile_t, rows, upper, members, group_best[g], group_second[g],
            group_id, center_ids,
        )
        _take_group(g, rows, group_best, group_id, best_value, best_id, best_group)


@njit(inline="always", nogil=True, cache=True)
def _no_group(rows, best_value, best_id, best_group):
    """Start scan_groups: no best value yet for the first rows columns."""
    for r in range(rows):
        best_value[r] = np.inf
        best_id[r] = 0
        best_group[r] = 0


@njit(inline="always", nogil=True, cache=True)
def _take_group(g, rows, group_best, group_id, best_value, best_id, best_group):
    """Each column's best so far, after group g's: a tie keeps the lower center index."""
    for r in range(rows):
        value = group_best[g, r]
        if value < best_value[r] or (value == best_value[r] and group_id[r] < best_id[r]):
            best_value[r] = value
            best_id[r] = group_id[r]
            best_group[r] = g
