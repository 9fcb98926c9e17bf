"""How a producer stream reconnects: which failures are worth another try, how long to
wait before it (``Backoff``, the one policy of both producer streams), and where to go
when a replica names another as the owner of the stream."""

from __future__ import annotations

import time
from typing import Any

import grpc

from centroidal import codec

from .errors import CentroidalError, error_from_rpc

# Codes after which a stream's batches can be sent again on a new connection.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
# Redirects to a stream's owner followed at once; more in a row wait as reconnects do.
MAX_REDIRECTS = 3


class Backoff:
    """When a producer stream tries again after its connection failed.

    Waits start at 0.1 s and double to 2 s; the stream gives up ``reconnect_timeout``
    seconds after the first failure of a run of them. Worth retrying: UNAVAILABLE,
    CANCELLED (a server restart), the server's idle timeout, and whatever the caller
    knows to be a lost connection.
    """

    FIRST_S = 0.1
    MOST_S = 2.0

    def __init__(self, reconnect_timeout: float) -> None:
        self.reconnect_timeout = reconnect_timeout
        self._failed_since: float | None = None
        self._delay = self.FIRST_S

    def succeeded(self) -> None:
        self._failed_since, self._delay = None, self.FIRST_S

    def next_wait(self, error: Any, lost_connection: bool = False) -> float | None:
        """Seconds to wait before the next try, or None when the stream should give up."""
        if idle_timeout(error):
            # A quiet producer, not a failure: open a new stream at once, budget untouched.
            self.succeeded()
            return 0.0
        if not (lost_connection or _code(error) in RETRYABLE or store_full(error)):
            return None
        now = time.monotonic()
        if self._failed_since is None:
            self._failed_since = now
        remaining = self.remaining()
        if remaining <= 0:
            return None
        wait = min(self._delay, remaining)
        self._delay = min(self._delay * 2, self.MOST_S)
        return wait

    def remaining(self) -> float:
        """Seconds left of the reconnect budget."""
        if self._failed_since is None:
            return self.reconnect_timeout
        return self.reconnect_timeout - (time.monotonic() - self._failed_since)


def _code(error: Any) -> grpc.StatusCode | None:
    return error.code() if isinstance(error, grpc.RpcError) and hasattr(error, "code") else None


def store_full(error: Any) -> bool:
    """The server's disk (or store quota) is full: nothing was stored; worth trying later."""
    if _code(error) != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    return error_from_rpc(error).reason == "STORE_FULL"


def worth_resending(error: BaseException) -> bool:
    """A stream that ended with ``error`` (already a CentroidalError) may be opened again
    and its kept batches resent: the server was unreachable or could not store them."""
    if not isinstance(error, CentroidalError):
        return False
    if error.code in RETRYABLE:
        return True
    return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "STORE_FULL"


def stream_owner(error: Any) -> str | None:
    """The address of the replica that owns the stream, when a replica that does not
    refused to open it there (FAILED_PRECONDITION, reason STREAM_OWNER_ELSEWHERE)."""
    if _code(error) != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    refusal = error_from_rpc(error)
    if refusal.reason != "STREAM_OWNER_ELSEWHERE":
        return None
    return refusal.metadata.get("owner") or None


def owner_in(metadata: Any) -> str | None:
    """The owner's address a replica put in a StreamMiniBatch's headers, if it did."""
    for key, value in metadata or ():
        if key == codec.STREAM_OWNER_HEADER:
            return str(value)
    return None


def shared_memory_refused(error: Any) -> bool:
    """The server may not or cannot read the client's shared memory (it is on another host,
    runs with --no-shared-memory, or sees another /dev/shm): send the rows instead."""
    if _code(error) not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND):
        return False
    return error_from_rpc(error).reason in ("SHARED_MEMORY_NOT_ALLOWED", "SHARED_MEMORY_NOT_FOUND")


def idle_timeout(error: Any) -> bool:
    """The server ended a call that sent nothing for its --idle-timeout."""
    if _code(error) != grpc.StatusCode.DEADLINE_EXCEEDED:
        return False
    return error_from_rpc(error).reason == "IDLE_TIMEOUT"


class Route:
    """Where a producer stream opens its call: the service's address, or the replica that
    owns the model's stream once one named it. Both producer streams keep one."""

    def __init__(self) -> None:
        self.owner: str | None = None
        self.redirects = 0  # every redirect followed, for the stream's ``redirects``
        self._in_a_row = 0  # without an ack between

    def method(self, client: Any, service: Any) -> Any:
        """The StreamMiniBatch method to call: ``service``'s, or the owner's channel's."""
        return service if self.owner is None else client.owner_channel(self.owner)[1].stream_mini_batch

    def follow(self, owner: str | None) -> bool:
        """Go to ``owner`` at once, when a replica named one and fewer than MAX_REDIRECTS
        were followed in a row (more wait as reconnects do)."""
        if owner is None or self._in_a_row >= MAX_REDIRECTS:
            return False
        self.owner = owner
        self._in_a_row += 1
        self.redirects += 1
        return True

    def settle(self) -> None:
        """An ack arrived (or a new run of reconnects begins): redirects count afresh."""
        self._in_a_row = 0

    def fall_back(self, client: Any, error: Any) -> None:
        """A call to the owner failed as an unreachable server does: back to the service's
        address, where the next owner will be found."""
        if self.owner is not None and worth_resending(client.failure(error)):
            self.owner = None

