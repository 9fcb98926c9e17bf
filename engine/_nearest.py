"""Compiled scans for each row's nearest center within a tile of rows, by one GEMM (or, for
data of at most MID features, directly), with ties going to the lowest center index."""

from __future__ import annotations

import numpy as np
from numba import njit

from ._blocks import BLOCK_BYTES, LOWER, make_scan_block
from ._common import (
    MID,
    NARROW,
    is_narrow,
    is_transposed,
    put_mid_tile,
    put_narrow_tile,
    put_rows,
    scan,
    tile_dots,
)


# The scans' blocks: over all MID features of a mid tile or its lower LOWER, and over a
# narrow tile's four features or three.
mid_block_all = make_scan_block(MID)
mid_block_lower = make_scan_block(LOWER)
narrow_block_four = make_scan_block(NARROW)
narrow_block_three = make_scan_block(NARROW - 1)


@njit(inline="always", nogil=True, cache=True)
def _nearer(best, current, value, candidate):
    """The best value and its center id after one more candidate, which wins only if strictly
    smaller: taken in index order, a tie keeps the lower index. Both are selects on values,
    not stores, so that the scans it is inlined into vectorise across rows."""
    return min(value, best), candidate if value < best else current


@njit(inline="always", nogil=True, cache=True)
def _nearest_of_four(best, current, value_a, value_b, value_c, value_d, id_a, id_b, id_c, id_d):
    """_nearer for four candidates in index order, written out: as four chained calls the
    wide scan ran 2% slower."""
    current = id_a if value_a < best else current
    best = min(value_a, best)
    current = id_b if value_b < best else current
    best = min(value_b, best)
    current = id_c if value_c < best else current
    best = min(value_c, best)
    current = id_d if value_d < best else current
    return min(value_d, best), current


@scan
def _scan_nearest(dots, rows, half_sq_norms, center_ids, best_value, best_id):
    """For each of the first rows columns, the smallest half_sq_norms[j] - dots[j, r] and its j.

    dots (k, T) holds one tile's dot products, a column per row of the tile; best_value and
    best_id (T,) are written. center_ids (k,) is 0..k-1 in the tile's dtype.

    best_id holds center indices as floats (exact below 2**24), as wide as the values, so
    that each update is a select in the compare's own vector lanes. (It was arithmetic,
    id + (candidate - id) * (1 or 0), which kept LLVM from a conditional store but cost four
    operations a candidate: as selects the narrow scan runs 1.4x faster.) Four centers
    a pass load and store each column's best once for the four (35% faster than one a pass
    at k = 64 to 1024).
    """
    n_clusters = dots.shape[0]
    for r in range(rows):
        best_value[r] = half_sq_norms[0] - dots[0, r]
        best_id[r] = center_ids[0]
    j = 1
    while j + 4 <= n_clusters:
        half_a, half_b = half_sq_norms[j], half_sq_norms[j + 1]
        half_c, half_d = half_sq_norms[j + 2], half_sq_norms[j + 3]
        id_a, id_b = center_ids[j], center_ids[j + 1]
        id_c, id_d = center_ids[j + 2], center_ids[j + 3]
        for r in range(rows):
            value_a = half_a - dots[j, r]
            value_b = half_b - dots[j + 1, r]
            value_c = half_c - dots[j + 2, r]
            value_d = half_d - dots[j + 3, r]
            best_value[r], best_id[r] = _nearest_of_four(
                best_value[r], best_id[r], value_a, value_b, value_c, value_d, id_a, id_b, id_c,
                id_d,
            )
        j += 4
    for last in range(j, n_clusters):
        half = half_sq_norms[last]
        candidate = center_ids[last]
        for r in range(rows):
            best_value[r], best_id[r] = _nearer(
                best_value[r], best_id[r], half - dots[last, r], candidate
            )


@njit(inline="always", nogil=True, cache=True)
def _no_best(rows, best_value, best_id, zero):
    """Start a direct scan: no best value yet for the first rows columns."""
    for r in range(rows):
        best_value[r] = np.inf
        best_id[r] = zero


@njit(inline="always", nogil=True, cache=True)
def _four_centers(j, half_sq_norms, center_ids):
    """The four centers of a direct scan's pass from center j: their indices, half squared
    norms and ids. A last pass short of four repeats its last center, whose value then ties
    with itself and changes nothing."""
    last = min(j + 4, half_sq_norms.shape[0]) - 1
    ja, jb, jc, jd = j, min(j + 1, last), min(j + 2, last), last
    return (
        (ja, jb, jc, jd),
        (half_sq_norms[ja], half_sq_norms[jb], half_sq_norms[jc], half_sq_norms[jd]),
        (center_ids[ja], center_ids[jb], center_ids[jc], center_ids[jd]),
    )


@scan
def _scan_direct(centers_s, half_sq_norms, tile_t, rows, n_features, best_value, best_id, center_ids):
    """_scan_nearest without the GEMM, for a transposed tile (a row per feature) of at most
    MID features: each center's values half_sq_norms[j] - (x - s).(c - s) are formed and
    compared in one pass over the tile, the tile's rows as vector lanes, four centers a pass
    so that a row's features and best are loaded once for all four. A last pass short of
    four centers repeats its last one, whose value then ties with itself and changes
    nothing. centers_s (k, NARROW or MID) is zero past the data's features.

    The columns go a block at a time through the block written for LLVM (_blocks), over the
    tile's first 3, NARROW, LOWER or MID rows by the data's width: the first rows columns
    are scanned (a small predict's 8, not the tile's 256), and the rest of their last block
    too, its results unused, so tile_t, best_value and best_id hold whole blocks (TILE_ROWS
    columns).

    One thread: labelling 1e6x3 at k=16 took 7.2 ms through BLAS's GEMM and _scan_nearest,
    3.9 ms directly a center a pass, and four a pass scanned 25% faster again. 1e6x16 at
    k=64: 30-32 ms through the GEMM and 25-28 ms by a loop LLVM vectorised, on the Xeon host
    (AVX-512); on an AMD EPYC with AVX2, where that loop spilled its 64 vector constants and
    reloaded one for every multiply-add, 50 ms by the loop and 31 ms by blocks.
    """
    _no_best(rows, best_value, best_id, center_ids[0])
    block = BLOCK_BYTES // tile_t.itemsize
    for j in range(0, centers_s.shape[0], 4):
        rows_of, halves, ids = _four_centers(j, half_sq_norms, center_ids)
        for r in range(0, rows, block):
            if n_features < NARROW:
                narrow_block_three(tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id)
            elif n_features == NARROW:
                narrow_block_four(tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id)
            elif n_features <= LOWER:
                mid_block_lower(tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id)
            else:
                mid_block_all(tile_t, r, centers_s, rows_of, halves, ids, best_value, best_id)


@njit(nogil=True, cache=True)
def tile_nearest(
    X, start, rows, shift, centers_s, half_sq_norms, center_ids, tile, dots, best_value,
    best_id, labels, tile_sq,
):
    """Label rows start..start+rows of X with their nearest center: by a direct scan of a
    transposed tile up to MID features (_scan_direct), else by one GEMM.

    Returns how many of those labels changed. tile (from new_tile) and dots (k, T) are scratch;
    places past ``rows`` hold an earlier tile's rows (or zeros) and their results are unused.

    |x - c|^2 = |x - s|^2 - 2 (x - s).(c - s) + |c - s|^2, so the argmin over c is that of
    |c - s|^2 / 2 - (x - s).(c - s). Shifting by s, a point near the data, keeps float32 accurate.
    A non-empty tile_sq (T,) is set to each row's |x - s|^2, in the tile's dtype.
    """
    with_norms = tile_sq.shape[0] > 0
    if is_transposed(X):
        if is_narrow(X):
            put_narrow_tile(X, start, rows, shift, tile)
        else:
            put_mid_tile(X, start, rows, shift, tile)
        _scan_direct(centers_s, half_sq_norms, tile, rows, X.shape[1], best_value, best_id, center_ids)
        if with_norms:
            _narrow_sq_norms(tile, X.shape[1], tile_sq)
    else:
        put_rows(X, start, rows, shift, tile)
        tile_dots(X, centers_s, tile, dots)
        _scan_nearest(dots, rows, half_sq_norms, center_ids, best_value, best_id)
        if with_norms:
            _wide_sq_norms(tile, rows, tile_sq)
    return _put_labels(best_id, rows, labels[start:start + rows])


@njit(nogil=True, cache=True)
def _put_labels(best_id, rows, labels):
    """labels[:rows] = best_id[:rows] as int32; returns how many changed. Without a branch,
    so that it vectorises (with one, labelling 1e6x3 at k=16 took 2.7 ms on one thread
    against 2.2 ms)."""
    changed = 0
    for r in range(rows):
        best = np.int32(best_id[r])
        changed += np.int64(labels[r] != best)
        labels[r] = best
    return changed


@njit(inline="always", nogil=True, cache=True)
def gemm_sq_distance(sq_norm, best_value):
    """A row's squared distance to its nearest center from the scan's values:
    |x - c|^2 = |x - s|^2 + 2 * (|c - s|^2 / 2 - (x - s).(c - s)), good to the rounding of the
    tile's dtype relative to |x - s|^2 + |c - s|^2 (clamped at 0, where that rounding could
    take it below)."""
    return max(np.float64(sq_norm) + 2.0 * np.float64(best_value), 0.0)


@scan
def _narrow_sq_norms(tile, n_features, tile_sq):
    """tile_sq (T,) = each transposed tile column's squared norm over its first n_features rows."""
    for r in range(tile.shape[1]):
        tile_sq[r] = 0.0
    for f in range(n_features):
        for r in range(tile.shape[1]):
            tile_sq[r] += tile[f, r] * tile[f, r]


@scan
def _wide_sq_norms(tile, rows, tile_sq):
    """tile_sq[:rows] = the squared norms of a wide tile's first rows rows."""
    for r in range(rows):
        norm = tile[r, 0] * tile[r, 0]
        for f in range(1, tile.shape[1]):
            norm += tile[r, f] * tile[r, f]
        tile_sq[r] = norm
