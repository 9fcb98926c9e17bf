"""The Lloyd driver: one run of iterations from given centers, with its workspace, the
bounds that let a step skip rows whose center cannot have changed, and the memory a fit
needs. The compiled steps are in ``_lloyd``; ``kmeans`` runs restarts over this."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _common, _lloyd, chunks
from ._sums import TILE_SUMS_FEATURES
from .cosine import COSINE_PER_SQ_EUCLIDEAN, unit_centers
from .progress import Progress, Stage
from .seeding import local_trials, shift_for
from .validation import read_only


@dataclass(frozen=True)
class LloydRun:
    """Where one run of Lloyd iterations ended.

    centers : ndarray of shape (n_clusters, n_features), X's dtype
    labels : ndarray of shape (n_samples,), int32: the workspace's, valid until its next run
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int


class Workspace:
    """Buffers one Lloyd run needs, allocated once per restart.

    Besides X the O(n) buffers are the int32 labels and the lower bounds, one per row and
    group of centers in X's dtype: weights default to an empty array meaning unit weights,
    and convergence counts changed labels in the kernel.
    """

    labels: np.ndarray
    lower: np.ndarray
    partial_sums: np.ndarray
    partial_weights: np.ndarray
    partial_inertia: np.ndarray
    partial_changed: np.ndarray
    partial_computed: np.ndarray
    bound_centers: np.ndarray | None
    groups: tuple[np.ndarray, np.ndarray] | None
    changed_share: float
    skipped_share: float
    use_bounds: bool
    bounds_below: float
    plain_left: int
    backoff: int
    data_shift: np.ndarray | None

    def __init__(self, n_samples: int, n_clusters: int, n_features: int, dtype: np.dtype) -> None:
        n_chunks = _common.n_chunks_for(n_samples, n_clusters, n_features)
        self.use_bounds = uses_bounds(n_clusters, n_features)
        transposed = n_features <= _common.MID
        self.bounds_below = _BOUNDS_BELOW_CHANGED_SHARE_SCANNED if transposed else _BOUNDS_BELOW_CHANGED_SHARE
        self.n_groups = n_groups_for(n_clusters, n_features)
        self.labels = np.full(n_samples, -1, dtype=np.int32)
        self.lower = np.zeros((n_samples if self.use_bounds else 0, self.n_groups), dtype=dtype)
        self.partial_sums = np.empty((n_chunks, n_clusters, n_features), dtype=np.float64)
        self.partial_weights = np.empty((n_chunks, n_clusters), dtype=np.float64)
        self.partial_inertia = np.empty(n_chunks, dtype=np.float64)
        self.partial_changed = np.empty(n_chunks, dtype=np.int64)
        self.partial_computed = np.empty(n_chunks, dtype=np.int64)
        self.data_shift = None  # X's mean, once a step needs it (one X per workspace)
        self.reset()
        self.skipped_share = 0.0

    def reset(self) -> None:
        """Forget every label, bound and grouping, as for a new restart."""
        self.labels.fill(-1)
        self.bound_centers = None
        self.groups = None
        self.changed_share = 1.0
        self.plain_left = 0
        self.backoff = _BOUNDS_BACKOFF

    def step(
        self, X: np.ndarray, weights: np.ndarray, centers: np.ndarray, exact_inertia: bool = True
    ) -> tuple[float, int]:
        """One fused E-step: the inertia of the assignment to ``centers`` and how many labels changed.

        Without exact_inertia the inertia is good to X's dtype's rounding rather than exact:
        a row's term comes from the values that chose its center (at d = 3, an exact distance
        per row took a quarter of the step).

        Distances are taken relative to a point near the data, the shift (see
        ``_nearest.tile_nearest``): the centers' mean, as ``predict`` takes it, so that the
        final assignment (exact_inertia) labels rows as a predict of the model does. The
        iterations of data with at most TILE_SUMS_FEATURES features and unit weights take
        X's mean instead: their sums come from the shifted rows, and with a shift that does
        not move with the centers, a step that changes no label leaves the centers exactly
        where they were (the rule every driver stops on, the partitioned one included).
        """
        if not exact_inertia and X.shape[1] <= TILE_SUMS_FEATURES and weights.size == 0:
            if self.data_shift is None:
                self.data_shift = shift_for(X)
            shift = self.data_shift
        else:
            shift = shift_for(centers)
        centers64 = centers.astype(np.float64)
        mode, half_gaps = _lloyd.MODE_PLAIN, _NO_GAPS
        group_order, group_start, group_move = _ONE_GROUP, _ONE_GROUP, _NO_MOVES
        if self.plain_left > 0:
            self.plain_left -= 1
        elif self.use_bounds and self.changed_share < self.bounds_below:
            if self.groups is None:
                # Grouped once per run, by where the centers are when bounds are first set.
                self.groups = group_centers(centers64, self.n_groups)
            group_order, group_start = self.groups
            if self.bound_centers is None:
                mode = _lloyd.MODE_SET_BOUNDS
            else:
                mode = _lloyd.MODE_USE_BOUNDS
                moves = np.sqrt(((centers64 - self.bound_centers) ** 2).sum(axis=1))
                group_move = np.maximum.reduceat(moves[group_order], group_start[:-1])
                half_gaps = _half_gaps(centers64)
        out = (self.partial_sums, self.partial_weights, self.partial_inertia,
               self.partial_changed, self.partial_computed)
        n_chunks = self.partial_inertia.shape[0]
        if mode == _lloyd.MODE_PLAIN and X.shape[1] <= TILE_SUMS_FEATURES and weights.size == 0:
            chunks.run(_lloyd.narrow_step, n_chunks, X, centers, shift, exact_inertia, self.labels, *out)
        elif mode == _lloyd.MODE_PLAIN:
            chunks.run(_lloyd.plain_step, n_chunks, X, weights, centers, shift, exact_inertia, self.labels,
                       *out)
        else:
            chunks.run(
                _lloyd.bounded_step, n_chunks, X, weights, centers, shift, half_gaps, group_order,
                group_start, group_move, _REL_MARGIN[X.dtype], mode == _lloyd.MODE_USE_BOUNDS,
                exact_inertia, self.labels, self.lower, *out,
            )
        self.bound_centers = None if mode == _lloyd.MODE_PLAIN else centers64
        changed = int(self.partial_changed.sum())
        self.changed_share = changed / X.shape[0]
        # A searched row computes all k distances, a settled one only its own center's.
        n_samples, n_clusters = X.shape[0], centers.shape[0]
        searched = int(self.partial_computed.sum())
        computed = searched * n_clusters + (n_samples - searched)
        self.skipped_share = 1.0 - computed / (n_samples * n_clusters)
        if mode == _lloyd.MODE_USE_BOUNDS and self.skipped_share < _BOUNDS_MIN_SKIPPED:
            # The bounds cost more than they saved: search in full for a while, then retry,
            # waiting twice as long after each failure.
            self.plain_left, self.backoff = self.backoff, 2 * self.backoff
            self.bound_centers = None
        return float(self.partial_inertia.sum()), changed


def uses_bounds(n_clusters: int, n_features: int) -> bool:
    """Whether a fit of k centers on d features keeps bounds on the rows' distances."""
    scanned = n_features <= _common.MID
    return n_clusters * n_features >= (_BOUNDS_MIN_WORK_SCANNED if scanned else _BOUNDS_MIN_WORK)


def working_bytes(n_samples: int, n_clusters: int, n_features: int, dtype: Any) -> int:
    """The most a fit allocates beside X and its centers, in bytes: its peak, not its sum.

    Seeding holds a float64 distance per row; a Lloyd run holds an int32 label per row, a
    lower bound per row and group of centers (in X's dtype) once bounds start, and per-chunk
    sums. An empty cluster's relocation briefly adds a float64 distance and an int64 order
    per row. The server budgets a fit's memory with this figure, and a test holds the
    engine's allocations to it.
    """
    itemsize = np.dtype(dtype).itemsize
    n_chunks = _common.n_chunks_for(n_samples, n_clusters, n_features)
    seeding = n_samples * 8 + _common.n_chunks_for(n_samples) * (local_trials(n_clusters) + 1) * 8
    bounds = n_groups_for(n_clusters, n_features) * itemsize if uses_bounds(n_clusters, n_features) else 0
    per_chunk = n_chunks * (n_clusters * n_features + n_clusters + 4) * 8
    lloyd = n_samples * (4 + bounds) + per_chunk
    relocation = n_samples * (8 + 8)
    return max(seeding, lloyd + relocation)


# Bounds are kept only once the previous step changed fewer labels than this share:
# while many rows still move, most would fail the test and keeping bounds costs more than
# it saves. (Blobs from random init: a step that changed 26-29% of the labels is followed
# by one that changes 1-7%, when the group bounds skip most distances.)
_BOUNDS_BELOW_CHANGED_SHARE = 0.3
# Nor when k * d is below this: the full search costs about what testing a bound costs
# (1e6x3, k=16: 15-19 ms per plain step against 18-22 ms with bounds, plus 30 ms to set them).
_BOUNDS_MIN_WORK = 256
# Data of at most MID features is labelled by a direct scan about twice as fast a flop as
# the bounded step's GEMM was, so bounds pay later, and less: only from a k * d of
# _BOUNDS_MIN_WORK_SCANNED, once fewer than _BOUNDS_BELOW_CHANGED_SHARE_SCANNED of the
# labels changed. Per step over 30 from the same centers, 2 threads, with the GEMM (plain
# steps only, and the thresholds of wider data, in brackets): 1e6x16, k=64, blobs 14.2 ms
# (15.9, 15.3), overlapping 16.0 (16.1, 19.8); 1e6x8, k=64 runs plain: 9.8 and 10.0 ms
# (with bounds at the 1% rule 11.7 and 10.0); 1e5x16, k=1024, 12.8 and 16.8 (17.1 and
# 17.0; 12.7, 17.7). From 5 features a bounded step's search is now a direct scan per
# group too (_groups.mid_scan_groups, about 1.06 times the plain scan's time), and bounds
# kept from 10% or 30% of labels changed still measured no better over the bench's ten
# steps from random centers (two rounds, per step against scikit-learn's): 1e6x16, k=64,
# blobs 0.48-0.50 at 1%, 0.51-0.53 at 10%, 0.54-0.55 at 30%, overlapping 0.45-0.48,
# 0.55-0.57, 0.57-0.61; 1e6x8, k=64, 1e5x16, k=1024 and 1e6x5, k=256 within noise.
_BOUNDS_MIN_WORK_SCANNED = 1024
_BOUNDS_BELOW_CHANGED_SHARE_SCANNED = 0.01
# A bounded step that skipped less than this share of the distances cost more than a plain
# one (overlapping data: 2e5x64, k=256 skipped 7% and ran 1.3x slower than the plain step):
# the next _BOUNDS_BACKOFF steps are plain, then bounds are tried again, the wait doubling.
_BOUNDS_MIN_SKIPPED = 0.35
_BOUNDS_BACKOFF = 2
_NO_GAPS = np.zeros(1)
_NO_MOVES = np.zeros(1)
_ONE_GROUP = np.zeros(2, dtype=np.int64)  # placeholder order and start while no bounds are used

# About this many centers per group of bounds (Yinyang's choice); and at most one group per
# _FEATURES_PER_GROUP features, so that the bounds take no more memory than the labels, a
# sixteenth of X's, and their upkeep stays small beside a row's own distance. (Blobs,
# 1e5x128, k=1024: 4, 8, 16 and 32 groups skipped 96-99% of the distances by the 10th step,
# one group 91%; 2e5x64, k=256: 2, 4 and 8 groups 90-91%; at d=16, 4 groups skipped no
# more than one, and their upkeep cost more.)
_CENTERS_PER_GROUP = 10
_FEATURES_PER_GROUP = 16

# Relative error allowed for in a GEMM-derived squared distance, per dtype.
_REL_MARGIN = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-12}


def n_groups_for(n_clusters: int, n_features: int) -> int:
    """How many groups of centers keep a lower bound per row: 1 is Hamerly's single bound."""
    by_clusters = n_clusters // _CENTERS_PER_GROUP
    by_memory = n_features // _FEATURES_PER_GROUP
    return max(1, min(by_clusters, by_memory))


def group_centers(centers: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the centers into at most n_groups groups of nearby centers.

    Returns (order, start), int64: group g is order[start[g]:start[g + 1]], ascending. Groups
    come from a few Lloyd steps on the centers themselves, started from n_groups of them
    evenly spaced in their order, so they depend on nothing but the centers.
    """
    n_clusters = centers.shape[0]
    if n_groups <= 1:
        return np.arange(n_clusters, dtype=np.int64), np.array([0, n_clusters], dtype=np.int64)
    points = centers - centers.mean(axis=0)
    # Seeds spread over the centers' order, not the farthest points: those are outliers, and
    # from them one group took nearly every center (overlapping data, k=1024: 1016 of them).
    means = points[(np.arange(n_groups) * n_clusters) // n_groups].copy()
    group = np.zeros(n_clusters, dtype=np.int64)
    for _ in range(_GROUPING_STEPS):
        cross = _common.dot_t(points, means)
        sq = (points**2).sum(axis=1)[:, None] - 2.0 * cross + (means**2).sum(axis=1)
        group = sq.argmin(axis=1)
        for g in range(means.shape[0]):
            members = group == g
            if members.any():
                means[g] = points[members].mean(axis=0)
    used, group = np.unique(group, return_inverse=True)
    order = np.argsort(group, kind="stable").astype(np.int64)
    start = np.searchsorted(group[order], np.arange(used.size + 1)).astype(np.int64)
    return order, start


_GROUPING_STEPS = 5


def _half_gaps(centers: np.ndarray) -> np.ndarray:
    """Half the distance from each center to its nearest other center, shape (k,), float64."""
    if centers.shape[0] == 1:
        return np.full(1, np.inf)
    centered = centers - centers.mean(axis=0)
    sq_norms = (centered**2).sum(axis=1)
    # |ci - cj|^2 = |cj|^2 + (|ci|^2 - 2 ci.cj): the bracket's minimum over i, formed in place
    # in the Gram matrix (k = 1024: 3 passes over 8 MB instead of 3 new 8 MB arrays).
    partial = _common.dot_t(centered, centered)
    partial *= -2.0
    partial += sq_norms[None, :]
    np.fill_diagonal(partial, np.inf)
    sq_dist = partial.min(axis=1) + sq_norms
    # The expansion can round up by about eps * |c|^2: take that off so the gap stays a bound.
    slack = 1e-12 * (sq_norms.max() + 1e-300)
    return 0.5 * np.sqrt(np.maximum(sq_dist - slack, 0.0))


def run_lloyd(
    X: np.ndarray,
    weights: np.ndarray,
    centers: np.ndarray,
    max_iter: int,
    abs_tol: float,
    work: Workspace,
    restart: int,
    n_init: int,
    spherical: bool = False,
) -> Generator[Progress, None, LloydRun]:
    """Lloyd iterations from ``centers``; stops on unchanged labels or shift <= abs_tol.

    With ``spherical`` the rows have unit length, each new center is scaled to unit
    length, and the inertia is reported as cosine distances.
    """
    scale = COSINE_PER_SQ_EUCLIDEAN if spherical else 1.0
    work.reset()
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        inertia, changed = work.step(X, weights, centers, exact_inertia=False)
        new_centers = centers_from_sums(X, weights, centers, work)
        if spherical:
            new_centers = unit_centers(new_centers, previous=centers)
        shift = float(((new_centers.astype(np.float64) - centers) ** 2).sum())
        centers = new_centers
        yield Progress(
            Stage.ITERATION, restart, n_init, n_iter, scale * inertia, shift, work.skipped_share
        )
        if changed == 0 or shift <= abs_tol:
            break
    # One more assignment so the labels and inertia describe the final centers.
    inertia, _ = work.step(X, weights, centers)
    return LloydRun(centers, work.labels, scale * inertia, n_iter)


def centers_from_sums(
    X: np.ndarray, weights: np.ndarray, centers: np.ndarray, work: Workspace
) -> np.ndarray:
    """Means of the assigned points; empty clusters move to the farthest points."""
    sums = work.partial_sums.sum(axis=0)
    cluster_weights = work.partial_weights.sum(axis=0)
    empty = np.flatnonzero(cluster_weights == 0)
    if empty.size:
        far_dist = assigned_sq_distances(X, centers, work.labels)
        farthest = np.argsort(-far_dist, kind="stable")[: empty.size]
        row_weights = weights[farthest] if weights.size else np.ones(farthest.size)
        give_to_empty(empty, X[farthest], row_weights, work.labels[farthest], sums, cluster_weights)
    return means_of(centers, sums, cluster_weights)


def give_to_empty(
    empty: np.ndarray, rows: np.ndarray, row_weights: np.ndarray, row_labels: np.ndarray,
    sums: np.ndarray, cluster_weights: np.ndarray,
) -> None:
    """Each empty cluster takes one of ``rows`` (farthest first), which leaves the cluster it
    was labelled with: ``sums`` (k, d) and ``cluster_weights`` (k,), float64, in place."""
    for cluster, row, weight, previous in zip(empty, rows, row_weights, row_labels):
        sums[previous] -= weight * row
        cluster_weights[previous] -= weight
        sums[cluster] = weight * row
        cluster_weights[cluster] = weight


def means_of(centers: np.ndarray, sums: np.ndarray, cluster_weights: np.ndarray) -> np.ndarray:
    """The new centers, in the centers' dtype: each cluster's weighted mean, or where it has
    no weight its old center."""
    filled = cluster_weights > 0
    new_centers = centers.astype(np.float64)
    new_centers[filled] = sums[filled] / cluster_weights[filled, None]
    return new_centers.astype(centers.dtype)


def assigned_sq_distances(X: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Squared distance from each row to its labelled center, exact, ndarray of shape
    (n_samples,), float64: where an empty cluster's replacement is looked for."""
    out = np.empty(X.shape[0], dtype=np.float64)
    chunks.run(_lloyd.sq_distances_to_assigned, X.shape[0], read_only(X), centers, labels, out)
    return out


def nearest(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each row's nearest center, int32, and its squared distance, float64 (each of
    shape (n_samples,)); X and centers share a dtype and have finite values."""
    centers = np.array(centers, dtype=X.dtype, order="C", copy=True)
    labels = np.empty(X.shape[0], dtype=np.int32)
    min_sq_dist = np.empty(X.shape[0], dtype=np.float64)
    chunks.run(_lloyd.assign, _common.n_tiles_for(X.shape[0]), read_only(X), centers, shift_for(centers),
               labels, min_sq_dist)
    return labels, min_sq_dist


def column_moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and sum of squared deviations from it, each (n_features,) float64,
    in two passes over X (the form partial moments are merged in)."""
    X = read_only(X)
    n_samples, n_features = X.shape
    n_chunks = _common.n_chunks_for(n_samples)
    sums = np.empty((n_chunks, n_features), dtype=np.float64)
    sq_dev = np.empty((n_chunks, n_features), dtype=np.float64)
    chunks.run(_lloyd.column_sums, n_chunks, X, sums, sq_dev, np.empty(0, dtype=np.float64))
    mean = sums.sum(axis=0) / n_samples
    chunks.run(_lloyd.column_sums, n_chunks, X, sums, sq_dev, mean)
    return mean, sq_dev.sum(axis=0)


def mean_variance(X: np.ndarray) -> float:
    """Mean over features of the per-feature variance of X, in float64, without copying X."""
    _, sq_dev = column_moments(X)
    return float((sq_dev / X.shape[0]).mean())
