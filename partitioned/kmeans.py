"""k-means on a partitioned dataset over a Dask cluster, as a generator of the engine's
progress events, so the server drives it a step at a time like a local fit.

- **Lloyd**: one task per partition and iteration returns per-cluster sums, weights and
  inertia; they are added in partition order, so the same data and seed give the same model
  on any number of workers. An empty cluster takes the farthest row, as in the engine.
- **k-means||** (Bahmani et al.): a first center drawn by weight, then ``ROUNDS`` rounds
  that each keep every row with probability ``2k * weight * d^2 / phi``; the candidates,
  weighted by the rows nearest each, are reduced to k by the engine's weighted k-means++ and
  Lloyd.
- The stopping rule is the engine's: a squared center shift at most ``tol`` times the mean
  per-feature variance (unchanged labels leave the centers, and so the shift, at exactly 0).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Generator
from typing import Any

import numpy as np

from centroidal.engine import kmeans
from centroidal.engine.cosine import COSINE_PER_SQ_EUCLIDEAN, unit_centers
from centroidal.engine.kmeans import KMeansParams, KMeansResult
from centroidal.engine.lloyd import LloydRun, give_to_empty, means_of
from centroidal.engine.progress import Progress, Stage
from centroidal.engine.validation import MAX_WEIGHT_TOTAL, InvalidInputError, check_finite, check_n_clusters
from centroidal.sources import Dataset

from . import tasks
from .holders import HeldPartitions, HoldersLost
from .partitions import Partitions

log = logging.getLogger("centroidal.server")

# k-means|| rounds, and candidates per round as a multiple of k (the paper's l = 2k; its
# experiments found 5 rounds enough for a seeding as good as k-means++).
ROUNDS = 5
OVERSAMPLING = 2.0


def fit_steps(client: Any, dataset: Dataset, params: KMeansParams, *, persist: bool,
              stop: threading.Event | None = None) -> Generator[Progress, None, KMeansResult]:
    """k-means of a dataset on the cluster ``client`` reaches, as progress events; returns the
    result (without training labels, which stay with the data: PredictDataset writes them)."""
    params = params.check()
    assert params.n_init is not None and params.max_iter is not None and params.tol is not None
    n_clusters = check_n_clusters(params.n_clusters, dataset.n_rows)
    spherical = params.metric == "cosine"
    given = None
    if params.init_centers is not None:
        if params.init_centers.shape[1] != dataset.n_features:
            raise InvalidInputError("init_centers.cols", f"init_centers have {params.init_centers.shape[1]} "
                                    f"features but the dataset has {dataset.n_features}")
        given = np.ascontiguousarray(params.init_centers, dtype=dataset.dtype)
        if spherical:
            given = unit_centers(given)
    seed = params.seed if params.seed is not None else kmeans.fresh_seed()
    partitions: Partitions | HeldPartitions = Partitions(client, dataset, spherical, False, stop)
    try:
        if persist:
            try:
                partitions = HeldPartitions(client, dataset, spherical, stop)
            except HoldersLost as lost:
                log.warning("the dataset could not be held by the workers (%s): kept by tasks instead", lost)
                partitions = Partitions(client, dataset, spherical, True, stop)
        try:
            return (yield from _fit(partitions, dataset, params, n_clusters, given, seed, spherical))
        except HoldersLost as lost:
            # Tasks are run again elsewhere when a worker dies: the same fit, from the start.
            log.warning("a worker holding partitions died (%s): the fit starts again, kept by tasks", lost)
            partitions.release()
            partitions = Partitions(client, dataset, spherical, True, stop)
            return (yield from _fit(partitions, dataset, params, n_clusters, given, seed, spherical))
    finally:
        partitions.release()


def _fit(partitions: Any, dataset: Dataset, params: KMeansParams, n_clusters: int, given: np.ndarray | None,
         seed: int, spherical: bool) -> Generator[Progress, None, KMeansResult]:
    assert params.n_init is not None and params.max_iter is not None and params.tol is not None
    n_rows, mean_variance, total_weight, positive = _moments(partitions.run(tasks.moments))
    field = f"{dataset.field}.weight_column"
    if not 0 < total_weight <= MAX_WEIGHT_TOTAL:
        raise InvalidInputError(field, f"{field} {dataset.weight_column!r} sums to {total_weight:.3g}: it "
                                       f"must be positive and at most {MAX_WEIGHT_TOTAL:.0e}")
    if params.init == "random" and positive < n_clusters:
        raise InvalidInputError(field, f"init='random' needs at least n_clusters={n_clusters} rows with "
                                       f"positive weight, got {positive}")
    abs_tol = params.tol * mean_variance
    best: KMeansResult | None = None
    for restart in range(params.n_init):
        if given is not None:
            centers = given.copy()
        elif params.init == "random":
            centers = _weighted_rows(partitions, n_clusters, (seed, restart, 0))
        else:
            centers = yield from _kmeans_parallel(partitions, dataset, n_clusters, seed, restart, params.n_init,
                                                  spherical)
        yield Progress(Stage.INITIALIZED, restart, params.n_init, 0, math.nan, math.nan)
        run = yield from _lloyd(partitions, centers, params.max_iter, abs_tol, restart, params.n_init, spherical)
        yield Progress(Stage.RESTART_DONE, restart, params.n_init, run.n_iter, run.inertia, 0.0)
        if best is None or run.inertia < best.inertia:
            best = KMeansResult(run.centers, _NO_LABELS, run.inertia, run.n_iter, restart, seed)
    assert best is not None and n_rows == dataset.n_rows
    return best


_NO_LABELS = np.empty(0, dtype=np.int32)


def _moments(parts: list[tuple[int, np.ndarray, np.ndarray, float, int]]) -> tuple[int, float, float, int]:
    """(rows, mean per-feature variance, total weight, rows of positive weight), merged in
    partition order (Chan, Golub and LeVeque's pairwise update)."""
    rows, mean, sq_dev, weight, positive = parts[0]
    mean, sq_dev = mean.copy(), sq_dev.copy()
    for more, more_mean, more_sq_dev, more_weight, more_positive in parts[1:]:
        if not more:
            continue
        delta = more_mean - mean
        total = rows + more
        mean += delta * (more / total)
        sq_dev += more_sq_dev + delta**2 * (rows * more / total)
        rows, weight, positive = total, weight + more_weight, positive + more_positive
    return rows, float((sq_dev / rows).mean()), weight, positive


def _lloyd(partitions: Any, centers: np.ndarray, max_iter: int, abs_tol: float, restart: int, n_init: int,
           spherical: bool) -> Generator[Progress, None, LloydRun]:
    scale = COSINE_PER_SQ_EUCLIDEAN if spherical else 1.0
    # Workspaces (labels and distance bounds) stay on the workers with kept partitions; out
    # of core they would take the memory the partitions are read again to spare.
    kept = f"{partitions.key}-{restart}" if partitions.persisted else ""
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        sums, cluster_weights, inertia = _reduce(partitions.run(tasks.lloyd_sums, centers, False, kept))
        empty = np.flatnonzero(cluster_weights == 0)
        if empty.size:
            _relocate(partitions, centers, empty, sums, cluster_weights)
        new_centers = means_of(centers, sums, cluster_weights)
        if spherical:
            new_centers = unit_centers(new_centers, previous=centers)
        shift = float(((new_centers.astype(np.float64) - centers) ** 2).sum())
        centers = new_centers
        yield Progress(Stage.ITERATION, restart, n_init, n_iter, scale * inertia, shift)
        if shift <= abs_tol:
            break
    _, _, inertia = _reduce(partitions.run(tasks.lloyd_sums, centers, True, kept))
    return LloydRun(centers, _NO_LABELS, scale * inertia, n_iter)


def _reduce(parts: list[tuple[np.ndarray, np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray, float]:
    sums, weights, inertia = parts[0][0].copy(), parts[0][1].copy(), parts[0][2]
    for more_sums, more_weights, more_inertia in parts[1:]:
        sums += more_sums
        weights += more_weights
        inertia += more_inertia
    return sums, weights, inertia


def _relocate(partitions: Any, centers: np.ndarray, empty: np.ndarray, sums: np.ndarray,
              cluster_weights: np.ndarray) -> None:
    """Each empty cluster takes one of the rows farthest from their centers, farthest first,
    as the engine does on one machine (ties go to the earlier row)."""
    parts = partitions.run(tasks.farthest, centers, int(empty.size))
    sq_dist, _, rows, weights, labels = (np.concatenate([part[i] for part in parts]) for i in range(5))
    order = np.argsort(-sq_dist, kind="stable")[: empty.size]
    give_to_empty(empty, rows[order], weights[order], labels[order], sums, cluster_weights)


def _weighted_rows(partitions: Any, count: int, seed: tuple[int, ...]) -> np.ndarray:
    """``count`` rows drawn without replacement with probability proportional to weight."""
    parts = partitions.run(tasks.weighted_sample, count, seed=seed)
    keys = np.concatenate([keys for keys, _ in parts])
    rows = np.concatenate([rows for _, rows in parts])
    return np.ascontiguousarray(rows[np.argsort(-keys, kind="stable")[:count]])


def _kmeans_parallel(partitions: Any, dataset: Dataset, n_clusters: int, seed: int, restart: int, n_init: int,
                     spherical: bool) -> Generator[Progress, None, np.ndarray]:
    """k-means|| seeding; yields a SEEDING event per round (iteration: the round)."""
    candidates = [_weighted_rows(partitions, 1, (seed, restart, 0))]
    new = candidates[0]
    distances: Any = None
    oversampling = OVERSAMPLING * n_clusters
    # Kept with the partitions, each round's distances are lowered by the new candidates
    # alone; out of core they are computed afresh against all (the same float32 values).
    kept = partitions.persisted
    for round_ in range(1, ROUNDS + 1):
        seeds = (seed, restart, round_)
        if not kept:
            so_far = np.concatenate(candidates)
            phi = math.fsum(partitions.run(tasks.cost_to, so_far))
        else:
            if distances is None:
                distances = partitions.keep(tasks.closest, new)
            else:
                distances = partitions.keep(tasks.closer, new, per=distances)
            phi = math.fsum(partitions.run_on(distances, tasks.cost))
        yield Progress(Stage.SEEDING, restart, n_init, round_, phi, math.nan)
        if phi == 0:
            break  # every row is a candidate already
        if kept:
            parts = partitions.run(tasks.oversample, oversampling, phi, per=distances, seed=seeds)
        else:
            parts = partitions.run(tasks.oversample_from, so_far, oversampling, phi, seed=seeds)
        new = np.concatenate(parts)
        if new.shape[0]:
            candidates.append(new)
    del distances
    pool = np.ascontiguousarray(np.concatenate(candidates))
    if pool.shape[0] < n_clusters:  # fewer distinct rows than clusters, or an unlucky draw
        pool = np.concatenate([pool, _weighted_rows(partitions, n_clusters, (seed, restart, ROUNDS + 1))])
    weights = np.sum(partitions.run(tasks.candidate_weights, pool), axis=0)
    check_finite(pool, "X")
    if np.count_nonzero(weights) < n_clusters:
        weights = weights + 1e-12 * max(float(weights.max()), 1.0)  # every candidate may be chosen
    result = kmeans.fit(pool, n_clusters, sample_weight=weights, metric="cosine" if spherical else "euclidean",
                        seed=int(np.random.default_rng((seed, restart)).integers(2**63)))
    centers: np.ndarray = np.ascontiguousarray(result.centers, dtype=dataset.dtype)
    return centers
