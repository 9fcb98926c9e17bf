"""The one place where errors become gRPC statuses.

``STATUS`` maps every domain error (``exceptions.py``), the engine's
InvalidInputError and the codec's WireError to a status code. ``ENGINE_FIELDS``
renames the engine's argument names to wire field paths, per RPC. ``rpc`` wraps a
grpc.aio handler (coroutine or async generator): a refusal becomes a status with a
google.rpc BadRequest (when a field is at fault), an ErrorInfo and, for Busy, a
RetryInfo detail. Only an unexpected exception, a server bug, becomes INTERNAL; it is
logged with a request id. Every call is counted by method and code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from centroidal.engine import InvalidInputError
from centroidal.codec import WireError
from centroidal.partitioned.partitions import ClusterError, ClusterPaused
from centroidal import sources

from . import exceptions as domain
from .metrics import LogRate, Metrics
from .parsing import Unparseable

log = logging.getLogger("centroidal.server")

try:  # grpc names no public class for a read, write or status on a call the client has left
    from grpc._cython.cygrpc import ExecuteBatchError as CallGone
except ImportError:  # pragma: no cover - another grpc build: nothing to tell apart
    CallGone = ()  # type: ignore[assignment,misc]

ERROR_DOMAIN = "centroidal.v1"

STATUS: dict[type[Exception], grpc.StatusCode] = {
    domain.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    WireError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    domain.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    domain.VersionConflict: grpc.StatusCode.ABORTED,
    domain.ModelReplaced: grpc.StatusCode.ABORTED,
    domain.ModelMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    domain.StreamElsewhere: grpc.StatusCode.FAILED_PRECONDITION,
    domain.StreamMoved: grpc.StatusCode.UNAVAILABLE,
    domain.LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    domain.Busy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    domain.SharedMemoryMissing: grpc.StatusCode.NOT_FOUND,
    domain.SharedMemoryRefused: grpc.StatusCode.PERMISSION_DENIED,
    domain.ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    domain.IdleTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    domain.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    domain.StoreFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    domain.StoreDamaged: grpc.StatusCode.DATA_LOSS,
    sources.DatasetRefused: grpc.StatusCode.PERMISSION_DENIED,
    sources.DatasetInvalid: grpc.StatusCode.INVALID_ARGUMENT,
    sources.DatasetMissing: grpc.StatusCode.NOT_FOUND,
    sources.DatasetUnreadable: grpc.StatusCode.FAILED_PRECONDITION,
    sources.DatasetExists: grpc.StatusCode.ALREADY_EXISTS,
    ClusterPaused: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ClusterError: grpc.StatusCode.UNAVAILABLE,
}
# Reasons of the refusals that are not the domain's own (which carry theirs).
_REASONS: dict[type[Exception], str] = {
    sources.DatasetRefused: "DATASET_NOT_ALLOWED",
    sources.DatasetInvalid: "INVALID_DATASET",
    sources.DatasetMissing: "DATASET_NOT_FOUND",
    sources.DatasetUnreadable: "DATASET_UNREADABLE",
    sources.DatasetExists: "OUTPUT_EXISTS",
}

# The engine names its arguments after the Python API (KMeansParams, MiniBatchParams); the
# wire names differ by RPC. The one place a field path is mapped, per RPC.
_CONFIG = ("init", "init_centers", "n_init", "max_iter", "tol", "metric", "algorithm", "n_neighbors")
ENGINE_FIELDS: dict[str, dict[str, str]] = {
    "Fit": {
        "X": "points.data",
        "points": "points.data",
        "sample_weight": "sample_weight",
        "n_clusters": "spec.config.n_clusters",
        **{name: f"spec.config.{name}" for name in _CONFIG},
    },
    "Predict": {"points": "points.data"},
    "PredictStream": {"points": "points.data"},
    "Evaluate": {"X": "points.data", "points": "points.data", "sample_size": "spec.silhouette.sample_size"},
    "SuggestK": {
        "X": "points.data",
        "points": "points.data",
        "sample_size": "spec.silhouette.sample_size",
        "n_clusters_range": "spec.k_max",
        "n_clusters": "spec.k_max",
        **{name: f"spec.config.{name}" for name in _CONFIG},
    },
    "StreamMiniBatch": {
        "points": "batch.points.data",
        "points.cols": "batch.points.cols",
        "points.dtype": "batch.points.dtype",
        "sample_weight": "batch.sample_weight",
        "n_clusters": "open.create_if_missing.n_clusters",
        "init_size": "open.create_if_missing.init_size",
        "reassignment_ratio": "open.create_if_missing.reassignment_ratio",
        "half_life": "open.create_if_missing.half_life",
        "half_life_unit": "open.create_if_missing.half_life_unit",
        "metric": "open.create_if_missing.metric",
    },
}
# A streamed batch of the wrong width or dtype does not fit the model: not a bad request.
_MODEL_MISMATCH_FIELDS = {
    "batch.points.cols": "FEATURE_MISMATCH",
    "batch.points.dtype": "DTYPE_MISMATCH",
}


@dataclass(frozen=True)
class Refusal:
    """A refused request as the status (or a batch's ack) reports it."""

    code: grpc.StatusCode
    message: str
    field: str | None
    reason: str
    metadata: dict[str, str]
    retry_after: float | None = None

    def to_status(self) -> grpc.Status:
        details = []
        if self.field is not None:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=self.field, description=self.message
            )
            details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
        details.append(
            _pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata))
        )
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        return rpc_status.to_status(status)


def wire_field(method: str, engine_field: str) -> str:
    """The wire path of an engine argument, or of a part of one ("init_centers.rows")."""
    names = ENGINE_FIELDS.get(method, {})
    if engine_field in names:
        return names[engine_field]
    head, dot, rest = engine_field.partition(".")
    return f"{names[head]}.{rest}" if dot and head in names else engine_field


def refusal(exc: BaseException, method: str) -> Refusal | None:
    """How ``exc`` is reported to the client of ``method``; None for a server bug."""
    code = next((STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS), None)
    if code is None:
        return None
    if isinstance(exc, domain.DomainError):
        return Refusal(code, exc.message, exc.field, exc.reason, exc.metadata, exc.retry_after)
    field = getattr(exc, "field", None)
    reason = getattr(exc, "reason", None) or next(
        (_REASONS[cls] for cls in type(exc).__mro__ if cls in _REASONS), "INVALID_ARGUMENT")
    message = str(exc)
    if isinstance(exc, InvalidInputError):  # the codec's WireError already names wire fields
        field = wire_field(method, exc.field)
        # The engine's messages begin with its own name for the argument: say the wire's.
        head = exc.field.partition(".")[0]
        if field != exc.field and message.startswith(head):
            message = wire_field(method, head).removesuffix(".data") + message[len(head):]
        if field in _MODEL_MISMATCH_FIELDS:
            code, reason = grpc.StatusCode.FAILED_PRECONDITION, _MODEL_MISMATCH_FIELDS[field]
    return Refusal(code, message, field, reason, {})


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _internal(method: str) -> Refusal:
    request_id = uuid.uuid4().hex[:12]
    log.exception("%s failed, request_id=%s", method, request_id)
    return Refusal(
        grpc.StatusCode.INTERNAL, f"internal server error (request_id={request_id})", None,
        "INTERNAL", {"request_id": request_id},
    )


def _answer(exc: BaseException, method: str, lines: LogRate) -> Refusal:
    """The status a failed call ends with: a refusal (logged at the rate ``lines`` allows),
    or INTERNAL for a server bug (always logged)."""
    answer = refusal(exc, method)
    if answer is None:
        return _internal(method)
    allowed, held = lines.allow(method)
    if allowed:
        more = f" ({held} more refusals of {method} were not logged)" if held else ""
        log.info("%s refused: %s %s%s", method, answer.code.name, answer.message, more)
    return answer


async def _abort(context: grpc.aio.ServicerContext, answer: Refusal) -> None:
    status = answer.to_status()
    try:
        await context.abort(status.code, status.details, status.trailing_metadata)
    except CallGone as gone:  # nobody is left to tell
        log.info("the client left before its status was sent (%s): %s", gone, answer.message)


def _outcome(exc: Exception, method: str, metrics: Metrics) -> tuple[str, Refusal | None]:
    """The status code's name a call that raised ``exc`` ends with, and the refusal to send
    (None when the client has left the call)."""
    if isinstance(exc, CallGone):
        return _client_left(method, exc), None
    answer = _answer(exc, method, metrics.refusal_lines)
    # The traceback's frames hold the call's arrays (the upload's chunks, say) in a cycle
    # with the exception, which only the garbage collector would break, maybe much later.
    # The call is over, so every frame it ran through has finished (clearing the frame of
    # a coroutine that is only suspended would end it).
    traceback.clear_frames(exc.__traceback__)
    return answer.code.name, answer


def _client_left(method: str, gone: BaseException) -> str:
    """A call the client left mid-way (it cancelled, or refused an answer over its own receive
    limit): the client's doing, not a server fault, so no traceback and no INTERNAL."""
    log.info("%s ended: the client left the call (%s)", method, gone)
    return grpc.StatusCode.CANCELLED.name


F = TypeVar("F", bound=Callable[..., Any])


def rpc(handler: F) -> F:
    """Map what a grpc.aio handler raises to a status, and count the call by method and code.

    The handler's ``self.metrics`` is a Metrics.
    """
    method = handler.__name__

    def record(self: Any, code: str, started: float) -> None:
        metrics: Metrics = self.metrics
        metrics.observe(method, code, time.monotonic() - started)

    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, code = time.monotonic(), "OK"
            try:
                if isinstance(request, Unparseable):  # a single request (PredictDataset's) that did not parse
                    raise request.refusal("the request")
                # aclosing: the handler's own clean-up runs at once when the call ends early.
                async with contextlib.aclosing(handler(self, request, context)) as responses:
                    async for response in responses:
                        yield response
            except (asyncio.CancelledError, GeneratorExit):
                # A cancel that lands while a response is being sent arrives as GeneratorExit.
                code = grpc.StatusCode.CANCELLED.name
                raise
            except grpc.aio.AbortError:
                code = _code_name(context)
                raise
            except Exception as exc:  # noqa: BLE001 - every failure must become a status
                code, answer = _outcome(exc, method, self.metrics)
                if answer is not None:  # counted above: the abort raises to end the call
                    await _abort(context, answer)
            finally:
                record(self, code, started)

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(handler)
    async def unary_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        started, code = time.monotonic(), "OK"
        try:
            if isinstance(request, Unparseable):
                raise request.refusal("the request")
            return await handler(self, request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED.name
            raise
        except grpc.aio.AbortError:
            code = _code_name(context)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must become a status
            code, answer = _outcome(exc, method, self.metrics)
            if answer is not None:  # counted above: the abort raises to end the call
                await _abort(context, answer)
        finally:
            record(self, code, started)

    return unary_wrapper  # type: ignore[return-value]


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else str(code)
