"""Evaluate and SuggestK on the wire: their specs and rows, scores, and results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from centroidal.v1 import clustering_pb2 as pb

from .arrays import matrix_or_none, rows_in_place, with_matrix
from .fit import FitProgress, decode_fit_progress, encode_fit_progress
from .models import KMeansConfig, Model, decode_kmeans_config, decode_model, encode_kmeans_config, encode_model
from .wire import READ_IN_PLACE_BYTES, optional, set_optional


@dataclass(frozen=True)
class SilhouetteOptions:
    sample_size: int = 0  # 0: the default
    all_rows: bool = False
    seed: int | None = None


def decode_silhouette_options(message: pb.SilhouetteOptions) -> SilhouetteOptions:
    return SilhouetteOptions(int(message.sample_size), message.all_rows, optional(message, "seed"))


def encode_silhouette_options(options: SilhouetteOptions) -> pb.SilhouetteOptions:
    message = pb.SilhouetteOptions(sample_size=options.sample_size, all_rows=options.all_rows)
    set_optional(message, seed=options.seed)
    return message


@dataclass(frozen=True)
class EvaluateSpec:
    model: str
    version: int | None = None
    silhouette: SilhouetteOptions = SilhouetteOptions()
    n_samples: int = 0  # 0: not declared


def decode_evaluate_spec(message: pb.EvaluateSpec) -> EvaluateSpec:
    return EvaluateSpec(
        model=message.model,
        version=optional(message, "version"),
        silhouette=decode_silhouette_options(message.silhouette),
        n_samples=int(message.n_samples),
    )


def encode_evaluate_spec(spec: EvaluateSpec) -> pb.EvaluateSpec:
    message = pb.EvaluateSpec(
        model=spec.model, silhouette=encode_silhouette_options(spec.silhouette), n_samples=spec.n_samples,
    )
    set_optional(message, version=spec.version)
    return message


@dataclass(frozen=True)
class EvaluateChunk:
    """One EvaluateRequest: the spec (first message only) and rows."""

    spec: EvaluateSpec | None = None
    points: np.ndarray | None = None


def decode_evaluate_request(message: pb.EvaluateRequest) -> EvaluateChunk:
    return EvaluateChunk(
        spec=decode_evaluate_spec(message.spec) if message.HasField("spec") else None,
        points=matrix_or_none(message, "points", "points"),
    )


def read_evaluate_request(data: bytes, in_place_from: int = READ_IN_PLACE_BYTES) -> EvaluateChunk:
    """``decode_evaluate_request`` of the message in ``data``, a chunk of rows read in place."""
    rows = rows_in_place(data, pb.EvaluateRequest, in_place_from)
    if rows is None:
        return decode_evaluate_request(pb.EvaluateRequest.FromString(data))
    return EvaluateChunk(points=rows[0])


def serialize_evaluate_request(chunk: EvaluateChunk) -> bytes:
    """An EvaluateRequest's bytes; the rows are appended without protobuf's copy."""
    head = pb.EvaluateRequest()
    if chunk.spec is not None:
        head.spec.CopyFrom(encode_evaluate_spec(chunk.spec))
    return with_matrix(head, "points", chunk.points)


@dataclass(frozen=True)
class ClusterScores:
    """Scores of one labelling; None where undefined (fewer than 2 clusters present, or
    as many clusters as rows).

    silhouette : in [-1, 1], higher is better; silhouette_rows rows were averaged
    calinski_harabasz : higher is better
    davies_bouldin : >= 0, lower is better
    """

    silhouette: float | None = None
    silhouette_rows: int = 0
    calinski_harabasz: float | None = None
    davies_bouldin: float | None = None
    n_clusters_present: int = 0


def decode_cluster_scores(message: pb.ClusterScores) -> ClusterScores:
    return ClusterScores(
        silhouette=optional(message, "silhouette"),
        silhouette_rows=int(message.silhouette_rows),
        calinski_harabasz=optional(message, "calinski_harabasz"),
        davies_bouldin=optional(message, "davies_bouldin"),
        n_clusters_present=int(message.n_clusters_present),
    )


def encode_cluster_scores(scores: ClusterScores) -> pb.ClusterScores:
    message = pb.ClusterScores(
        silhouette_rows=scores.silhouette_rows, n_clusters_present=scores.n_clusters_present
    )
    set_optional(
        message, silhouette=scores.silhouette, calinski_harabasz=scores.calinski_harabasz,
        davies_bouldin=scores.davies_bouldin,
    )
    return message


@dataclass(frozen=True)
class EvaluateResponse:
    """A model's scores on given points: their inertia (in its metric) and the scores of
    the labels it gives them."""

    version: int
    n_samples: int
    inertia: float
    scores: ClusterScores
    elapsed_seconds: float = 0.0


def decode_evaluate_response(message: pb.EvaluateResponse) -> EvaluateResponse:
    return EvaluateResponse(
        version=int(message.version),
        n_samples=int(message.n_samples),
        inertia=float(message.inertia),
        scores=decode_cluster_scores(message.scores),
        elapsed_seconds=float(message.elapsed_seconds),
    )


def encode_evaluate_response(response: EvaluateResponse) -> pb.EvaluateResponse:
    return pb.EvaluateResponse(
        version=response.version, n_samples=response.n_samples, inertia=response.inertia,
        scores=encode_cluster_scores(response.scores), elapsed_seconds=response.elapsed_seconds,
    )


@dataclass(frozen=True)
class SuggestKSpec:
    k_min: int
    k_max: int
    config: KMeansConfig = KMeansConfig()
    silhouette: SilhouetteOptions = SilhouetteOptions()
    n_samples: int = 0  # 0: not declared
    save_best_as: str = ""


def decode_suggest_k_spec(message: pb.SuggestKSpec, field: str = "spec") -> SuggestKSpec:
    return SuggestKSpec(
        k_min=int(message.k_min),
        k_max=int(message.k_max),
        config=decode_kmeans_config(message.config, f"{field}.config"),
        silhouette=decode_silhouette_options(message.silhouette),
        n_samples=int(message.n_samples),
        save_best_as=message.save_best_as,
    )


def encode_suggest_k_spec(spec: SuggestKSpec) -> pb.SuggestKSpec:
    return pb.SuggestKSpec(
        k_min=spec.k_min, k_max=spec.k_max, config=encode_kmeans_config(spec.config),
        silhouette=encode_silhouette_options(spec.silhouette), n_samples=spec.n_samples,
        save_best_as=spec.save_best_as,
    )


@dataclass(frozen=True)
class SuggestKChunk:
    """One SuggestKRequest: the spec (first message only) and rows."""

    spec: SuggestKSpec | None = None
    points: np.ndarray | None = None


def decode_suggest_k_request(message: pb.SuggestKRequest) -> SuggestKChunk:
    return SuggestKChunk(
        spec=decode_suggest_k_spec(message.spec) if message.HasField("spec") else None,
        points=matrix_or_none(message, "points", "points"),
    )


def read_suggest_k_request(data: bytes, in_place_from: int = READ_IN_PLACE_BYTES) -> SuggestKChunk:
    """``decode_suggest_k_request`` of the message in ``data``, a chunk of rows read in place."""
    rows = rows_in_place(data, pb.SuggestKRequest, in_place_from)
    if rows is None:
        return decode_suggest_k_request(pb.SuggestKRequest.FromString(data))
    return SuggestKChunk(points=rows[0])


def serialize_suggest_k_request(chunk: SuggestKChunk) -> bytes:
    """A SuggestKRequest's bytes; the rows are appended without protobuf's copy."""
    head = pb.SuggestKRequest()
    if chunk.spec is not None:
        head.spec.CopyFrom(encode_suggest_k_spec(chunk.spec))
    return with_matrix(head, "points", chunk.points)


@dataclass(frozen=True)
class KScore:
    """One k of a SuggestK: its fit's inertia and iterations, and its labels' scores."""

    n_clusters: int
    inertia: float
    n_iter: int
    scores: ClusterScores


def decode_k_score(message: pb.KScore) -> KScore:
    return KScore(
        int(message.n_clusters), float(message.inertia), int(message.n_iter),
        decode_cluster_scores(message.scores),
    )


def encode_k_score(score: KScore) -> pb.KScore:
    return pb.KScore(
        n_clusters=score.n_clusters, inertia=score.inertia, n_iter=score.n_iter,
        scores=encode_cluster_scores(score.scores),
    )


@dataclass(frozen=True)
class SuggestKResult:
    """The recommended k (highest silhouette), the elbow of the inertia curve, the rule in
    words, every k's scores, and the saved model if one was asked for."""

    recommended_k: int
    elbow_k: int
    rule: str
    per_k: tuple[KScore, ...]
    saved: Model | None = None
    elapsed_seconds: float = 0.0


def decode_suggest_k_result(message: pb.SuggestKResult) -> SuggestKResult:
    return SuggestKResult(
        recommended_k=int(message.recommended_k),
        elbow_k=int(message.elbow_k),
        rule=message.rule,
        per_k=tuple(decode_k_score(entry) for entry in message.per_k),
        saved=decode_model(message.saved, "saved") if message.HasField("saved") else None,
        elapsed_seconds=float(message.elapsed_seconds),
    )


def encode_suggest_k_result(result: SuggestKResult) -> pb.SuggestKResult:
    message = pb.SuggestKResult(
        recommended_k=result.recommended_k, elbow_k=result.elbow_k, rule=result.rule,
        per_k=[encode_k_score(entry) for entry in result.per_k],
        elapsed_seconds=result.elapsed_seconds,
    )
    if result.saved is not None:
        message.saved.CopyFrom(encode_model(result.saved))
    return message


SuggestKEvent = Union[FitProgress, KScore, SuggestKResult]


def decode_suggest_k_response(message: pb.SuggestKResponse) -> SuggestKEvent | None:
    kind = message.WhichOneof("event")
    if kind == "progress":
        return decode_fit_progress(message.progress)
    if kind == "k_score":
        return decode_k_score(message.k_score)
    if kind == "result":
        return decode_suggest_k_result(message.result)
    return None


def encode_suggest_k_response(event: SuggestKEvent) -> pb.SuggestKResponse:
    if isinstance(event, FitProgress):
        return pb.SuggestKResponse(progress=encode_fit_progress(event))
    if isinstance(event, KScore):
        return pb.SuggestKResponse(k_score=encode_k_score(event))
    return pb.SuggestKResponse(result=encode_suggest_k_result(event))
