"""The ClusteringService handlers on grpc.aio: decode with the codec, call the domain, encode.

Each handler is a coroutine, so an open call costs a coroutine and not a thread.
CPU work and SQLite writes run on the bounded executors of ``admission.Workers``;
refusals are domain errors that ``errors.rpc`` maps to statuses.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from concurrent.futures import Future
from dataclasses import replace
from typing import TypeVar

import grpc.aio
import numpy as np

from centroidal.engine.scoring import RULE, KScore, Scoring, Suggestion
from centroidal.engine.spectral import SpectralResult
from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc
from centroidal.v1 import codec

from . import fitting, imaging, predicting, scoring
from .admission import READ_AHEAD, CallWork, Incoming, InOrder, Slots, Workers
from .config import ServerConfig
from .descriptions import decode_page_token, describe, encode_page_token
from .errors import parsed_stream, refusal, rpc
from .exceptions import (
    InvalidRequest,
    ModelMismatch,
    ModelNotFound,
    ModelReplaced,
    ShuttingDown,
    StoreDamaged,
    StoreUnavailable,
)
from .limits import check_model_name
from .memory import MemoryBudget, Reservation
from .metrics import Metrics
from .registry import Registry
from .snapshots import KMEANS, PALETTE, SPECTRAL, ModelSnapshot
from .streaming import BatchResult, LiveModel, StreamHub

log = logging.getLogger("centroidal.server")
T = TypeVar("T")
# A queued batch: its producer, its sequence, and what applying it came to.
_Queued = tuple[str, int, "asyncio.Future[BatchResult]"]

LABELS_PER_MESSAGE = 1 << 19
IMAGE_CHUNK_BYTES = 2 * 1024 * 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Batch errors that end the stream instead of being reported in an ack.
# Trailing metadata of a StreamMiniBatch that ended OK: the model's version on disk.
DURABLE_VERSION_TRAILER = "centroidal-durable-version"
# These end the stream instead of refusing one batch: the SDK reconnects and resends.
_STREAM_ENDING = (ModelReplaced, ShuttingDown, StoreUnavailable, StoreDamaged)


class ClusteringHandlers(pb_grpc.ClusteringServiceServicer):
    """centroidal.v1.ClusteringService over a Registry."""

    def __init__(self, config: ServerConfig, registry: Registry, metrics: Metrics) -> None:
        self._config = config
        self._registry = registry
        self.metrics = metrics
        self.memory = MemoryBudget(config.memory_budget)
        self.memory.add_resident(registry.resident_bytes)
        self.hub = StreamHub(config, registry, metrics, self.memory)
        self.memory.add_resident(self.hub.resident_bytes)
        self.workers = Workers(config)
        self.fit_slots = Slots(config.max_concurrent_fits, "fits or quantisations")
        self.fits = fitting.FitTally()
        metrics.models.set(len(registry))

    def _incoming(self, messages: AsyncIterator[T]) -> Incoming[T]:
        return Incoming(parsed_stream(messages), self._config.idle_timeout)

    @property
    def fits_in_flight(self) -> int:
        """Fits whose engine has not stopped yet (a cancelled one stops within an iteration)."""
        return self.fits.in_flight

    @property
    def last_stopped_fit_iteration(self) -> int | None:
        return self.fits.last_stopped_iteration

    # ---- Fit ----------------------------------------------------------------------------

    @rpc
    async def Fit(self, requests: AsyncIterator[pb.FitRequest], context: grpc.aio.ServicerContext) -> AsyncIterator[pb.FitResponse]:
        started = time.monotonic()
        incoming = self._incoming(requests)
        first = await incoming.next()
        if first is None or not first.HasField("spec"):
            raise InvalidRequest("the first FitRequest must carry a spec", field="spec")
        params = fitting.plan(codec.decode_fit_spec(first.spec), self._config)
        self._registry.check_expected(params.model, params.expected_version)
        self._registry.check_writable()  # before the data: a fit that cannot be stored is refused
        slot, work = self.fit_slots.take("model"), CallWork()
        memory = self.memory.reservation("this fit", field="points")
        try:
            yield _progress(codec.FitProgress("admitted", elapsed_seconds=time.monotonic() - started))
            gatherer = fitting.Gatherer(self._config, params, memory)
            async with incoming.drained_on_refusal():
                gatherer.add(codec.decode_fit_request(first), 0)
                async for index, message in _numbered(incoming, start=1):
                    gatherer.add(codec.decode_fit_request(message), index)
            data = await work.run(self.workers.fits, gatherer.finish)
            n_samples = data.points.shape[0]
            self.metrics.points.inc(n_samples)
            yield _progress(codec.FitProgress("data_received", points_received=n_samples,
                                              elapsed_seconds=time.monotonic() - started))
            run = fitting.FitRun(f"fit of {params.model}", fitting.fit_steps(params, data), work,
                                 self.workers.fits, self.fits, self.metrics.iterations.inc)
            async with contextlib.aclosing(run.events()) as events:
                async for event in events:
                    yield _progress(fitting.progress_message(event, n_samples, started))
        finally:
            work.after(slot.release)  # once the engine has stopped, not before
            work.after(memory.release)
        result = run.result
        assert result is not None
        # Labels go out before the commit, so a call that fails while sending them stores nothing.
        if params.return_labels:
            for offset in range(0, n_samples, LABELS_PER_MESSAGE):
                chunk = codec.LabelsChunk(offset, result.labels[offset : offset + LABELS_PER_MESSAGE])
                yield pb.FitResponse(labels=codec.encode_labels_chunk(chunk))
        spectral_fit = isinstance(result, SpectralResult)
        snapshot = ModelSnapshot(
            name=params.model, version=0, centers=result.centers, config=params.config(result.seed),
            inertia=result.inertia, n_iter=result.n_iter, n_samples_seen=n_samples,
            created_at=0.0, updated_at=0.0, kind=SPECTRAL if spectral_fit else KMEANS,
            state=result.to_bytes() if spectral_fit else None,
        )
        stored = await self.workers.run(self.workers.storage, self._registry.commit, snapshot,
                                        params.expected_version)
        self.metrics.models.set(len(self._registry))
        log.info("fit committed model=%s version=%d n=%d k=%d n_iter=%d inertia=%.6g", stored.name,
                 stored.version, n_samples, stored.n_clusters, stored.n_iter, stored.inertia)
        fitted = codec.FitResult(describe(stored, include_centers=True), n_samples,
                                 result.best_restart, time.monotonic() - started)
        yield pb.FitResponse(result=codec.encode_fit_result(fitted))

    # ---- Evaluate and SuggestK ------------------------------------------------------------

    @rpc
    async def Evaluate(
        self, requests: AsyncIterator[pb.EvaluateRequest], context: grpc.aio.ServicerContext
    ) -> pb.EvaluateResponse:
        started = time.monotonic()
        incoming = self._incoming(requests)
        first = await incoming.next()
        if first is None or not first.HasField("spec"):
            raise InvalidRequest("the first EvaluateRequest must carry a spec", field="spec")
        # The answer is a single message, so a refusal of the spec waits for the upload to end:
        # a client still writing would not get the status (grpc/grpc#36066).
        async with incoming.drained_on_refusal():
            spec = codec.decode_evaluate_spec(first.spec)
            snapshot = await self._snapshot(spec.model, spec.version, "spec.model")
            scoring.silhouette_rows(spec.silhouette, "spec.silhouette")
            metric = predicting.nearest(snapshot).metric
            params = scoring.gathering_params(snapshot.name, spec.n_samples, 1, metric, "spec.model")
            slot = self.fit_slots.take("spec.model")
        work = CallWork()
        memory = self.memory.reservation("this evaluation", field="points")
        try:
            gatherer = fitting.Gatherer(self._config, params, memory)
            async with incoming.drained_on_refusal():
                gatherer.add(_rows_for(snapshot, codec.decode_evaluate_request(first)), 0)
                async for index, message in _numbered(incoming, start=1):
                    gatherer.add(_rows_for(snapshot, codec.decode_evaluate_request(message)), index)
            data = await work.run(self.workers.fits, gatherer.finish)
            run = fitting.FitRun(
                f"evaluation of {snapshot.name}", scoring.evaluate_steps(snapshot, data, spec), work,
                self.workers.fits, self.fits, _nothing,
            )
            async with contextlib.aclosing(run.events()) as events:
                async for _ in events:
                    pass
        finally:
            work.after(slot.release)
            work.after(memory.release)
        evaluation: scoring.Evaluation = run.result
        return codec.encode_evaluate_response(codec.EvaluateResponse(
            version=snapshot.version, n_samples=data.points.shape[0], inertia=evaluation.inertia,
            scores=scoring.scores_message(evaluation.scores), elapsed_seconds=time.monotonic() - started,
        ))

    @rpc
    async def SuggestK(
        self, requests: AsyncIterator[pb.SuggestKRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SuggestKResponse]:
        started = time.monotonic()
        incoming = self._incoming(requests)
        first = await incoming.next()
        if first is None or not first.HasField("spec"):
            raise InvalidRequest("the first SuggestKRequest must carry a spec", field="spec")
        plan = scoring.plan_suggest(codec.decode_suggest_k_spec(first.spec), self._config)
        if plan.save_best_as:
            self._registry.check_writable()  # before the data, as for a Fit
        slot, work = self.fit_slots.take("spec"), CallWork()
        memory = self.memory.reservation("this suggest-k", field="points")
        try:
            yield _suggest_progress(codec.FitProgress("admitted", elapsed_seconds=time.monotonic() - started))
            gatherer = fitting.Gatherer(self._config, plan.gathering, memory)
            async with incoming.drained_on_refusal():
                gatherer.add(codec.FitChunk(points=codec.decode_suggest_k_request(first).points), 0)
                async for index, message in _numbered(incoming, start=1):
                    gatherer.add(codec.FitChunk(points=codec.decode_suggest_k_request(message).points), index)
            data = await work.run(self.workers.fits, gatherer.finish)
            n_samples = data.points.shape[0]
            self.metrics.points.inc(n_samples)
            yield _suggest_progress(codec.FitProgress("data_received", points_received=n_samples,
                                                      elapsed_seconds=time.monotonic() - started))
            run = fitting.FitRun(
                "suggest-k", scoring.suggest_steps(plan, data), work, self.workers.fits, self.fits,
                self.metrics.iterations.inc,
            )
            k = plan.ks.start
            async with contextlib.aclosing(run.events()) as events:
                async for event in events:
                    if isinstance(event, KScore):
                        k = event.n_clusters + 1
                        yield pb.SuggestKResponse(k_score=codec.encode_k_score(scoring.k_score_message(event)))
                        continue
                    if isinstance(event, Scoring):
                        progress = codec.FitProgress("scoring", elapsed_seconds=time.monotonic() - started)
                    else:
                        progress = fitting.progress_message(event, n_samples, started)
                    yield _suggest_progress(replace(progress, n_clusters=k))
        finally:
            work.after(slot.release)
            work.after(memory.release)
        suggestion: Suggestion = run.result
        saved = None
        if plan.save_best_as:
            best = scoring.best_fit(suggestion)
            snapshot = ModelSnapshot(
                name=plan.save_best_as, version=0, centers=best.centers, config=plan.config(best.n_clusters),
                inertia=best.inertia, n_iter=best.n_iter, n_samples_seen=n_samples,
                created_at=0.0, updated_at=0.0,
            )
            stored = await self.workers.run(self.workers.storage, self._registry.commit, snapshot, None)
            self.metrics.models.set(len(self._registry))
            saved = describe(stored, include_centers=True)
        result = codec.SuggestKResult(
            recommended_k=suggestion.recommended, elbow_k=suggestion.elbow, rule=RULE,
            per_k=tuple(scoring.k_score_message(entry) for entry in suggestion.per_k), saved=saved,
            elapsed_seconds=time.monotonic() - started,
        )
        yield pb.SuggestKResponse(result=codec.encode_suggest_k_result(result))

    # ---- Predict --------------------------------------------------------------------------

    @rpc
    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> bytes:
        """Answers with the PredictResponse already serialised (the service's serializers
        pass bytes through)."""
        query = codec.decode_predict_request(request)
        snapshot = await self._snapshot(query.model, query.version)
        if query.points is None:
            raise InvalidRequest("points is required", field="points")
        return await self._answer(snapshot, query.points, query.options or codec.PredictOptions(), 0)

    @rpc
    async def PredictStream(
        self, requests: AsyncIterator[pb.PredictRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        snapshot, options, offset = None, codec.PredictOptions(), 0
        incoming = self._incoming(requests)
        async with incoming.drained_on_refusal():
            async for index, message in _numbered(incoming.ahead()):
                query = codec.decode_predict_request(message)
                if snapshot is None:
                    snapshot = await self._snapshot(query.model, query.version)
                    options = query.options or options
                elif query.model or query.version is not None or query.options is not None:
                    raise InvalidRequest(
                        f"message {index} of the stream sets model, version or options; only the "
                        "first message may",
                        field="model",
                    )
                if query.points is not None:
                    yield await self._answer(snapshot, query.points, options, offset)
                    offset += query.points.shape[0]

    async def _snapshot(self, name: str, version: int | None, field: str = "model") -> ModelSnapshot:
        """The model version a Predict asks for; an older one is read from the store."""
        if version is None:
            return predicting.snapshot_for(self._registry, name, version, field)
        return await self.workers.run(
            self.workers.storage, predicting.snapshot_for, self._registry, name, version, field
        )

    async def _answer(
        self, snapshot: ModelSnapshot, points: np.ndarray, options: codec.PredictOptions, offset: int
    ) -> bytes:
        points = predicting.check_points(snapshot, points, options, self._config)
        if predicting.work_of(snapshot, points) <= predicting.INLINE_WORK:
            response = _predict_response(snapshot, points, options, offset)
        else:
            response = await self.workers.run(
                self.workers.compute, _predict_response, snapshot, points, options, offset
            )
        self.metrics.predicted.inc(points.shape[0])
        return response

    # ---- Model management -----------------------------------------------------------------

    @rpc
    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> pb.Model:
        query = codec.decode_get_model_request(request)
        name = check_model_name(query.name, "name")
        if query.version is None:
            snapshot = self._registry.get(name)
        else:  # an older version is read from the store
            snapshot = await self.workers.run(
                self.workers.storage, self._registry.get_version, name, query.version, "name"
            )
        return codec.encode_model(describe(
            snapshot, include_centers=query.include_centers,
            durable_version=self.hub.durable_version(name, snapshot.version),
        ))

    @rpc
    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        query = codec.decode_list_models_request(request)
        page_size = query.page_size or DEFAULT_PAGE_SIZE
        if page_size > MAX_PAGE_SIZE:
            raise InvalidRequest(f"page_size must be at most {MAX_PAGE_SIZE}, got {page_size}", field="page_size")
        after = decode_page_token(query.page_token)
        names = self._registry.names()
        start = bisect.bisect_right(names, after) if after is not None else 0
        page = names[start : start + page_size]
        models = []
        for name in page:
            try:
                snapshot = self._registry.get(name)
            except ModelNotFound:
                continue  # deleted since the listing was taken
            models.append(describe(snapshot, include_centers=False,
                                   durable_version=self.hub.durable_version(name, snapshot.version)))
        token = encode_page_token(page[-1]) if start + page_size < len(names) and page else ""
        return codec.encode_list_models_response(codec.ListModelsResponse(tuple(models), token))

    @rpc
    async def DeleteModel(self, request: pb.DeleteModelRequest, context: grpc.aio.ServicerContext) -> pb.DeleteModelResponse:
        query = codec.decode_delete_model_request(request)
        name = check_model_name(query.name, "name")
        version = await self.workers.run(self.workers.storage, self._registry.delete, name, query.expected_version)
        self.metrics.models.set(len(self._registry))
        log.info("model deleted model=%s version=%d", name, version)
        return codec.encode_delete_model_response(codec.DeleteModelResponse(name, version))

    # ---- StreamMiniBatch ------------------------------------------------------------------

    @rpc
    async def StreamMiniBatch(
        self, requests: AsyncIterator[pb.MiniBatchRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.MiniBatchAck]:
        incoming = self._incoming(requests)
        first = await incoming.next()
        if first is None:
            return
        if first.WhichOneof("item") != "open":
            raise InvalidRequest("the first message of a StreamMiniBatch stream must be open", field="open")
        opening = codec.decode_minibatch_open(first.open)
        name = check_model_name(opening.model, "open.model")
        # Loading a stored model's state is CPU work: off the event loop. A refusal waits for
        # the client's replayed batches to stop, or grpc.aio may lose it (see Incoming.drain).
        async with incoming.drained_on_refusal():
            live = await self._open_stream(name, opening.create_if_missing)
        jobs = InOrder(self.workers.streams)
        # Batches are taken and queued while earlier ones are applied; acks go out in order.
        queued: asyncio.Queue[_Queued | None] = asyncio.Queue(maxsize=READ_AHEAD + 1)

        async def take() -> None:
            async for index, message in _numbered(incoming.ahead(), start=1):
                if message.WhichOneof("item") != "batch":
                    raise InvalidRequest(f"message {index} is not a batch; only the first may be open", field="open")
                incoming.owe(1)  # until its ack is sent
                await queued.put(self._queue_batch(live, message.batch, jobs))
            await queued.put(None)

        taker = asyncio.get_running_loop().create_task(take())
        getting: asyncio.Future[_Queued | None] | None = None
        ended = False  # the client half-closed and every ack went out
        try:
            while True:
                getting = asyncio.ensure_future(queued.get())
                if not taker.done():
                    await asyncio.wait({getting, taker}, return_when=asyncio.FIRST_COMPLETED)
                failure = taker.exception() if taker.done() and not getting.done() else None
                if failure is not None:
                    raise failure  # a message that is not a batch, or an idle client
                item = await getting  # a finished taker has queued its last item
                if item is None:
                    ended = True
                    break
                try:
                    ack = await self._ack(*item)
                except _STREAM_ENDING:  # sent once the client stops writing, as above
                    taker.cancel()
                    await asyncio.wait({taker})
                    await incoming.drain()
                    raise
                yield codec.encode_minibatch_ack(ack)
                incoming.owe(-1)
        finally:
            for task in (getting, taker):
                if task is not None:
                    task.cancel()
            # The stream's end runs as a task of its own: a call cancelled again while it
            # runs must not skip it, or the model would count an open stream forever.
            ending = asyncio.ensure_future(self._end_stream(live, taker, jobs, queued))
            closing = await asyncio.shield(ending)
            if not ended:  # the call already ends with its own status; the close only logs
                closing.add_done_callback(_log_close_failure)
        # The close checkpoints the model: a failure is the stream's status, so the producer
        # keeps every batch that is not stored; success tells it the durable version.
        # Shielded: a cancel that lands while the close waits for a storage thread must not
        # cancel the queued close with it, or the model would count this stream forever.
        durable = await asyncio.shield(asyncio.wrap_future(closing))
        context.set_trailing_metadata(((DURABLE_VERSION_TRAILER, str(durable)),))

    async def _open_stream(self, name: str, create: codec.MiniBatchConfig | None) -> LiveModel:
        """The stream's live model. The open counts the stream on the model; a call cancelled
        while it runs must not leave that count behind, so the close follows it there."""
        opening = self.workers.storage.submit(self.hub.open, name, create)
        try:
            return await asyncio.wrap_future(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(self._close_orphan)
            raise

    def _close_orphan(self, opening: Future[LiveModel]) -> None:
        if not opening.cancelled() and opening.exception() is None:
            self._close_stream(opening.result()).add_done_callback(_log_close_failure)

    async def _end_stream(
        self, live: LiveModel, taker: asyncio.Task[None], jobs: InOrder, queued: asyncio.Queue[_Queued | None],
    ) -> Future[int]:
        """Stop taking batches, drop the unsent acks, and close the stream once the batch in
        flight is applied; returns the close (a checkpoint) as it runs."""
        await asyncio.wait({taker})
        jobs.close()
        while not queued.empty():  # acks nobody will send: their outcomes are not needed
            left = queued.get_nowait()
            if left is not None:
                left[2].add_done_callback(lambda outcome: outcome.cancelled() or outcome.exception())
        # After the batch in flight, if any: closing under it could orphan a new model.
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        jobs.after(lambda: closed.set_result(None))
        await closed
        return self._close_stream(live)

    def _close_stream(self, live: LiveModel) -> Future[int]:
        try:
            return self.workers.storage.submit(self.hub.close, live)
        except RuntimeError:  # the server is stopping: its last checkpoint may store this model
            done: Future[int] = Future()
            done.set_exception(ShuttingDown(
                f"the server is stopping before model {live.name!r} was checkpointed for this "
                "stream; reconnect and resend what is not durable"
            ))
            return done

    def _queue_batch(self, live: LiveModel, message: pb.MiniBatch, jobs: InOrder) -> _Queued:
        """Decode a batch and queue it for its model; a malformed one is refused in order."""
        producer, sequence = message.producer_id, int(message.sequence)
        try:
            outcome = jobs.submit(self.hub.apply, live, codec.decode_minibatch(message))
        except Exception as exc:  # noqa: BLE001 - told in the batch's ack
            outcome = asyncio.get_running_loop().create_future()
            outcome.set_exception(exc)
        return producer, sequence, outcome

    async def _ack(self, producer: str, sequence: int, outcome: asyncio.Future[BatchResult]) -> codec.MiniBatchAck:
        try:
            result = await outcome
        except Exception as exc:  # noqa: BLE001 - a refused batch is told in its ack
            refused = refusal(exc, "StreamMiniBatch")
            if refused is None or isinstance(exc, _STREAM_ENDING):
                raise
            self.metrics.batches.labels(refused.code.name).inc()
            error = codec.BatchError(refused.code.value[0], refused.message, refused.field or "")
            return codec.MiniBatchAck(producer, sequence, error=error)
        self.metrics.batches.labels("DUPLICATE" if result.duplicate else "OK").inc()
        return codec.MiniBatchAck(
            producer, sequence, result.version, result.batch_inertia, result.n_samples_seen,
            result.durable_version, result.duplicate,
        )

    # ---- QuantizeImage ----------------------------------------------------------------------

    @rpc
    async def QuantizeImage(
        self, requests: AsyncIterator[pb.QuantizeImageRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.QuantizeImageResponse]:
        incoming = self._incoming(requests)
        first = await incoming.next()
        if first is None or not first.HasField("spec"):
            raise InvalidRequest("the first message of a QuantizeImage stream must carry spec", field="spec")
        options, save_as = imaging.plan(codec.decode_quantize_spec(first.spec), self._registry)
        if save_as:
            self._registry.check_writable()
        # It holds the image and fits a palette: it takes a fit slot, before the image arrives.
        slot, work = self.fit_slots.take("image"), CallWork()
        memory = self.memory.reservation("this image", field="image")
        try:
            yield pb.QuantizeImageResponse()  # admitted: the client may send the image now
            async with incoming.drained_on_refusal():
                image = await self._receive_image(first.image, incoming, memory)
            result = await work.run(self.workers.fits, imaging.quantize, image, options,
                                    self._config.max_image_pixels, memory.grow)
        finally:
            work.after(slot.release)
            work.after(memory.release)
        saved_version = 0
        if save_as:
            palette = ModelSnapshot(
                name=save_as, version=0, centers=result.colors.astype(np.float32),
                config={"color_space": options.color_space, "seed": options.seed},
                inertia=result.mse * 3 * result.width * result.height, n_iter=0,
                n_samples_seen=result.width * result.height, created_at=0.0, updated_at=0.0,
                kind=PALETTE,
            )
            saved = await self.workers.run(self.workers.storage, self._registry.commit, palette)
            self.metrics.models.set(len(self._registry))
            saved_version = saved.version
        summary = codec.QuantizeSummary(
            result.colors, result.counts, result.mse, result.psnr, result.width, result.height,
            result.image_format, tuple(result.notes), saved_version,
        )
        data = result.image
        for start in range(0, max(len(data), 1), IMAGE_CHUNK_BYTES):
            last = start + IMAGE_CHUNK_BYTES >= len(data)
            chunk = codec.QuantizeImageResponse(data[start : start + IMAGE_CHUNK_BYTES], summary if last else None)
            yield codec.encode_quantize_response(chunk)

    async def _receive_image(
        self, first: bytes, incoming: Incoming[pb.QuantizeImageRequest], memory: Reservation
    ) -> bytearray:
        limit = self._config.max_image_bytes
        memory.grow(len(first))
        buffer = bytearray(first)
        async for message in incoming:
            if message.HasField("spec"):
                raise InvalidRequest("only the first message of the stream may carry spec", field="spec")
            chunk = message.image  # each read of a bytes field copies it: read it once
            if len(buffer) + len(chunk) > limit:
                raise imaging.LimitExceeded(f"the image is over the server's limit of {limit} bytes", field="image")
            memory.grow(len(chunk))
            buffer += chunk
        return buffer


def _predict_response(
    snapshot: ModelSnapshot, points: np.ndarray, options: codec.PredictOptions, offset: int
) -> bytes:
    """The answer, serialised where it is computed (off the event loop): labels and a
    transform can make a large message."""
    return codec.serialize_predict_response(predicting.answer(snapshot, points, options, offset))


def _rows_for(snapshot: ModelSnapshot, chunk: codec.EvaluateChunk) -> codec.FitChunk:
    """An Evaluate chunk's rows, refused unless they have the model's width."""
    if chunk.points is not None and chunk.points.shape[1] != snapshot.n_features:
        raise ModelMismatch(
            f"points.cols={chunk.points.shape[1]} but model {snapshot.name!r} version "
            f"{snapshot.version} has {snapshot.n_features} features",
            field="points.cols", reason="FEATURE_MISMATCH",
        )
    return codec.FitChunk(points=chunk.points)


def _nothing() -> None:
    """No metric counts an evaluation's steps."""


def _suggest_progress(progress: codec.FitProgress) -> pb.SuggestKResponse:
    return pb.SuggestKResponse(progress=codec.encode_fit_progress(progress))


def _progress(progress: codec.FitProgress) -> pb.FitResponse:
    return pb.FitResponse(progress=codec.encode_fit_progress(progress))


async def _numbered(messages: AsyncIterable[T], start: int = 0) -> AsyncIterator[tuple[int, T]]:
    index = start
    async for message in messages:
        yield index, message
        index += 1


def _log_close_failure(closing: Future[int]) -> None:
    failure = None if closing.cancelled() else closing.exception()
    if failure is not None:
        log.warning("checkpoint at the close of a failed stream did not store: %s",
                    getattr(failure, "message", None) or repr(failure))
