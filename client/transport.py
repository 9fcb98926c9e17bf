"""The SDK's transport core, shared by Client and AsyncClient.

One place builds the channel (with the token added by an interceptor), applies
the deadline of every call, and turns ``grpc.RpcError`` into the SDK's typed
exceptions (``raise ... from`` the original): ``SyncTransport.unary`` and
``.responses`` for the threaded client, ``AsyncTransport.unary`` and
``.responses`` for asyncio. How producer streams reconnect is ``reconnects.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2_grpc

from centroidal import codec

from ._calls import Methods, list_models_request
from .credentials import (
    PEM,
    TokenInterceptor,
    async_token_interceptors,
    connection_hint,
    default_token,
    read_token,
    tls_credentials,
)
from .errors import CentroidalError, error_from_rpc
from .shared_memory import SharedRegions

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_FIT_TIMEOUT_S = 24 * 3600.0
DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024
MIN_CHUNK_BYTES = 1024
# Well under the server's default 16 MiB message limit, envelope included.
MAX_CHUNK_BYTES = 8 * 1024 * 1024
# The server's default message limit; answers larger than this are streamed.
SERVER_MESSAGE_BYTES = 16 * 1024 * 1024
RESPONSE_BUDGET = SERVER_MESSAGE_BYTES // 2
# How long a request stream waits for the server's first answer before uploading anyway.
ADMISSION_WAIT_S = 2.0


def default_target() -> str:
    """$CENTROIDAL_TARGET, else 127.0.0.1:50051."""
    return os.environ.get("CENTROIDAL_TARGET") or DEFAULT_TARGET


# Calls that read only, which gRPC may send again to another replica when one was
# unreachable before it answered (never a Fit or a Delete: those write).
_READS = ("Predict", "GetModel", "ListModels")
# Unary calls are spread over every address a target names (``ipv4:a:p,b:p``,
# ``dns:///svc:50051``), round robin; a replica that goes away drops out of the rotation.
SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": codec.SERVICE_NAME, "method": method} for method in _READS],
        "retryPolicy": {
            "maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
})


def channel_settings(chunk_bytes: int, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Check chunk_bytes; the channel options every client uses, then the caller's (a
    caller's own service config or load-balancing policy replaces ours)."""
    if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(
            f"chunk_bytes must be from {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES}, got {chunk_bytes}"
        )
    own = {name for name, _ in options}
    balancing = [] if own & {"grpc.service_config", "grpc.lb_policy_name"} else [("grpc.service_config", SERVICE_CONFIG)]
    return [
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
        *balancing,
        *options,
    ]


# ---- the connection ------------------------------------------------------------------


class Connection:
    """Settings, channel and stubs shared by Client and AsyncClient."""

    target: str
    timeout: float
    fit_timeout: float
    chunk_bytes: int
    _channel: Any
    _methods: Methods
    _health: health_pb2_grpc.HealthStub

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
        shared_memory: bool = False,
    ) -> None:
        """token, else the first line of token_file, else $CENTROIDAL_TOKEN. TLS is on with
        ``tls=True``, ``root_certificates`` or ``client_certificate`` (or ``credentials``).
        shared_memory: predict and transform hand their rows to a server on this host
        through /dev/shm instead of sending them (see SharedRows in the .proto), and so do
        the streams of the threaded Client."""
        self.target = target or default_target()
        if token is None:
            token = read_token(token_file) if token_file is not None else default_token()
        if credentials is None and (tls or root_certificates is not None or client_certificate is not None):
            credentials = tls_credentials(root_certificates, client_certificate)
        self._speaks_tls = credentials is not None
        self._presents_certificate = client_certificate is not None
        self.timeout = timeout
        self.fit_timeout = fit_timeout
        self.chunk_bytes = chunk_bytes
        # Kept to open channels to a stream's owner the same way (``owner_channel``).
        self._token, self._credentials = token, credentials
        self._options = channel_settings(chunk_bytes, options)
        self._owners: dict[str, tuple[Any, Methods]] = {}
        self._channel = self._open_channel(self.target, token, credentials, self._options)
        self._methods = Methods(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._regions = SharedRegions() if shared_memory else None

    def shared_rows(self, points: np.ndarray) -> AbstractContextManager[codec.SharedRows | None]:
        """``points`` in this client's shared memory for one call, or None without it."""
        return nullcontext(None) if self._regions is None else self._regions.holding(points)

    def close_shared_memory(self) -> None:
        if self._regions is not None:
            self._regions.close()

    def _open_channel(
        self, target: str, token: str | None, credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]],
    ) -> Any:
        raise NotImplementedError

    def owner_channel(self, address: str) -> tuple[Any, Methods]:
        """A channel to the replica at ``address`` that owns a stream (a StreamMiniBatch that
        reached another replica is told it), with this client's token, TLS and options, and
        its stubs. Under TLS the certificate is checked against the host this client was
        given, which the replicas' certificate names."""
        known = self._owners.get(address)
        if known is None:
            options = list(self._options)
            host = _host_of(self.target)
            if self._credentials is not None and host:
                options.append(("grpc.ssl_target_name_override", host))
            channel = self._channel_to(address, options)
            known = self._owners[address] = (channel, Methods(channel))
        return known

    def _channel_to(self, address: str, options: list[tuple[str, Any]]) -> Any:
        raise NotImplementedError

    def _owner_channels(self) -> list[Any]:
        channels = [channel for channel, _ in self._owners.values()]
        self._owners.clear()
        return channels

    def failure(self, error: grpc.RpcError) -> CentroidalError:
        """The SDK's exception for a failed call, with what a failed connection most likely
        means added: gRPC reports a TLS mismatch as a closed socket or an OpenSSL code."""
        failure = error_from_rpc(error)
        if failure.code == grpc.StatusCode.UNAVAILABLE:
            hint = connection_hint(failure.message, tls=self._speaks_tls,
                                   certificate=self._presents_certificate)
            if hint:
                failure.message = f"{failure.message} ({hint})"
        return failure

    def deadline(self, timeout: float | None, *, fit: bool = False) -> float:
        """Seconds a call may take: its own timeout, else the client's for its kind."""
        if timeout is not None:
            return timeout
        return self.fit_timeout if fit else self.timeout


class SyncTransport(Connection):
    """Connection over a threaded grpc channel."""

    def _open_channel(
        self, target: str, token: str | None, credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]],
    ) -> Any:
        channel = self._plain(target, credentials, options)
        self._plain_channel = channel  # what readiness is watched on
        return grpc.intercept_channel(channel, TokenInterceptor(token)) if token else channel

    @staticmethod
    def _plain(target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> Any:
        if credentials is not None:
            return grpc.secure_channel(target, credentials, options=options)
        return grpc.insecure_channel(target, options=options)

    def _channel_to(self, address: str, options: list[tuple[str, Any]]) -> Any:
        channel = self._plain(address, self._credentials, options)
        return grpc.intercept_channel(channel, TokenInterceptor(self._token)) if self._token else channel

    def close_owner_channels(self) -> None:
        for channel in self._owner_channels():
            channel.close()

    def unary(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        """One unary call with the client's deadline; a failure as the SDK's exception."""
        try:
            return method(request, timeout=self.deadline(timeout))
        except grpc.RpcError as error:
            raise self.failure(error) from error

    def responses(self, call: Any) -> Iterator[Any]:
        """A streaming call's responses; a failure as the SDK's exception."""
        try:
            yield from call
        except grpc.RpcError as error:
            raise self.failure(error) from error

    def follow(self, call: Any, take: Callable[[Any], Any], on_progress: Callable[[Any], None] | None) -> None:
        """Read a streaming call's answers to its end, each through ``take``, and pass the
        events ``take`` returns to ``on_progress``. If on_progress raises, or the caller is
        interrupted, the call is cancelled, so the server stops its work too."""
        try:
            for response in self.responses(call):
                event = take(response)
                if event is not None and on_progress is not None:
                    on_progress(event)
        except CentroidalError:
            raise
        except BaseException:
            call.cancel()
            raise


class AsyncTransport(Connection):
    """Connection over a grpc.aio channel."""

    def _open_channel(
        self, target: str, token: str | None, credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]],
    ) -> Any:
        interceptors = async_token_interceptors(token) if token else None
        if credentials is not None:
            return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)

    def _channel_to(self, address: str, options: list[tuple[str, Any]]) -> Any:
        return self._open_channel(address, self._token, self._credentials, options)

    async def close_owner_channels(self) -> None:
        for channel in self._owner_channels():
            await channel.close()

    async def unary(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self.deadline(timeout))
        except grpc.aio.AioRpcError as error:
            raise self.failure(error) from error

    async def responses(
        self, call: Any, first: Any, upload: Callable[[], Coroutine[Any, Any, None]]
    ) -> AsyncIterator[Any]:
        """The responses of a request-streaming call: ``first`` is sent alone, and ``upload``
        writes the rest only once the server has answered it.

        With grpc.aio, a server that ends a call while the client is still writing reaches
        the client as INTERNAL "Internal error from Core", and the server's status is lost
        (grpc/grpc#36066). Every refusal of a spec comes
        before the server's first answer (a Fit's STAGE_ADMITTED event, QuantizeImage's
        empty first message, the first Predict answer), so waiting for it keeps that status.
        """
        writer: asyncio.Task[None] | None = None
        first_answer: asyncio.Future[Any] | None = None
        try:
            responses = call.__aiter__()
            try:
                with contextlib.suppress(asyncio.InvalidStateError):
                    await call.write(first)  # if the call has already ended, reading says why
                first_answer = asyncio.ensure_future(responses.__anext__())
                # A server older than the admission answer sends nothing until it has the
                # data: after a short wait, upload all the same.
                await asyncio.wait({first_answer}, timeout=ADMISSION_WAIT_S)
                if not first_answer.done():
                    writer = self._start_upload(call, upload)
                response = await first_answer
            except StopAsyncIteration:
                return
            except grpc.aio.AioRpcError as error:
                if not status_lost(error):
                    raise
                # Refused before the first message (a token, a draining server): ask again
                # with a unary call, which reports the status as sent.
                await self.unary(self._methods.list_models, list_models_request(1, ""), None)
                raise
            if writer is None:
                writer = self._start_upload(call, upload)
            yield response
            async for response in responses:
                yield response
            await writer
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as error:
            failed_upload = _failure(writer)
            if failed_upload is not None:
                raise failed_upload from None  # the upload failed first: its own error
            if isinstance(error, asyncio.CancelledError):
                raise
            raise self.failure(error) from error
        finally:
            for task in (first_answer, writer):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    @staticmethod
    def _start_upload(call: Any, upload: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        """Run ``upload``; if it fails (an on_progress callback raised), end the call with it."""
        writer = asyncio.get_running_loop().create_task(upload())

        def on_done(task: asyncio.Task[None]) -> None:
            if _failure(task) is not None:
                call.cancel()

        writer.add_done_callback(on_done)
        return writer


def _failure(task: asyncio.Task[None] | None) -> BaseException | None:
    """What made an upload fail, other than the call itself ending (the reader reports that)."""
    if task is None or not task.done() or task.cancelled():
        return None
    failure = task.exception()
    if isinstance(failure, (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError)):
        return None
    return failure


def status_lost(error: grpc.aio.AioRpcError) -> bool:
    """grpc.aio's INTERNAL for a write to a call the server had already ended (grpc/grpc#36066)."""
    return error.code() == grpc.StatusCode.INTERNAL and "execute_batch" in (error.debug_error_string() or "")


def _host_of(target: str) -> str:
    """The host of a plain ``host:port`` or ``[v6]:port`` target; '' for any other form."""
    if "://" in target or target.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return ""
    if target.startswith("["):
        return target[1:].partition("]")[0]
    return target.rpartition(":")[0] if ":" in target else target
