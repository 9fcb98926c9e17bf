"""Every compiled kernel against its slow, obvious reference in tests/naive.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from centroidal.engine import (
    _bounded, _common, _groups, _lloyd, _nearest, _seeding, _sums, _validation, bounds, chunks, ministep,
    validation,
)
from centroidal.engine._sums import TILE_SUMS_FEATURES
from centroidal.engine.seeding import shift_for
from tests import naive

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-4, np.float64: 1e-10}


def data(dtype: type, n: int = 3000, d: int = 5, k: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d)) + 20.0
    X = centers[rng.integers(k, size=n)] + rng.normal(size=(n, d))
    return X.astype(dtype), rng.normal(scale=4.0, size=(k, d)).astype(dtype) + dtype(20.0)


def assert_nearest(labels: np.ndarray, X: np.ndarray, centers: np.ndarray, dtype: type) -> None:
    """Each label is a nearest center, up to the rounding of the GEMM form in this dtype."""
    dist = naive.sq_distances(X, centers)
    chosen = dist[np.arange(X.shape[0]), labels]
    np.testing.assert_allclose(chosen, dist.min(axis=1), rtol=RTOL[dtype] * 10, atol=1e-9)
    assert (labels == dist.argmin(axis=1)).mean() > 0.999


@pytest.mark.parametrize("dtype", DTYPES)
def test_shifted_centers(dtype: type) -> None:
    _, centers = data(dtype)
    shift = shift_for(centers)
    moved = np.empty_like(centers)
    half = np.empty(centers.shape[0], dtype=dtype)
    _common.shifted_centers(centers, shift, moved, half)
    expected_moved, expected_half = naive.shifted_centers(centers, shift)
    np.testing.assert_allclose(moved, expected_moved, rtol=RTOL[dtype])
    np.testing.assert_allclose(half, expected_half, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_scan_nearest_and_two_nearest(dtype: type) -> None:
    rng = np.random.default_rng(1)
    k, tile = 9, 256
    dots = rng.normal(size=(k, tile)).astype(dtype)
    half = rng.normal(size=k).astype(dtype)
    ids = np.arange(k).astype(dtype)
    rows = 200
    best = np.empty(tile, dtype=dtype)
    best_id = np.empty(tile, dtype=dtype)
    second = np.empty(tile, dtype=dtype)
    expected_best, expected_id, expected_second = naive.scan_nearest(dots, rows, half)
    _nearest._scan_nearest(dots, rows, half, ids, best, best_id)
    np.testing.assert_allclose(best[:rows], expected_best, rtol=RTOL[dtype])
    np.testing.assert_array_equal(best_id[:rows].astype(int), expected_id)
    _groups._scan_group(dots, rows, half, ids, np.arange(k), best, second, best_id)
    np.testing.assert_allclose(second[:rows], expected_second, rtol=RTOL[dtype])
    np.testing.assert_array_equal(best_id[:rows].astype(int), expected_id)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scan_groups(dtype: type) -> None:
    rng = np.random.default_rng(5)
    k, tile, rows = 23, 256, 190
    dots = rng.normal(size=(k, tile)).astype(dtype)
    half = rng.normal(size=k).astype(dtype)
    # A tie across groups: center 20 repeats center 3, and the lower index must win.
    dots[20], half[20] = dots[3], half[3]
    group = rng.integers(4, size=k)
    order = np.argsort(group, kind="stable").astype(np.int64)
    start = np.searchsorted(group[order], np.arange(5)).astype(np.int64)
    group_best = np.empty((4, tile), dtype=dtype)
    group_second = np.empty((4, tile), dtype=dtype)
    scratch = [np.empty(tile, dtype=dtype) for _ in range(3)]
    best_group = np.empty(tile, dtype=np.int64)
    _groups.scan_groups(dots, rows, half, np.arange(k).astype(dtype), order, start, group_best,
                        group_second, scratch[0], scratch[1], scratch[2], best_group)
    expected_best, expected_id, _ = naive.scan_nearest(dots, rows, half)
    np.testing.assert_allclose(scratch[1][:rows], expected_best, rtol=RTOL[dtype])
    np.testing.assert_array_equal(scratch[2][:rows].astype(int), expected_id)
    np.testing.assert_array_equal(best_group[:rows], group[expected_id])
    for g in range(4):
        members = np.flatnonzero(group == g)
        g_best, _, g_second = naive.scan_nearest(dots[members], rows, half[members])
        np.testing.assert_allclose(group_best[g, :rows], g_best, rtol=RTOL[dtype])
        np.testing.assert_allclose(group_second[g, :rows], g_second, rtol=RTOL[dtype])


def transposed_tile(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X's rows in a transposed tile, as a direct scan takes them, with the centers shifted
    as it takes them: (centers_s, half their squared norms, tile)."""
    dtype, (k, d) = X.dtype, centers.shape
    width = _common.tile_width.py_func(d)
    shift = shift_for(centers)
    centers_s, half = np.zeros((k, width), dtype=dtype), np.empty(k, dtype=dtype)
    _common.shifted_centers(centers, shift, centers_s, half)
    tile = np.zeros((width, _common.TILE_ROWS), dtype=dtype)
    (_common.put_narrow_tile if d <= _common.NARROW else _common.put_mid_tile)(X, 0, X.shape[0], shift, tile)
    return centers_s, half, tile


def scan_mid_groups(centers_s: np.ndarray, half: np.ndarray, tile: np.ndarray, rows: int, n_features: int,
                    group: np.ndarray) -> tuple[np.ndarray, ...]:
    """_groups.mid_scan_groups with center j in group[j] (groups 0..G-1): each group's best
    and second values (G, T), and each column's best value, center id and group (T,)."""
    dtype, n_groups = tile.dtype, int(group.max()) + 1
    order = np.argsort(group, kind="stable").astype(np.int64)
    start = np.searchsorted(group[order], np.arange(n_groups + 1)).astype(np.int64)
    group_best = np.empty((n_groups, _common.TILE_ROWS), dtype=dtype)
    group_second = np.empty((n_groups, _common.TILE_ROWS), dtype=dtype)
    group_id, best, best_id = (np.empty(_common.TILE_ROWS, dtype=dtype) for _ in range(3))
    best_group = np.empty(_common.TILE_ROWS, dtype=np.int64)
    _groups.mid_scan_groups(centers_s, half, tile, rows, n_features, np.arange(len(group)).astype(dtype), order,
                            start, group_best, group_second, group_id, best, best_id, best_group)
    return group_best, group_second, best, best_id, best_group


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [5, 8, 9, 16])
def test_mid_scan_groups_match_the_gemm_form(dtype: type, n_features: int) -> None:
    # A bounded step's searched rows of 5 to 16 features are scanned per group directly:
    # the same best, center, group and second values as the GEMM form gives. A scan's pass
    # takes four centers: the groups' sizes meet every length of a short last pass, and a
    # group of one has no second value (inf).
    X, centers = data(dtype, n=190, d=n_features, k=23, seed=6)
    centers[3] = centers[20] = X[0]  # a tie across groups, row 0's nearest: the lower index must win
    k, rows = centers.shape[0], X.shape[0]
    centers_s, half, tile = transposed_tile(X, centers)
    group = np.random.default_rng(7).integers(4, size=k)
    group[3], group[20], group[22] = 0, 2, 4
    group_best, group_second, best, best_id, best_group = scan_mid_groups(
        centers_s, half, tile, rows, n_features, group
    )
    dots = centers_s.astype(np.float64) @ tile.astype(np.float64)
    expected_best, expected_id, _ = naive.scan_nearest(dots, rows, half)
    scale = np.abs(expected_best).max()
    np.testing.assert_allclose(best[:rows], expected_best, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)
    np.testing.assert_array_equal(best_id[:rows].astype(int), expected_id)
    assert 3 in expected_id and 20 not in best_id[:rows].astype(int)
    np.testing.assert_array_equal(best_group[:rows], group[expected_id])
    sizes = np.bincount(group)
    assert set(sizes % 4) == {0, 1, 2, 3} and 1 in sizes
    for g in range(5):
        members = np.flatnonzero(group == g)
        g_best, _, g_second = naive.scan_nearest(dots[members], rows, half[members])
        np.testing.assert_allclose(group_best[g, :rows], g_best, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)
        np.testing.assert_allclose(group_second[g, :rows], g_second, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [1, 2, 3, 4, 5, 8, 9, 16])
def test_tiles_hold_the_shifted_rows_a_feature_per_row(dtype: type, n_features: int) -> None:
    # Narrow rows are read with a constant stride per width, and rows of 8 or 16 features
    # eight at a time by shuffles: every way gives X - shift transposed, to the bit. Tile
    # rows past the data's features repeat its last, but the upper 8 of a mid tile at d <= 8,
    # which are left as they were.
    X, _ = data(dtype, n=300, d=n_features, seed=9)
    shift = X[:40].mean(axis=0).astype(dtype)
    narrow = n_features <= _common.NARROW
    width = _common.tile_width.py_func(n_features)
    put = _common.put_narrow_tile if narrow else _common.put_mid_tile
    for start, rows in [(0, 256), (37, 203), (291, 9), (5, 7)]:
        tile = np.full((width, _common.TILE_ROWS), -7.0, dtype=dtype)
        put(X, start, rows, shift, tile)
        shifted = (X[start:start + rows] - shift).T
        np.testing.assert_array_equal(tile[:n_features, :rows], shifted)
        filled = width if narrow or n_features > 8 else 8
        for f in range(n_features, filled):
            np.testing.assert_array_equal(tile[f, :rows], shifted[-1])
        assert (tile[filled:, :rows] == -7.0).all() and (tile[:, rows:] == -7.0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [1, 3, 4, 5, 8, 9, 16])
def test_scan_blocks_alone_and_by_groups_agree_to_the_bit(dtype: type, n_features: int) -> None:
    # The direct scans label a block of columns at a time, and a bounded step's group scan
    # forms the mid values again by its own block: a column's value must not depend on
    # where it sits in a block, nor on the scan, to the bit, so that no path labels a near
    # tie its own way. The 203 columns end inside a block; each is also scanned alone.
    X, centers = data(dtype, n=203, d=n_features, k=23, seed=8)
    k, rows = centers.shape[0], X.shape[0]
    centers_s, half, tile = transposed_tile(X, centers)
    scan = _nearest._scan_direct
    ids = np.arange(k).astype(dtype)
    best, best_id = np.empty(_common.TILE_ROWS, dtype=dtype), np.empty(_common.TILE_ROWS, dtype=dtype)
    scan(centers_s, half, tile, rows, n_features, best, best_id, ids)
    alone_best, alone_id = np.empty(rows, dtype=dtype), np.empty(rows, dtype=dtype)
    one_best, one_id = np.empty_like(best), np.empty_like(best_id)
    for r in range(rows):
        column = np.zeros_like(tile)
        column[:, 0] = tile[:, r]
        scan(centers_s, half, column, 1, n_features, one_best, one_id, ids)
        alone_best[r], alone_id[r] = one_best[0], one_id[0]
    np.testing.assert_array_equal(best[:rows], alone_best)
    np.testing.assert_array_equal(best_id[:rows], alone_id)
    dots = centers_s.astype(np.float64) @ tile.astype(np.float64)
    expected_best, expected_id, _ = naive.scan_nearest(dots, rows, half)
    np.testing.assert_array_equal(best_id[:rows].astype(int), expected_id)
    if n_features <= _common.NARROW:
        return  # a bounded step searches narrow rows by the GEMM form
    _, _, by_groups, by_groups_id, _ = scan_mid_groups(centers_s, half, tile, rows, n_features, np.arange(k) % 3)
    np.testing.assert_array_equal(by_groups[:rows], best[:rows])
    np.testing.assert_array_equal(by_groups_id[:rows], best_id[:rows])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("on_caller", [False, True])
@pytest.mark.parametrize("n_features", [1, 3, 4, 5, 8, 9, 16])
def test_assign(dtype: type, on_caller: bool, n_features: int) -> None:
    # Up to MID features the tiles are scanned directly (the upper 8 of its 16 from 9
    # features). Past it a GEMM labels the rows, and its float32 products of equal centers
    # can differ in the last bit by where the centers sit in its blocks, so the tie below
    # is not always the lowest index's there.
    X, centers = data(dtype, d=n_features)
    # Equal centers, nearest to row 0, in one block of four and past it: the lowest index
    # wins every tie.
    centers[1] = centers[2] = centers[5] = X[0]
    labels = np.empty(X.shape[0], dtype=np.int32)
    min_sq = np.empty(X.shape[0])
    chunks.run(_lloyd.assign, _common.n_tiles_for(X.shape[0]), X, centers, shift_for(centers), labels, min_sq,
               on_caller=on_caller)
    assert_nearest(labels, X, centers, dtype)
    assert 1 in labels and 2 not in labels and 5 not in labels
    expected = naive.sq_distances(X, centers)[np.arange(X.shape[0]), labels]
    np.testing.assert_allclose(min_sq, expected, rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_distances_and_distances_to_assigned(dtype: type) -> None:
    X, centers = data(dtype, n=500)
    out = np.empty((X.shape[0], centers.shape[0]), dtype=dtype)
    chunks.run(_lloyd.all_distances, X.shape[0], X, centers, out)
    np.testing.assert_allclose(out, np.sqrt(naive.sq_distances(X, centers)), rtol=RTOL[dtype])
    labels = np.random.default_rng(2).integers(centers.shape[0], size=X.shape[0]).astype(np.int32)
    assigned = np.empty(X.shape[0])
    chunks.run(_lloyd.sq_distances_to_assigned, X.shape[0], X, centers, labels, assigned)
    np.testing.assert_allclose(assigned, naive.sq_distances(X, centers)[np.arange(X.shape[0]), labels], rtol=1e-12)


def _step(X: np.ndarray, weights: np.ndarray, centers: np.ndarray, mode: int, labels: np.ndarray,
          lower: np.ndarray, groups: tuple[np.ndarray, np.ndarray],
          group_move: np.ndarray | None = None, exact: bool = True) -> tuple[np.ndarray, ...]:
    n_chunks = _common.n_chunks_for(X.shape[0], centers.shape[0], X.shape[1])
    sums = np.empty((n_chunks, *centers.shape))
    totals = np.empty((n_chunks, centers.shape[0]))
    inertia = np.empty(n_chunks)
    changed = np.empty(n_chunks, dtype=np.int64)
    computed = np.empty(n_chunks, dtype=np.int64)
    c64 = centers.astype(np.float64)
    gaps = np.sqrt(np.sort(naive.sq_distances(c64, c64), axis=1)[:, 1]) / 2
    margin = 1e-4 if X.dtype == np.float32 else 1e-12
    order, start = groups
    if group_move is None:
        group_move = np.full(start.size - 1, math.inf)
    out = (sums, totals, inertia, changed, computed)
    # As lloyd.Workspace.step calls them.
    if mode == _lloyd.MODE_PLAIN and X.shape[1] <= TILE_SUMS_FEATURES and weights.size == 0:
        chunks.run(_lloyd.narrow_step, n_chunks, X, centers, shift_for(centers), exact, True, labels,
                   np.empty((n_chunks, centers.shape[0], 4)), np.empty(0), *out)
    elif mode == _lloyd.MODE_PLAIN:
        chunks.run(_lloyd.plain_step, n_chunks, X, weights, centers, shift_for(centers), exact, True, labels,
                   *out)
    else:
        chunks.run(_bounded.bounded_step, n_chunks, X, weights, centers, shift_for(centers), gaps, order, start,
                   group_move, margin, mode == _lloyd.MODE_USE_BOUNDS, exact, True, labels, lower, *out)
    return sums.sum(axis=0), totals.sum(axis=0), inertia.sum(), changed.sum(), computed.sum()


def _group_lower_bounds(X: np.ndarray, centers: np.ndarray, labels: np.ndarray,
                        groups: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The true distance from each row to the nearest center of each group but its own."""
    dist = np.sqrt(naive.sq_distances(X, centers))
    dist[np.arange(X.shape[0]), labels] = np.inf
    order, start = groups
    return np.stack([dist[:, order[a:b]].min(axis=1) for a, b in zip(start[:-1], start[1:])], axis=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n_groups", [1, 3])
# Up to 3 features a plain step sums each tile by cluster at unit weight; from 4 it adds row
# by row. Up to 16 the plain step scans its tiles directly; the bounded steps, and every
# step past 16, take a GEMM.
@pytest.mark.parametrize("n_features", [3, 4, 5, 16, 17])
def test_lloyd_step_in_every_mode(dtype: type, weighted: bool, n_groups: int, n_features: int) -> None:
    X, centers = data(dtype, d=n_features)
    weights = np.random.default_rng(3).uniform(0.5, 2.0, size=X.shape[0]) if weighted else np.empty(0)
    groups = bounds.group_centers(centers.astype(np.float64), n_groups)
    assert groups[1].size == n_groups + 1
    labels = np.full(X.shape[0], -1, dtype=np.int32)
    lower = np.zeros((X.shape[0], n_groups), dtype=dtype)
    for mode in (_lloyd.MODE_PLAIN, _lloyd.MODE_SET_BOUNDS):
        previous = labels.copy()
        sums, totals, inertia, changed, computed = _step(X, weights, centers, mode, labels, lower, groups)
        assert_nearest(labels, X, centers, dtype)
        expected_sums, expected_totals, expected_inertia = naive.lloyd_sums(X, weights, labels, centers)
        # The narrow plain step sums each tile of X - shift in X's dtype, then in float64.
        tile_sums = mode == _lloyd.MODE_PLAIN and n_features <= TILE_SUMS_FEATURES and not weighted
        np.testing.assert_allclose(
            sums, expected_sums, rtol=1e-7 if tile_sums and dtype == np.float32 else 1e-9
        )
        np.testing.assert_allclose(totals, expected_totals, rtol=1e-12)
        assert inertia == pytest.approx(expected_inertia, rel=1e-9)
        assert changed == (labels != previous).sum() and computed == X.shape[0]
        # The same step with the inertia read off the GEMM: the same labels and sums, and the
        # inertia good to the dtype's rounding.
        again = labels.copy()
        sums2, _, inexact, changed, _ = _step(X, weights, centers, mode, again, lower.copy(), groups,
                                              exact=False)
        np.testing.assert_array_equal(again, labels)
        np.testing.assert_array_equal(sums2, sums)
        assert changed == 0 and (inexact != inertia or dtype == np.float64)
        assert inexact == pytest.approx(expected_inertia, rel=1e-5 if dtype == np.float32 else 1e-12)
    # The bounds set are true lower bounds on the distance to every other center of each
    # group, and close to it.
    truth = _group_lower_bounds(X, centers, labels, groups)
    assert (lower <= truth * (1 + 1e-6) + 1e-9).all()
    # (In float32 the margin for the GEMM's rounding, relative to |x - s|^2, loosens them
    # most where distances are small beside the spread: at d = 3, by up to 0.2%.)
    np.testing.assert_allclose(lower, truth, rtol=1e-3 if dtype == np.float64 else 3e-3)
    # Centers moved a little: bounded rows are skipped, and the answer is the same.
    moved = centers.copy()
    moved[0] += np.asarray(0.3, dtype=dtype)
    moved[1:] += np.asarray(0.01, dtype=dtype)
    moves = np.sqrt(((moved.astype(np.float64) - centers) ** 2).sum(axis=1))
    order, start = groups
    group_move = np.maximum.reduceat(moves[order], start[:-1])
    _, _, inertia, _, computed = _step(X, weights, moved, _lloyd.MODE_USE_BOUNDS, labels, lower,
                                       groups, group_move)
    assert computed < X.shape[0]
    assert_nearest(labels, X, moved, dtype)
    assert inertia == pytest.approx(naive.lloyd_sums(X, weights, labels, moved)[2], rel=1e-9)
    # Every bound kept or reset is still a lower bound for the moved centers.
    assert (lower <= _group_lower_bounds(X, moved, labels, groups) * (1 + 1e-6) + 1e-9).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [1, 2, 3])
@pytest.mark.parametrize("k", [2, 6, 16])
def test_plain_step_sums_narrow_tiles_by_cluster(dtype: type, n_features: int, k: int) -> None:
    # 70,001 rows: many chunks, and a last tile of one row; k = 2 and 6 leave a pass of four
    # clusters short. Equal centers: the lowest index takes every row, the others stay empty.
    X, centers = data(dtype, n=70_001, d=n_features, k=k, seed=4)
    centers[-1] = centers[0]
    labels = np.full(X.shape[0], -1, dtype=np.int32)
    groups = bounds.group_centers(centers.astype(np.float64), 1)
    for exact in (True, False):
        sums, totals, inertia, _, _ = _step(
            X, np.empty(0), centers, _lloyd.MODE_PLAIN, labels, np.zeros((0, 1), dtype), groups,
            exact=exact,
        )
        assert_nearest(labels, X, centers, dtype)
        x64 = X.astype(np.float64)
        expected_totals = np.bincount(labels, minlength=k).astype(np.float64)
        expected_sums = np.stack([np.bincount(labels, x64[:, f], minlength=k) for f in range(n_features)], axis=1)
        expected_inertia = ((x64 - centers.astype(np.float64)[labels]) ** 2).sum()
        np.testing.assert_array_equal(totals, expected_totals)
        np.testing.assert_allclose(sums, expected_sums, rtol=1e-7 if dtype == np.float32 else 1e-12)
        rel = 1e-9 if exact else (1e-5 if dtype == np.float32 else 1e-12)
        assert inertia == pytest.approx(expected_inertia, rel=rel)
    assert totals[-1] == 0 and totals[0] > 0


def test_group_centers_partitions_the_centers_by_nearness() -> None:
    rng = np.random.default_rng(6)
    sites = rng.normal(scale=100.0, size=(4, 8))
    centers = np.repeat(sites, 10, axis=0) + rng.normal(size=(40, 8))
    order, start = bounds.group_centers(centers, 4)
    assert sorted(order.tolist()) == list(range(40))
    groups = [order[a:b] for a, b in zip(start[:-1], start[1:])]
    assert all((np.diff(g) > 0).all() for g in groups)
    # The four tight sites come out as the four groups.
    assert sorted(np.unique(g // 10).tolist() for g in groups) == [[0], [1], [2], [3]]
    again = bounds.group_centers(centers, 4)
    np.testing.assert_array_equal(again[0], order)
    # More groups than centers, or one group, still cover every center once.
    for n_groups in (1, 60):
        order, start = bounds.group_centers(centers[:5], n_groups)
        assert sorted(order.tolist()) == list(range(5)) and start[0] == 0 and start[-1] == 5


def test_n_groups_for_follows_k_and_d() -> None:
    assert bounds.n_groups_for(16, 3) == 1
    assert bounds.n_groups_for(64, 16) == 1
    assert bounds.n_groups_for(256, 64) == 4
    assert bounds.n_groups_for(1024, 128) == 8
    assert bounds.n_groups_for(20, 1024) == 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_sums(dtype: type) -> None:
    X, _ = data(dtype)
    n_chunks = _common.n_chunks_for(X.shape[0])
    sums = np.empty((n_chunks, X.shape[1]))
    deviations = np.empty((n_chunks, X.shape[1]))
    chunks.run(_lloyd.column_sums, n_chunks, X, sums, deviations, np.empty(0))
    mean = sums.sum(axis=0) / X.shape[0]
    chunks.run(_lloyd.column_sums, n_chunks, X, sums, deviations, mean)
    expected_sums, expected_deviations = naive.column_sums(X, mean)
    np.testing.assert_allclose(sums.sum(axis=0), expected_sums, rtol=1e-12)
    np.testing.assert_allclose(deviations.sum(axis=0), expected_deviations, rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_seeding_kernels(dtype: type, weighted: bool) -> None:
    X, centers = data(dtype)
    weights = np.random.default_rng(4).uniform(0.5, 2.0, size=X.shape[0]) if weighted else np.empty(0)
    closest = np.empty(X.shape[0])
    chunks.run(_seeding._sq_distances_to_center, X.shape[0], X, centers, 2, closest)
    np.testing.assert_allclose(closest, naive.sq_distances(X, centers)[:, 2], rtol=1e-12)
    chunks.run(_seeding._lower_closest, X.shape[0], X, centers, 5, closest)
    np.testing.assert_allclose(closest, naive.sq_distances(X, centers)[:, [2, 5]].min(axis=1), rtol=1e-12)
    n_chunks = _common.n_chunks_for(X.shape[0])
    candidates = np.ascontiguousarray(X[[10, 200, 3000 - 1]])
    pots = np.empty((n_chunks, candidates.shape[0]))
    chunks.run(_seeding._candidate_potentials, n_chunks, X, weights, candidates, shift_for(candidates), closest,
               pots)
    np.testing.assert_allclose(
        pots.sum(axis=0), naive.candidate_potentials(X, weights, candidates, closest), rtol=RTOL[dtype]
    )
    mass = np.empty(n_chunks)
    chunks.run(_seeding._chunk_mass, n_chunks, closest, weights, mass)
    w = naive.weights_of(weights, X.shape[0])
    expected_mass = [(w[a:b] * closest[a:b]).sum() for a, b in naive.chunk_bounds(X.shape[0], n_chunks)]
    np.testing.assert_allclose(mass, expected_mass, rtol=1e-12)
    targets = np.random.default_rng(5).uniform(size=6) * mass.sum()
    rows = np.empty(6, dtype=np.int64)
    _seeding._pick_rows(closest, weights, mass, targets, rows)
    np.testing.assert_array_equal(rows, naive.pick_rows(closest, weights, targets))


@pytest.mark.parametrize("dtype", DTYPES)
def test_scan_values(dtype: type) -> None:
    X, _ = data(dtype)
    X[1234, 2] = np.nan
    X[2900, 0] = -np.inf
    X[7, 1] = -1e6
    n_chunks = _common.n_chunks_for(X.shape[0])
    bad = np.empty(n_chunks, dtype=np.int64)
    first = np.empty(n_chunks, dtype=np.int64)
    largest = np.empty(n_chunks)
    chunks.run(_validation._scan_values, n_chunks, X, bad, first, largest)
    expected_bad, expected_first, expected_largest = naive.scan_values(X)
    assert bad.sum() == expected_bad
    assert first[first >= 0].min() == expected_first
    assert largest.max() == expected_largest


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (8, 16), (2999, 5)])
def test_values_fine_refuses_nan_inf_and_values_from_the_limit_on(dtype: type, shape: tuple[int, int]) -> None:
    """values_fine's compiled pass against the limit compared in float64: NaN, Inf, and the
    values of the dtype next to the limit, at the start, middle and end, in C and Fortran
    order (which numpy's reductions check)."""
    limit = validation.FLOAT32_MAX_ABS if dtype == np.float32 else validation.FLOAT64_MAX_ABS
    X, _ = data(dtype, n=shape[0], d=shape[1])
    assert validation.values_fine(X)
    near = [dtype(limit)]
    for _ in range(2):
        near = [np.nextafter(near[0], dtype(0)), *near, np.nextafter(near[-1], dtype(np.inf))]
    cases = [(sign * value, abs(float(value)) < limit) for value in near for sign in (1, -1)]
    cases += [(dtype(np.nan), False), (dtype(np.inf), False), (dtype(-np.inf), False)]
    assert {fine for _, fine in cases} == {True, False}
    for position in {0, X.size // 2, X.size - 1}:
        for value, fine in cases:
            Y = X.copy()
            Y.reshape(-1)[position] = value
            assert validation.values_fine(Y) == fine, (position, value)
            assert validation.values_fine(np.asfortranarray(Y)) == fine, (position, value)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [700, 9000])  # one chunk, and several
def test_a_batchs_assigned_sums(dtype: type, n: int) -> None:
    X, centers = data(dtype, n=n)
    labels = naive.assign(X, centers)
    weights = np.random.default_rng(6).uniform(0.5, 2.0, size=X.shape[0])
    partial_sums, partial_totals, partial_inertia = ministep.assigned_sums(X, weights, centers)
    sums, totals, inertia = partial_sums.sum(axis=0), partial_totals.sum(axis=0), partial_inertia.sum()
    expected_sums, expected_totals, expected_inertia = naive.lloyd_sums(X, weights, labels, centers)
    np.testing.assert_allclose(sums, expected_sums, rtol=1e-9)
    np.testing.assert_allclose(totals, expected_totals, rtol=1e-12)
    # Read off the values that chose each row's center: good to the dtype's rounding.
    assert inertia == pytest.approx(expected_inertia, rel=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [3, 8, 16, 20])
@pytest.mark.parametrize("weighted", [False, True])
def test_rows_added_to_their_clusters_sums_in_order(dtype: type, n_features: int, weighted: bool) -> None:
    # Rows of 8 and 16 values are added as vectors, others a value at a time: either way each
    # value is widened, multiplied by the row's weight and added in row order, as a float64
    # loop does, to the bit.
    X, centers = data(dtype, n=300, d=n_features, k=5, seed=10)
    labels = naive.assign(X, centers).astype(np.int32)
    weights = np.random.default_rng(11).uniform(0.5, 2.0, size=300) if weighted else np.empty(0)
    sums, totals = np.zeros((5, n_features)), np.zeros(5)
    tile_sq, best_value = np.zeros(_common.TILE_ROWS, dtype=dtype), np.zeros(_common.TILE_ROWS, dtype=dtype)
    for start in range(0, 300, _common.TILE_ROWS):
        rows = min(_common.TILE_ROWS, 300 - start)
        _sums.accumulate_tile(X, weights, start, rows, labels, centers, sums, totals, tile_sq, best_value)
    expected, expected_totals = np.zeros((5, n_features)), np.zeros(5)
    for i in range(300):
        w = weights[i] if weighted else 1.0
        expected[labels[i]] += w * X[i].astype(np.float64)
        expected_totals[labels[i]] += w
    np.testing.assert_array_equal(sums, expected)
    np.testing.assert_array_equal(totals, expected_totals)
