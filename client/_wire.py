"""The SDK's result types, built from the codec's messages, and its input checks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import codec

def as_points(X: Any, name: str = "X") -> np.ndarray:
    """X as a C-contiguous 2-D float32 or float64 array; float32 is never widened."""
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {array.shape}")
    if array.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
        array = array.astype(np.float64)
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class ModelInfo:
    """A stored model as the server describes it.

    centers : ndarray of shape (n_clusters, n_features), or None when not asked for
    """

    name: str
    version: int
    kind: str
    n_clusters: int
    n_features: int
    dtype: np.dtype
    inertia: float
    n_iter: int
    n_samples_seen: int
    created_at: dt.datetime
    updated_at: dt.datetime
    config: dict[str, Any] = field(default_factory=dict)
    centers: np.ndarray | None = None
    # The newest version on disk: below ``version`` while a streamed model awaits a checkpoint.
    durable_version: int = 0
    n_batches: int = 0
    init_points_buffered: int = 0
    # "euclidean" or "cosine": how Predict measures distance for this model.
    metric: str = "euclidean"


def _config(model: codec.Model) -> dict[str, Any]:
    if model.minibatch is not None:
        mini = model.minibatch
        return {
            "n_clusters": mini.n_clusters,
            "init_size": mini.init_size,
            "reassignment_ratio": mini.reassignment_ratio if mini.reassignment_ratio is not None else 0.0,
            "half_life": mini.half_life,
            "half_life_unit": mini.half_life_unit,
            "seed": mini.seed,
            "metric": mini.metric,
        }
    config = model.config or codec.KMeansConfig()
    described: dict[str, Any] = {
        "n_clusters": config.n_clusters,
        "init": config.init,
        "n_init": config.n_init,
        "max_iter": config.max_iter,
        "tol": config.tol if config.tol is not None else 0.0,
        "seed": config.seed,
        "metric": config.metric,
    }
    if config.algorithm != "kmeans":
        described.update(algorithm=config.algorithm, n_neighbors=config.n_neighbors)
    return described


def model_info(message: pb.Model) -> ModelInfo:
    model = codec.decode_model(message)
    return ModelInfo(
        name=model.name,
        version=model.version,
        kind=model.kind,
        n_clusters=model.n_clusters,
        n_features=model.n_features,
        dtype=model.dtype,
        inertia=model.inertia,
        n_iter=model.n_iter,
        n_samples_seen=model.n_samples_seen,
        created_at=dt.datetime.fromtimestamp(model.created_at, tz=dt.timezone.utc),
        updated_at=dt.datetime.fromtimestamp(model.updated_at, tz=dt.timezone.utc),
        config=_config(model),
        centers=None if model.centers is None else np.array(model.centers),
        durable_version=model.durable_version,
        n_batches=model.n_batches,
        init_points_buffered=model.init_points_buffered,
        metric=model.metric,
    )


@dataclass(frozen=True)
class FitProgress:
    """One progress event of a fit.

    stage is "uploading", "data_received", "seeding", "initialized", "iteration"
    or "restart_done", and in a suggest_k also "scoring"; n_clusters is then the k
    being fitted or scored. In an "iteration" event, distances_skipped is the share of
    point-to-center distances the server's bounds let it skip (0 to 1).
    """

    stage: str
    restart: int = 0
    n_init: int = 0
    iteration: int = 0
    inertia: float = 0.0
    center_shift: float = 0.0
    points_received: int = 0
    points_total: int = 0
    elapsed_seconds: float = 0.0
    n_clusters: int = 0
    distances_skipped: float = 0.0


def fit_progress(message: pb.FitProgress, points_total: int) -> FitProgress:
    progress = codec.decode_fit_progress(message)
    return FitProgress(
        stage=progress.stage,
        restart=progress.restart,
        n_init=progress.n_init,
        iteration=progress.iteration,
        inertia=progress.inertia,
        center_shift=progress.center_shift,
        points_received=progress.points_received,
        points_total=points_total,
        elapsed_seconds=progress.elapsed_seconds,
        n_clusters=progress.n_clusters,
        distances_skipped=progress.distances_skipped,
    )


@dataclass(frozen=True)
class FitResult:
    """A finished remote fit.

    labels : ndarray of shape (n_samples,), int32, when return_labels was set
    """

    model: ModelInfo
    n_samples: int
    best_restart: int
    elapsed_seconds: float
    labels: np.ndarray | None = None

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
class QuantizedImage:
    """A quantised image and what the server measured.

    palette : ndarray of shape (n_colors, 3), uint8 RGB
    pixel_counts : ndarray of shape (n_colors,), int64
    """

    image: bytes
    format: str
    palette: np.ndarray
    pixel_counts: np.ndarray
    mse: float
    psnr: float
    width: int
    height: int
    notes: tuple[str, ...]
    saved_version: int


def quantized_image(image: bytes, message: pb.QuantizeSummary) -> QuantizedImage:
    summary = codec.decode_quantize_summary(message)
    return QuantizedImage(
        image=image,
        format=summary.format,
        palette=summary.palette.copy(),
        pixel_counts=summary.pixel_counts,
        mse=summary.mse,
        psnr=summary.psnr,
        width=summary.width,
        height=summary.height,
        notes=summary.notes,
        saved_version=summary.saved_version,
    )
