"""Stored models on the wire: their configurations, the Model description, and the calls
that get, list and delete them. A Model is only ever an answer, so unknown enum values
from a newer server read as "unknown" instead of failing."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from centroidal.v1 import clustering_pb2 as pb

from .arrays import DTYPES, dtype_number, encode_matrix, matrix_or_none, owned_or_none
from .enums import ALGORITHMS, HALF_LIFE_UNITS, INIT_METHODS, METRICS, MODEL_KINDS
from .wire import optional, set_optional


@dataclass(frozen=True)
class KMeansConfig:
    """The parameters of a k-means (or spectral) fit. 0 means the server's default for
    n_init, max_iter and n_neighbors; None leaves tol and seed to it.

    init_centers : ndarray of shape (n_clusters, n_features), or None
    """

    n_clusters: int = 0
    algorithm: str = "kmeans"
    init: str = "k-means++"
    init_centers: np.ndarray | None = None
    n_init: int = 0
    max_iter: int = 0
    tol: float | None = None
    seed: int | None = None
    metric: str = "euclidean"
    n_neighbors: int = 0  # spectral only


def decode_kmeans_config(message: pb.KMeansConfig, field: str = "config", lenient: bool = False) -> KMeansConfig:
    return KMeansConfig(
        n_clusters=int(message.n_clusters),
        algorithm=ALGORITHMS.name(message.algorithm, f"{field}.algorithm", lenient=lenient),
        init=INIT_METHODS.name(message.init, f"{field}.init", lenient=lenient),
        init_centers=matrix_or_none(message, "init_centers", f"{field}.init_centers"),
        n_init=int(message.n_init),
        max_iter=int(message.max_iter),
        tol=optional(message, "tol"),
        seed=optional(message, "seed"),
        metric=METRICS.name(message.metric, f"{field}.metric", lenient=lenient),
        n_neighbors=int(message.n_neighbors),
    )


def encode_kmeans_config(config: KMeansConfig) -> pb.KMeansConfig:
    message = pb.KMeansConfig(
        algorithm=ALGORITHMS.number(config.algorithm),
        n_clusters=config.n_clusters,
        init=INIT_METHODS.number(config.init),
        n_init=config.n_init,
        max_iter=config.max_iter,
        metric=METRICS.number(config.metric),
        n_neighbors=config.n_neighbors,
    )
    if config.init_centers is not None:
        message.init_centers.CopyFrom(encode_matrix(config.init_centers))
    set_optional(message, tol=config.tol, seed=config.seed)
    return message


@dataclass(frozen=True)
class MiniBatchConfig:
    """How a streamed model learns. 0 means the server's default for init_size; None
    leaves reassignment_ratio, half_life and seed to it."""

    n_clusters: int = 0
    init_size: int = 0
    reassignment_ratio: float | None = None
    half_life: float | None = None
    half_life_unit: str = "batches"
    seed: int | None = None
    metric: str = "euclidean"


def decode_minibatch_config(message: pb.MiniBatchConfig, field: str, lenient: bool = False) -> MiniBatchConfig:
    return MiniBatchConfig(
        n_clusters=int(message.n_clusters),
        init_size=int(message.init_size),
        reassignment_ratio=optional(message, "reassignment_ratio"),
        half_life=optional(message, "half_life"),
        half_life_unit=HALF_LIFE_UNITS.name(message.half_life_unit, f"{field}.half_life_unit", lenient=lenient),
        seed=optional(message, "seed"),
        metric=METRICS.name(message.metric, f"{field}.metric", lenient=lenient),
    )


def encode_minibatch_config(config: MiniBatchConfig) -> pb.MiniBatchConfig:
    message = pb.MiniBatchConfig(
        n_clusters=config.n_clusters,
        init_size=config.init_size,
        half_life_unit=HALF_LIFE_UNITS.number(config.half_life_unit),
        metric=METRICS.number(config.metric),
    )
    set_optional(
        message, reassignment_ratio=config.reassignment_ratio, half_life=config.half_life,
        seed=config.seed,
    )
    return message


@dataclass(frozen=True)
class Model:
    """A stored model as the server describes it.

    config : the fit's parameters (k-means and spectral models), defaults filled in
    minibatch : a streamed model's parameters, defaults filled in
    centers : ndarray of shape (n_clusters, n_features), a copy, or None when not asked for
    durable_version : the newest version on disk, below ``version`` while a streamed model
        awaits a checkpoint
    metric : "euclidean" or "cosine": how Predict measures distance for this model
    """

    name: str
    version: int
    kind: str
    n_features: int
    n_clusters: int
    dtype: np.dtype
    inertia: float = 0.0
    n_iter: int = 0
    n_samples_seen: int = 0
    created_at: dt.datetime = dt.datetime.fromtimestamp(0, dt.timezone.utc)
    updated_at: dt.datetime = dt.datetime.fromtimestamp(0, dt.timezone.utc)
    config: KMeansConfig | None = None
    minibatch: MiniBatchConfig | None = None
    centers: np.ndarray | None = None
    durable_version: int = 0
    n_batches: int = 0
    init_points_buffered: int = 0
    metric: str = "euclidean"

    def settings(self) -> dict[str, Any]:
        """The model's parameters as plain values (for JSON): the fit's or the stream's,
        without given initial centers."""
        if self.minibatch is not None:
            mini = self.minibatch
            return {
                "n_clusters": mini.n_clusters, "init_size": mini.init_size,
                "reassignment_ratio": mini.reassignment_ratio, "half_life": mini.half_life,
                "half_life_unit": mini.half_life_unit, "seed": mini.seed, "metric": mini.metric,
            }
        config = self.config or KMeansConfig()
        described: dict[str, Any] = {
            "n_clusters": config.n_clusters, "init": config.init, "n_init": config.n_init,
            "max_iter": config.max_iter, "tol": config.tol, "seed": config.seed,
            "metric": config.metric,
        }
        if config.algorithm != "kmeans":
            described.update(algorithm=config.algorithm, n_neighbors=config.n_neighbors)
        return described


def _datetime(stamp: Timestamp) -> dt.datetime:
    moment: dt.datetime = stamp.ToDatetime(tzinfo=dt.timezone.utc)
    return moment


def decode_model(message: pb.Model, field: str = "model") -> Model:
    return Model(
        name=message.name,
        version=int(message.version),
        kind=MODEL_KINDS.name(message.kind, f"{field}.kind", lenient=True),
        n_features=int(message.n_features),
        n_clusters=int(message.n_clusters),
        dtype=DTYPES.get(message.dtype, np.dtype("<f8")).newbyteorder("="),
        inertia=float(message.inertia),
        n_iter=int(message.n_iter),
        n_samples_seen=int(message.n_samples_seen),
        created_at=_datetime(message.created_at),
        updated_at=_datetime(message.updated_at),
        config=(
            decode_kmeans_config(message.config, f"{field}.config", lenient=True)
            if message.HasField("config") else None
        ),
        minibatch=(
            decode_minibatch_config(message.minibatch, f"{field}.minibatch", lenient=True)
            if message.HasField("minibatch") else None
        ),
        centers=owned_or_none(message, "centers", f"{field}.centers"),
        durable_version=int(message.durable_version),
        n_batches=int(message.n_batches),
        init_points_buffered=int(message.init_points_buffered),
        metric=METRICS.name(message.metric, f"{field}.metric", lenient=True),
    )


def encode_model(model: Model) -> pb.Model:
    message = pb.Model(
        name=model.name,
        version=model.version,
        kind=MODEL_KINDS.number(model.kind),
        n_features=model.n_features,
        n_clusters=model.n_clusters,
        dtype=dtype_number(model.dtype),
        inertia=model.inertia,
        n_iter=model.n_iter,
        n_samples_seen=model.n_samples_seen,
        durable_version=model.durable_version,
        n_batches=model.n_batches,
        init_points_buffered=model.init_points_buffered,
        metric=METRICS.number(model.metric),
    )
    message.created_at.FromDatetime(model.created_at)
    message.updated_at.FromDatetime(model.updated_at)
    if model.config is not None:
        message.config.CopyFrom(encode_kmeans_config(model.config))
    if model.minibatch is not None:
        message.minibatch.CopyFrom(encode_minibatch_config(model.minibatch))
    if model.centers is not None:
        message.centers.CopyFrom(encode_matrix(model.centers))
    return message


@dataclass(frozen=True)
class GetModelRequest:
    name: str
    include_centers: bool = False
    version: int | None = None


def decode_get_model_request(message: pb.GetModelRequest) -> GetModelRequest:
    return GetModelRequest(message.name, message.include_centers, optional(message, "version"))


def encode_get_model_request(request: GetModelRequest) -> pb.GetModelRequest:
    message = pb.GetModelRequest(name=request.name, include_centers=request.include_centers)
    set_optional(message, version=request.version)
    return message


@dataclass(frozen=True)
class ListModelsRequest:
    page_size: int = 0  # 0: the default
    page_token: str = ""


def decode_list_models_request(message: pb.ListModelsRequest) -> ListModelsRequest:
    return ListModelsRequest(int(message.page_size), message.page_token)


def encode_list_models_request(request: ListModelsRequest) -> pb.ListModelsRequest:
    return pb.ListModelsRequest(page_size=request.page_size, page_token=request.page_token)


@dataclass(frozen=True)
class ListModelsResponse:
    models: tuple[Model, ...]
    next_page_token: str = ""


def decode_list_models_response(message: pb.ListModelsResponse) -> ListModelsResponse:
    return ListModelsResponse(
        tuple(decode_model(model, "models") for model in message.models), message.next_page_token
    )


def encode_list_models_response(response: ListModelsResponse) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(
        models=[encode_model(model) for model in response.models],
        next_page_token=response.next_page_token,
    )


@dataclass(frozen=True)
class DeleteModelRequest:
    name: str
    expected_version: int | None = None


def decode_delete_model_request(message: pb.DeleteModelRequest) -> DeleteModelRequest:
    return DeleteModelRequest(message.name, optional(message, "expected_version"))


def encode_delete_model_request(request: DeleteModelRequest) -> pb.DeleteModelRequest:
    message = pb.DeleteModelRequest(name=request.name)
    set_optional(message, expected_version=request.expected_version)
    return message


@dataclass(frozen=True)
class DeleteModelResponse:
    name: str
    version: int


def decode_delete_model_response(message: pb.DeleteModelResponse) -> DeleteModelResponse:
    return DeleteModelResponse(message.name, int(message.version))


def encode_delete_model_response(response: DeleteModelResponse) -> pb.DeleteModelResponse:
    return pb.DeleteModelResponse(name=response.name, version=response.version)
