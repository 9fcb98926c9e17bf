"""The work one partition does, as plain module-level functions a Dask worker runs.

Each reads its partition (or takes the rows a ``load`` task kept in the worker's memory),
calls the engine's compiled kernels on it, and returns something small: sums per cluster,
a few candidate rows, a cost. Randomness comes from (seed, step, partition index), so a
result depends on the data and the seed alone, never on which worker ran it.

Submitted as themselves (not as numba dispatchers, whose pickles lose their on-disk cache):
each worker loads the kernels from the cache the server's warm-up filled.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from centroidal.engine import InvalidInputError
from centroidal.engine.cosine import unit_rows
from centroidal.engine.nearest import NearestCenters
from centroidal.engine.lloyd import Workspace, assigned_sq_distances, column_moments, nearest
from centroidal.engine.threads import configure_threads
from centroidal.engine.validation import UNIT_WEIGHTS, check_finite, read_only
from centroidal.sources import Dataset, OutputDir, Partition, part_name, read_rows

# Numba threads per task, set by whoever starts the workers (a LocalCluster of N workers on
# C cores: C // N); unset, a worker's cores divided among its task threads.
TASK_THREADS_ENV = "CENTROIDAL_TASK_THREADS"


@dataclass(frozen=True)
class PieceRef:
    """Where a partition's rows are read from: the dataset cut down to its one file."""

    dataset: Dataset
    partition: Partition
    spherical: bool


@dataclass(frozen=True)
class Piece:
    """A partition's rows, checked (and of unit length for cosine), read-only.

    X : ndarray of shape (rows, n_features), the dataset's dtype
    weights : ndarray of shape (rows,), float64, or empty for unit weights
    """

    X: np.ndarray
    weights: np.ndarray
    offset: int
    index: int


def piece_ref(dataset: Dataset, partition: Partition, spherical: bool) -> PieceRef:
    """What a task needs to read one partition, without the dataset's other files."""
    from dataclasses import replace

    own = replace(dataset, files=(dataset.files[partition.file],), partitions=(),
                  shapes=dataset.shapes[partition.file : partition.file + 1])
    return PieceRef(own, replace(partition, file=0), spherical)


def _ready() -> None:
    """The engine's threading set up in this worker process, and as many numba threads per
    task as the worker's cores allow beside its other task threads."""
    configure_threads()
    import numba

    threads = os.environ.get(TASK_THREADS_ENV, "")
    if not threads.isdigit():
        try:
            from distributed import get_worker

            task_threads = get_worker().state.nthreads
        except (ImportError, ValueError):
            task_threads = 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = str(cores // max(1, task_threads))
    numba.set_num_threads(max(1, min(getattr(numba.config, "NUMBA_NUM_THREADS"), int(threads))))


def load(ref: PieceRef) -> Piece:
    """Read and check one partition: finite values, weights >= 0, rows of unit length for
    cosine. Errors name the row by its index in the whole dataset."""
    _ready()
    X, weights = read_rows(ref.dataset, ref.partition)
    field = f"{ref.dataset.field}.uri"
    offset = ref.partition.offset
    where = f"{ref.dataset.uri}, rows {offset}-{offset + X.shape[0] - 1}"
    try:
        check_finite(X, "X")
        if ref.spherical:
            X = unit_rows(X, "X", in_place=True)
    except InvalidInputError as exc:
        raise InvalidInputError(field, f"{field}: {where}: {exc}") from None
    if weights is None:
        return Piece(read_only(X), UNIT_WEIGHTS, offset, ref.partition.index)
    if not np.isfinite(weights).all() or (weights < 0).any():
        weight_field = f"{ref.dataset.field}.weight_column"
        raise InvalidInputError(weight_field, f"{weight_field} {ref.dataset.weight_column!r} must be finite and "
                                              f">= 0 ({where})")
    return Piece(read_only(X), weights, offset, ref.partition.index)


def _piece(source: Piece | PieceRef) -> Piece:
    if isinstance(source, Piece):
        _ready()
        return source
    return load(source)


def moments(source: Piece | PieceRef) -> tuple[int, np.ndarray, np.ndarray, float, int]:
    """(rows, per-feature mean, per-feature sum of squared deviations, total weight, rows of
    positive weight): merged in partition order into the dataset's variance."""
    piece = _piece(source)
    mean, sq_dev = column_moments(piece.X)
    rows = piece.X.shape[0]
    if piece.weights.size:
        return rows, mean, sq_dev, float(piece.weights.sum()), int(np.count_nonzero(piece.weights))
    return rows, mean, sq_dev, float(rows), rows


def lloyd_sums(source: Piece | PieceRef, centers: np.ndarray, exact: bool,
               kept: str = "") -> tuple[np.ndarray, np.ndarray, float]:
    """One E-step on the partition: per-cluster sums of weighted rows (k, d) and weights (k,),
    float64, and the inertia of the assignment (exact, or good to the dtype's rounding).

    With ``kept`` (the fit's key), the partition's workspace stays in this worker between
    iterations, so its distance bounds let later steps skip most rows, and its sums move
    with the few rows whose label changed, as on one machine; a task that runs elsewhere
    (its worker died) starts a workspace afresh: the sums are the same either way, to
    float64 rounding, only slower.
    """
    piece = _piece(source)
    X = piece.X
    work = _workspace(kept, piece, centers.shape[0]) if kept else None
    if work is None:
        work = Workspace(X.shape[0], centers.shape[0], X.shape[1], X.dtype)
    inertia, _ = work.step(X, piece.weights, centers, exact_inertia=exact)
    return work.partial_sums.sum(axis=0), work.partial_weights.sum(axis=0), inertia


# The workspaces of fits in progress on this worker, by (fit key, partition), with when
# each was last used; dropped when the fit ends (``drop_workspaces``), or after an hour
# unused (a fit whose server died).
_WORKSPACES: dict[tuple[str, int], tuple[float, Workspace]] = {}
_WORKSPACES_LOCK = threading.Lock()
WORKSPACE_IDLE_S = 3600.0


def _workspace(kept: str, piece: Piece, n_clusters: int) -> Workspace:
    now = time.monotonic()
    X = piece.X
    with _WORKSPACES_LOCK:
        for key, (used, _) in list(_WORKSPACES.items()):
            if now - used > WORKSPACE_IDLE_S:
                del _WORKSPACES[key]
        found = _WORKSPACES.get((kept, piece.index))
        work = found[1] if found is not None else None
        if work is None or work.labels.shape[0] != X.shape[0]:
            work = Workspace(X.shape[0], n_clusters, X.shape[1], X.dtype)
        _WORKSPACES[(kept, piece.index)] = (now, work)
    return work


def drop_workspaces(kept: str) -> int:
    """Let go of a finished fit's workspaces on this worker; returns how many there were."""
    with _WORKSPACES_LOCK:
        keys = [key for key in _WORKSPACES if key[0] == kept or key[0].startswith(f"{kept}-")]
        for key in keys:
            del _WORKSPACES[key]
    return len(keys)


def farthest(source: Piece | PieceRef, centers: np.ndarray, count: int) -> tuple[np.ndarray, ...]:
    """The partition's ``count`` rows farthest from their nearest center, farthest first (ties
    by row): (squared distances, dataset row indices, rows, weights, labels)."""
    piece = _piece(source)
    labels, _ = nearest(piece.X, centers)
    far = assigned_sq_distances(piece.X, centers, labels)
    order = np.argsort(-far, kind="stable")[:count]
    weights = piece.weights[order] if piece.weights.size else np.ones(order.size)
    return far[order], piece.offset + order, piece.X[order].copy(), weights, labels[order]


def weighted_sample(source: Piece | PieceRef, count: int, seed: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``count`` rows drawn without replacement with probability proportional to weight (rows
    of weight 0 never), as (keys, rows): the dataset's sample is the rows with the largest
    keys over every partition (Efraimidis and Spirakis)."""
    piece = _piece(source)
    rng = np.random.default_rng(seed)
    uniform = rng.random(piece.X.shape[0])
    with np.errstate(divide="ignore"):
        keys = np.log(uniform) / piece.weights if piece.weights.size else np.log(uniform)
    keys[~np.isfinite(keys)] = -np.inf
    order = np.argsort(-keys, kind="stable")[:count]
    order = order[np.isfinite(keys[order])]
    return keys[order], piece.X[order].copy()


@dataclass(frozen=True)
class Closest:
    """A partition's squared distances to the nearest k-means|| candidate so far, kept on its
    worker between rounds (float32: a sampling weight needs no more), with the rows' weights
    (empty for unit weights), so that the round's cost needs no second read of the rows."""

    sq_dist: np.ndarray
    weights: np.ndarray

    def mass(self) -> np.ndarray:
        """Each row's weighted squared distance, float64."""
        mass = self.sq_dist.astype(np.float64)
        if self.weights.size:
            mass *= self.weights
        return mass


def closest(source: Piece | PieceRef, candidates: np.ndarray) -> Closest:
    """Each row's squared distance to its nearest candidate of the first round."""
    piece = _piece(source)
    _, sq_dist = nearest(piece.X, candidates)
    return Closest(sq_dist.astype(np.float32), piece.weights)


def closer(source: Piece | PieceRef, previous: Closest, candidates: np.ndarray) -> Closest:
    """The previous rounds' distances, lowered by the new candidates'."""
    piece = _piece(source)
    _, sq_dist = nearest(piece.X, candidates)
    lowered = sq_dist.astype(np.float32)
    np.minimum(lowered, previous.sq_dist, out=lowered)
    return Closest(lowered, piece.weights)


def cost_to(source: Piece | PieceRef, candidates: np.ndarray) -> float:
    """``cost`` of the distances to every candidate so far, computed afresh (out of core,
    where keeping them between rounds would take the memory reading again spares)."""
    return cost(closest(source, candidates))


def oversample_from(source: Piece | PieceRef, candidates: np.ndarray, oversampling: float, phi: float,
                    seed: tuple[int, ...]) -> np.ndarray:
    """``oversample`` with the distances to every candidate so far computed afresh."""
    return oversample(source, closest(source, candidates), oversampling, phi, seed)


def cost(distances: Closest) -> float:
    """The partition's weighted squared distance to the candidates: its share of phi."""
    return float(distances.mass().sum())


def oversample(source: Piece | PieceRef, distances: Closest, oversampling: float, phi: float,
               seed: tuple[int, ...]) -> np.ndarray:
    """k-means|| sampling: each row independently with probability
    min(1, oversampling * weight * distance^2 / phi); the chosen rows, in order."""
    piece = _piece(source)
    rng = np.random.default_rng(seed)
    chosen = rng.random(piece.X.shape[0]) * phi < oversampling * distances.mass()
    return piece.X[chosen].copy()


def candidate_weights(source: Piece | PieceRef, candidates: np.ndarray) -> np.ndarray:
    """The weight of the rows nearest each candidate, (candidates,) float64."""
    piece = _piece(source)
    labels, _ = nearest(piece.X, candidates)
    weights = piece.weights if piece.weights.size else None
    return np.bincount(labels, weights=weights, minlength=candidates.shape[0]).astype(np.float64)


def label(source: Piece | PieceRef, centers: np.ndarray, metric: str, return_distances: bool,
          output: OutputDir, field: str) -> int:
    """Label the partition as Predict does (the same NearestCenters, from the model's centers
    and metric) and write its file in ``output``: columns row (int64), label (int32) and, if
    asked, distance (in the rows' dtype). Returns the rows written."""
    import pyarrow as pa

    piece = _piece(source)
    nearest_centers = NearestCenters(centers, metric)
    if return_distances:
        labels, distances = nearest_centers.predict(piece.X, return_distance=True, field=field)
    else:
        labels, distances = nearest_centers.predict(piece.X, field=field), None
    columns = {"row": np.arange(piece.offset, piece.offset + labels.size, dtype=np.int64), "label": labels}
    if distances is not None:
        columns["distance"] = distances
    output.write_table(part_name(piece.index), pa.table(columns))
    return int(labels.size)
