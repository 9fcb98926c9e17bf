"""How good a clustering is, and which k to choose.

- The silhouette of a row is (b - a) / max(a, b): a is its mean distance to the other
  rows of its cluster, b the smallest mean distance to the rows of another cluster; 0
  for a row alone in its cluster. The score is the mean over rows. It costs n^2 * d,
  but never an n x n matrix: blocks of rows meet tiles of the data through a GEMM,
  and each row keeps only its k distance sums. ``sample_size`` scores a seeded sample
  drawn exactly as scikit-learn's ``silhouette_score`` draws it for the same
  ``random_state``.
- Calinski-Harabasz: between-cluster over within-cluster dispersion, each divided by
  its degrees of freedom, (B / (K - 1)) / (W / (n - K)).
- Davies-Bouldin: the mean over clusters of the worst ratio (s_i + s_j) / d_ij, with
  s the mean distance of a cluster's rows to its mean and d the distance of the means.

All three take the clusters present in the labels (K of them) and are defined for
2 <= K <= n - 1, as in scikit-learn; outside that they are None. For the cosine
metric, rows are scaled to unit length, the silhouette uses cosine distance, and the
other two use Euclidean geometry on the unit rows. Everything runs in float64 and
gives bitwise the same result at any thread count.

Choosing k from these scores is ``choosing``'s.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from . import chunks
from ._common import chunk_bounds, kernel, n_chunks_for
from .cosine import check_metric, unit_rows
from .progress import run_to_end
from .validation import InvalidInputError, as_float_matrix, check_finite, read_only

# Rows of one block of the silhouette (a GEMM's height) and of one tile of the data it meets.
_BLOCK_ROWS = 64
_TILE_ROWS = 512
# Work (rows x data rows x features) per silhouette step, between which a caller may stop.
_STEP_WORK = 1 << 28
_MIN_STEP_BLOCKS = 8


@dataclass(frozen=True)
class Scores:
    """The scores of one labelling; None where undefined (fewer than 2 clusters present,
    or as many as rows). silhouette_rows is how many rows the silhouette averaged."""

    n_clusters_present: int
    silhouette: float | None
    silhouette_rows: int
    calinski_harabasz: float | None
    davies_bouldin: float | None


@dataclass(frozen=True)
class Scoring:
    """A suggest-k run is scoring k: ``share`` of its silhouette is done."""

    n_clusters: int
    share: float

    @property
    def skippable(self) -> bool:
        """A share short of the whole may be dropped when another follows soon."""
        return self.share < 1.0


def sample_rows(n_samples: int, sample_size: int | None, seed: int) -> np.ndarray | None:
    """The rows a sampled silhouette scores, or None for all: the first sample_size of a
    permutation by numpy's legacy RandomState(seed), as scikit-learn draws them. That
    generator takes seeds below 2**32; a larger seed draws with default_rng(seed)."""
    if sample_size is None or sample_size >= n_samples:
        return None
    if sample_size < 2:
        raise InvalidInputError("sample_size", f"sample_size must be at least 2, got {sample_size}")
    if 0 <= seed < 2**32:
        order = np.random.RandomState(seed).permutation(n_samples)
    else:
        order = np.random.default_rng(seed).permutation(n_samples)
    return np.sort(order[:sample_size])


def silhouette_steps(
    X: np.ndarray, labels: np.ndarray, n_clusters: int, *, cosine: bool = False
) -> Generator[float, None, float | None]:
    """The mean silhouette of X's rows, as a generator of the share done so far.

    X : ndarray of shape (n_samples, n_features), float32 or float64, finite; unit rows
        when ``cosine``
    labels : ndarray of shape (n_samples,), int32 in [0, n_clusters)
    Returns None when fewer than 2 clusters, or as many clusters as rows, are present.
    """
    X = read_only(X)
    n_samples = X.shape[0]
    counts = np.bincount(labels, minlength=n_clusters).astype(np.int64)
    present = int(np.count_nonzero(counts))
    if not 2 <= present <= n_samples - 1:
        return None
    shift = np.zeros(X.shape[1]) if cosine else X.mean(axis=0, dtype=np.float64)
    values = np.empty(n_samples, dtype=np.float64)
    # Whole blocks, and enough of them for every thread to have some.
    rows_per_step = max(_MIN_STEP_BLOCKS, _STEP_WORK // max(1, n_samples * X.shape[1]) // _BLOCK_ROWS) * _BLOCK_ROWS
    for first in range(0, n_samples, rows_per_step):
        stop = min(first + rows_per_step, n_samples)
        n_blocks = (stop - first + _BLOCK_ROWS - 1) // _BLOCK_ROWS
        chunks.run(_silhouette_rows, n_blocks, X, shift, labels, counts, first, stop, cosine, values)
        yield stop / n_samples
    return float(values.sum() / n_samples)


def score(
    X: np.ndarray,
    labels: np.ndarray,
    n_clusters: int,
    *,
    metric: str = "euclidean",
    sample_size: int | None = None,
    seed: int = 0,
) -> Scores:
    """Silhouette (over all rows, or a seeded sample of ``sample_size``), Calinski-Harabasz
    and Davies-Bouldin of ``labels`` on X. See the module's docstring."""
    result: Scores = run_to_end(
        score_steps(X, labels, n_clusters, metric=metric, sample_size=sample_size, seed=seed)
    )
    return result


def score_steps(
    X: np.ndarray,
    labels: np.ndarray,
    n_clusters: int,
    *,
    metric: str = "euclidean",
    sample_size: int | None = None,
    seed: int = 0,
    prepared: bool = False,
) -> Generator[float, None, Scores]:
    """``score`` as a generator of the silhouette's share done. ``prepared``: X is already
    checked (finite, and unit rows for the cosine metric)."""
    cosine = check_metric(metric) == "cosine"
    if not prepared:
        X = as_float_matrix(X, "X")
        check_finite(X, "X")
        if cosine:
            X = unit_rows(X, "X")
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    if labels.shape != (X.shape[0],):
        raise InvalidInputError("labels", f"labels must have shape ({X.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_clusters):
        raise InvalidInputError("labels", f"labels must lie in [0, {n_clusters})")
    rows = sample_rows(X.shape[0], sample_size, seed)
    sampled_X, sampled_labels = (X, labels) if rows is None else (X[rows], labels[rows])
    silhouette = yield from silhouette_steps(sampled_X, sampled_labels, n_clusters, cosine=cosine)
    calinski, davies = _dispersion_scores(X, labels, n_clusters)
    present = int(np.count_nonzero(np.bincount(labels, minlength=n_clusters)))
    return Scores(present, silhouette, sampled_X.shape[0], calinski, davies)


def _dispersion_scores(X: np.ndarray, labels: np.ndarray, n_clusters: int) -> tuple[float | None, float | None]:
    """Calinski-Harabasz and Davies-Bouldin, from two passes over X."""
    X = read_only(X)
    n_samples, n_features = X.shape
    n_chunks = n_chunks_for(n_samples, n_clusters, n_features)
    partial_sums = np.empty((n_chunks, n_clusters, n_features))
    partial_counts = np.empty((n_chunks, n_clusters))
    chunks.run(_label_sums, n_chunks, X, labels, partial_sums, partial_counts)
    sums, counts = partial_sums.sum(axis=0), partial_counts.sum(axis=0)
    present = counts > 0
    n_present = int(present.sum())
    if not 2 <= n_present <= n_samples - 1:
        return None, None
    means = np.zeros((n_clusters, n_features))
    means[present] = sums[present] / counts[present, None]
    partial_sq = np.empty((n_chunks, n_clusters))
    partial_dist = np.empty((n_chunks, n_clusters))
    chunks.run(_spread, n_chunks, X, labels, means, partial_sq, partial_dist)
    within_sq, within_dist = partial_sq.sum(axis=0), partial_dist.sum(axis=0)
    overall = sums.sum(axis=0) / n_samples
    between = float((counts[present] * ((means[present] - overall) ** 2).sum(axis=1)).sum())
    within = float(within_sq.sum())
    calinski = 1.0 if within == 0 else between * (n_samples - n_present) / (within * (n_present - 1))
    spread = within_dist[present] / counts[present]
    centers = means[present]
    gaps = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2))
    if np.allclose(spread, 0) or np.allclose(gaps, 0):
        return calinski, 0.0
    gaps[gaps == 0] = np.inf
    ratios = (spread[:, None] + spread[None, :]) / gaps
    return calinski, float(ratios.max(axis=1).mean())


@kernel
def _silhouette_rows(  # pragma: no cover - compiled
    first_block, stop_block, X, shift, labels, counts, first, stop, cosine, out
):
    """Silhouette of rows first..stop-1 of X against every row of X, into out[first:stop]:
    blocks first_block..stop_block-1 of their _BLOCK_ROWS-row blocks.

    X (n, d) IN, float32 or float64; shift (d,) float64 IN, subtracted from every row
    (zeros for cosine); labels (n,) int32 IN; counts (k,) int64 IN, rows per cluster;
    out (n,) float64 OUT. Prior validation of the data is assumed.

    A block of rows meets each tile of the data through one GEMM. Its sums by cluster are
    kept transposed, (k, block), so that adding one data row's distances to the whole
    block is a contiguous loop the compiler vectorises, sqrt included; each sum still
    takes its terms in data-row order.
    """
    n_samples, n_features = X.shape
    n_clusters = counts.shape[0]
    for block in range(first_block, stop_block):
        start = first + block * _BLOCK_ROWS
        rows = min(_BLOCK_ROWS, stop - start)
        block_t = np.zeros((n_features, _BLOCK_ROWS))
        block_sq = np.zeros(_BLOCK_ROWS)
        for r in range(rows):
            total = 0.0
            for f in range(n_features):
                value = np.float64(X[start + r, f]) - shift[f]
                block_t[f, r] = value
                total += value * value
            block_sq[r] = total
        tile = np.zeros((_TILE_ROWS, n_features))
        tile_sq = np.zeros(_TILE_ROWS)
        dots = np.empty((_TILE_ROWS, _BLOCK_ROWS))
        distances = np.empty(_BLOCK_ROWS)
        sums_t = np.zeros((n_clusters, _BLOCK_ROWS))
        for tile_start in range(0, n_samples, _TILE_ROWS):
            tile_rows = min(_TILE_ROWS, n_samples - tile_start)
            for j in range(tile_rows):
                total = 0.0
                for f in range(n_features):
                    value = np.float64(X[tile_start + j, f]) - shift[f]
                    tile[j, f] = value
                    total += value * value
                tile_sq[j] = total
            np.dot(tile, block_t, dots)
            for j in range(tile_rows):
                if cosine:
                    for r in range(_BLOCK_ROWS):
                        distances[r] = min(max(1.0 - dots[j, r], 0.0), 2.0)
                else:
                    data_sq = tile_sq[j]
                    for r in range(_BLOCK_ROWS):
                        distances[r] = math.sqrt(max(block_sq[r] + data_sq - 2.0 * dots[j, r], 0.0))
                itself = tile_start + j - start
                if 0 <= itself < rows:
                    distances[itself] = 0.0  # a row adds nothing to its own cluster's sum
                sums = sums_t[labels[tile_start + j]]
                for r in range(_BLOCK_ROWS):
                    sums[r] += distances[r]
        for r in range(rows):
            i = start + r
            own = labels[i]
            if counts[own] <= 1:
                out[i] = 0.0
                continue
            within = sums_t[own, r] / (counts[own] - 1)
            nearest = np.inf
            for c in range(n_clusters):
                if c != own and counts[c] > 0:
                    nearest = min(nearest, sums_t[c, r] / counts[c])
            larger = max(within, nearest)
            out[i] = 0.0 if larger == 0.0 else (nearest - within) / larger


@kernel
def _label_sums(first_chunk, stop_chunk, X, labels, partial_sums, partial_counts):  # pragma: no cover - compiled
    """Per-chunk sums of each cluster's rows: partial_sums (c, k, d) and partial_counts
    (c, k), float64 OUT."""
    n_samples, n_features = X.shape
    n_chunks = partial_sums.shape[0]
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(n_samples, chunk, n_chunks)
        sums = partial_sums[chunk]
        counts = partial_counts[chunk]
        sums[:] = 0.0
        counts[:] = 0.0
        for i in range(start, stop):
            label = labels[i]
            counts[label] += 1.0
            for f in range(n_features):
                sums[label, f] += X[i, f]


@kernel
def _spread(first_chunk, stop_chunk, X, labels, means, partial_sq, partial_dist):  # pragma: no cover - compiled
    """Per-chunk sums over each cluster's rows of the squared distance, and the distance,
    to the cluster's mean: partial_sq and partial_dist (c, k) float64 OUT."""
    n_samples, n_features = X.shape
    n_chunks = partial_sq.shape[0]
    for chunk in range(first_chunk, stop_chunk):
        start, stop = chunk_bounds(n_samples, chunk, n_chunks)
        sq = partial_sq[chunk]
        dist = partial_dist[chunk]
        sq[:] = 0.0
        dist[:] = 0.0
        for i in range(start, stop):
            label = labels[i]
            total = 0.0
            for f in range(n_features):
                gap = np.float64(X[i, f]) - means[label, f]
                total += gap * gap
            sq[label] += total
            dist[label] += math.sqrt(total)


def warmup(dtype: np.dtype) -> None:
    """Compile the scoring kernels for rows of ``dtype``."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(dtype)
    labels = (np.arange(40) % 3).astype(np.int32)
    score(X, labels, 3)
    score(X, labels, 3, metric="cosine")
