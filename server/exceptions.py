"""What the server's domain code raises: plain exceptions that know nothing of gRPC.

Each names the request field at fault (a wire path such as ``spec.config.n_clusters``)
when there is one, and a short machine-readable ``reason``. ``errors.py`` maps every
class here, and the engine's and codec's errors, to a status code in one table.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request the service refuses."""

    default_reason = "REFUSED"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason or self.default_reason
        self.metadata = metadata or {}
        # Seconds after which the same request may succeed; sent as a google.rpc.RetryInfo.
        self.retry_after = retry_after


class InvalidRequest(DomainError):
    """The request itself is wrong: a bad value, shape or combination."""

    default_reason = "INVALID_ARGUMENT"


class ModelNotFound(DomainError):
    """No model by that name, or no kept version by that number."""

    default_reason = "NOT_FOUND"


class VersionConflict(DomainError):
    """A conditional write whose expected_version is not the model's current one."""

    default_reason = "VERSION_MISMATCH"


class ModelReplaced(DomainError):
    """The model a stream feeds was deleted, refitted or created by another writer."""

    default_reason = "MODEL_REPLACED"


class StreamElsewhere(DomainError):
    """Another replica owns the stream of this model; ``metadata['owner']`` is its address,
    where the producer opens the stream instead."""

    default_reason = "STREAM_OWNER_ELSEWHERE"


class StreamMoved(DomainError):
    """This replica lost the stream's lease (taken over after it could not renew it): the
    producer reconnects, and resends what is not durable, to whoever owns it now."""

    default_reason = "STREAM_MOVED"


class ModelMismatch(DomainError):
    """The request does not fit the model: features, dtype, kind, or no centers yet."""

    default_reason = "FAILED_PRECONDITION"


class LimitExceeded(DomainError):
    """Past one of the server's configured limits."""

    default_reason = "LIMIT_EXCEEDED"


class Busy(LimitExceeded):
    """Every slot of a kind of work is taken; the same request may succeed after ``retry_after``."""

    default_reason = "BUSY"

    def __init__(self, message: str, *, retry_after: float, field: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message, field=field, reason=reason, retry_after=retry_after)


class SharedMemoryMissing(DomainError):
    """No shared-memory object by the name a Predict gave, on the server's host."""

    default_reason = "SHARED_MEMORY_NOT_FOUND"


class SharedMemoryRefused(DomainError):
    """A shared-memory object the server will not read: another user's, writable by others,
    named from another host, or the path is switched off."""

    default_reason = "SHARED_MEMORY_NOT_ALLOWED"


class ShuttingDown(DomainError):
    """The server is draining; nothing was written."""

    default_reason = "SHUTTING_DOWN"


class IdleTimeout(DomainError):
    """The client sent nothing on an open call for longer than --idle-timeout."""

    default_reason = "IDLE_TIMEOUT"


class StoreUnavailable(DomainError):
    """The store cannot take writes now (a read-only data directory, an I/O error); nothing
    was written, and reads still work. ``reason`` says which condition."""

    default_reason = "STORE_UNAVAILABLE"


class StoreFull(StoreUnavailable):
    """The data directory's disk is full, or the store reached --max-store-bytes."""

    default_reason = "STORE_FULL"


class StoreDamaged(DomainError):
    """Stored data failed its checksum or SQLite's checks: it is refused, never served."""

    default_reason = "STORE_DAMAGED"
