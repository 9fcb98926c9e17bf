"""When a Lloyd run keeps bounds on its rows' distances to the centers, and the groups of
centers it keeps them for (one group: Hamerly's single bound; more: Yinyang's). The
compiled step that keeps them is ``_bounded.bounded_step``; ``lloyd.Workspace`` runs it."""

from __future__ import annotations

import numpy as np

from . import _common

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
# Once a plain step moved only the rows whose label changed, bounds stopped paying at a k * d
# of 1024 on the AMD EPYC (AVX2): 30 steps from random centers on one thread, per step,
# 1e6x16, k=64, blobs 37.8 ms with bounds against 33.6 without (the steps that set them took
# 52-64 ms, those using them 26-28 against 33), overlapping 34.5 and 34.4 (not set); at 2048,
# 2.5e5x8, k=256, 16.7 and 16.3 (blobs), 16.3 and 16.5; at 4096, 2.5e5x16, k=256, 20.4
# and 27.0 (blobs), 27.0 and 27.0.
_BOUNDS_MIN_WORK_SCANNED = 2048
_BOUNDS_BELOW_CHANGED_SHARE_SCANNED = 0.01
# A bounded step that skipped less than this share of the distances cost more than a plain
# one (overlapping data: 2e5x64, k=256 skipped 7% and ran 1.3x slower than the plain step):
# the next BACKOFF steps are plain, then bounds are tried again, the wait doubling.
MIN_SKIPPED = 0.35
BACKOFF = 2

def uses_bounds(n_clusters: int, n_features: int) -> bool:
    """Whether a fit of k centers on d features keeps bounds on the rows' distances."""
    scanned = n_features <= _common.MID
    return n_clusters * n_features >= (_BOUNDS_MIN_WORK_SCANNED if scanned else _BOUNDS_MIN_WORK)


def changed_share_for_bounds(n_features: int) -> float:
    """Bounds are set once a step changed fewer than this share of the labels."""
    return _BOUNDS_BELOW_CHANGED_SHARE_SCANNED if n_features <= _common.MID else _BOUNDS_BELOW_CHANGED_SHARE


# About this many centers per group of bounds (Yinyang's choice); and at most one group per
# _FEATURES_PER_GROUP features, so that the bounds take no more memory than the labels, a
# sixteenth of X's, and their upkeep stays small beside a row's own distance. (Blobs,
# 1e5x128, k=1024: 4, 8, 16 and 32 groups skipped 96-99% of the distances by the 10th step,
# one group 91%; 2e5x64, k=256: 2, 4 and 8 groups 90-91%; at d=16, 4 groups skipped no
# more than one, and their upkeep cost more.)
_CENTERS_PER_GROUP = 10
_FEATURES_PER_GROUP = 16

# Relative error allowed for in a GEMM-derived squared distance, per dtype.
REL_MARGIN = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-12}


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


def half_gaps(centers: np.ndarray) -> np.ndarray:
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
