"""Cosine k-means and the silhouette against scikit-learn on the same data.

`python -m bench.scoring [--quick] [--full-silhouette N]`; `make bench` runs the default.
- cosine: a full fit (k-means++, n_init 1, max_iter 20, tol 1e-4) of synthetic 384-d
  embeddings around k topics, ours with metric="cosine" against KMeans on the same
  L2-normalised rows; the inertia ratio compares the cosine objective (1 - cos to the
  unit-length centers) of both partitions.
- silhouette: our Evaluate kernel against sklearn.metrics.silhouette_score with the same
  sample_size and random_state (so the same rows), and the peak memory of ours.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from sklearn import metrics
from sklearn.cluster import KMeans

from centroidal.engine import kmeans, scoring, warmup

from .common import Row, machine, median_time, print_table, gemm_peak_gflops


def embeddings(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """n float32 rows around k random directions, at varied lengths (as embeddings are)."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(k, d)).astype(np.float32)
    X = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(start + 100_000, n)
        rows = topics[rng.integers(k, size=stop - start)]
        X[start:stop] = (rows + 0.6 * rng.standard_normal((stop - start, d), dtype=np.float32)) * rng.uniform(
            0.5, 2.0, size=(stop - start, 1)
        ).astype(np.float32)
    return X


def _cosine_objective(unit: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> float:
    unit_centers = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    total = 0.0
    for start in range(0, unit.shape[0], 100_000):
        rows = slice(start, start + 100_000)
        total += float((1.0 - (unit[rows] * unit_centers[labels[rows]]).sum(axis=1, dtype=np.float64)).sum())
    return total


def cosine_fit(n: int, d: int, k: int) -> Row:
    X = embeddings(n, d, k)
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    ours: list[kmeans.KMeansResult] = []
    theirs: list[KMeans] = []
    ours_s = median_time(lambda: ours.append(kmeans.fit(X, k, metric="cosine", seed=0, max_iter=20)), 1, 0)
    reference_s = median_time(
        lambda: theirs.append(KMeans(k, n_init=1, max_iter=20, random_state=0).fit(unit)), 1, 0
    )
    ours_objective = ours[0].inertia
    their_objective = _cosine_objective(unit, theirs[0].cluster_centers_, theirs[0].labels_)
    return Row(
        f"cosine full fit {n:.0e}x{d} k={k} f32 (max_iter 20)", ours_s, "sklearn", reference_s,
        extra={"inertia_ratio": ours_objective / their_objective, "ours_n_iter": ours[0].n_iter,
               "reference_n_iter": int(theirs[0].n_iter_)},
    )


def silhouette(n: int, d: int, k: int, sample_size: int | None) -> Row:
    X = embeddings(n, d, k, seed=1)
    labels = kmeans.predict(X, X[:k])
    ours = median_time(lambda: scoring.score(X, labels, k, sample_size=sample_size, seed=0), 1)
    reference = median_time(lambda: metrics.silhouette_score(X, labels, sample_size=sample_size, random_state=0), 1)
    ours_value = scoring.score(X, labels, k, sample_size=sample_size, seed=0).silhouette
    their_value = metrics.silhouette_score(X, labels, sample_size=sample_size, random_state=0)
    rows = "all" if sample_size is None else f"sample {sample_size}"
    return Row(f"silhouette {n:.0e}x{d} k={k} ({rows})", ours, "sklearn", reference,
               extra={"abs_difference": abs(ours_value - their_value)})


def full_silhouette(n: int, d: int, k: int) -> dict[str, float]:
    """Ours alone over every row of n (scikit-learn would take hours): time and memory."""
    X = embeddings(n, d, k, seed=2)
    labels = kmeans.predict(X, X[:k])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    value = scoring.score(X, labels, k).silhouette
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"silhouette_all_rows_n": n, "silhouette_all_rows_s": elapsed,
            "silhouette_all_rows_value": float(value or 0.0), "peak_rss_mib_before": before,
            "peak_rss_mib_after": peak, "data_mib": X.nbytes / 2**20}


def run(quick: bool = False) -> list[Row]:
    warmup.compile_all()
    rows = [silhouette(200_000, 16, 16, 20_000), silhouette(200_000, 16, 16, 50_000),
            silhouette(30_000, 16, 16, None)]
    if not quick:
        rows.append(cosine_fit(1_000_000, 384, 256))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring")
    parser.add_argument("--quick", action="store_true", help="skip the 1e6x384 cosine fit")
    parser.add_argument("--cosine-only", action="store_true")
    parser.add_argument("--full-silhouette", type=int, default=0, metavar="N",
                        help="also score every row of N points (ours only), with its peak memory")
    args = parser.parse_args()
    print(", ".join(f"{key} {value}" for key, value in machine().items()))
    peak = gemm_peak_gflops()
    rows = [cosine_fit(1_000_000, 384, 256)] if args.cosine_only else run(args.quick)
    print_table(rows, peak)
    for row in rows:
        print(row.name, row.extra)
    if args.full_silhouette:
        print(full_silhouette(args.full_silhouette, 16, 16))


if __name__ == "__main__":
    main()
