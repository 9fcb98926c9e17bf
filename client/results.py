"""The SDK's result types: the codec's own, re-exported, or extended where the SDK adds
behaviour. ``tests/client/test_results.py`` ties each to its codec type."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeAlias, TypeVar

import numpy as np

from centroidal import codec

# A stored model as the server describes it (see codec.Model).
ModelInfo: TypeAlias = codec.Model
ClusterScores: TypeAlias = codec.ClusterScores
KScore: TypeAlias = codec.KScore
# A model's scores on given points (see codec.EvaluateResponse).
Evaluation: TypeAlias = codec.EvaluateResponse
# The server's answer to one streamed batch (see codec.MiniBatchAck).
BatchAck: TypeAlias = codec.MiniBatchAck
# PredictDataset's progress and outcome (see codec.PredictDatasetProgress and Result).
LabellingProgress: TypeAlias = codec.PredictDatasetProgress
LabellingResult: TypeAlias = codec.PredictDatasetResult

Base = TypeVar("Base")


def _extend(cls: type[Base], base: Any, **extra: Any) -> Base:
    """An instance of ``cls``, a subclass of ``base``'s type, with base's fields and ``extra``."""
    return cls(**{field.name: getattr(base, field.name) for field in fields(base)}, **extra)


@dataclass(frozen=True)
class FitProgress(codec.FitProgress):
    """One progress event of a fit, as the server sent it, or the SDK's own "uploading"
    event while the rows go out (points_received of points_total sent).

    stage is "uploading", "data_received", "compiling" (a server that started moments ago
    is compiling its kernels: the fit may wait for them), "seeding", "initialized",
    "iteration" or "restart_done", and in a suggest_k also "scoring"; n_clusters is then
    the k being fitted or scored.
    """

    points_total: int = 0

    @classmethod
    def of(cls, progress: codec.FitProgress, points_total: int) -> FitProgress:
        return _extend(cls, progress, points_total=points_total)


@dataclass(frozen=True)
class FitResult(codec.FitResult):
    """A finished remote fit: the stored model, and the training labels when asked for.

    labels : ndarray of shape (n_samples,), int32, when return_labels was set
    """

    labels: np.ndarray | None = None

    @classmethod
    def of(cls, result: codec.FitResult, labels: np.ndarray | None) -> FitResult:
        return _extend(cls, result, labels=labels)

    @property
    def centers(self) -> np.ndarray:
        assert self.model.centers is not None
        return self.model.centers

    @property
    def inertia(self) -> float:
        return self.model.inertia

    @property
    def n_iter(self) -> int:
        return self.model.n_iter

    @property
    def version(self) -> int:
        return self.model.version


@dataclass(frozen=True)
class QuantizedImage(codec.QuantizeSummary):
    """A quantised image, encoded, and what the server measured.

    palette : ndarray of shape (n_colors, 3), uint8 RGB
    pixel_counts : ndarray of shape (n_colors,), int64
    """

    image: bytes = b""

    @classmethod
    def of(cls, summary: codec.QuantizeSummary, image: bytes) -> QuantizedImage:
        return _extend(cls, summary, image=image)


@dataclass(frozen=True)
class Suggestion(codec.SuggestKResult):
    """The result of suggest_k, with its per-k table as text."""

    @classmethod
    def of(cls, result: codec.SuggestKResult) -> Suggestion:
        return _extend(cls, result)

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
