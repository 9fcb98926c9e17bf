"""Evaluate and SuggestK: planned from their specs, their rows gathered as a Fit's are
(``gathering``), and the work run a step at a time under a fit slot (``steps``), so that a
cancelled call stops it. A SuggestK asked to stores its recommended fit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from centroidal import codec
from centroidal.engine import choosing, scoring
from centroidal.engine.cosine import unit_rows
from centroidal.engine.kmeans import KMeansParams
from centroidal.engine.progress import Progress

from .admission import CallWork, Incoming
from .catalog import describe
from .config import ServerConfig
from .exceptions import InvalidRequest, LimitExceeded, ModelMismatch
from .fitting import params_from_config, progress_of, received
from .gathering import FitData, RowsPlan, gather, no_rows_after
from .limits import check_model_name
from .predicting import Predicting, labels_of, nearest
from .runtime import Runtime
from .snapshots import SPECTRAL, ModelSnapshot
from .steps import StepRun

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


def scores_message(scores: scoring.Scores) -> codec.ClusterScores:
    return codec.ClusterScores(
        silhouette=scores.silhouette, silhouette_rows=scores.silhouette_rows,
        calinski_harabasz=scores.calinski_harabasz, davies_bouldin=scores.davies_bouldin,
        n_clusters_present=scores.n_clusters_present,
    )


def k_score_message(entry: choosing.KScore) -> codec.KScore:
    return codec.KScore(entry.n_clusters, entry.inertia, entry.n_iter, scores_message(entry.scores))


# ---- Evaluate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The answer of an Evaluate, before it is put on the wire."""

    inertia: float
    scores: scoring.Scores


def evaluate_steps(
    snapshot: ModelSnapshot, data: FitData, sample: int | None, seed: int
) -> Generator[scoring.Scoring, None, Evaluation]:
    """Label the rows with the model, then score the labelling; yields the share of the
    silhouette done."""
    prepared = nearest(snapshot)
    points = data.points
    if snapshot.kind == SPECTRAL:  # labelled by the vote; its inertia is around the cluster means
        labels = labels_of(snapshot, points)
        gaps = points.astype(np.float64) - snapshot.centers.astype(np.float64)[labels]
        inertia = float(np.einsum("ij,ij->", gaps, gaps))
    else:
        labels, distances = prepared.predict(points, return_distance=True, field="points")
        losses = distances.astype(np.float64)
        inertia = float(losses.sum() if prepared.metric == "cosine" else (losses**2).sum())
    if prepared.metric == "cosine":  # the silhouette's distances are between unit rows
        points = unit_rows(points, "points", in_place=True)
    steps = scoring.score_steps(
        points, labels, snapshot.n_clusters, metric=prepared.metric, sample_size=sample, seed=seed,
        prepared=True,
    )
    while True:
        try:
            share = next(steps)
        except StopIteration as done:
            return Evaluation(inertia, done.value)
        yield scoring.Scoring(snapshot.n_clusters, share)


def _rows_fitting(snapshot: ModelSnapshot, points: np.ndarray | None) -> np.ndarray | None:
    """An Evaluate chunk's rows, refused unless they have the model's width."""
    if points is not None and points.shape[1] != snapshot.n_features:
        raise ModelMismatch(
            f"points.cols={points.shape[1]} but model {snapshot.name!r} version "
            f"{snapshot.version} has {snapshot.n_features} features",
            field="points.cols", reason="FEATURE_MISMATCH",
        )
    return points


# ---- SuggestK -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SuggestPlan:
    """A SuggestKSpec checked: the ks, the fits' parameters (those of the largest k), the
    silhouette's sample, and where the best fit is saved ("" for nowhere)."""

    ks: range
    params: KMeansParams
    silhouette_rows: int | None
    sample_seed: int | None
    save_best_as: str
    n_samples: int

    def rows(self) -> RowsPlan:
        return RowsPlan(declared=self.n_samples, n_clusters=self.ks.stop - 1, n_clusters_field="spec.k_max")


def plan_suggest(spec: codec.SuggestKSpec, limits: ServerConfig) -> SuggestPlan:
    """Check a SuggestKSpec against the engine's rules and the server's limits."""
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
    if config.algorithm != "kmeans":
        raise InvalidRequest("spec.config.algorithm must be k-means (or unset) for SuggestK",
                             field="spec.config.algorithm")
    # Every k is seeded alike: unset means 0, as the contract says.
    params = params_from_config(replace(config, seed=config.seed or 0), limits, n_clusters=spec.k_max)
    if spec.n_samples > limits.max_points:
        raise LimitExceeded(f"spec.n_samples={spec.n_samples} exceeds the server's limit of "
                            f"{limits.max_points} points", field="spec.n_samples")
    save_as = check_model_name(spec.save_best_as, "spec.save_best_as") if spec.save_best_as else ""
    return SuggestPlan(
        ks=range(spec.k_min, spec.k_max + 1), params=params,
        silhouette_rows=silhouette_rows(spec.silhouette, "spec.silhouette"),
        sample_seed=spec.silhouette.seed, save_best_as=save_as, n_samples=spec.n_samples,
    )


def suggest_steps(
    plan: SuggestPlan, data: FitData
) -> Generator[Progress | scoring.Scoring | choosing.KScore, None, choosing.Suggestion]:
    """The engine's suggest-k on the gathered rows (scaled in place for cosine)."""
    if plan.ks.stop - 1 > data.points.shape[0] - 1:
        raise InvalidRequest(
            f"spec.k_max={plan.ks.stop - 1} needs at least {plan.ks.stop} points; the stream "
            f"carried {data.points.shape[0]}", field="spec.k_max",
        )
    params = plan.params
    steps: Generator[Any, None, choosing.Suggestion] = choosing.suggest_k_steps(
        data.points, plan.ks, metric=params.metric, init=params.init, n_init=params.n_init,
        max_iter=params.max_iter, tol=params.tol, seed=params.seed or 0,
        sample_size=plan.silhouette_rows, sample_seed=plan.sample_seed, copy_x=False,
    )
    return steps


# ---- the calls ----------------------------------------------------------------------------


class Scoring:
    """Runs Evaluate and SuggestK calls."""

    def __init__(self, runtime: Runtime, predicting: Predicting) -> None:
        self._runtime = runtime
        self._predicting = predicting

    async def evaluate(self, chunks: Incoming[codec.EvaluateChunk]) -> codec.EvaluateResponse:
        runtime, started = self._runtime, time.monotonic()
        first = await chunks.next()
        if first is None or first.spec is None:
            raise InvalidRequest("the first EvaluateRequest must carry a spec", field="spec")
        spec = first.spec
        # The answer is a single message, so a refusal of the spec waits for the upload to end:
        # a client still writing would not get the status (grpc/grpc#36066).
        async with chunks.drained_on_refusal():
            snapshot = await self._predicting.snapshot(spec.model, spec.version, "spec.model")
            sample = silhouette_rows(spec.silhouette, "spec.silhouette")
            if spec.n_samples > runtime.config.max_points:
                raise LimitExceeded(f"spec.n_samples={spec.n_samples} exceeds the server's limit of "
                                    f"{runtime.config.max_points} points", field="spec.n_samples")
            slot = runtime.fit_slots.take()
        work = CallWork()
        memory = runtime.memory.reservation("this evaluation", field="points")
        try:
            rows = RowsPlan(declared=spec.n_samples, n_clusters=1, n_clusters_field="spec.model")
            data = await gather(runtime, chunks, first, rows, memory, work,
                                lambda chunk: (_rows_fitting(snapshot, chunk.points), None))
            run = StepRun(
                f"evaluation of {snapshot.name}",
                evaluate_steps(snapshot, data, sample, spec.silhouette.seed or 0), work,
                runtime.workers.fits, runtime.fits, _nothing,
            )
            async with contextlib.aclosing(run.events()) as events:
                async for _ in events:
                    pass
        finally:
            work.after(slot.release)
            work.after(memory.release)
        evaluation: Evaluation = run.result
        await no_rows_after(chunks, rows, lambda chunk: (chunk.points, None))
        return codec.EvaluateResponse(
            version=snapshot.version, n_samples=data.points.shape[0], inertia=evaluation.inertia,
            scores=scores_message(evaluation.scores), elapsed_seconds=time.monotonic() - started,
        )

    async def suggest_k(self, chunks: Incoming[codec.SuggestKChunk]) -> AsyncIterator[codec.SuggestKEvent]:
        """The events of one SuggestK: admitted, the data received, each k's fit progress and
        scores, and the result, with the recommended fit stored first when asked for."""
        runtime, started = self._runtime, time.monotonic()
        first = await chunks.next()
        if first is None or first.spec is None:
            raise InvalidRequest("the first SuggestKRequest must carry a spec", field="spec")
        plan = plan_suggest(first.spec, runtime.config)
        if plan.save_best_as:
            runtime.registry.check_writable()  # before the data, as for a Fit
        slot, work = runtime.fit_slots.take(), CallWork()
        memory = runtime.memory.reservation("this suggest-k", field="points")
        try:
            yield codec.FitProgress("admitted", elapsed_seconds=time.monotonic() - started)
            data = await gather(runtime, chunks, first, plan.rows(), memory, work,
                                lambda chunk: (chunk.points, None))
            n_samples = data.points.shape[0]
            for event in received(runtime, n_samples, started):
                yield event
            run = StepRun("suggest-k", suggest_steps(plan, data), work, runtime.workers.fits,
                          runtime.fits, runtime.metrics.iterations.inc)
            k = plan.ks.start
            async with contextlib.aclosing(run.events()) as events:
                async for event in events:
                    if isinstance(event, choosing.KScore):
                        k = event.n_clusters + 1
                        yield k_score_message(event)
                    elif isinstance(event, scoring.Scoring):
                        yield codec.FitProgress("scoring", elapsed_seconds=time.monotonic() - started,
                                                n_clusters=k)
                    else:
                        yield replace(progress_of(event, n_samples, started), n_clusters=k)
        finally:
            work.after(slot.release)
            work.after(memory.release)
        suggestion: choosing.Suggestion = run.result
        await no_rows_after(chunks, plan.rows(), lambda chunk: (chunk.points, None))
        saved = None
        if plan.save_best_as:
            best = next(entry for entry in suggestion.per_k if entry.n_clusters == suggestion.recommended)
            snapshot = ModelSnapshot(
                name=plan.save_best_as, version=0, centers=best.centers,
                config=replace(plan.params, n_clusters=best.n_clusters).as_config(plan.params.seed or 0),
                inertia=best.inertia, n_iter=best.n_iter, n_samples_seen=n_samples,
                created_at=0.0, updated_at=0.0,
            )
            saved = describe(await runtime.commit(snapshot), include_centers=True)
        yield codec.SuggestKResult(
            recommended_k=suggestion.recommended, elbow_k=suggestion.elbow, rule=choosing.RULE,
            per_k=tuple(k_score_message(entry) for entry in suggestion.per_k), saved=saved,
            elapsed_seconds=time.monotonic() - started,
        )


def _nothing() -> None:
    """No metric counts an evaluation's steps."""
