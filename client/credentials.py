"""The SDK's credentials: where the bearer token comes from, the TLS credentials, the
interceptors that add the token to every call, and what a failed connection most likely
means."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import grpc
import grpc.aio

TOKEN_ENV = "CENTROIDAL_TOKEN"


def default_token() -> str | None:
    """The first token in $CENTROIDAL_TOKEN, the variable the server reads too (where it may
    list several, comma-separated, during a rotation); None when it is not set."""
    tokens = [token.strip() for token in os.environ.get(TOKEN_ENV, "").split(",") if token.strip()]
    return tokens[0] if tokens else None


def read_token(path: str | os.PathLike[str]) -> str:
    """The first token in a token file (one per line, # comments), as the server reads it."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            token = line.split("#", 1)[0].strip()
            if token:
                return token
    raise ValueError(f"token file {os.fspath(path)!r} holds no token")


PEM = bytes | str | os.PathLike[str]


def tls_credentials(
    root_certificates: PEM | None = None, client_certificate: tuple[PEM, PEM] | None = None
) -> grpc.ChannelCredentials:
    """Channel credentials for TLS: the server is checked against ``root_certificates``
    (PEM bytes or a file; None uses the system's roots); ``client_certificate`` is
    (certificate chain, private key), as PEM bytes or files, for mutual TLS."""
    chain = key = None
    if client_certificate is not None:
        chain, key = (_pem(part) for part in client_certificate)
    roots = None if root_certificates is None else _pem(root_certificates)
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)


def _pem(value: PEM) -> bytes:
    if isinstance(value, bytes):
        return value
    with open(value, "rb") as handle:
        return handle.read()


# ---- the token, added to every call by an interceptor ---------------------------------


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


def _with_token(details: Any, token: tuple[str, str]) -> _CallDetails:
    return _CallDetails(
        details.method, details.timeout, (*(details.metadata or ()), token), details.credentials,
        details.wait_for_ready, getattr(details, "compression", None),
    )


_UU, _US = grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor
_SU, _SS = grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor


# grpc ships no type stubs: its base classes are Any to mypy.
class TokenInterceptor(_UU, _US, _SU, _SS):  # type: ignore[misc,valid-type]
    """Adds ``authorization: Bearer <token>`` to every call of a threaded channel."""

    def __init__(self, token: str) -> None:
        self._token = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_token(details, self._token), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_token(details, self._token), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_with_token(details, self._token), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_with_token(details, self._token), requests)


def async_token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """The same for grpc.aio, which wants one interceptor object per kind of call."""
    header = ("authorization", f"Bearer {token}")

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return await continuation(_with_token(details, header), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return await continuation(_with_token(details, header), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
            return await continuation(_with_token(details, header), requests)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
        async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
            return await continuation(_with_token(details, header), requests)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]


def connection_hint(message: str, *, tls: bool, certificate: bool) -> str:
    """What a failed connection's message most likely means, or "" when it says nothing."""
    if "WRONG_VERSION_NUMBER" in message and tls:
        return "the server does not speak TLS at this address: connect without TLS"
    if "CERTIFICATE_VERIFY_FAILED" in message:
        return ("the server's certificate is not signed by the roots given (root_certificates, "
                "--tls-ca), or does not name the address dialled")
    if "Socket closed" not in message:
        return ""
    if not tls:
        return ("the server closed the connection unanswered: it may expect TLS; connect with "
                "tls=True and root_certificates (--tls, --tls-ca)")
    if not certificate:
        return ("the server closed the connection during the TLS handshake: it may require a "
                "client certificate (mutual TLS); pass client_certificate (--tls-cert, --tls-key)")
    return ("the server closed the connection during the TLS handshake: it may not accept this "
            "client certificate; mutual TLS needs one signed by the server's --tls-client-ca")
