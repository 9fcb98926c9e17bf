"""The standard services beside ours, health and reflection, and the limit on open calls.

They are registered here rather than by their packages' helpers, for three reasons:
- bytes that do not parse as the request are refused with INVALID_ARGUMENT, as our own
  methods refuse them, and logged at a limited rate (``errors.rpc``); through the packages'
  own deserializers grpcio answered UNKNOWN and logged a traceback for every such call;
- reflection answers under ``grpc.reflection.v1``, which current grpcurl asks for first,
  as well as ``v1alpha`` (grpcio-reflection serves only the latter; the two protocols'
  messages are the same on the wire, so one servicer answers both);
- ``--max-concurrent-rpcs`` is counted here (``CallLimit``) instead of by grpcio, so that
  a health probe is answered even while every other slot is taken.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha import _async as reflection_aio

from .errors import rpc
from .metrics import Metrics
from .parsing import parsed_stream, parser

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = reflection.SERVICE_NAME


class CallLimit:
    """The calls open at once, health checks aside; more are refused with RESOURCE_EXHAUSTED."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def _refusal(self) -> str:
        return (f"the server has {self.open} calls open, its limit (--max-concurrent-rpcs {self.limit}); "
                "retry later")

    def wrap(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """``behavior`` (a handler's function), counted while it runs."""
        if inspect.isasyncgenfunction(behavior):

            async def limited_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if self.open >= self.limit:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._refusal())
                self.open += 1
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    self.open -= 1

            return limited_stream

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.open >= self.limit:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._refusal())
            self.open += 1
            try:
                return await behavior(request, context)
            finally:
                self.open -= 1

        return limited


class HealthHandlers:
    """grpc.health.v1.Health over the package's servicer, which keeps the statuses."""

    def __init__(self, health: health_aio.HealthServicer, metrics: Metrics) -> None:
        self._health = health
        self.metrics = metrics

    @rpc
    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._health.Check(request, context)

    @rpc
    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        await self._health.Watch(request, context)  # writes each change itself


class ReflectionHandlers:
    """Server reflection, one servicer for both protocol versions."""

    def __init__(self, service_names: tuple[str, ...], metrics: Metrics) -> None:
        self._reflection = reflection_aio.ReflectionServicer(service_names)
        self.metrics = metrics

    @rpc
    async def ServerReflectionInfo(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in self._reflection.ServerReflectionInfo(parsed_stream(requests), context):
            yield response


def add_edges(server: grpc.aio.Server, health: health_aio.HealthServicer, service_name: str,
              metrics: Metrics, limit: CallLimit) -> None:
    """Register health (outside the limit) and reflection (inside it) on ``server``."""
    _add_reflection_v1_descriptor()
    checks = HealthHandlers(health, metrics)
    request = parser(health_pb2.HealthCheckRequest)
    respond = health_pb2.HealthCheckResponse.SerializeToString
    register(server, HEALTH_SERVICE, {
        "Check": grpc.unary_unary_rpc_method_handler(checks.Check, request, respond),
        "Watch": grpc.unary_stream_rpc_method_handler(checks.Watch, request, respond),
    })
    reflecting = ReflectionHandlers((service_name, HEALTH_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA), metrics)
    for name in (REFLECTION_V1, REFLECTION_V1ALPHA):
        register(server, name, {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            limit.wrap(reflecting.ServerReflectionInfo),
            parser(reflection_pb2.ServerReflectionRequest),
            reflection_pb2.ServerReflectionResponse.SerializeToString,
        )})


def register(server: grpc.aio.Server, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
    """Serve ``handlers`` as ``service``'s methods on ``server``."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


def _add_reflection_v1_descriptor() -> None:
    """Put grpc/reflection/v1/reflection.proto in the default pool, so that reflection can
    describe itself under v1 too: v1alpha's file, renamed (its messages are v1's)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1)
        return
    except KeyError:
        pass
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = "grpc/reflection/v1/reflection.proto"
    file.package = "grpc.reflection.v1"
    file.ClearField("options")
    for message in file.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old):]
    for service in file.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old):]
            method.output_type = new + method.output_type[len(old):]
    pool.AddSerializedFile(file.SerializeToString())
