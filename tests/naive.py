"""Slow, obviously correct reference implementations the kernels are checked against."""

from __future__ import annotations

import numpy as np


def sq_distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n, k) squared Euclidean distances, computed in float64 row by row."""
    X64 = X.astype(np.float64)
    C64 = centers.astype(np.float64)
    out = np.empty((X.shape[0], centers.shape[0]))
    for i, x in enumerate(X64):
        out[i] = ((C64 - x) ** 2).sum(axis=1)
    return out


def assign(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return sq_distances(X, centers).argmin(axis=1).astype(np.int32)


def cluster_means(X: np.ndarray, labels: np.ndarray, k: int) -> list[np.ndarray | None]:
    """Mean of the rows of each cluster, or None for an empty one."""
    means: list[np.ndarray | None] = []
    for j in range(k):
        rows = X[labels == j].astype(np.float64)
        means.append(rows.mean(axis=0) if len(rows) else None)
    return means


# ---- one reference per kernel: plain loops over rows, in float64 ----------------------


def chunk_bounds(n_samples: int, n_chunks: int) -> list[tuple[int, int]]:
    """The rows of each chunk, as the kernels split them."""
    size = -(-n_samples // n_chunks)
    return [(c * size, min((c + 1) * size, n_samples)) for c in range(n_chunks)]


def weights_of(sample_weight: np.ndarray, n_samples: int) -> np.ndarray:
    """An empty weight array means unit weights."""
    return sample_weight.astype(np.float64) if sample_weight.size else np.ones(n_samples)


def shifted_centers(centers: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """centers - shift, and half the squared norm of each."""
    moved = centers.astype(np.float64) - shift.astype(np.float64)
    return moved, 0.5 * (moved**2).sum(axis=1)


def scan_nearest(dots: np.ndarray, rows: int, half_sq_norms: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each of the first rows columns: the smallest half_sq_norms[j] - dots[j, r], its j,
    and the second smallest."""
    values = half_sq_norms[:, None].astype(np.float64) - dots[:, :rows].astype(np.float64)
    order = np.sort(values, axis=0)
    second = order[1] if values.shape[0] > 1 else np.full(rows, np.inf)
    return order[0], values.argmin(axis=0), second


def lloyd_sums(
    X: np.ndarray, sample_weight: np.ndarray, labels: np.ndarray, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-cluster weighted sums (k, d), weights (k,), and the weighted inertia of labels."""
    w = weights_of(sample_weight, X.shape[0])
    k = centers.shape[0]
    sums = np.zeros((k, X.shape[1]))
    totals = np.zeros(k)
    inertia = 0.0
    for i, x in enumerate(X.astype(np.float64)):
        j = labels[i]
        sums[j] += w[i] * x
        totals[j] += w[i]
        inertia += w[i] * ((x - centers[j].astype(np.float64)) ** 2).sum()
    return sums, totals, inertia


def second_nearest_distance(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Each row's Euclidean distance to its second-nearest center (inf with one center)."""
    dist = np.sort(sq_distances(X, centers), axis=1)
    return np.sqrt(dist[:, 1]) if centers.shape[0] > 1 else np.full(X.shape[0], np.inf)


def column_sums(X: np.ndarray, mean: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    X64 = X.astype(np.float64)
    deviations = ((X64 - mean) ** 2).sum(axis=0) if mean is not None else np.zeros(X.shape[1])
    return X64.sum(axis=0), deviations


def candidate_potentials(
    X: np.ndarray, sample_weight: np.ndarray, candidates: np.ndarray, closest: np.ndarray
) -> np.ndarray:
    """For each candidate, sum_i w_i * min(closest_i, |x_i - candidate|^2)."""
    w = weights_of(sample_weight, X.shape[0])
    dist = sq_distances(X, candidates)
    return np.array([(w * np.minimum(closest, dist[:, t])).sum() for t in range(candidates.shape[0])])


def pick_rows(closest: np.ndarray, sample_weight: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The first row whose running sum of w_i * closest_i passes each target."""
    running = np.cumsum(weights_of(sample_weight, closest.shape[0]) * closest)
    rows = np.searchsorted(running, targets, side="right")
    return np.minimum(rows, closest.shape[0] - 1)


def scan_values(X: np.ndarray) -> tuple[int, int, float]:
    """NaN/Inf entries, the first row with one (-1 if none), the largest finite magnitude."""
    finite = np.isfinite(X)
    bad_rows = np.flatnonzero(~finite.all(axis=1))
    largest = float(np.abs(X[finite]).max()) if finite.any() else 0.0
    return int((~finite).sum()), int(bad_rows[0]) if bad_rows.size else -1, largest
