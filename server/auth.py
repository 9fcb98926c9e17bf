"""Bearer-token authentication as a grpc.aio server interceptor; health checks stay open for probes.

Tokens come from CENTROIDAL_TOKEN and from ``--token-file``, which is read again
when it changes, so a token can be added, then the old one removed, without a
restart. Every call but a health check needs one, unknown methods included (an
unauthenticated caller learns nothing about which methods exist). Refused calls
are counted by reason and logged, at most one line per ``LOG_EVERY_S``.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio

from .config import read_token_file
from .metrics import Metrics

log = logging.getLogger("centroidal.server")

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_REFUSAL = "missing or invalid bearer token in the 'authorization' metadata"
LOG_EVERY_S = 10.0
# How often the token file's modification time is looked at.
RECHECK_S = 2.0


class Tokens:
    """The tokens a call may present: fixed ones, and those of a file read when it changes."""

    def __init__(self, tokens: Iterable[str], path: str = "") -> None:
        self._fixed = [token.encode() for token in tokens]
        self._path = path
        self._lock = threading.Lock()
        self._from_file: list[bytes] = []
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        if path:
            self._reload(force=True)

    def __len__(self) -> int:
        return len(self._fixed) + len(self._from_file)

    def describe(self) -> str:
        where = [f"{len(self._fixed)} from CENTROIDAL_TOKEN or --token"] if self._fixed else []
        if self._path:
            where.append(f"{len(self._from_file)} from {self._path}")
        return ", ".join(where)

    def accepts(self, presented: bytes) -> bool:
        if self._path and time.monotonic() - self._checked > RECHECK_S:
            self._reload()
        # Compared with every token, whichever matches: the time taken says nothing.
        matches = [hmac.compare_digest(presented, token) for token in (*self._fixed, *self._from_file)]
        return any(matches)

    def _reload(self, force: bool = False) -> None:
        with self._lock:
            self._checked = time.monotonic()
            try:
                stat = os.stat(self._path)
                stamp: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
                if stamp == self._stamp and not force:
                    return
                tokens = read_token_file(self._path)
            except (OSError, UnicodeDecodeError) as exc:
                if force:
                    raise
                # Fail closed: a file that vanished or cannot be read grants nothing.
                if self._from_file or self._stamp is not None:
                    log.error("token file %s cannot be read (%s): its %d tokens are revoked until it "
                              "can be", self._path, exc, len(self._from_file))
                self._from_file, self._stamp = [], None
                return
            if not tokens:
                log.warning("token file %s is now empty: its %d tokens are revoked, and only %s",
                            self._path, len(self._from_file),
                            "the CENTROIDAL_TOKEN tokens are accepted" if self._fixed else "no call is accepted")
            elif self._stamp is not None:
                log.warning("token file %s changed: %d tokens now", self._path, len(tokens))
            self._from_file = [token.encode() for token in tokens]
            self._stamp = stamp


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` for one of the tokens."""

    def __init__(self, tokens: Tokens, metrics: Metrics) -> None:
        self._tokens = tokens
        self._metrics = metrics
        self._logged_at = -LOG_EVERY_S
        self._unlogged = 0

    def _refusal_reason(self, metadata: Iterable[tuple[str, Any]]) -> str | None:
        """None for a call with a valid token; otherwise why it is refused."""
        for key, value in metadata:
            if key != "authorization":
                continue
            scheme, _, presented = str(value).partition(" ")
            if scheme.lower() != "bearer":
                return "not_bearer"
            return None if self._tokens.accepts(presented.strip().encode()) else "wrong_token"
        return "no_token"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return await continuation(handler_call_details)
        reason = self._refusal_reason(handler_call_details.invocation_metadata or ())
        if reason is None:
            return await continuation(handler_call_details)
        self._record(method, reason, handler_call_details.invocation_metadata or ())
        handler = await continuation(handler_call_details)
        return _refusal(handler)

    def _record(self, method: str, reason: str, metadata: Iterable[tuple[str, Any]]) -> None:
        self._metrics.auth_refused.labels(reason).inc()
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            self._unlogged += 1
            return
        agent = next((str(value)[:80] for key, value in metadata if key == "user-agent"), "?")
        more = f" ({self._unlogged} more refused since the last line)" if self._unlogged else ""
        log.warning("refused a call without a valid token: method=%s reason=%s user-agent=%s%s",
                    method[:120], reason, agent, more)
        self._logged_at, self._unlogged = now, 0


def _refusal(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)
        yield  # pragma: no cover

    if handler is None:  # an unknown method: refused like a known one, its bytes never read
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, **codec)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **codec)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **codec)
    return grpc.unary_unary_rpc_method_handler(refuse, **codec)
