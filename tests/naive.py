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
