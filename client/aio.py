"""The asyncio SDK over grpc.aio: the same calls as Client, awaited.

    from centroidal.client.aio import AsyncClient
    async with AsyncClient("127.0.0.1:50051") as client:
        await client.fit("shops", X, n_clusters=4)
        async with client.stream("clicks", n_clusters=8) as stream:
            await stream.send(batch)
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2

from centroidal.v1 import clustering_pb2 as pb

from . import _wire
from ._calls import FitPlan, PredictPlan, quantize_requests, stream_open
from ._scoring import Evaluation, EvaluatePlan, KScore, Suggestion, SuggestPlan
from ._wire import FitProgress, FitResult, ModelInfo, QuantizedImage
from .transport import (
    AsyncTransport,
    Backoff,
    idle_timeout,
    status_lost,
    _RESPONSE_BUDGET,
    DEFAULT_CHUNK_BYTES,
    DEFAULT_FIT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    PEM,
)
from .errors import (
    CentroidalError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    Unavailable,
    error_from_rpc,
)
from .stream import (
    DEFAULT_MAX_REPLAY_BYTES,
    DEFAULT_RECONNECT_TIMEOUT_S,
    DEFAULT_WINDOW,
    BatchAck,
    _Ledger,
    durable_from_trailer,
    reopening,
    stream_method,
)

_CLOSE = object()
_HANG_UP = object()


class AsyncClient(AsyncTransport):
    """A connection to a centroidal server for asyncio code.

    Every call has a deadline and raises a subclass of ``CentroidalError`` named
    after the status code, as with ``Client``. Use ``async with``, or await ``close``.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls: bool = False,
        root_certificates: PEM | None = None,
        client_certificate: tuple[PEM, PEM] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        fit_timeout: float = DEFAULT_FIT_TIMEOUT_S,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        super().__init__(target, token=token, credentials=credentials, timeout=timeout,
                         fit_timeout=fit_timeout, chunk_bytes=chunk_bytes, options=options,
                         token_file=token_file, tls=tls, root_certificates=root_certificates,
                         client_certificate=client_certificate)

    async def close(self) -> None:
        await self._channel.close()

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
        X: Any,
        n_clusters: int,
        *,
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
        )
        call = self._raw.fit(timeout=self.deadline(timeout, fit=True))

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
        response = await self.unary(self._raw.evaluate, requests(), timeout if timeout is not None
                                    else self.fit_timeout)
        return plan.result(response)

    async def suggest_k(
        self,
        X: Any,
        k_range: Sequence[int] = range(2, 11),
        *,
        metric: str = "euclidean",
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
            X, k_range, metric=metric, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
            silhouette_sample_size=silhouette_sample_size, save_best_as=save_best_as,
            chunk_bytes=self.chunk_bytes,
        )
        call = self._raw.suggest_k(timeout=self.deadline(timeout, fit=True))
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

    async def quantize_image(
        self, image: bytes | str | os.PathLike[str], n_colors: int = 16, *,
        timeout: float | None = None, **options: Any,
    ) -> QuantizedImage:
        """As Client.quantize_image."""
        requests = quantize_requests(image, n_colors, self.chunk_bytes, **options)
        call = self._stub.QuantizeImage(timeout=self.deadline(timeout, fit=True))

        async def upload() -> None:
            for request in requests[1:]:
                await call.write(request)
            await call.done_writing()

        parts: list[bytes] = []
        summary = None
        async for response in self.responses(call, requests[0], upload):
            parts.append(response.image)
            if response.HasField("summary"):
                summary = response.summary
        if summary is None:
            raise CentroidalError("the server ended QuantizeImage without a summary")
        return _wire.quantized_image(b"".join(parts), summary)

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
        options = pb.PredictOptions(return_distances=return_distance)
        labels, distances, _ = await self._predict(name, X, version, options, timeout)
        if return_distance:
            assert distances is not None
            return labels, distances
        return labels

    async def transform(
        self, name: str, X: Any, *, version: int | None = None, timeout: float | None = None
    ) -> np.ndarray:
        """As Client.transform."""
        options = pb.PredictOptions(return_transform=True)
        _, _, transformed = await self._predict(name, X, version, options, timeout)
        assert transformed is not None
        return transformed

    async def _predict(
        self, name: str, X: Any, version: int | None, options: pb.PredictOptions, timeout: float | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        points = _wire.as_points(X)
        n_clusters = 0
        if options.return_transform:
            model = await self.get_model(name, version=version, include_centers=False, timeout=timeout)
            n_clusters = model.n_clusters
        plan = PredictPlan(
            name, points, version, options, n_clusters, self.chunk_bytes, _RESPONSE_BUDGET
        )
        if plan.single:
            plan.store(await self.unary(self._raw.predict, plan.request(0), timeout))
            return plan.finish()
        call = self._raw.predict_stream(timeout=self.deadline(timeout))

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
        request = pb.GetModelRequest(name=name, include_centers=include_centers)
        if version is not None:
            request.version = int(version)
        return _wire.model_info(await self.unary(self._stub.GetModel, request, timeout))

    async def list_models_page(
        self, *, page_size: int = 100, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[ModelInfo], str]:
        """One page of models in name order, and the token of the next page ("" at the end)."""
        request = pb.ListModelsRequest(page_size=page_size, page_token=page_token)
        response = await self.unary(self._stub.ListModels, request, timeout)
        return [_wire.model_info(m) for m in response.models], response.next_page_token

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
        request = pb.DeleteModelRequest(name=name)
        if expected_version is not None:
            request.expected_version = int(expected_version)
        response = await self.unary(self._stub.DeleteModel, request, timeout)
        return int(response.version)

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
        open_message = stream_open(
            name, n_clusters=n_clusters, init_size=init_size,
            reassignment_ratio=reassignment_ratio, half_life=half_life,
            half_life_unit=half_life_unit, seed=seed, metric=metric,
        )
        return AsyncMiniBatchStream(
            self, open_message, producer_id=producer_id, first_sequence=first_sequence,
            window=window, reconnect_timeout=reconnect_timeout,
            max_replay_bytes=max_replay_bytes, on_ack=on_ack,
        )


class AsyncMiniBatchStream:
    """MiniBatchStream for asyncio: ``await send``, ``await flush``, ``await close``."""

    def __init__(
        self,
        client: AsyncClient,
        open_message: pb.MiniBatchOpen,
        *,
        producer_id: str | None,
        first_sequence: int,
        window: int,
        reconnect_timeout: float,
        max_replay_bytes: int,
        on_ack: Callable[[BatchAck], None] | None,
    ) -> None:
        self.model = open_message.model
        self._creates = open_message.HasField("create_if_missing")
        self._ledger = _Ledger(producer_id or uuid.uuid4().hex, first_sequence, window, max_replay_bytes)
        self.producer_id = self._ledger.producer_id
        self.reconnect_timeout = reconnect_timeout
        self.reconnects = 0
        self._client = client
        self._open = pb.MiniBatchRequest(open=open_message).SerializeToString()
        self._method = stream_method(client._channel)
        self._on_ack = on_ack
        self._cond: asyncio.Condition | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._call: Any = None
        self._fatal: BaseException | None = None
        self._closing = False
        self._done = False
        self._aborted = False

    def _start(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return self._cond

    def _resend_if_worth_it(self) -> None:
        """As MiniBatchStream's: after an error that may have passed, connect again and
        resend every kept batch."""
        worker = self._worker
        if self._aborted or not self._ledger.worth_resending(self._fatal) or worker is None or not worker.done():
            return
        self._fatal, self._done = None, False
        self._worker = asyncio.get_running_loop().create_task(self._run(preflight=False))

    async def __aenter__(self) -> AsyncMiniBatchStream:
        self._start()
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()

    async def _wait(self, ready: Callable[[], bool], timeout: float | None, message: str) -> None:
        cond = self._start()
        async with cond:
            try:
                await asyncio.wait_for(
                    cond.wait_for(lambda: ready() or self._fatal is not None or self._done), timeout
                )
            except asyncio.TimeoutError:
                raise DeadlineExceeded(message) from None

    async def send(self, X: Any, sample_weight: Any = None, *, timeout: float | None = None) -> int:
        """Queue one batch; waits while the window is full. Returns its sequence."""
        ledger = self._ledger
        await self._wait(lambda: not ledger.full(), timeout, ledger.full_message(timeout))
        if self._fatal is not None:
            raise self._fatal
        if self._done or self._closing:
            raise RuntimeError(f"the stream to model {self.model!r} is closed")
        sequence, request = ledger.add(X, sample_weight)
        assert self._queue is not None
        self._queue.put_nowait(request)
        await self._notify()  # wakes a worker parked after an idle timeout
        return sequence

    async def flush(self, timeout: float | None = None) -> None:
        """Wait for every ack; raises, and tries again when called again, as
        MiniBatchStream.flush does."""
        ledger = self._ledger
        self._start()
        self._resend_if_worth_it()
        await self._wait(
            lambda: not ledger.unacked, timeout,
            f"batches were still unacknowledged after {timeout} s",
        )
        if self._fatal is not None:
            raise self._fatal
        error = ledger.unreported_error()
        if error is not None:
            raise error
        if ledger.unacked:
            raise RuntimeError(
                f"the stream to model {self.model!r} is closed with {len(ledger.unacked)} "
                "batches unacknowledged"
            )

    async def close(self, timeout: float | None = None) -> None:
        """Flush, end the stream and wait for the server's final checkpoint; raises, keeps
        what is not stored and resends it when called again, as MiniBatchStream.close does."""
        try:
            await self.flush(timeout)
        finally:
            self._closing = True
            if self._queue is not None:
                self._queue.put_nowait(_CLOSE)
            if self._cond is not None:
                await self._notify()
            if self._worker is not None:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout)
        if self._fatal is not None:
            raise self._fatal

    async def abort(self) -> None:
        """Drop the stream without waiting."""
        self._closing = self._done = self._aborted = True
        if self._call is not None:
            self._call.cancel()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - dropping it
                pass

    @property
    def next_sequence(self) -> int:
        return self._ledger.next_sequence

    @property
    def durable_sequence(self) -> int:
        return self._ledger.durable_sequence()

    @property
    def last_ack(self) -> BatchAck | None:
        return self._ledger.last_ack

    @property
    def ack_latencies(self) -> list[float]:
        return self._ledger.ack_latencies

    @property
    def errors(self) -> list[CentroidalError]:
        return list(self._ledger.errors)

    async def _notify(self) -> None:
        assert self._cond is not None
        async with self._cond:
            self._cond.notify_all()

    async def _requests(self, connection: asyncio.Queue[Any]) -> AsyncIterator[bytes]:
        yield self._open
        while True:
            item = await connection.get()
            if item is _CLOSE or item is _HANG_UP:
                return
            yield item

    async def _preflight(self) -> None:
        """Refuse an unknown model or one of the wrong kind with a unary call first.

        A server that refuses a stream's opening while batches are being written can
        reach a grpc.aio client as INTERNAL (grpc/grpc#36066); a unary call reports it as is.
        """
        give_up = time.monotonic() + self.reconnect_timeout
        while True:
            try:
                model = await self._client.get_model(self.model, include_centers=False)
                break
            except Unavailable:
                # Not up yet: wait for it as a reconnect would.
                remaining = give_up - time.monotonic()
                if remaining <= 0:
                    raise
                try:
                    await asyncio.wait_for(self._client._channel.channel_ready(), remaining)
                except asyncio.TimeoutError:
                    raise DeadlineExceeded(
                        f"the server at {self._client.target} stayed unreachable for "
                        f"{self.reconnect_timeout} s"
                    ) from None
            except NotFound as missing:
                if not self._creates:
                    missing.field_violations = (FieldViolation("open.model", missing.message),)
                    raise
                return
        if model.kind != "minibatch-kmeans":
            raise FailedPrecondition(
                f"model {self.model!r} is a {model.kind} model; StreamMiniBatch feeds "
                "mini-batch models only",
                field_violations=(FieldViolation("open.model", "wrong model kind"),),
                reason="WRONG_MODEL_KIND",
            )

    async def _run(self, preflight: bool = True) -> None:
        backoff = Backoff(self.reconnect_timeout)
        try:
            try:
                if preflight:
                    await self._preflight()
            except CentroidalError as refused:
                self._fatal = refused
                return
            while not self._done:
                if self._ledger.model_stored():
                    self._open = reopening(self._open)
                connection: asyncio.Queue[Any] = asyncio.Queue()
                for request in self._ledger.replay():
                    connection.put_nowait(request)
                if self._closing:
                    connection.put_nowait(_CLOSE)
                self._queue = connection
                call = self._method(self._requests(connection))
                self._call = call
                try:
                    async for message in call:
                        ack = self._ledger.record(message)
                        await self._notify()
                        if ack is not None and self._on_ack is not None:
                            self._on_ack(ack)
                        backoff.succeeded()
                except grpc.aio.AioRpcError as error:
                    if idle_timeout(error):
                        # A quiet stream the server ended: hold none open until a batch or
                        # the close needs one.
                        await self._wait(lambda: bool(self._ledger.unacked) or self._closing, None, "")
                    wait = backoff.next_wait(error, status_lost(error))
                    if self._done or wait is None:
                        self._fatal = error_from_rpc(error)
                        return
                    await asyncio.sleep(wait)
                    try:
                        await asyncio.wait_for(self._client._channel.channel_ready(), max(backoff.remaining(), 0.0))
                    except asyncio.TimeoutError:
                        self._fatal = error_from_rpc(error)
                        return
                    self.reconnects += 1
                    continue
                finally:
                    connection.put_nowait(_HANG_UP)
                if self._ledger.unacked and not self._done:
                    continue  # the server ended the stream early: resend what is unanswered
                unstored = self._ledger.closed(durable_from_trailer(await call.trailing_metadata()))
                if unstored is not None:
                    self._fatal = unstored
                return
        except asyncio.CancelledError:
            raise
        except BaseException as failure:  # noqa: BLE001 - an on_ack callback or a closed channel
            self._fatal = failure
            if self._call is not None:
                self._call.cancel()
        finally:
            self._done = True
            await self._notify()
