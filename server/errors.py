"""Service errors and their mapping to gRPC statuses with google.rpc details.

Handlers raise ``ServiceError``; ``handle_errors`` turns it into a status with a
BadRequest (when a field is at fault) and an ErrorInfo detail. A client's
mistake is never reported as INTERNAL or UNKNOWN: only an unexpected exception,
which is a server bug, becomes INTERNAL, and it is logged with the request id.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from centroidal.engine import InvalidInputError

log = logging.getLogger("centroidal.server")

ERROR_DOMAIN = "centroidal.v1"

F = TypeVar("F", bound=Callable[..., Any])


class ServiceError(Exception):
    """A request the service refuses, with the status code and the field at fault."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.reason = reason or code.name
        self.metadata = metadata or {}

    def to_status(self) -> grpc.Status:
        details = []
        if self.field is not None:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=self.field, description=self.message
                    )
                ]
            )
            details.append(_pack(bad_request))
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
        )
        details.append(_pack(info))
        status = status_pb2.Status(
            code=self.code.value[0], message=self.message, details=details
        )
        return rpc_status.to_status(status)


def invalid(field: str, message: str, reason: str = "INVALID_ARGUMENT") -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, field=field, reason=reason)


def not_found(field: str, message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message, field=field, reason="NOT_FOUND")


def exhausted(field: str, message: str, reason: str = "LIMIT_EXCEEDED") -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, field=field, reason=reason)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


# The engine names its arguments after the Python API; the wire names differ.
_ENGINE_FIELDS = {
    "X": "points",
    "init": "config.init_centers",
    "n_clusters": "config.n_clusters",
    "n_init": "config.n_init",
    "max_iter": "config.max_iter",
    "tol": "config.tol",
    "sample_weight": "sample_weight",
}


def from_engine(exc: InvalidInputError) -> ServiceError:
    return invalid(_ENGINE_FIELDS.get(exc.field, exc.field), str(exc))


def _abort(context: grpc.ServicerContext, method: str, exc: BaseException) -> None:
    if not context.is_active():
        # The client cancelled or the deadline passed; there is nobody to answer.
        log.info("%s ended after the call was cancelled: %r", method, exc)
        return
    if isinstance(exc, InvalidInputError):
        exc = from_engine(exc)
    if isinstance(exc, ServiceError):
        log.info("%s refused: %s %s", method, exc.code.name, exc.message)
        context.abort_with_status(exc.to_status())
    request_id = uuid.uuid4().hex[:12]
    log.exception("%s failed, request_id=%s", method, request_id)
    context.abort_with_status(
        ServiceError(
            grpc.StatusCode.INTERNAL,
            f"internal server error (request_id={request_id})",
            reason="INTERNAL",
            metadata={"request_id": request_id},
        ).to_status()
    )


def _is_abort(exc: BaseException, context: grpc.ServicerContext) -> bool:
    # context.abort raises a bare Exception after recording the status; let it through.
    return type(exc) is Exception and context.code() is not None


def _code_of(exc: BaseException, context: grpc.ServicerContext) -> str:
    if isinstance(exc, ServiceError):
        return exc.code.name
    if isinstance(exc, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT.name
    if not context.is_active():
        return grpc.StatusCode.CANCELLED.name
    if _is_abort(exc, context):
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else str(code)
    return grpc.StatusCode.INTERNAL.name


def handle_errors(handler: F) -> F:
    """Map exceptions raised by a servicer method (plain or generator) to statuses.

    The servicer's ``metrics`` (when it has any) count the call by method and code.
    """
    method = handler.__name__

    def record(self: Any, code: str, started: float) -> None:
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            metrics.observe(method, code, time.monotonic() - started)

    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def stream_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            started = time.monotonic()
            code = "OK"
            try:
                yield from handler(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every failure must become a status
                code = _code_of(exc, context)
                if _is_abort(exc, context):
                    raise
                _abort(context, method, exc)
            except GeneratorExit:
                code = grpc.StatusCode.CANCELLED.name
                raise
            finally:
                record(self, code, started)

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(handler)
    def unary_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        started = time.monotonic()
        code = "OK"
        try:
            return handler(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every failure must become a status
            code = _code_of(exc, context)
            if _is_abort(exc, context):
                raise
            _abort(context, method, exc)
        finally:
            record(self, code, started)

    return unary_wrapper  # type: ignore[return-value]


__all__ = [
    "ServiceError",
    "exhausted",
    "from_engine",
    "handle_errors",
    "invalid",
    "not_found",
]
