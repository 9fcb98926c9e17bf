"""Engine against scikit-learn (and faiss when installed): Lloyd, full fits, k-means++, predict.

scikit-learn's own KMeans.fit runs its kernels with BLAS limited to one thread;
calling its Lloyd iteration directly, the reference gets the same limit here.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.cluster._k_means_lloyd import lloyd_iter_chunked_dense
from threadpoolctl import threadpool_limits

from centroidal.engine import kmeans, lloyd, warmup

from .common import Row, median_time, medians_taking_turns

N_THREADS = 2
ITERATIONS = 10


def blobs(n: int, d: int, k: int, dtype: type, seed: int = 0) -> np.ndarray:
    """n points around k random centers in d dimensions, offset from the origin."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10.0, size=(k, d)) + 50.0
    X = centers[rng.integers(k, size=n)] + rng.normal(scale=4.0, size=(n, d))
    return X.astype(dtype)


def overlapping(n: int, d: int, k: int, dtype: type, seed: int = 0) -> np.ndarray:
    """n points that do not cluster neatly: integer offsets 0..3 in each feature plus unit
    normal noise, so neighbouring lattice points overlap and bounds prune little."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 4, size=(n, d)) + rng.normal(size=(n, d))
    return X.astype(dtype)


DATA = {"blobs": blobs, "overlapping": overlapping}


def lloyd_iterations(
    n: int, d: int, k: int, dtype: type, data: str = "blobs", repeats: int = 5
) -> list[Row]:
    """ITERATIONS Lloyd iterations from the same initial centers (tol 0), timed per
    iteration, ours and scikit-learn's taking turns for ``repeats`` rounds; ours also
    reports the mean share of distances its bounds skipped."""
    X = DATA[data](n, d, k, dtype)
    init = X[np.random.default_rng(1).choice(n, k, replace=False)].copy()
    weights = kmeans.UNIT_WEIGHTS
    work = lloyd.Workspace(n, k, d, np.dtype(dtype))
    skipped: list[float] = []
    pruned_s: list[list[float]] = []  # per run, the times of the steps whose bounds skipped

    def ours() -> None:
        work.reset()
        skipped.clear()
        pruned_s.append([])
        centers = init
        for _ in range(ITERATIONS):
            started = time.perf_counter()
            work.step(X, weights, centers, exact_inertia=False)
            centers = lloyd.centers_from_sums(X, weights, centers, work)
            if work.skipped_share > 0:
                pruned_s[-1].append(time.perf_counter() - started)
            skipped.append(work.skipped_share)

    ref_weights = np.ones(n, dtype=dtype)
    weight_in_clusters = np.empty(k, dtype=dtype)
    labels = np.empty(n, dtype=np.int32)
    center_shift = np.empty(k, dtype=dtype)

    def reference() -> None:
        old, new = init.copy(), np.empty_like(init)
        with threadpool_limits(1, user_api="blas"):
            for _ in range(ITERATIONS):
                lloyd_iter_chunked_dense(
                    X, ref_weights, old, new, weight_in_clusters, labels, center_shift, N_THREADS
                )
                old, new = new, old

    name = f"lloyd iter {n:.0e}x{d} k={k} {np.dtype(dtype).name} {data}"
    flops = 2.0 * n * k * d
    # Taking turns: a noisy stretch of the shared machine then slows both alike.
    times = medians_taking_turns({"ours": ours, "sklearn": reference}, warmup=1, rounds=repeats)
    ours_s, reference_s = times["ours"] / ITERATIONS, times["sklearn"] / ITERATIONS
    extra: dict[str, object] = {
        "distances_skipped_mean": float(np.mean(skipped)),
        "distances_skipped_per_iteration": [round(share, 3) for share in skipped],
    }
    pruned = [float(np.median(times)) for times in pruned_s if times]
    if pruned:
        # The steps once the bounds prune: each run's median, then the median over runs.
        extra["pruned_steps"] = len(pruned_s[-1])
        extra["pruned_step_ratio"] = float(np.median(pruned)) / reference_s
    rows = [Row(name, ours_s, "sklearn", reference_s, flops=flops, extra=extra)]
    faiss_s = _faiss_iteration(X, init, repeats)
    if faiss_s is not None:
        rows.append(Row(name, ours_s, "faiss", faiss_s, flops=flops))
    return rows


def _faiss_iteration(X: np.ndarray, init: np.ndarray, repeats: int) -> float | None:
    try:
        import faiss
    except ImportError:
        return None
    if X.dtype != np.float32:
        return None
    faiss.omp_set_num_threads(N_THREADS)

    def train() -> None:
        model = faiss.Kmeans(X.shape[1], init.shape[0], niter=ITERATIONS, seed=0,
                             max_points_per_centroid=X.shape[0])
        model.train(X, init_centroids=init)

    return median_time(train, repeats) / ITERATIONS


def full_fit(n: int, d: int, k: int, seeds: int, data: str = "blobs") -> Row:
    """Defaults end to end (k-means++, n_init 1, tol 1e-4), median time over seeds.

    Inertia: the ratio of the medians, and the worst and best of the per-seed ratios
    (ours against scikit-learn's with the same seed number; the seeds draw different inits).
    """
    X = DATA[data](n, d, k, np.float32)
    ours_times, ref_times, ours_inertia, ref_inertia, iterations = [], [], [], [], []

    def ours(seed: int) -> None:
        result = kmeans.fit(X, k, seed=seed)
        ours_inertia.append(result.inertia)
        iterations.append(result.n_iter)

    for seed in range(seeds):
        ours_times.append(median_time(lambda: ours(seed), 1, 0))
        ref_times.append(
            median_time(lambda: ref_inertia.append(KMeans(k, random_state=seed).fit(X).inertia_), 1, 0)
        )
    per_seed = np.array(ours_inertia) / np.array(ref_inertia)
    return Row(
        f"full fit {n:.0e}x{d} k={k} f32 {data} (median of {seeds})",
        float(np.median(ours_times)),
        "sklearn",
        float(np.median(ref_times)),
        extra={"inertia_ratio_of_medians": float(np.median(ours_inertia) / np.median(ref_inertia)),
               "inertia_ratio_worst_seed": float(per_seed.max()),
               "inertia_ratio_best_seed": float(per_seed.min()),
               "our_iterations": iterations},
    )


def plusplus(n: int, d: int, k: int) -> Row:
    X = blobs(n, d, k, np.float32)
    weights = kmeans.UNIT_WEIGHTS
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
        flops=2.0 * n * k * d,
    )


LLOYD_REGIMES = [
    (1_000_000, 3, 16),
    (1_000_000, 16, 64),
    (200_000, 64, 256),
    (100_000, 128, 1024),
]


def run(quick: bool = False) -> list[Row]:
    warmup.compile_all()
    rows = [
        row for data in DATA for n, d, k in LLOYD_REGIMES
        for row in lloyd_iterations(n, d, k, np.float32, data)
    ]
    rows += [row for n, d, k in LLOYD_REGIMES[:2] for row in lloyd_iterations(n, d, k, np.float64)]
    rows.append(plusplus(1_000_000, 16, 64))
    rows.append(predict(1_000_000, 16, 64))
    if not quick:
        rows += [full_fit(n, d, k, seeds=5, data=data) for data in DATA for n, d, k in LLOYD_REGIMES]
    return rows
