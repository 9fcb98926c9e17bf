"""A step's sums moved with the rows whose label changed, against the sums taken anew."""

from __future__ import annotations

import math

import numpy as np
import pytest

from centroidal.engine import _bounded, _common, _lloyd, bounds, chunks, kmeans, lloyd
from centroidal.engine.seeding import shift_for
from tests import naive
from tests.engine.test_kernels import DTYPES, assert_nearest, data


class Steps:
    """The per-chunk outputs of steps over one X, kept from step to step as a workspace
    keeps them, and a step of any kind run over them."""

    def __init__(self, X: np.ndarray, weights: np.ndarray, n_clusters: int, n_groups: int = 1) -> None:
        self.X, self.weights = X, weights
        n_chunks = _common.n_chunks_for(X.shape[0], n_clusters, X.shape[1])
        self.n_chunks = n_chunks
        self.labels = np.full(X.shape[0], -1, dtype=np.int32)
        self.lower = np.zeros((X.shape[0], n_groups), dtype=X.dtype)
        self.totals = np.zeros((n_chunks, n_clusters, 4))
        self.sq = np.full(n_chunks, np.nan)
        self.out = (np.zeros((n_chunks, n_clusters, X.shape[1])), np.zeros((n_chunks, n_clusters)),
                    np.zeros(n_chunks), np.zeros(n_chunks, dtype=np.int64), np.zeros(n_chunks, dtype=np.int64))
        self.shift = shift_for(X)  # one shift for every narrow step, as the workspace's

    def narrow(self, centers: np.ndarray, afresh: bool, exact: bool = False) -> int:
        chunks.run(_lloyd.narrow_step, self.n_chunks, self.X, centers, self.shift, exact, afresh, self.labels,
                   self.totals, self.sq, *self.out)
        return int(self.out[3].sum())

    def plain(self, centers: np.ndarray, afresh: bool, exact: bool = False) -> int:
        chunks.run(_lloyd.plain_step, self.n_chunks, self.X, self.weights, centers, shift_for(centers), exact,
                   afresh, self.labels, *self.out)
        return int(self.out[3].sum())

    def bounded(self, centers: np.ndarray, afresh: bool, use_bounds: bool, moves: np.ndarray) -> int:
        c64 = centers.astype(np.float64)
        gaps = np.sqrt(np.sort(naive.sq_distances(c64, c64), axis=1)[:, 1]) / 2
        order, start = bounds.group_centers(c64, self.lower.shape[1])
        margin = 1e-4 if self.X.dtype == np.float32 else 1e-12
        chunks.run(_bounded.bounded_step, self.n_chunks, self.X, self.weights, centers, shift_for(centers), gaps,
                   order, start, moves, margin, use_bounds, False, afresh, self.labels, self.lower, *self.out)
        return int(self.out[3].sum())

    def sums(self) -> tuple[np.ndarray, np.ndarray]:
        return self.out[0].sum(axis=0), self.out[1].sum(axis=0)

    def inertia(self) -> float:
        return float(self.out[2].sum())


def _moved(centers: np.ndarray, seed: int) -> np.ndarray:
    """The centers moved a little, so that some labels change and most do not."""
    step = np.random.default_rng(seed).normal(scale=0.4, size=centers.shape)
    return (centers + step).astype(centers.dtype)


def _assert_sums_of(steps: Steps, centers: np.ndarray, rtol: float) -> None:
    sums, totals = steps.sums()
    expected_sums, expected_totals, _ = naive.lloyd_sums(steps.X, steps.weights, steps.labels, centers)
    np.testing.assert_allclose(sums, expected_sums, rtol=rtol, atol=rtol * np.abs(expected_sums).max())
    np.testing.assert_allclose(totals, expected_totals, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [2, 3])
def test_narrow_steps_move_the_rows_whose_label_changed(dtype: type, n_features: int) -> None:
    X, centers = data(dtype, n=10_001, d=n_features, k=9, seed=20)
    steps = Steps(X, np.empty(0), 9)
    steps.narrow(centers, afresh=True)
    for seed in range(3):
        centers = _moved(centers, seed)
        before = steps.labels.copy()
        changed = steps.narrow(centers, afresh=False)
        assert 0 < changed < X.shape[0] // 4 and changed == (steps.labels != before).sum()
        assert_nearest(steps.labels, X, centers, dtype)
        # The tiles hold X - shift in X's dtype: sums good to its rounding of them.
        _assert_sums_of(steps, centers, 1e-7 if dtype == np.float32 else 1e-12)
    # A step that changes no label moves nothing: the centers it gives stay put exactly.
    sums = steps.sums()
    assert steps.narrow(centers, afresh=False) == 0
    np.testing.assert_array_equal(steps.sums()[0], sums[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [3, 5, 16, 20])  # scanned from 5 to 16, a GEMM past
@pytest.mark.parametrize("weighted", [False, True])
def test_plain_steps_move_the_rows_whose_label_changed(dtype: type, n_features: int, weighted: bool) -> None:
    X, centers = data(dtype, n=10_001, d=n_features, k=9, seed=21)
    weights = np.random.default_rng(22).uniform(0.5, 2.0, size=X.shape[0]) if weighted else np.empty(0)
    steps = Steps(X, weights, 9)
    steps.plain(centers, afresh=True)
    for seed in range(3):
        centers = _moved(centers, seed)
        before = steps.labels.copy()
        changed = steps.plain(centers, afresh=False, exact=seed == 2)
        assert 0 < changed < X.shape[0] // 4 and changed == (steps.labels != before).sum()
        assert_nearest(steps.labels, X, centers, dtype)
        _assert_sums_of(steps, centers, 1e-12)
        _, _, expected_inertia = naive.lloyd_sums(X, weights, steps.labels, centers)
        assert steps.inertia() == pytest.approx(expected_inertia, rel=1e-9 if seed == 2 else 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features", [3, 16, 20])
def test_bounded_steps_move_the_rows_whose_label_changed(dtype: type, n_features: int) -> None:
    X, centers = data(dtype, n=10_001, d=n_features, k=9, seed=23)
    steps = Steps(X, np.empty(0), 9, n_groups=3)
    steps.plain(centers, afresh=True)
    no_moves = np.zeros(3)
    # Setting the bounds searches every row; the rows that keep their label add nothing.
    centers = _moved(centers, 0)
    assert steps.bounded(centers, afresh=False, use_bounds=False, moves=no_moves) > 0
    _assert_sums_of(steps, centers, 1e-12)
    # Using them settles most rows, which keep their label and their place in the sums.
    moved = _moved(centers, 1)
    shifts = np.sqrt(((moved.astype(np.float64) - centers) ** 2).sum(axis=1))
    order, start = bounds.group_centers(centers.astype(np.float64), 3)
    group_move = np.maximum.reduceat(shifts[order], start[:-1])
    before = steps.labels.copy()
    changed = steps.bounded(moved, afresh=False, use_bounds=True, moves=group_move)
    assert int(steps.out[4].sum()) < X.shape[0]  # rows settled by their bounds
    assert 0 < changed == (steps.labels != before).sum()
    assert_nearest(steps.labels, X, moved, dtype)
    _assert_sums_of(steps, moved, 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_narrow_inertia_from_the_rows_norms_taken_once(dtype: type) -> None:
    X, centers = data(dtype, n=10_001, d=3, k=9, seed=24)
    steps = Steps(X, np.empty(0), 9)
    steps.narrow(centers, afresh=True)
    assert not np.isnan(steps.sq).any()  # each chunk's sum of |x - shift|^2, taken once
    first = steps.inertia()
    centers = _moved(centers, 0)
    steps.narrow(centers, afresh=False)
    _, _, expected = naive.lloyd_sums(X, np.empty(0), steps.labels, centers)
    assert steps.inertia() == pytest.approx(expected, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert steps.inertia() != first
    # With the exact inertia the norms are not needed, and the sums kept are not used.
    steps.narrow(centers, afresh=False, exact=True)
    assert steps.inertia() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n_features", [3, 16])
@pytest.mark.parametrize("weighted", [False, True])
def test_fits_moving_the_sums_match_fits_summing_anew(
    monkeypatch: pytest.MonkeyPatch, n_features: int, weighted: bool
) -> None:
    # Restarts reuse one workspace, and each fit ends in a step by another shift: the
    # sums kept must be dropped or moved as the workspace's steps change.
    X, centers = data(np.float32, n=20_000, d=n_features, k=12, seed=25)
    weights = np.random.default_rng(26).uniform(0.5, 2.0, size=X.shape[0]) if weighted else None
    moving = kmeans.fit(X, 12, seed=3, n_init=2, sample_weight=weights)
    monkeypatch.setattr(lloyd, "_MOVES_BELOW_CHANGED_SHARE", -math.inf)
    monkeypatch.setattr(lloyd, "_NARROW_MOVES_BELOW_CHANGED_SHARE", -math.inf)
    anew = kmeans.fit(X, 12, seed=3, n_init=2, sample_weight=weights)
    np.testing.assert_array_equal(moving.labels, anew.labels)
    np.testing.assert_allclose(moving.centers, anew.centers, rtol=1e-6)
    assert moving.inertia == pytest.approx(anew.inertia, rel=1e-6)
    assert moving.n_iter == anew.n_iter


@pytest.mark.parametrize("n_features", [3, 16])
def test_workspace_sums_follow_the_labels_through_every_kind_of_step(n_features: int) -> None:
    # Steps whose inertia is exact take another shift than the narrow steps' own: the sums
    # of X - shift a narrow step keeps must not be moved across one.
    X, centers = data(np.float32, n=10_001, d=n_features, k=9, seed=27)
    centers = kmeans.fit(X, 9, init=centers, n_init=1).centers
    work = lloyd.Workspace(X.shape[0], 9, n_features, X.dtype)
    for seed, exact in enumerate([False, False, True, False, False]):
        centers = (centers + np.random.default_rng(seed).normal(scale=0.05, size=centers.shape)).astype(X.dtype)
        moving = work.changed_share < lloyd._NARROW_MOVES_BELOW_CHANGED_SHARE
        work.step(X, kmeans.UNIT_WEIGHTS, centers, exact_inertia=exact)
        assert moving or seed < 2  # after the first two, few labels change: the sums are moved
        sums, totals, inertia = naive.lloyd_sums(X, np.empty(0), work.labels, centers)
        np.testing.assert_allclose(work.partial_sums.sum(axis=0), sums, rtol=1e-7)
        np.testing.assert_array_equal(work.partial_weights.sum(axis=0), totals)
