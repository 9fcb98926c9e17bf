"""The stored models as callers see them: a snapshot described as the codec's Model, and
GetModel, ListModels (a page at a time) and DeleteModel over the registry."""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import logging
from collections.abc import Callable

from centroidal import codec

from .exceptions import InvalidRequest, ModelNotFound
from .limits import check_model_name, echo
from .runtime import Runtime
from .snapshots import KMEANS, MINIBATCH_KMEANS, SPECTRAL, ModelSnapshot

log = logging.getLogger("centroidal.server")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


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
        created_at=_datetime(snapshot.created_at), updated_at=_datetime(snapshot.updated_at),
        config=kmeans_config, minibatch=minibatch,
        centers=snapshot.centers if include_centers and snapshot.centers.shape[0] else None,
        durable_version=snapshot.version if durable_version is None else durable_version,
        n_batches=int(snapshot.extra.get("n_batches", 0)),
        init_points_buffered=int(snapshot.extra.get("init_points_buffered", 0)),
        metric=config.get("metric", "euclidean"),
    )


def _datetime(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def encode_page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def decode_page_token(token: str) -> str | None:
    if not token:
        return None
    try:
        return check_model_name(base64.urlsafe_b64decode(token.encode()).decode(), "page_token")
    except (ValueError, UnicodeDecodeError, InvalidRequest):
        raise InvalidRequest(f"page_token {echo(token)} was not issued by this server", field="page_token") from None


class Catalog:
    """GetModel, ListModels and DeleteModel. ``durable_version(name, version)`` tells the
    newest stored version of a streamed model (its live version may be ahead)."""

    def __init__(self, runtime: Runtime, durable_version: Callable[[str, int], int]) -> None:
        self._runtime = runtime
        self._durable_version = durable_version

    async def get(self, query: codec.GetModelRequest) -> codec.Model:
        runtime = self._runtime
        name = check_model_name(query.name, "name")
        if query.version is None:
            snapshot = await runtime.model(name)
        else:  # an older version is read from the store
            snapshot = await runtime.workers.run(
                runtime.workers.storage, runtime.registry.get_version, name, query.version, "name"
            )
        return describe(snapshot, include_centers=query.include_centers,
                        durable_version=self._durable_version(name, snapshot.version))

    async def page(self, query: codec.ListModelsRequest) -> codec.ListModelsResponse:
        """A page of models; those not in memory are read on the storage pool."""
        runtime = self._runtime
        return await runtime.workers.run(runtime.workers.storage, self._page, query)

    def _page(self, query: codec.ListModelsRequest) -> codec.ListModelsResponse:
        registry = self._runtime.registry
        page_size = query.page_size or DEFAULT_PAGE_SIZE
        if page_size > MAX_PAGE_SIZE:
            raise InvalidRequest(f"page_size must be at most {MAX_PAGE_SIZE}, got {page_size}", field="page_size")
        after = decode_page_token(query.page_token)
        names = registry.names()
        start = bisect.bisect_right(names, after) if after is not None else 0
        page = names[start : start + page_size]
        models = []
        for name in page:
            try:
                snapshot = registry.get(name)
            except ModelNotFound:
                continue  # deleted since the listing was taken
            models.append(describe(snapshot, include_centers=False,
                                   durable_version=self._durable_version(name, snapshot.version)))
        token = encode_page_token(page[-1]) if start + page_size < len(names) and page else ""
        return codec.ListModelsResponse(tuple(models), token)

    async def delete(self, query: codec.DeleteModelRequest) -> codec.DeleteModelResponse:
        runtime = self._runtime
        name = check_model_name(query.name, "name")
        version = await runtime.workers.run(
            runtime.workers.storage, runtime.registry.delete, name, query.expected_version
        )
        runtime.metrics.models.set(len(runtime.registry))
        log.info("model deleted model=%s version=%d", name, version)
        return codec.DeleteModelResponse(name, version)
