"""Engine against scikit-learn: Lloyd iterations, full fits, k-means++, predict."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.cluster._k_means_lloyd import lloyd_iter_chunked_dense

from centroidal.engine import kmeans

from .common import Row, median_time

N_THREADS = 2


def blobs(n: int, d: int, k: int, dtype: type, seed: int = 0) -> np.ndarray:
    """n points around k random centers in d dimensions, offset from the origin."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(k, d)) + 50.0
    X = centers[rng.integers(k, size=n)] + rng.normal(size=(n, d))
    return X.astype(dtype)


def lloyd_iteration(n: int, d: int, k: int, dtype: type, iterations: int = 5) -> Row:
    X = blobs(n, d, k, dtype)
    init = X[np.random.default_rng(1).choice(n, k, replace=False)].copy()
    weights = np.ones(n, dtype=np.float64)
    work = kmeans._Workspace(n, k, d)

    def ours() -> None:
        work.step(X, weights, init)
        kmeans._centers_from_sums(X, weights, init, work)

    ref_weights = np.ones(n, dtype=dtype)
    centers_new = np.empty_like(init)
    weight_in_clusters = np.empty(k, dtype=dtype)
    labels = np.empty(n, dtype=np.int32)
    center_shift = np.empty(k, dtype=dtype)

    def reference() -> None:
        lloyd_iter_chunked_dense(
            X, ref_weights, init, centers_new, weight_in_clusters, labels, center_shift, N_THREADS
        )

    name = f"lloyd iter {n:.0e}x{d} k={k} {np.dtype(dtype).name}"
    return Row(
        name,
        median_time(ours, iterations),
        "sklearn",
        median_time(reference, iterations),
        flops=3.0 * n * k * d,
    )


def full_fit(n: int, d: int, k: int, seeds: int) -> list[Row]:
    X = blobs(n, d, k, np.float32)
    ours_times, ref_times, ours_inertia, ref_inertia = [], [], [], []
    for seed in range(seeds):
        ours_times.append(median_time(lambda: ours_inertia.append(kmeans.fit(X, k, seed=seed).inertia), 1, 0))
        ref_times.append(
            median_time(lambda: ref_inertia.append(KMeans(k, random_state=seed).fit(X).inertia_), 1, 0)
        )
    inertia_ratio = float(np.median(ours_inertia) / np.median(ref_inertia))
    return [
        Row(
            f"full fit {n:.0e}x{d} k={k} f32 (median of {seeds})",
            float(np.median(ours_times)),
            "sklearn",
            float(np.median(ref_times)),
            extra={"inertia_ratio": inertia_ratio},
        )
    ]


def plusplus(n: int, d: int, k: int) -> Row:
    X = blobs(n, d, k, np.float32)
    weights = np.ones(n)
    return Row(
        f"k-means++ {n:.0e}x{d} k={k} f32",
        median_time(lambda: kmeans.kmeans_plusplus(X, k, np.random.default_rng(0), weights), 3),
        "sklearn",
        median_time(lambda: kmeans_plusplus(X, k, random_state=0), 3),
    )


def predict(n: int, d: int, k: int) -> Row:
    X = blobs(n, d, k, np.float32)
    model = KMeans(k, n_init=1, max_iter=5, random_state=0).fit(X[:50_000])
    centers = model.cluster_centers_
    return Row(
        f"predict {n:.0e}x{d} k={k} f32",
        median_time(lambda: kmeans.predict(X, centers), 5),
        "sklearn",
        median_time(lambda: model.predict(X), 5),
        flops=3.0 * n * k * d,
    )


LLOYD_REGIMES = [
    (1_000_000, 3, 16),
    (1_000_000, 16, 64),
    (200_000, 64, 256),
    (100_000, 128, 1024),
]


def run(quick: bool = False) -> list[Row]:
    kmeans.warmup()
    rows = [lloyd_iteration(n, d, k, np.float32) for n, d, k in LLOYD_REGIMES]
    rows += [lloyd_iteration(n, d, k, np.float64) for n, d, k in LLOYD_REGIMES[:2]]
    rows.append(plusplus(1_000_000, 16, 64))
    rows.append(predict(1_000_000, 16, 64))
    if not quick:
        rows += full_fit(1_000_000, 16, 64, seeds=5)
    return rows
