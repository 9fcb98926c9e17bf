"""One exception class per gRPC status code, raised ``from`` the original grpc.RpcError.

Each carries the status code, the server's message, and the decoded
google.rpc details: the BadRequest field violations and the ErrorInfo reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import grpc.aio
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """A request field the server refused, and why."""

    field: str
    description: str


# Every status code's exception class, filled in as each class below is defined.
_BY_CODE: dict[grpc.StatusCode, type[CentroidalError]] = {}


class CentroidalError(Exception):
    """Base of every error the SDK raises for a failed call."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE[cls.code] = cls

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # Seconds after which the same call may succeed (the server's google.rpc.RetryInfo).
        self.retry_after = retry_after
        if code is not None:
            self.code = code
        self.field_violations = field_violations
        self.reason = reason
        self.metadata = metadata or {}

    @property
    def field(self) -> str | None:
        """The first field the server named, if any."""
        return self.field_violations[0].field if self.field_violations else None

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class Cancelled(CentroidalError):
    code = grpc.StatusCode.CANCELLED


class Unknown(CentroidalError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(CentroidalError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(CentroidalError, TimeoutError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(CentroidalError, LookupError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CentroidalError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(CentroidalError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(CentroidalError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(CentroidalError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(CentroidalError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(CentroidalError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(CentroidalError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(CentroidalError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(CentroidalError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(CentroidalError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(CentroidalError):
    code = grpc.StatusCode.UNAUTHENTICATED


def error_from_rpc(error: grpc.RpcError) -> CentroidalError:
    """The typed exception for a failed call, with its google.rpc details decoded."""
    # A failed sync call is a grpc.Call; grpc.aio's AioRpcError has the same accessors.
    is_call = isinstance(error, (grpc.Call, grpc.aio.AioRpcError))
    code = error.code() if is_call else grpc.StatusCode.UNKNOWN
    message = (error.details() if is_call else None) or str(error)
    violations: list[FieldViolation] = []
    reason = None
    metadata: dict[str, str] = {}
    retry_after: float | None = None
    status = rpc_status.from_call(error) if is_call else None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
            metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    cls = _BY_CODE.get(code, CentroidalError)
    return cls(
        message, code=code, field_violations=tuple(violations), reason=reason, metadata=metadata,
        retry_after=retry_after,
    )


def error_from_code(code: int, message: str, field: str = "") -> CentroidalError:
    """The typed exception for a status carried inside a message (a rejected batch's ack)."""
    status = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    violations = (FieldViolation(field, message),) if field else ()
    return _BY_CODE.get(status, CentroidalError)(message, code=status, field_violations=violations)


__all__ = ["CentroidalError", "FieldViolation", *(cls.__name__ for cls in _BY_CODE.values())]
