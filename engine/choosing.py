"""Which k to choose: ``suggest_k_steps`` fits each k of a range and scores it
(``scoring``); ``recommend`` names the k with the highest silhouette (the smaller k on a
tie), and the elbow of the inertia curve beside it.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from . import kmeans
from .cosine import unit_rows
from .progress import Progress
from .scoring import Scores, Scoring, score_steps
from .validation import InvalidInputError, as_float_matrix, check_finite, read_only


@dataclass(frozen=True)
class KScore:
    """One k of a suggest-k run: its fit and its scores."""

    n_clusters: int
    inertia: float
    n_iter: int
    scores: Scores
    centers: np.ndarray

    @property
    def skippable(self) -> bool:
        """Never: each k's result is reported."""
        return False


@dataclass(frozen=True)
class Suggestion:
    """The recommended k (highest silhouette) and the elbow of the inertia curve."""

    recommended: int
    elbow: int
    per_k: tuple[KScore, ...]


RULE = (
    "the k with the highest silhouette (the smaller k on a tie); the elbow is the k "
    "whose point lies farthest below the chord joining the first and last points of "
    "the inertia curve, both axes scaled to [0, 1]"
)


def suggest_k_steps(
    X: np.ndarray,
    n_clusters_range: Sequence[int],
    *,
    metric: str = "euclidean",
    init: str = "k-means++",
    n_init: int | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    sample_size: int | None = None,
    sample_seed: int | None = None,
    copy_x: bool = True,
) -> Generator[Progress | Scoring | KScore, None, Suggestion]:
    """Fit and score each k in turn: yields every fit's Progress, Scoring shares, and one
    KScore per k, and returns the Suggestion. Every k is seeded with ``seed`` and scored on
    the same sample, drawn with ``sample_seed`` (None: ``seed``). The fits' parameters are
    KMeansParams', for each k."""
    params = kmeans.KMeansParams(2, init=init, n_init=n_init, max_iter=max_iter, tol=tol,
                                 seed=seed, metric=metric).check()
    X = as_float_matrix(X, "X")
    check_finite(X, "X")
    ks = [int(k) for k in n_clusters_range]
    if not ks or min(ks) < 2 or max(ks) > X.shape[0] - 1:
        raise InvalidInputError(
            "n_clusters_range",
            f"every k must lie in [2, n_samples - 1 = {X.shape[0] - 1}], got {ks[:1]}..{ks[-1:]}",
        )
    if metric == "cosine":
        X = unit_rows(X, "X", in_place=not copy_x)
    X = read_only(X)
    per_k = []
    for k in ks:
        result = yield from kmeans.fit_prepared_steps(X, replace(params, n_clusters=k))
        scoring = score_steps(
            X, result.labels, k, metric=metric, sample_size=sample_size,
            seed=seed if sample_seed is None else sample_seed, prepared=True,
        )
        while True:
            try:
                share = next(scoring)
            except StopIteration as done:
                scores: Scores = done.value
                break
            yield Scoring(k, share)
        k_score = KScore(k, result.inertia, result.n_iter, scores, result.centers)
        per_k.append(k_score)
        yield k_score
    return recommend(per_k)


def recommend(per_k: Sequence[KScore]) -> Suggestion:
    """The k with the highest silhouette (smaller on a tie; the elbow when no silhouette
    is defined), and the elbow of the inertia curve."""
    ks = np.array([entry.n_clusters for entry in per_k], dtype=np.float64)
    inertia = np.array([entry.inertia for entry in per_k])
    elbow = int(ks[0])
    if len(per_k) >= 3 and inertia[0] > inertia[-1]:
        x = (ks - ks[0]) / (ks[-1] - ks[0])
        y = (inertia - inertia[-1]) / (inertia[0] - inertia[-1])
        elbow = int(ks[int(np.argmax(1.0 - x - y))])
    best, best_value = elbow, -math.inf
    for entry in per_k:
        value = entry.scores.silhouette
        if value is not None and value > best_value:
            best, best_value = entry.n_clusters, value
    return Suggestion(best, elbow, tuple(per_k))
