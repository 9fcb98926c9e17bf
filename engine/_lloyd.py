"""Compiled k-means kernels.

Every kernel here fills buffers its caller allocated and does no checking: the
public functions in ``kmeans.py`` validate and prepare the arrays. Work is split
into chunks whose count depends only on the problem size, never on the number
of threads, and partial results are reduced in chunk order, so a given input
gives bitwise the same output whatever the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


_MIN_CHUNK_ROWS = 2048
_MAX_CHUNKS = 128
# Per-chunk sums are zeroed every step and reduced after it: at 32 MiB a bounded step on
# 1e5x128 with k=1024 (32 chunks) spent more time on them than on its rows.
_PARTIAL_SUMS_BUDGET_BYTES = 8 * 1024 * 1024

# Every public kernel: multi-threaded, callable without the GIL, cached on disk.
_kernel = njit(parallel=True, nogil=True, cache=True)


def n_chunks_for(n_samples: int, n_clusters: int = 1, n_features: int = 1) -> int:
    """How many chunks to split n_samples rows into; independent of thread count."""
    by_rows = math.ceil(n_samples / _MIN_CHUNK_ROWS)
    by_memory = _PARTIAL_SUMS_BUDGET_BYTES // max(1, n_clusters * n_features * 8)
    return int(max(1, min(by_rows, _MAX_CHUNKS, by_memory)))


@njit(inline="always", nogil=True, cache=True)
def _sq_distance(X, i, centers, j):
    """Squared Euclidean distance between row i of X and row j of centers, in float64.

    Four running sums, in a fixed order, so that wide rows do not wait on one chain of
    additions; the result depends on nothing but the two rows.
    """
    n_features = X.shape[1]
    s0 = s1 = s2 = s3 = 0.0
    wide = n_features - n_features % 4
    for f in range(0, wide, 4):
        d0 = np.float64(X[i, f]) - centers[j, f]
        d1 = np.float64(X[i, f + 1]) - centers[j, f + 1]
        d2 = np.float64(X[i, f + 2]) - centers[j, f + 2]
        d3 = np.float64(X[i, f + 3]) - centers[j, f + 3]
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
    for f in range(wide, n_features):
        diff = np.float64(X[i, f]) - centers[j, f]
        s0 += diff * diff
    return (s0 + s1) + (s2 + s3)


# How _lloyd_step treats the per-row bounds.
MODE_PLAIN = 0
MODE_SET_BOUNDS = 1
MODE_USE_BOUNDS = 2

# Rows per GEMM tile: the tile and its k dot products stay in cache.
_TILE_ROWS = 256
# Up to this many features a tile is not multiplied by BLAS but scanned directly
# (_scan_narrow); narrower data is padded with zero features to this width.
_NARROW = 4


@njit(inline="always", nogil=True, cache=True)
def _is_narrow(X):
    """Whether X's tiles are narrow: a row per feature, scanned without BLAS."""
    return X.shape[1] <= _NARROW


@njit(inline="always", nogil=True, cache=True)
def _tile_width(n_features):
    """Columns of the shifted centers: d, or _NARROW if less."""
    return max(n_features, _NARROW)


@njit(inline="always", nogil=True, cache=True)
def _new_tile(X):
    """A zeroed tile for X's rows: (_NARROW, T), a row per feature, for at most _NARROW
    features; else (T, d), a row per data row.

    Wide tiles keep X's layout: filling a transposed one stored each value 1 KB past the
    last, and took as long as a third of the GEMM (2e5x64, k=256: 25 ms against 4 ms).
    """
    if _is_narrow(X):
        return np.zeros((_NARROW, _TILE_ROWS), dtype=X.dtype)
    return np.zeros((_TILE_ROWS, X.shape[1]), dtype=X.dtype)


@njit(inline="always", nogil=True, cache=True)
def _tile_dots(X, centers_s, tile, dots):
    """dots (k, T) = centers_s . (the tile's rows of X, shifted) by one GEMM, either layout."""
    if _is_narrow(X):
        np.dot(centers_s, tile, dots)
    else:
        np.dot(centers_s, tile.T, dots)

# The nearest-center scans below run over a tile's rows with no branch, so LLVM
# vectorises them. Only contraction into FMAs is allowed: no reassociation, so
# results still depend on nothing but the input. They are called, not inlined:
# inlining would drop their fastmath flags.
_scan = njit(nogil=True, cache=True, fastmath={"contract"})


@njit(nogil=True, cache=True)
def _shifted_centers(centers, shift, centers_s, half_sq_norms):
    """centers_s[:, :d] = centers - shift and half_sq_norms (k,) = |centers - shift|^2 / 2."""
    n_clusters, n_features = centers.shape
    for j in range(n_clusters):
        norm = 0.0
        for f in range(n_features):
            value = centers[j, f] - shift[f]
            centers_s[j, f] = value
            norm += value * value
        half_sq_norms[j] = 0.5 * norm


@njit(inline="always", nogil=True, cache=True)
def _put_rows(X, start, rows, shift, tile):
    """Rows 0..rows-1 of a wide tile (T, d) = rows start.. of X - shift."""
    for r in range(rows):
        for f in range(X.shape[1]):
            tile[r, f] = X[start + r, f] - shift[f]


@njit(inline="always", nogil=True, cache=True)
def _put_row(X, i, shift, tile, r):
    """Place r of either tile layout = row i of X - shift; returns its |.|^2 in float64."""
    narrow = _is_narrow(X)
    norm = 0.0
    for f in range(X.shape[1]):
        value = X[i, f] - shift[f]
        if narrow:
            tile[f, r] = value
        else:
            tile[r, f] = value
        norm += np.float64(value) * value
    return norm


@njit(nogil=True, cache=True)
def _put_narrow_tile(X, start, rows, shift, tile_t):
    """Columns 0..rows-1 of the (_NARROW, T) tile = rows start.. of X - shift, for d <= _NARROW.

    Written unrolled, with no loop over the features (twice as fast at d = 3). A tile row past
    the data's features repeats its last feature: the zero centers_s columns cancel it.
    """
    last = X.shape[1] - 1
    f1 = min(1, last)
    f2 = min(2, last)
    f3 = min(3, last)
    s0 = shift[0]
    s1 = shift[f1]
    s2 = shift[f2]
    s3 = shift[f3]
    for r in range(rows):
        i = start + r
        tile_t[0, r] = X[i, 0] - s0
        tile_t[1, r] = X[i, f1] - s1
        tile_t[2, r] = X[i, f2] - s2
        tile_t[3, r] = X[i, f3] - s3


@njit(inline="always", nogil=True, cache=True)
def _nearer(best, current, value, candidate, one, zero):
    """The best value and its center id after one more candidate, which wins only if strictly
    smaller: taken in index order, a tie keeps the lower index. Arithmetic rather than a
    branch, so that the scans it is inlined into vectorise across rows."""
    return min(value, best), current + (candidate - current) * (one if value < best else zero)


@njit(inline="always", nogil=True, cache=True)
def _nearest_of_four(best, current, value_a, value_b, value_c, value_d, id_a, id_b, id_c, id_d,
                     one, zero):
    """_nearer for four candidates in index order, written out: as four chained calls the
    wide scan ran 2% slower."""
    current = current + (id_a - current) * (one if value_a < best else zero)
    best = min(value_a, best)
    current = current + (id_b - current) * (one if value_b < best else zero)
    best = min(value_b, best)
    current = current + (id_c - current) * (one if value_c < best else zero)
    best = min(value_c, best)
    current = current + (id_d - current) * (one if value_d < best else zero)
    return min(value_d, best), current


@_scan
def _scan_nearest(dots, rows, half_sq_norms, center_ids, best_value, best_id):
    """For each of the first rows columns, the smallest half_sq_norms[j] - dots[j, r] and its j.

    dots (k, T) holds one tile's dot products, a column per row of the tile; best_value and
    best_id (T,) are written. center_ids (k,) is 0..k-1 in the tile's dtype.

    best_id holds center indices as floats (exact below 2**24) so that the update is
    arithmetic rather than a conditional store, which LLVM would not vectorise. Four centers
    a pass load and store each column's best once for the four (35% faster than one a pass
    at k = 64 to 1024).
    """
    zero = center_ids[0]  # 0 and 1 in the tile's dtype
    one = zero + 1
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
                id_d, one, zero,
            )
        j += 4
    for last in range(j, n_clusters):
        half = half_sq_norms[last]
        candidate = center_ids[last]
        for r in range(rows):
            best_value[r], best_id[r] = _nearer(
                best_value[r], best_id[r], half - dots[last, r], candidate, one, zero
            )


@_scan
def _scan_group(dots, rows, half_sq_norms, center_ids, members, best_value, second_value, best_id):
    """As _scan_nearest over the centers ``members`` (ascending indices) only, and also each
    column's second-smallest value among them in second_value (inf if there is none)."""
    zero = center_ids[0]  # 0 and 1 in the tile's dtype
    one = zero + 1
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
            value = half - dots[j, r]
            second_value[r] = min(second_value[r], max(value, best_value[r]))
            best_value[r], best_id[r] = _nearer(best_value[r], best_id[r], value, candidate, one, zero)


@_scan
def _scan_narrow(centers_s, half_sq_norms, tile_t, best_value, best_id, center_ids):
    """_scan_nearest for at most _NARROW features, without the GEMM: each center's values
    half_sq_norms[j] - (x - s).(c - s) are formed and compared in one pass over the tile,
    four centers a pass so that a row's features and best are loaded once for all four.

    centers_s (k, _NARROW) is zero past the data's features. (1e6x3, k=16, one thread:
    labelling every row took 7.2 ms through BLAS's GEMM and _scan_nearest, 3.9 ms this way
    a center a pass; four a pass scan 25% faster again.)
    """
    zero = center_ids[0]  # 0 and 1 in the tile's dtype
    one = zero + 1
    n_clusters = centers_s.shape[0]
    for r in range(tile_t.shape[1]):
        best_value[r] = np.inf
        best_id[r] = zero
    quad = n_clusters - n_clusters % 4
    for j in range(0, quad, 4):
        a0, a1, a2, a3 = centers_s[j, 0], centers_s[j, 1], centers_s[j, 2], centers_s[j, 3]
        b0, b1, b2, b3 = centers_s[j + 1, 0], centers_s[j + 1, 1], centers_s[j + 1, 2], centers_s[j + 1, 3]
        c0, c1, c2, c3 = centers_s[j + 2, 0], centers_s[j + 2, 1], centers_s[j + 2, 2], centers_s[j + 2, 3]
        d0, d1, d2, d3 = centers_s[j + 3, 0], centers_s[j + 3, 1], centers_s[j + 3, 2], centers_s[j + 3, 3]
        half_a, half_b = half_sq_norms[j], half_sq_norms[j + 1]
        half_c, half_d = half_sq_norms[j + 2], half_sq_norms[j + 3]
        id_a, id_b = center_ids[j], center_ids[j + 1]
        id_c, id_d = center_ids[j + 2], center_ids[j + 3]
        for r in range(tile_t.shape[1]):
            x0, x1, x2, x3 = tile_t[0, r], tile_t[1, r], tile_t[2, r], tile_t[3, r]
            value_a = half_a - ((a0 * x0 + a1 * x1) + (a2 * x2 + a3 * x3))
            value_b = half_b - ((b0 * x0 + b1 * x1) + (b2 * x2 + b3 * x3))
            value_c = half_c - ((c0 * x0 + c1 * x1) + (c2 * x2 + c3 * x3))
            value_d = half_d - ((d0 * x0 + d1 * x1) + (d2 * x2 + d3 * x3))
            best_value[r], best_id[r] = _nearest_of_four(
                best_value[r], best_id[r], value_a, value_b, value_c, value_d, id_a, id_b, id_c,
                id_d, one, zero,
            )
    for j in range(quad, n_clusters):
        half = half_sq_norms[j]
        c0, c1, c2, c3 = centers_s[j, 0], centers_s[j, 1], centers_s[j, 2], centers_s[j, 3]
        candidate = center_ids[j]
        for r in range(tile_t.shape[1]):
            dot = (c0 * tile_t[0, r] + c1 * tile_t[1, r]) + (c2 * tile_t[2, r] + c3 * tile_t[3, r])
            best_value[r], best_id[r] = _nearer(best_value[r], best_id[r], half - dot, candidate, one, zero)


@njit(nogil=True, cache=True)
def _scan_groups(
    dots, rows, half_sq_norms, center_ids, group_order, group_start, group_best, group_second,
    group_id, best_value, best_id, best_group,
):
    """Per group of centers, each column's smallest and second-smallest value of
    half_sq_norms[j] - dots[j, r]; then over all groups the smallest, its center and group.

    The centers of group g are group_order[group_start[g]:group_start[g + 1]], ascending.
    group_best and group_second (G, T) and group_id (T,) are written as scratch too.
    A tie goes to the lowest center index, as in _scan_nearest.
    """
    for r in range(rows):
        best_value[r] = np.inf
        best_id[r] = 0
        best_group[r] = 0
    for g in range(group_start.shape[0] - 1):
        members = group_order[group_start[g]:group_start[g + 1]]
        _scan_group(
            dots, rows, half_sq_norms, center_ids, members, group_best[g], group_second[g], group_id
        )
        for r in range(rows):
            value = group_best[g, r]
            if value < best_value[r] or (value == best_value[r] and group_id[r] < best_id[r]):
                best_value[r] = value
                best_id[r] = group_id[r]
                best_group[r] = g


@njit(nogil=True, cache=True)
def _tile_nearest(
    X, start, rows, shift, centers_s, half_sq_norms, center_ids, tile, dots, best_value,
    best_id, labels, tile_sq,
):
    """Label rows start..start+rows of X with their nearest center via one GEMM.

    Returns how many of those labels changed. tile (from _new_tile) and dots (k, T) are scratch;
    places past ``rows`` hold an earlier tile's rows (or zeros) and their results are unused.

    |x - c|^2 = |x - s|^2 - 2 (x - s).(c - s) + |c - s|^2, so the argmin over c is that of
    |c - s|^2 / 2 - (x - s).(c - s). Shifting by s, a point near the data, keeps float32 accurate.
    A non-empty tile_sq (T,) is set to each row's |x - s|^2, in the tile's dtype.
    """
    with_norms = tile_sq.shape[0] > 0
    if _is_narrow(X):
        _put_narrow_tile(X, start, rows, shift, tile)
        _scan_narrow(centers_s, half_sq_norms, tile, best_value, best_id, center_ids)
        if with_norms:
            _narrow_sq_norms(tile, X.shape[1], tile_sq)
    else:
        _put_rows(X, start, rows, shift, tile)
        _tile_dots(X, centers_s, tile, dots)
        _scan_nearest(dots, rows, half_sq_norms, center_ids, best_value, best_id)
        if with_norms:
            _wide_sq_norms(tile, rows, tile_sq)
    changed = 0
    for r in range(rows):
        best = np.int32(best_id[r])
        if labels[start + r] != best:
            changed += 1
        labels[start + r] = best
    return changed


@njit(inline="always", nogil=True, cache=True)
def _add_to_cluster(X, i, best, w, sums, weights):
    """Add row i, with weight w, to cluster best's running sums."""
    for f in range(X.shape[1]):
        sums[best, f] += w * X[i, f]
    weights[best] += w


@njit(inline="always", nogil=True, cache=True)
def _accumulate(X, i, best, w, centers, sums, weights):
    """Add row i to its cluster's sums; returns its exact squared distance to the center."""
    _add_to_cluster(X, i, best, w, sums, weights)
    return _sq_distance(X, i, centers, best)


@njit(nogil=True, cache=True)
def _accumulate_tile(
    X, sample_weight, start, rows, labels, centers, sums, weights, tile_sq, best_value
):
    """Add rows start..start+rows to their clusters' sums; returns their weighted inertia.

    With an empty tile_sq each row's squared distance is exact; otherwise it is read off the
    tile's scan as |x - s|^2 + 2 * best_value (see _gemm_sq_distance).
    A call rather than inlined into _lloyd_step: compiled on its own, the loop runs about
    2.5x faster (2e5x64, k=256: 20 ms a step on one thread against 50 ms).
    """
    weighted = sample_weight.shape[0] > 0
    exact = tile_sq.shape[0] == 0
    inertia = 0.0
    for r in range(rows):
        i = start + r
        w = sample_weight[i] if weighted else 1.0
        if exact:
            inertia += w * _accumulate(X, i, labels[i], w, centers, sums, weights)
        else:
            _add_to_cluster(X, i, labels[i], w, sums, weights)
            inertia += w * _gemm_sq_distance(tile_sq[r], best_value[r])
    return inertia


@njit(inline="always", nogil=True, cache=True)
def _gemm_sq_distance(sq_norm, best_value):
    """A row's squared distance to its nearest center from the scan's values:
    |x - c|^2 = |x - s|^2 + 2 * (|c - s|^2 / 2 - (x - s).(c - s)), good to the rounding of the
    tile's dtype relative to |x - s|^2 + |c - s|^2 (clamped at 0, where that rounding could
    take it below)."""
    return max(np.float64(sq_norm) + 2.0 * np.float64(best_value), 0.0)


@_scan
def _narrow_sq_norms(tile, n_features, tile_sq):
    """tile_sq (T,) = each narrow tile column's squared norm over its first n_features rows."""
    for r in range(tile.shape[1]):
        tile_sq[r] = 0.0
    for f in range(n_features):
        for r in range(tile.shape[1]):
            tile_sq[r] += tile[f, r] * tile[f, r]


@_scan
def _wide_sq_norms(tile, rows, tile_sq):
    """tile_sq[:rows] = the squared norms of a wide tile's first rows rows."""
    for r in range(rows):
        norm = tile[r, 0] * tile[r, 0]
        for f in range(1, tile.shape[1]):
            norm += tile[r, f] * tile[r, f]
        tile_sq[r] = norm


@njit(nogil=True, cache=True)
def _resolve_pending(
    X, sample_weight, centers, centers_s, half_sq_norms, center_ids, group_order, group_start,
    rel_margin, exact, tile, dots, group_best, group_second, group_id, best_value, best_id,
    best_group, pending_rows, pending_sq, pending, labels, lower, sums, weights,
):
    """Assign the queued rows by one GEMM, and set each one's lower bound per group of
    centers: from the group's nearest center, or its second-nearest in the row's own group.

    Returns (number of labels changed, weighted inertia of those rows: exact, or with
    ``exact`` False from the scan's values).
    """
    weighted = sample_weight.shape[0] > 0
    n_groups = group_start.shape[0] - 1
    _tile_dots(X, centers_s, tile, dots)
    _scan_groups(
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
            inertia += w * _accumulate(X, i, best, w, centers, sums, weights)
        else:
            _add_to_cluster(X, i, best, w, sums, weights)
            inertia += w * _gemm_sq_distance(pending_sq[r], best_value[r])
    return changed, inertia


@njit(nogil=True, cache=True)
def _bounded_rows(
    X, sample_weight, centers, centers_s, half_sq_norms, center_ids, shift, half_gaps,
    group_order, group_start, group_move, rel_margin, use_bounds, exact, start, stop, tile,
    dots, best_value, best_id, labels, lower, sums, weights,
):
    """Rows start..stop of one chunk in a bounded step: with use_bounds, a row whose bounds
    prove its label keeps it; every other row is queued for a GEMM that also sets its
    bounds. Returns (weighted inertia, labels changed, rows searched)."""
    weighted = sample_weight.shape[0] > 0
    n_groups = group_start.shape[0] - 1
    group_best = np.empty((n_groups, _TILE_ROWS), dtype=X.dtype)
    group_second = np.empty((n_groups, _TILE_ROWS), dtype=X.dtype)
    group_id = np.empty(_TILE_ROWS, dtype=X.dtype)
    best_group = np.empty(_TILE_ROWS, dtype=np.int64)
    pending_rows = np.empty(_TILE_ROWS, dtype=np.int64)
    pending_sq = np.empty(_TILE_ROWS, dtype=np.float64)
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
            dist = _sq_distance(X, i, centers, current)
            if math.sqrt(dist) <= max(bound, half_gaps[current]):
                settled = True
                for g in range(n_groups):
                    lower[i, g] = max(np.float64(lower[i, g]) - group_move[g], 0.0)
                w = sample_weight[i] if weighted else 1.0
                _add_to_cluster(X, i, current, w, sums, weights)
                inertia += w * dist
        if not settled:
            pending_sq[pending] = _put_row(X, i, shift, tile, pending)
            pending_rows[pending] = i
            pending += 1
        if pending == _TILE_ROWS or (pending and i == stop - 1):
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


@_kernel
def _lloyd_step(
    X, sample_weight, centers, shift, half_gaps, group_order, group_start, group_move, rel_margin,
    mode, exact_inertia, labels, lower, partial_sums, partial_weights, partial_inertia,
    partial_changed, partial_computed,
):
    """Assign each row to its nearest center and accumulate per-chunk sums, skipping the
    search for rows whose bounds prove their center unchanged.

    X (n, d), centers (k, d) and shift (d,) in one float dtype; sample_weight (n,) float64,
    or empty for unit weights. The centers are split into G groups: group g is
    group_order[group_start[g]:group_start[g + 1]] (int64, ascending within a group).
    labels (n,) int32 (-1: no bound yet) and lower (n, G), a lower bound on each row's
    distance to every center of each group but its own center, are read and updated
    (G = 1 is Hamerly's single bound; more groups are Yinyang's global filter).
    half_gaps (k,) float64 is half the distance from each center to its nearest other one;
    group_move (G,) float64 is how far any center of each group moved since the bounds
    were set. A row whose exact distance to its center is within
    max(min over g of lower[g] - group_move[g], half_gap) keeps its label unexamined; the rest
    are queued into tiles and assigned by one GEMM each, which also resets their bounds.
    mode MODE_PLAIN assigns every row by contiguous tiles and leaves the bounds unset
    (fastest while many labels still change), MODE_SET_BOUNDS queues every row to set the
    bounds, MODE_USE_BOUNDS tests them first.
    Out per chunk: partial_sums (c, k, d), partial_weights (c, k), partial_inertia (c,)
    float64, partial_changed and partial_computed (rows that needed the GEMM) (c,) int64.
    Inertia is the float64 sum of w * |x - c|^2: exact with exact_inertia, else with each
    searched row's term from its GEMM values, good to the dtype's rounding (a fit's
    iterations report that; its final assignment is exact).
    """
    n_samples, n_features = X.shape
    n_clusters = centers.shape[0]
    n_chunks = partial_inertia.shape[0]
    chunk_rows = (n_samples + n_chunks - 1) // n_chunks
    centers_s = np.zeros((n_clusters, _tile_width(n_features)), dtype=X.dtype)
    half_sq_norms = np.empty(n_clusters, dtype=X.dtype)
    _shifted_centers(centers, shift, centers_s, half_sq_norms)
    center_ids = np.arange(n_clusters).astype(X.dtype)
    for chunk in prange(n_chunks):
        start = chunk * chunk_rows
        stop = min(start + chunk_rows, n_samples)
        sums = partial_sums[chunk]
        weights = partial_weights[chunk]
        sums[:, :] = 0.0
        weights[:] = 0.0
        inertia = 0.0
        changed = 0
        computed = 0
        tile = _new_tile(X)
        dots = np.empty((n_clusters, _TILE_ROWS), dtype=X.dtype)
        best_value = np.empty(_TILE_ROWS, dtype=X.dtype)
        best_id = np.empty(_TILE_ROWS, dtype=X.dtype)
        tile_sq = np.empty(0 if exact_inertia else _TILE_ROWS, dtype=X.dtype)
        if mode == MODE_PLAIN:
            for tile_start in range(start, stop, _TILE_ROWS):
                rows = min(_TILE_ROWS, stop - tile_start)
                changed += _tile_nearest(
                    X, tile_start, rows, shift, centers_s, half_sq_norms, center_ids, tile,
                    dots, best_value, best_id, labels, tile_sq,
                )
                inertia += _accumulate_tile(
                    X, sample_weight, tile_start, rows, labels, centers, sums, weights, tile_sq,
                    best_value,
                )
            computed = stop - start
        else:
            inertia, changed, computed = _bounded_rows(
                X, sample_weight, centers, centers_s, half_sq_norms, center_ids, shift, half_gaps,
                group_order, group_start, group_move, rel_margin, mode == MODE_USE_BOUNDS,
                exact_inertia, start, stop, tile, dots, best_value, best_id, labels, lower, sums,
                weights,
            )
        partial_inertia[chunk] = inertia
        partial_changed[chunk] = changed
        partial_computed[chunk] = computed


@njit(nogil=True, cache=True)
def _assign_tiles(X, centers, centers_s, half_sq_norms, shift, first, stop, labels, min_sq_dist):
    """Label the rows of tiles first..stop-1 (and their exact distances, if asked for)."""
    n_samples, n_features = X.shape
    n_clusters = centers.shape[0]
    center_ids = np.arange(n_clusters).astype(X.dtype)
    tile = _new_tile(X)
    dots = np.empty((n_clusters, _TILE_ROWS), dtype=X.dtype)
    best_value = np.empty(_TILE_ROWS, dtype=X.dtype)
    best_id = np.empty(_TILE_ROWS, dtype=X.dtype)
    no_norms = np.empty(0, dtype=X.dtype)
    for t in range(first, stop):
        start = t * _TILE_ROWS
        rows = min(_TILE_ROWS, n_samples - start)
        _tile_nearest(
            X, start, rows, shift, centers_s, half_sq_norms, center_ids, tile, dots,
            best_value, best_id, labels, no_norms,
        )
        if min_sq_dist.shape[0] > 0:
            for i in range(start, start + rows):
                min_sq_dist[i] = _sq_distance(X, i, centers, labels[i])


@njit(nogil=True, cache=True)
def _assign_setup(X, centers, shift):
    """The shifted centers and half their squared norms, in X's dtype, and the tile count."""
    n_clusters, n_features = centers.shape
    centers_s = np.zeros((n_clusters, _tile_width(n_features)), dtype=X.dtype)
    half_sq_norms = np.empty(n_clusters, dtype=X.dtype)
    _shifted_centers(centers, shift, centers_s, half_sq_norms)
    return centers_s, half_sq_norms, (X.shape[0] + _TILE_ROWS - 1) // _TILE_ROWS


@_kernel
def _assign(X, centers, shift, labels, min_sq_dist):
    """Nearest center of each row: labels (n,) int32 and exact min_sq_dist (n,) float64 out.

    An empty min_sq_dist asks for the labels alone.
    """
    centers_s, half_sq_norms, n_tiles = _assign_setup(X, centers, shift)
    # Threads take whole runs of tiles so that each allocates its buffers once.
    n_runs = min(n_tiles, _MAX_CHUNKS)
    tiles_per_run = (n_tiles + n_runs - 1) // n_runs
    for run in prange(n_runs):
        _assign_tiles(
            X, centers, centers_s, half_sq_norms, shift, run * tiles_per_run,
            min((run + 1) * tiles_per_run, n_tiles), labels, min_sq_dist,
        )


@njit(nogil=True, cache=True)
def _assign_on_caller(X, centers, shift, labels, min_sq_dist):
    """``_assign`` on the calling thread: for a few rows, waking a thread team costs more
    than the work. The same arithmetic, so the same labels."""
    centers_s, half_sq_norms, n_tiles = _assign_setup(X, centers, shift)
    _assign_tiles(X, centers, centers_s, half_sq_norms, shift, 0, n_tiles, labels, min_sq_dist)


@njit(nogil=True, cache=True)
def _dot_t(a, b):
    """a . b.T for float64 matrices, through the BLAS the kernels use: single-threaded.

    The Lloyd driver's small products on the centers go through here rather than numpy's
    BLAS, whose idle threads spin for a while after each call and took a core from the
    next step (1e5x128, k=1024: 187 ms for a plain step after one, 123 ms otherwise).
    """
    return np.dot(a, b.T)


@_kernel
def _all_distances(X, centers, out):
    """Euclidean distance from every row to every center: out (n, k) in X's dtype."""
    for i in prange(X.shape[0]):
        for j in range(centers.shape[0]):
            out[i, j] = math.sqrt(_sq_distance(X, i, centers, j))


@_kernel
def _sq_distances_to_assigned(X, centers, labels, out):
    """Squared distance of each row to the center it is labelled with: out (n,) float64."""
    for i in prange(X.shape[0]):
        out[i] = _sq_distance(X, i, centers, labels[i])


@_kernel
def _column_sums(X, partial_sums, partial_sq_dev, mean):
    """Per-chunk column sums of X, then (when mean is given) of squared deviations.

    partial_sums and partial_sq_dev (c, d) float64 out; mean (d,) float64 or empty.
    """
    n_samples, n_features = X.shape
    n_chunks = partial_sums.shape[0]
    chunk_rows = (n_samples + n_chunks - 1) // n_chunks
    with_mean = mean.shape[0] == n_features
    for chunk in prange(n_chunks):
        start = chunk * chunk_rows
        stop = min(start + chunk_rows, n_samples)
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
