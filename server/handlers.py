"""The ClusteringService handlers on grpc.aio. Each does three things: decode the request with
the codec, call one domain object, and encode what it answers.

A handler is a coroutine, so an open call costs a coroutine and not a thread. The domain
(fitting, scoring, predicting, sessions, quantizing, catalog) raises domain errors, which
``errors.rpc`` maps to statuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias, TypeVar

import grpc.aio

from centroidal import codec
from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc

from .admission import Incoming, Workers
from .catalog import Catalog
from .config import ServerConfig
from .errors import rpc
from .fitting import Fitting
from .labelling import DatasetLabels
from .memory import MemoryBudget
from .metrics import Metrics
from .parsing import decoded, read_one, read_stream
from .predicting import Predicting
from .quantizing import Quantizing
from .registry import Registry
from .replicas import Owner
from .runtime import Runtime
from .scoring import Scoring
from .sessions import OwnerElsewhere, StreamSessions
from .streaming import StreamHub

T = TypeVar("T")
Context: TypeAlias = grpc.aio.ServicerContext


# The request types whose bytes the handlers read with the codec (app.RAW_REQUESTS).
_PREDICT_REQUEST = pb.PredictRequest.DESCRIPTOR.full_name
_MINIBATCH_REQUEST = pb.MiniBatchRequest.DESCRIPTOR.full_name
_FIT_REQUEST = pb.FitRequest.DESCRIPTOR.full_name
_EVALUATE_REQUEST = pb.EvaluateRequest.DESCRIPTOR.full_name
_SUGGEST_K_REQUEST = pb.SuggestKRequest.DESCRIPTOR.full_name


class ClusteringHandlers(pb_grpc.ClusteringServiceServicer):
    """centroidal.v1.ClusteringService over a Registry."""

    def __init__(self, config: ServerConfig, registry: Registry, metrics: Metrics) -> None:
        self.metrics = metrics
        self.runtime = runtime = Runtime.create(config, registry, metrics)
        # Named for leases once the server knows the address it listens on (app.py).
        self.hub = StreamHub(config, registry, metrics, runtime.memory, Owner("", ""))
        runtime.memory.add_resident(self.hub.resident_bytes)
        self.fitting = Fitting(runtime)
        self.predicting = Predicting(runtime)
        self.scoring = Scoring(runtime, self.predicting)
        self.sessions = StreamSessions(runtime, self.hub)
        self.quantizing = Quantizing(runtime)
        self.catalog = Catalog(runtime, self.hub.durable_version)
        self.labelling = DatasetLabels(runtime)
        metrics.models.set(len(registry))

    @property
    def workers(self) -> Workers:
        return self.runtime.workers

    @property
    def memory(self) -> MemoryBudget:
        return self.runtime.memory

    @property
    def fits_in_flight(self) -> int:
        """Fits whose engine has not stopped yet (a cancelled one stops within an iteration)."""
        return self.runtime.fits.in_flight

    @property
    def last_stopped_fit_iteration(self) -> int | None:
        return self.runtime.fits.last_stopped_iteration

    def _incoming(self, messages: AsyncIterator[Any], decode: Callable[[Any], T]) -> Incoming[T]:
        """A request stream decoded by the codec, read with the server's idle timeout."""
        return Incoming(decoded(messages, decode), self.runtime.config.idle_timeout)

    def _read(self, messages: AsyncIterator[bytes], read: Callable[[bytes], T], type_name: str) -> Incoming[T]:
        """As ``_incoming``, for a method whose requests arrive as bytes (app.RAW_REQUESTS)."""
        return Incoming(read_stream(messages, read, type_name), self.runtime.config.idle_timeout)

    @rpc
    async def Fit(self, requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[pb.FitResponse]:
        async for event in self.fitting.fit(self._read(requests, codec.read_fit_request, _FIT_REQUEST)):
            yield codec.encode_fit_response(event)

    @rpc
    async def Evaluate(self, requests: AsyncIterator[bytes], context: Context) -> pb.EvaluateResponse:
        answer = await self.scoring.evaluate(self._read(requests, codec.read_evaluate_request, _EVALUATE_REQUEST))
        return codec.encode_evaluate_response(answer)

    @rpc
    async def SuggestK(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[pb.SuggestKResponse]:
        queries = self._read(requests, codec.read_suggest_k_request, _SUGGEST_K_REQUEST)
        async for event in self.scoring.suggest_k(queries):
            yield codec.encode_suggest_k_response(event)

    @rpc
    async def Predict(self, request: bytes, context: Context) -> bytes:
        """Answers with the PredictResponse already serialised, where it was computed (the
        service's serializers pass bytes through)."""
        query = read_one(request, codec.read_predict_request, _PREDICT_REQUEST)
        return await self.predicting.predict(query, codec.serialize_predict_response, context.peer())

    @rpc
    async def PredictStream(self, requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        queries = self._read(requests, codec.read_predict_request, _PREDICT_REQUEST)
        async for answer in self.predicting.predict_stream(queries, codec.serialize_predict_response, context.peer()):
            yield answer

    @rpc
    async def PredictDataset(
        self, request: pb.PredictDatasetRequest, context: Context
    ) -> AsyncIterator[pb.PredictDatasetResponse]:
        async for event in self.labelling.run(codec.decode_predict_dataset_request(request)):
            yield codec.encode_predict_dataset_response(event)

    @rpc
    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        return codec.encode_model(await self.catalog.get(codec.decode_get_model_request(request)))

    @rpc
    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        return codec.encode_list_models_response(await self.catalog.page(codec.decode_list_models_request(request)))

    @rpc
    async def DeleteModel(self, request: pb.DeleteModelRequest, context: Context) -> pb.DeleteModelResponse:
        answer = await self.catalog.delete(codec.decode_delete_model_request(request))
        return codec.encode_delete_model_response(answer)

    @rpc
    async def StreamMiniBatch(
        self, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[pb.MiniBatchAck]:
        batches = self._read(requests, codec.read_minibatch_request, _MINIBATCH_REQUEST)
        async for answer in self.sessions.run(batches, context.peer()):
            if isinstance(answer, codec.MiniBatchAck):
                yield codec.encode_minibatch_ack(answer)
            elif isinstance(answer, OwnerElsewhere):  # the status that follows names it too
                await context.send_initial_metadata(((codec.STREAM_OWNER_HEADER, answer.address),))
            else:  # the close stored the model: its durable version
                context.set_trailing_metadata(((codec.DURABLE_VERSION_TRAILER, str(answer)),))

    @rpc
    async def QuantizeImage(
        self, requests: AsyncIterator[pb.QuantizeImageRequest], context: Context
    ) -> AsyncIterator[pb.QuantizeImageResponse]:
        async for answer in self.quantizing.quantize(self._incoming(requests, codec.decode_quantize_request)):
            yield codec.encode_quantize_response(answer)
