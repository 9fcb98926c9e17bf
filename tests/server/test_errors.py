"""The one table from errors to statuses, and what a call the client has left is logged as."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpc._cython.cygrpc import ExecuteBatchError

from centroidal.server.errors import rpc
from centroidal.server.exceptions import InvalidRequest
from centroidal.server.metrics import Metrics


class _GoneContext:
    """A call whose client has left: sending its status fails as grpc's own does."""

    def __init__(self) -> None:
        self.aborted = 0

    async def abort(self, *status: Any) -> None:
        self.aborted += 1
        raise ExecuteBatchError("Failed execute_batch: (<grpc._cython.cygrpc.SendStatusFromServerOperation>)")

    def code(self) -> None:
        return None


class _Servicer:
    def __init__(self) -> None:
        self.metrics = Metrics()

    @rpc
    async def Unary(self, request: object, context: object) -> object:
        raise ExecuteBatchError("Failed execute_batch: (<grpc._cython.cygrpc.ReceiveMessageOperation>)")

    @rpc
    async def Refused(self, request: object, context: object) -> object:
        raise InvalidRequest("bad value", field="points")

    @rpc
    async def Streaming(self, requests: object, context: object) -> AsyncIterator[object]:
        yield b"first"
        raise ExecuteBatchError("Failed execute_batch: (<grpc._cython.cygrpc.SendMessageOperation>)")


def _codes(servicer: _Servicer) -> dict[str, float]:
    return {sample.labels["method"] + " " + sample.labels["code"]: sample.value
            for family in servicer.metrics.registry.collect() for sample in family.samples
            if sample.name == "centroidal_rpc_requests_total"}


def test_a_call_the_client_left_is_cancelled_not_a_server_fault(caplog: pytest.LogCaptureFixture) -> None:
    """A client that refuses an answer over its receive limit leaves the call; reading from it,
    writing to it or sending its status then fails inside grpc. That once logged an ERROR
    traceback as if the server had failed."""
    caplog.set_level(logging.INFO, "centroidal.server")
    servicer, context = _Servicer(), _GoneContext()

    async def run() -> None:
        await servicer.Unary(b"", context)
        await servicer.Refused(b"", context)  # its status cannot be sent either
        async for _ in servicer.Streaming(iter(()), context):
            pass

    asyncio.run(run())
    assert context.aborted == 1  # the refusal tried to tell the client, and could not
    codes = _codes(servicer)
    assert codes["Unary CANCELLED"] == 1 and codes["Streaming CANCELLED"] == 1
    assert codes["Refused INVALID_ARGUMENT"] == 1
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert sum("the client left" in record.getMessage() for record in caplog.records) == 3
