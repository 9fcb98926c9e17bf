"""The asyncio SDK over grpc.aio: the same calls as Client, awaited.

    from centroidal.client.aio import AsyncClient
    async with AsyncClient("127.0.0.1:50051") as client:
        await client.fit("shops", X, n_clusters=4)
        async with client.stream("clicks", n_clusters=8) as stream:
            await stream.send(batch)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2

from centroidal import codec

from ._calls import (
    FitPlan,
    PredictPlan,
    QuantizePlan,
    as_points,
    delete_model_request,
    get_model_request,
    list_models_request,
    stream_open,
)
from ._datasets import LabellingPlan, dataset_source
from ._scoring import EvaluatePlan, SuggestPlan
from .aio_stream import AsyncMiniBatchStream
from .results import (
    BatchAck,
    Evaluation,
    FitProgress,
    FitResult,
    KScore,
    LabellingProgress,
    LabellingResult,
    ModelInfo,
    QuantizedImage,
    Suggestion,
)
from .stream import (
    DEFAULT_MAX_REPLAY_BYTES,
    DEFAULT_RECONNECT_TIMEOUT_S,
    DEFAULT_WINDOW,
)
from .transport import (
    RESPONSE_BUDGET,
    AsyncTransport,
)


class AsyncClient(AsyncTransport):
    """A connection to a centroidal server for asyncio code.

    Every call has a deadline and raises a subclass of ``CentroidalError`` named
    after the status code, as with ``Client``. Use ``async with``, or await ``close``.
    """

    async def close(self) -> None:
        await self.close_owner_channels()
        await self._channel.close()
        self.close_shared_memory()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's health status name: SERVING, NOT_SERVING or SERVICE_UNKNOWN."""
        response = await self.unary(
            self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def fit(
        self,
        name: str,
        X: Any = None,
        n_clusters: int | None = None,
        *,
        source: str | None = None,
        columns: Sequence[str] = (),
        format: str = "",
        weight_column: str = "",
        init: str | np.ndarray = "k-means++",
        n_init: int | None = None,
        max_iter: int | None = None,
        tol: float | None = None,
        seed: int | None = None,
        metric: str = "euclidean",
        algorithm: str = "kmeans",
        n_neighbors: int | None = None,
        sample_weight: Any = None,
        expected_version: int | None = None,
        return_labels: bool = False,
        on_progress: Callable[[FitProgress], None] | None = None,
        timeout: float | None = None,
    ) -> FitResult:
        """As Client.fit; on_progress is a plain function called on the event loop."""
        plan = FitPlan(
            name, X, n_clusters, init=init, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
            sample_weight=sample_weight, expected_version=expected_version,
            return_labels=return_labels, chunk_bytes=self.chunk_bytes, metric=metric,
            algorithm=algorithm, n_neighbors=n_neighbors,
            source=dataset_source(source, columns, format, weight_column),
        )
        call = self._methods.fit(timeout=self.deadline(timeout, fit=True))

        messages = plan.requests()
        spec, _ = next(messages)

        async def upload() -> None:
            for message, uploaded in messages:
                await call.write(message)
                if on_progress is not None:
                    on_progress(uploaded)
            await call.done_writing()

        async for response in self.responses(call, spec, upload):
            progress = plan.take(response)
            if progress is not None and on_progress is not None:
                on_progress(progress)
        return plan.result()

    async def evaluate(
        self,
        name: str,
        X: Any,
        *,
        version: int | None = None,
        silhouette_sample_size: int | None = 0,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> Evaluation:
        """As Client.evaluate."""
        plan = EvaluatePlan(
            name, X, version=version, silhouette_sample_size=silhouette_sample_size, seed=seed,
            chunk_bytes=self.chunk_bytes,
        )

        async def requests() -> AsyncIterator[bytes]:
            for message in plan.requests():
                yield message

        # grpc.aio writes from an iterator itself, and then keeps a refusal's status.
        response = await self.unary(self._methods.evaluate, requests(), timeout if timeout is not None
                                    else self.fit_timeout)
        return plan.result(response)

    async def suggest_k(
        self,
        X: Any,
        k_range: Sequence[int] = range(2, 11),
        *,
        metric: str = "euclidean",
        init: str = "k-means++",
        n_init: int | None = None,
        max_iter: int | None = None,
        tol: float | None = None,
        seed: int | None = None,
        silhouette_sample_size: int | None = 0,
        save_best_as: str = "",
        on_progress: Callable[[FitProgress | KScore], None] | None = None,
        timeout: float | None = None,
    ) -> Suggestion:
        """As Client.suggest_k; on_progress is a plain function called on the event loop."""
        plan = SuggestPlan(
            X, k_range, metric=metric, init=init, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
            silhouette_sample_size=silhouette_sample_size, save_best_as=save_best_as,
            chunk_bytes=self.chunk_bytes,
        )
        call = self._methods.suggest_k(timeout=self.deadline(timeout, fit=True))
        messages = plan.requests()
        spec = next(messages)

        async def upload() -> None:
            for message in messages:
                await call.write(message)
            await call.done_writing()

        async for response in self.responses(call, spec, upload):
            event = plan.take(response)
            if event is not None and on_progress is not None:
                on_progress(event)
        return plan.result()

    async def predict_dataset(
        self,
        name: str,
        source: str,
        output: str,
        *,
        columns: Sequence[str] = (),
        format: str = "",
        version: int | None = None,
        return_distances: bool = False,
        overwrite: bool = False,
        on_progress: Callable[[LabellingProgress], None] | None = None,
        timeout: float | None = None,
    ) -> LabellingResult:
        """As Client.predict_dataset; on_progress is a plain function called on the event loop."""
        plan = LabellingPlan(name, source, output, columns, format, version, return_distances, overwrite)
        call = self._methods.predict_dataset(plan.request, timeout=self.deadline(timeout, fit=True))
        try:
            async for response in call:
                progress = plan.take(response)
                if progress is not None and on_progress is not None:
                    on_progress(progress)
        except grpc.aio.AioRpcError as error:
            raise self.failure(error) from error
        except BaseException:
            call.cancel()
            raise
        return plan.result()

    async def quantize_image(
        self, image: bytes | str | os.PathLike[str], n_colors: int = 16, *,
        timeout: float | None = None, **options: Any,
    ) -> QuantizedImage:
        """As Client.quantize_image."""
        plan = QuantizePlan(image, n_colors, self.chunk_bytes, **options)
        call = self._methods.quantize_image(timeout=self.deadline(timeout, fit=True))

        async def upload() -> None:
            for request in plan.requests[1:]:
                await call.write(request)
            await call.done_writing()

        async for response in self.responses(call, plan.requests[0], upload):
            plan.take(response)
        return plan.result()

    async def predict(
        self,
        name: str,
        X: Any,
        *,
        version: int | None = None,
        return_distance: bool = False,
        timeout: float | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """As Client.predict."""
        options = codec.PredictOptions(return_distances=return_distance)
        labels, distances, _ = await self._predict(name, X, version, options, timeout)
        if return_distance:
            assert distances is not None
            return labels, distances
        return labels

    async def transform(
        self, name: str, X: Any, *, version: int | None = None, timeout: float | None = None
    ) -> np.ndarray:
        """As Client.transform."""
        options = codec.PredictOptions(return_transform=True)
        _, _, transformed = await self._predict(name, X, version, options, timeout)
        assert transformed is not None
        return transformed

    async def _predict(
        self, name: str, X: Any, version: int | None, options: codec.PredictOptions, timeout: float | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        points = as_points(X)
        n_clusters = 0
        if options.return_transform:
            model = await self.get_model(name, version=version, include_centers=False, timeout=timeout)
            n_clusters = model.n_clusters
        with self.shared_rows(points) as shared:
            plan = PredictPlan(name, points, version, options, n_clusters, self.chunk_bytes, RESPONSE_BUDGET, shared)
            if plan.single:
                plan.store(await self.unary(self._methods.predict, plan.request(0), timeout))
                return plan.finish()
            call = self._methods.predict_stream(timeout=self.deadline(timeout))

            requests = plan.requests()

            async def upload() -> None:
                for request in requests:
                    await call.write(request)
                await call.done_writing()

            async for response in self.responses(call, next(requests), upload):
                plan.store(response)
        return plan.finish()

    async def get_model(
        self,
        name: str,
        *,
        version: int | None = None,
        include_centers: bool = True,
        timeout: float | None = None,
    ) -> ModelInfo:
        """As Client.get_model."""
        request = get_model_request(name, version, include_centers)
        return codec.decode_model(await self.unary(self._methods.get_model, request, timeout))

    async def list_models_page(
        self, *, page_size: int = 100, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[ModelInfo], str]:
        """One page of models in name order, and the token of the next page ("" at the end)."""
        request = list_models_request(page_size, page_token)
        page = codec.decode_list_models_response(await self.unary(self._methods.list_models, request, timeout))
        return list(page.models), page.next_page_token

    async def list_models(self, *, page_size: int = 100, timeout: float | None = None) -> list[ModelInfo]:
        """Every model, without centers."""
        models: list[ModelInfo] = []
        token = ""
        while True:
            page, token = await self.list_models_page(
                page_size=page_size, page_token=token, timeout=timeout
            )
            models.extend(page)
            if not token:
                return models

    async def delete_model(
        self, name: str, *, expected_version: int | None = None, timeout: float | None = None
    ) -> int:
        """Delete model ``name``; returns the version the delete wrote."""
        request = delete_model_request(name, expected_version)
        answer = await self.unary(self._methods.delete_model, request, timeout)
        return codec.decode_delete_model_response(answer).version

    def stream(
        self,
        name: str,
        *,
        n_clusters: int | None = None,
        init_size: int = 0,
        reassignment_ratio: float | None = None,
        half_life: float | None = None,
        half_life_unit: str = "batches",
        seed: int | None = None,
        metric: str = "euclidean",
        producer_id: str | None = None,
        first_sequence: int = 1,
        window: int = DEFAULT_WINDOW,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT_S,
        max_replay_bytes: int = DEFAULT_MAX_REPLAY_BYTES,
        on_ack: Callable[[BatchAck], None] | None = None,
    ) -> AsyncMiniBatchStream:
        """As Client.stream; use the result with ``async with``."""
        opening = stream_open(
            name, n_clusters=n_clusters, init_size=init_size,
            reassignment_ratio=reassignment_ratio, half_life=half_life,
            half_life_unit=half_life_unit, seed=seed, metric=metric,
        )
        return AsyncMiniBatchStream(
            self, opening, producer_id=producer_id, first_sequence=first_sequence,
            window=window, reconnect_timeout=reconnect_timeout,
            max_replay_bytes=max_replay_bytes, on_ack=on_ack,
        )
