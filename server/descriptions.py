"""How models look on the wire: a snapshot described as the codec's Model, and list page tokens."""

from __future__ import annotations

import base64

from centroidal.v1 import codec

from .exceptions import InvalidRequest
from .limits import check_model_name, echo
from .snapshots import KMEANS, MINIBATCH_KMEANS, SPECTRAL, ModelSnapshot


def describe(snapshot: ModelSnapshot, *, include_centers: bool, durable_version: int | None = None) -> codec.Model:
    """The wire description of a model; durable_version when it differs from version."""
    config = snapshot.config
    kmeans_config = minibatch = None
    n_clusters = snapshot.n_clusters
    if snapshot.kind == MINIBATCH_KMEANS:
        minibatch = codec.MiniBatchConfig(**config)
        n_clusters = minibatch.n_clusters  # also while it has no centers yet
    elif snapshot.kind in (KMEANS, SPECTRAL):
        kmeans_config = codec.KMeansConfig(
            n_clusters=n_clusters, init=config["init"], n_init=config["n_init"],
            max_iter=config["max_iter"], tol=config["tol"], seed=config["seed"],
            metric=config.get("metric", "euclidean"), algorithm=config.get("algorithm", "kmeans"),
            n_neighbors=config.get("n_neighbors", 0),
        )
    return codec.Model(
        name=snapshot.name, version=snapshot.version, kind=snapshot.kind,
        n_features=snapshot.n_features, n_clusters=n_clusters, dtype=snapshot.centers.dtype,
        inertia=snapshot.inertia, n_iter=snapshot.n_iter, n_samples_seen=snapshot.n_samples_seen,
        created_at=snapshot.created_at, updated_at=snapshot.updated_at,
        config=kmeans_config, minibatch=minibatch,
        centers=snapshot.centers if include_centers and snapshot.centers.shape[0] else None,
        durable_version=snapshot.version if durable_version is None else durable_version,
        n_batches=int(snapshot.extra.get("n_batches", 0)),
        init_points_buffered=int(snapshot.extra.get("init_points_buffered", 0)),
        metric=config.get("metric", "euclidean"),
    )


def encode_page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def decode_page_token(token: str) -> str | None:
    if not token:
        return None
    try:
        return check_model_name(base64.urlsafe_b64decode(token.encode()).decode(), "page_token")
    except (ValueError, UnicodeDecodeError, InvalidRequest):
        raise InvalidRequest(f"page_token {echo(token)} was not issued by this server", field="page_token") from None
