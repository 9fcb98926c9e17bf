"""The SDK's transport core: one place that builds the channel, carries the token and
the defaults every call uses, for Client and AsyncClient alike."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from centroidal.v1 import clustering_pb2_grpc as pb_grpc

from ._calls import RawMethods

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_FIT_TIMEOUT_S = 24 * 3600.0
DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024
MIN_CHUNK_BYTES = 1024
# Well under the server's default 16 MiB message limit, envelope included.
MAX_CHUNK_BYTES = 8 * 1024 * 1024
# The server's default message limit; answers larger than this are streamed.
SERVER_MESSAGE_BYTES = 16 * 1024 * 1024
_RESPONSE_BUDGET = SERVER_MESSAGE_BYTES // 2


def channel_settings(chunk_bytes: int, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Check chunk_bytes; the channel options every client uses, then the caller's."""
    if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(
            f"chunk_bytes must be from {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES}, got {chunk_bytes}"
        )
    return [
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
        *options,
    ]


class Connection:
    """Settings, channel and stubs shared by Client and AsyncClient."""

    target: str
    timeout: float
    fit_timeout: float
    chunk_bytes: int
    _channel: Any
    _stub: pb_grpc.ClusteringServiceStub
    _raw: RawMethods
    _health: health_pb2_grpc.HealthStub
    _metadata: tuple[tuple[str, str], ...]

    def __init__(
        self,
        channels: Any,
        target: str | None,
        *,
        token: str | None,
        credentials: grpc.ChannelCredentials | None,
        timeout: float,
        fit_timeout: float,
        chunk_bytes: int,
        options: Sequence[tuple[str, Any]],
    ) -> None:
        """``channels`` is grpc or grpc.aio."""
        self.target = target or default_target()
        self.timeout = timeout
        self.fit_timeout = fit_timeout
        self.chunk_bytes = chunk_bytes
        self._token = token
        self._credentials = credentials
        self._options = tuple(options)
        channel_options = channel_settings(chunk_bytes, options)
        if credentials is not None:
            self._channel = channels.secure_channel(self.target, credentials, options=channel_options)
        else:
            self._channel = channels.insecure_channel(self.target, options=channel_options)
        self._stub = pb_grpc.ClusteringServiceStub(self._channel)
        self._raw = RawMethods(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()


def default_target() -> str:
    """$CENTROIDAL_TARGET, else 127.0.0.1:50051."""
    return os.environ.get("CENTROIDAL_TARGET") or DEFAULT_TARGET


