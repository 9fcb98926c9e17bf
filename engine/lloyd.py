"""The Lloyd driver: one run of iterations from given centers, with its workspace (the
labels, the bounds that let a step skip rows whose center cannot have changed, and the
sums kept from step to step), and the memory a fit needs. The compiled steps are in
``_lloyd`` and ``_bounded``, when bounds pay in ``bounds``; ``kmeans`` runs restarts over
this."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _bounded, _common, _lloyd, bounds, chunks
from .bounds import n_groups_for, uses_bounds
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
    narrow_totals: np.ndarray
    narrow_sq: np.ndarray
    sums_follow_labels: bool
    totals_follow_labels: bool

    def __init__(self, n_samples: int, n_clusters: int, n_features: int, dtype: np.dtype) -> None:
        n_chunks = _common.n_chunks_for(n_samples, n_clusters, n_features)
        self.use_bounds = uses_bounds(n_clusters, n_features)
        self.bounds_below = bounds.changed_share_for_bounds(n_features)
        self.n_groups = n_groups_for(n_clusters, n_features)
        self.labels = np.full(n_samples, -1, dtype=np.int32)
        self.lower = np.zeros((n_samples if self.use_bounds else 0, self.n_groups), dtype=dtype)
        self.partial_sums = np.empty((n_chunks, n_clusters, n_features), dtype=np.float64)
        self.partial_weights = np.empty((n_chunks, n_clusters), dtype=np.float64)
        self.partial_inertia = np.empty(n_chunks, dtype=np.float64)
        self.partial_changed = np.empty(n_chunks, dtype=np.int64)
        self.partial_computed = np.empty(n_chunks, dtype=np.int64)
        self.data_shift = None  # X's mean, once a step needs it (one X per workspace)
        narrow = n_features <= TILE_SUMS_FEATURES
        self.narrow_totals = np.empty((n_chunks if narrow else 0, n_clusters, 4), dtype=np.float64)
        # Each chunk's sum of |x - data_shift|^2, once a narrow step has taken it.
        self.narrow_sq = np.full(n_chunks if narrow else 0, np.nan)
        self.reset()
        self.skipped_share = 0.0

    def reset(self) -> None:
        """Forget every label, bound and grouping, as for a new restart."""
        self.labels.fill(-1)
        # Whether partial_sums and partial_weights hold the sums by the labels as they are,
        # and narrow_totals the narrow step's sums of X - data_shift by them.
        self.sums_follow_labels = False
        self.totals_follow_labels = False
        self.bound_centers = None
        self.groups = None
        self.changed_share = 1.0
        self.plain_left = 0
        self.backoff = bounds.BACKOFF

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
        by_data_shift = not exact_inertia and X.shape[1] <= TILE_SUMS_FEATURES and weights.size == 0
        if by_data_shift:
            if self.data_shift is None:
                self.data_shift = column_mean(X).astype(X.dtype)
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
                self.groups = bounds.group_centers(centers64, self.n_groups)
            group_order, group_start = self.groups
            if self.bound_centers is None:
                mode = _lloyd.MODE_SET_BOUNDS
            else:
                mode = _lloyd.MODE_USE_BOUNDS
                moves = np.sqrt(((centers64 - self.bound_centers) ** 2).sum(axis=1))
                group_move = np.maximum.reduceat(moves[group_order], group_start[:-1])
                half_gaps = bounds.half_gaps(centers64)
        out = (self.partial_sums, self.partial_weights, self.partial_inertia,
               self.partial_changed, self.partial_computed)
        n_chunks = self.partial_inertia.shape[0]
        narrow = mode == _lloyd.MODE_PLAIN and X.shape[1] <= TILE_SUMS_FEATURES and weights.size == 0
        if narrow:
            # The totals are of X - data_shift: moved from the last step's once few labels
            # change, else summed anew.
            moving = self.changed_share < _NARROW_MOVES_BELOW_CHANGED_SHARE
            afresh = not (self.totals_follow_labels and by_data_shift and moving)
            chunks.run(_lloyd.narrow_step, n_chunks, X, centers, shift, exact_inertia, afresh,
                       self.labels, self.narrow_totals, self.narrow_sq if by_data_shift else _NO_SQ, *out)
        else:
            # The sums are moved from the last step's once few enough labels change.
            moving = self.changed_share < _MOVES_BELOW_CHANGED_SHARE
            afresh = not (self.sums_follow_labels and moving)
            if mode == _lloyd.MODE_PLAIN:
                chunks.run(_lloyd.plain_step, n_chunks, X, weights, centers, shift, exact_inertia, afresh,
                           self.labels, *out)
            else:
                chunks.run(
                    _bounded.bounded_step, n_chunks, X, weights, centers, shift, half_gaps, group_order,
                    group_start, group_move, bounds.REL_MARGIN[X.dtype], mode == _lloyd.MODE_USE_BOUNDS,
                    exact_inertia, afresh, self.labels, self.lower, *out,
                )
        self.bound_centers = None if mode == _lloyd.MODE_PLAIN else centers64
        self.sums_follow_labels = True
        self.totals_follow_labels = narrow and by_data_shift
        changed = int(self.partial_changed.sum())
        self.changed_share = changed / X.shape[0]
        # A searched row computes all k distances, a settled one only its own center's.
        n_samples, n_clusters = X.shape[0], centers.shape[0]
        searched = int(self.partial_computed.sum())
        computed = searched * n_clusters + (n_samples - searched)
        self.skipped_share = 1.0 - computed / (n_samples * n_clusters)
        if mode == _lloyd.MODE_USE_BOUNDS and self.skipped_share < bounds.MIN_SKIPPED:
            # The bounds cost more than they saved: search in full for a while, then retry,
            # waiting twice as long after each failure.
            self.plain_left, self.backoff = self.backoff, 2 * self.backoff
            self.bound_centers = None
        return float(self.partial_inertia.sum()), changed


def working_bytes(n_samples: int, n_clusters: int, n_features: int, dtype: Any) -> int:
    """The most a fit allocates beside X and its centers, in bytes: its peak, not its sum.

    Seeding holds a float64 distance per row; a Lloyd run holds an int32 label per row, a
    lower bound per row and group of centers (in X's dtype) once bounds start, and per-chunk
    sums (narrow data's twice: of X and of X - shift). An empty cluster's relocation briefly adds a float64 distance and an int64 order
    per row. The server budgets a fit's memory with this figure, and a test holds the
    engine's allocations to it.
    """
    itemsize = np.dtype(dtype).itemsize
    n_chunks = _common.n_chunks_for(n_samples, n_clusters, n_features)
    seeding = n_samples * 8 + _common.n_chunks_for(n_samples) * (local_trials(n_clusters) + 1) * 8
    bounds = n_groups_for(n_clusters, n_features) * itemsize if uses_bounds(n_clusters, n_features) else 0
    narrow = n_clusters * 4 + 1 if n_features <= TILE_SUMS_FEATURES else 0  # narrow_totals, narrow_sq
    per_chunk = n_chunks * (n_clusters * n_features + n_clusters + 4 + narrow) * 8
    lloyd = n_samples * (4 + bounds) + per_chunk
    relocation = n_samples * (8 + 8)
    return max(seeding, lloyd + relocation)


# A narrow step moves the rows whose label changes between its clusters' sums, instead of
# summing every tile anew, once the last step changed fewer labels than this share. Each
# changed row costs about 18 ns on one thread of the AMD EPYC, the sums 1.9 ns a row
# (1e6x3, k=16, per step from the same centers: at 2.8% of the labels changed 5.4 ms
# against 6.1, at 4.6% 5.8 against 5.9).
_NARROW_MOVES_BELOW_CHANGED_SHARE = 0.05
# The same for the other steps, which add a row at a time.
_MOVES_BELOW_CHANGED_SHARE = 0.25
_NO_GAPS = np.zeros(1)
_NO_MOVES = np.zeros(1)
_ONE_GROUP = np.zeros(2, dtype=np.int64)  # placeholder order and start while no bounds are used
_NO_SQ = np.empty(0)  # a narrow step by another shift than data_shift keeps no sums of |x - shift|^2

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
    mean = column_mean(X)
    n_chunks = _common.n_chunks_for(X.shape[0])
    sums = np.empty((n_chunks, X.shape[1]), dtype=np.float64)
    sq_dev = np.empty((n_chunks, X.shape[1]), dtype=np.float64)
    chunks.run(_lloyd.column_sums, n_chunks, X, sums, sq_dev, mean)
    return mean, sq_dev.sum(axis=0)


def column_mean(X: np.ndarray) -> np.ndarray:
    """Per-feature mean of X, (n_features,) float64, by one pass on the engine's threads
    (numpy's mean over the rows of 1e6x3 float32 took 20 ms on the AMD EPYC, widening a
    buffer at a time)."""
    n_chunks = _common.n_chunks_for(X.shape[0])
    sums = np.empty((n_chunks, X.shape[1]), dtype=np.float64)
    sq_dev = np.empty((n_chunks, X.shape[1]), dtype=np.float64)
    chunks.run(_lloyd.column_sums, n_chunks, read_only(X), sums, sq_dev, np.empty(0, dtype=np.float64))
    return sums.sum(axis=0) / X.shape[0]


def mean_variance(X: np.ndarray) -> float:
    """Mean over features of the per-feature variance of X, in float64, without copying X."""
    _, sq_dev = column_moments(X)
    return float((sq_dev / X.shape[0]).mean())
