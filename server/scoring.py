"""Evaluate and SuggestK: plan them from their specs, and the engine's steps for each.

The rows are gathered as a Fit's are (``fitting.Gatherer``), and the work runs a step at
a time under a fit slot (``fitting.FitRun``), so a cancelled call stops it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from centroidal.engine import scoring
from centroidal.engine.progress import Progress
from centroidal.v1 import codec

from .config import ServerConfig
from .exceptions import InvalidRequest, LimitExceeded
from .fitting import DEFAULT_MAX_ITER, DEFAULT_TOL, MAX_MAX_ITER, MAX_N_INIT, FitData, FitParams
from .limits import check_model_name
from .predicting import labels_of, nearest
from .snapshots import SPECTRAL, ModelSnapshot

# Rows the silhouette scores unless told otherwise: the whole input up to this many.
DEFAULT_SILHOUETTE_ROWS = 20_000
# Values of k one SuggestK may try.
MAX_K_VALUES = 64


def silhouette_rows(options: codec.SilhouetteOptions, field: str) -> int | None:
    """How many rows the silhouette scores: None for all of them."""
    if options.all_rows:
        return None
    if options.sample_size == 1:
        raise InvalidRequest(f"{field}.sample_size must be 0 (the default) or at least 2, got 1",
                             field=f"{field}.sample_size")
    return options.sample_size or DEFAULT_SILHOUETTE_ROWS


def gathering_params(
    model: str, n_samples: int, n_clusters: int, metric: str, n_clusters_field: str
) -> FitParams:
    """What ``fitting.Gatherer`` checks the rows against."""
    return FitParams(
        model=model, n_clusters=n_clusters, init="k-means++", init_centers=None, n_init=1,
        max_iter=1, tol=0.0, seed=None, n_samples=n_samples, expected_version=None,
        return_labels=False, metric=metric, n_clusters_field=n_clusters_field,
    )


# ---- Evaluate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The answer of an Evaluate, before it is put on the wire."""

    inertia: float
    scores: scoring.Scores


def evaluate_steps(
    snapshot: ModelSnapshot, data: FitData, spec: codec.EvaluateSpec
) -> Generator[float, None, Evaluation]:
    """Label the rows with the model, then score the labelling; yields the share of the
    silhouette done. The rows are unit rows already for a cosine model."""
    prepared = nearest(snapshot)
    if snapshot.kind == SPECTRAL:  # labelled by the vote; its inertia is around the cluster means
        labels = labels_of(snapshot, data.points)
        gaps = data.points.astype(np.float64) - snapshot.centers.astype(np.float64)[labels]
        inertia = float(np.einsum("ij,ij->", gaps, gaps))
    else:
        labels, distances = prepared.predict(data.points, return_distance=True, field="points")
        assert isinstance(distances, np.ndarray)
        losses = distances.astype(np.float64)
        inertia = float(losses.sum() if prepared.metric == "cosine" else (losses**2).sum())
    sample = silhouette_rows(spec.silhouette, "spec.silhouette")
    scores = yield from scoring.score_steps(
        data.points, labels, snapshot.n_clusters, metric=prepared.metric, sample_size=sample,
        seed=spec.silhouette.seed or 0, prepared=True,
    )
    return Evaluation(inertia, scores)


def scores_message(scores: scoring.Scores) -> codec.ClusterScores:
    return codec.ClusterScores(
        silhouette=scores.silhouette, silhouette_rows=scores.silhouette_rows,
        calinski_harabasz=scores.calinski_harabasz, davies_bouldin=scores.davies_bouldin,
        n_clusters_present=scores.n_clusters_present,
    )


# ---- SuggestK -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SuggestPlan:
    """A validated SuggestKSpec, with defaults filled in."""

    ks: range
    n_init: int | None
    max_iter: int
    tol: float
    seed: int
    metric: str
    silhouette_rows: int | None
    sample_seed: int | None
    save_best_as: str
    gathering: FitParams

    def config(self, k: int) -> dict[str, object]:
        """The stored config of the kept model, as a Fit of k would record it."""
        return {
            "init": "k-means++", "n_init": self.n_init or 1, "max_iter": self.max_iter, "tol": self.tol,
            "seed": self.seed, "metric": self.metric,
        }


def plan_suggest(spec: codec.SuggestKSpec, limits: ServerConfig) -> SuggestPlan:
    """Check a SuggestKSpec against the contract and the server's limits."""
    config = spec.config
    if spec.k_min < 2:
        raise InvalidRequest(f"spec.k_min must be at least 2, got {spec.k_min}", field="spec.k_min")
    if spec.k_max < spec.k_min:
        raise InvalidRequest(f"spec.k_max={spec.k_max} is below spec.k_min={spec.k_min}", field="spec.k_max")
    if spec.k_max > limits.max_clusters:
        raise LimitExceeded(f"spec.k_max={spec.k_max} exceeds the server's limit of {limits.max_clusters}",
                            field="spec.k_max")
    if spec.k_max - spec.k_min + 1 > MAX_K_VALUES:
        raise LimitExceeded(
            f"spec.k_min..k_max spans {spec.k_max - spec.k_min + 1} values of k; at most "
            f"{MAX_K_VALUES} per call", field="spec.k_max",
        )
    if config.n_clusters:
        raise InvalidRequest("spec.config.n_clusters must be unset: k_min..k_max gives it",
                             field="spec.config.n_clusters")
    if config.init == "given":
        raise InvalidRequest("spec.config.init cannot be INIT_METHOD_GIVEN: each k needs its own centers",
                             field="spec.config.init")
    if config.init == "random":
        raise InvalidRequest("spec.config.init must be k-means++ (or unset) for SuggestK",
                             field="spec.config.init")
    if config.n_init > MAX_N_INIT:
        raise InvalidRequest(f"spec.config.n_init must be at most {MAX_N_INIT}, got {config.n_init}",
                             field="spec.config.n_init")
    max_iter = config.max_iter or DEFAULT_MAX_ITER
    if max_iter > MAX_MAX_ITER:
        raise InvalidRequest(f"spec.config.max_iter must be at most {MAX_MAX_ITER}, got {max_iter}",
                             field="spec.config.max_iter")
    tol = DEFAULT_TOL if config.tol is None else config.tol
    if not (np.isfinite(tol) and tol >= 0):
        raise InvalidRequest(f"spec.config.tol must be finite and >= 0, got {tol}", field="spec.config.tol")
    if spec.n_samples > limits.max_points:
        raise LimitExceeded(f"spec.n_samples={spec.n_samples} exceeds the server's limit of "
                            f"{limits.max_points} points", field="spec.n_samples")
    save_as = check_model_name(spec.save_best_as, "spec.save_best_as") if spec.save_best_as else ""
    return SuggestPlan(
        ks=range(spec.k_min, spec.k_max + 1), n_init=config.n_init or None, max_iter=max_iter,
        tol=float(tol), seed=0 if config.seed is None else int(config.seed), metric=config.metric,
        silhouette_rows=silhouette_rows(spec.silhouette, "spec.silhouette"),
        sample_seed=spec.silhouette.seed, save_best_as=save_as,
        gathering=gathering_params(
            save_as or "suggest-k", spec.n_samples, spec.k_max, config.metric, "spec.k_max"
        ),
    )


def suggest_steps(
    plan: SuggestPlan, data: FitData
) -> Generator[Progress | scoring.Scoring | scoring.KScore, None, scoring.Suggestion]:
    """The engine's suggest-k on the gathered rows (unit rows already for cosine)."""
    if plan.ks.stop - 1 > data.points.shape[0] - 1:
        raise InvalidRequest(
            f"spec.k_max={plan.ks.stop - 1} needs at least {plan.ks.stop} points; the stream "
            f"carried {data.points.shape[0]}", field="spec.k_max",
        )
    steps: Generator[Any, None, scoring.Suggestion] = scoring.suggest_k_steps(
        data.points, plan.ks, metric=plan.metric, n_init=plan.n_init, max_iter=plan.max_iter,
        tol=plan.tol, seed=plan.seed, sample_size=plan.silhouette_rows, sample_seed=plan.sample_seed,
        copy_x=False,
    )
    return steps


def k_score_message(entry: scoring.KScore) -> codec.KScore:
    return codec.KScore(entry.n_clusters, entry.inertia, entry.n_iter, scores_message(entry.scores))


def best_fit(suggestion: scoring.Suggestion) -> scoring.KScore:
    return next(entry for entry in suggestion.per_k if entry.n_clusters == suggestion.recommended)

