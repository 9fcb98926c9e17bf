"""Evaluate and SuggestK for the SDK: the requests of one call, and its result."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import codec

from . import _wire
from ._calls import _choice, rows_per_chunk
from ._wire import FitProgress, ModelInfo
from .errors import CentroidalError


@dataclass(frozen=True)
class ClusterScores:
    """Scores of one labelling; None where undefined (fewer than 2 clusters present, or
    as many clusters as rows).

    silhouette : in [-1, 1], higher is better; silhouette_rows rows were averaged
    calinski_harabasz : higher is better
    davies_bouldin : >= 0, lower is better
    """

    silhouette: float | None
    silhouette_rows: int
    calinski_harabasz: float | None
    davies_bouldin: float | None
    n_clusters_present: int


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on given points: their inertia (in its metric) and the scores of
    the labels it gives them."""

    version: int
    n_samples: int
    inertia: float
    scores: ClusterScores
    elapsed_seconds: float


@dataclass(frozen=True)
class KScore:
    """One k of a suggest_k run."""

    n_clusters: int
    inertia: float
    n_iter: int
    scores: ClusterScores


@dataclass(frozen=True)
class Suggestion:
    """The result of suggest_k: the recommended k (highest silhouette), the elbow of the
    inertia curve, the rule in words, every k's scores, and the saved model if asked for."""

    recommended_k: int
    elbow_k: int
    rule: str
    per_k: tuple[KScore, ...]
    saved: ModelInfo | None
    elapsed_seconds: float

    def table(self) -> str:
        """The per-k scores as aligned text."""
        lines = [f"{'k':>4} {'inertia':>14} {'silhouette':>10} {'calinski':>12} {'davies':>8}"]
        for entry in self.per_k:
            scores = entry.scores
            mark = "  <- recommended" if entry.n_clusters == self.recommended_k else ""
            mark += "  <- elbow" if entry.n_clusters == self.elbow_k else ""
            lines.append(
                f"{entry.n_clusters:>4} {entry.inertia:>14.6g} {_number(scores.silhouette):>10} "
                f"{_number(scores.calinski_harabasz):>12} {_number(scores.davies_bouldin):>8}{mark}"
            )
        return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _scores(message: pb.ClusterScores) -> ClusterScores:
    scores = codec.decode_cluster_scores(message)
    return ClusterScores(
        scores.silhouette, scores.silhouette_rows, scores.calinski_harabasz, scores.davies_bouldin,
        scores.n_clusters_present,
    )


def _silhouette(sample_size: int | None, seed: int | None) -> codec.SilhouetteOptions:
    """None scores every row; 0 takes the server's default sample."""
    if sample_size is not None and (int(sample_size) < 0 or int(sample_size) == 1):
        raise ValueError(f"silhouette_sample_size must be None, 0 or at least 2, got {sample_size}")
    return codec.SilhouetteOptions(
        sample_size=int(sample_size or 0), all_rows=sample_size is None,
        seed=None if seed is None else int(seed),
    )


def _chunks(head: type, spec_field: str, spec: Any, points: np.ndarray, chunk_bytes: int) -> Iterator[bytes]:
    """The spec alone, then the rows in chunks of about chunk_bytes."""
    first = head()
    getattr(first, spec_field).CopyFrom(spec)
    yield first.SerializeToString()
    rows = rows_per_chunk(chunk_bytes, points)
    for start in range(0, max(points.shape[0], 1), rows):
        yield codec.serialize_with_matrix(head(), "points", points[start : start + rows])


class EvaluatePlan:
    """The EvaluateRequest stream of one call, and its answer."""

    def __init__(
        self, name: str, X: Any, *, version: int | None, silhouette_sample_size: int | None,
        seed: int | None, chunk_bytes: int,
    ) -> None:
        self.points = _wire.as_points(X)
        self.spec = codec.encode_evaluate_spec(codec.EvaluateSpec(
            model=name, version=None if version is None else int(version),
            silhouette=_silhouette(silhouette_sample_size, seed), n_samples=self.points.shape[0],
        ))
        self.chunk_bytes = chunk_bytes

    def requests(self) -> Iterator[bytes]:
        return _chunks(pb.EvaluateRequest, "spec", self.spec, self.points, self.chunk_bytes)

    @staticmethod
    def result(message: pb.EvaluateResponse) -> Evaluation:
        return Evaluation(
            int(message.version), int(message.n_samples), float(message.inertia), _scores(message.scores),
            float(message.elapsed_seconds),
        )


class SuggestPlan:
    """The SuggestKRequest stream of one call, and the result gathered from its answers."""

    def __init__(
        self, X: Any, k_range: Sequence[int], *, metric: str, n_init: int | None, max_iter: int | None,
        tol: float | None, seed: int | None, silhouette_sample_size: int | None,
        save_best_as: str, chunk_bytes: int,
    ) -> None:
        ks = [int(k) for k in k_range]
        if not ks or ks != list(range(ks[0], ks[-1] + 1)):
            raise ValueError(f"k_range must be consecutive values of k, such as range(2, 13); got {k_range!r}")
        self.points = _wire.as_points(X)
        config = codec.KMeansConfig(
            n_init=int(n_init or 0), max_iter=int(max_iter or 0),
            tol=None if tol is None else float(tol), seed=None if seed is None else int(seed),
            metric=_choice(codec.METRICS, metric, "metric"),
        )
        self.spec = codec.encode_suggest_k_spec(codec.SuggestKSpec(
            k_min=ks[0], k_max=ks[-1], config=config,
            silhouette=_silhouette(silhouette_sample_size, seed), n_samples=self.points.shape[0],
            save_best_as=save_best_as,
        ))
        self.chunk_bytes = chunk_bytes
        self._result: pb.SuggestKResult | None = None

    def requests(self) -> Iterator[bytes]:
        return _chunks(pb.SuggestKRequest, "spec", self.spec, self.points, self.chunk_bytes)

    def take(self, response: pb.SuggestKResponse) -> FitProgress | KScore | None:
        """Absorb one answer; returns the progress or per-k score it carries, if any."""
        kind = response.WhichOneof("event")
        if kind == "progress":
            progress = _wire.fit_progress(response.progress, self.points.shape[0])
            return None if progress.stage == "admitted" else progress
        if kind == "k_score":
            return _k_score(response.k_score)
        if kind == "result":
            self._result = response.result
        return None

    def result(self) -> Suggestion:
        result = self._result
        if result is None:
            raise CentroidalError("the server ended the SuggestK stream without a result")
        return Suggestion(
            recommended_k=int(result.recommended_k), elbow_k=int(result.elbow_k), rule=result.rule,
            per_k=tuple(_k_score(entry) for entry in result.per_k),
            saved=_wire.model_info(result.saved) if result.HasField("saved") else None,
            elapsed_seconds=float(result.elapsed_seconds),
        )


def _k_score(message: pb.KScore) -> KScore:
    return KScore(int(message.n_clusters), float(message.inertia), int(message.n_iter), _scores(message.scores))
