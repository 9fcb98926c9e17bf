"""Idle calls cannot starve the server: they cost a coroutine, fit slots are refused up front
with RetryInfo, and a call that goes quiet is ended after --idle-timeout."""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from collections.abc import AsyncIterator, Iterator

import grpc
import grpc.aio
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from centroidal.client import Client
from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc
from tests.conftest import ServerFactory

POINTS = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)


async def _then_wait(first: object, release: asyncio.Event) -> AsyncIterator[object]:
    yield first
    await release.wait()


def _opening(name: str) -> pb.MiniBatchRequest:
    return pb.MiniBatchRequest(open=pb.MiniBatchOpen(
        model=name, create_if_missing=pb.MiniBatchConfig(n_clusters=4)
    ))


def _quantize_spec() -> pb.QuantizeImageRequest:
    return pb.QuantizeImageRequest(spec=pb.QuantizeSpec(n_colors=4))


def test_health_and_predict_answer_while_idle_streams_hold_every_old_thread(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    target = f"127.0.0.1:{server.port}"
    with Client(target) as client:
        client.fit("small", POINTS, 16, seed=0)

    async def scenario() -> tuple[str, int, int]:
        release = asyncio.Event()
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.ClusteringServiceStub(channel)
            streams = [stub.StreamMiniBatch(_then_wait(_opening(f"idle-{i}"), release)) for i in range(100)]
            quantizations = [stub.QuantizeImage(_then_wait(_quantize_spec(), release)) for _ in range(10)]
            idle = streams + quantizations
            # Six quantisations find no slot: wait for their refusals, however slow the machine.
            refused = await _first_ended(quantizations, 6, within=60)
            assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 6
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            request = pb.PredictRequest(model="small", points=pb.Matrix(
                dtype=pb.DTYPE_FLOAT32, rows=8, cols=16, data=POINTS[:8].tobytes()
            ))
            answer = await stub.Predict(request, timeout=5)
            still_open = sum(not call.done() for call in idle)
            release.set()
            for call in idle:
                call.cancel()
            return health_pb2.HealthCheckResponse.ServingStatus.Name(health.status), len(answer.labels), still_open

    status, label_bytes, still_open = asyncio.run(scenario())
    assert status == "SERVING"
    assert label_bytes == 8 * 4
    # The streams stay open; of the quantisations, the four that took a slot do.
    assert still_open == 100 + 4


async def _first_ended(calls: list[Any], count: int, within: float) -> list[grpc.StatusCode]:
    """The status codes of the first `count` calls to end, waiting at most `within` seconds."""
    pending = {asyncio.ensure_future(call.code()) for call in calls}
    ended: list[grpc.StatusCode] = []

    async def until_enough() -> None:
        nonlocal pending
        while len(ended) < count:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            ended.extend(task.result() for task in done)

    try:
        await asyncio.wait_for(until_enough(), within)
    finally:
        for task in pending:
            task.cancel()
    return ended


def _retry_delay(error: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def _details(error: grpc.RpcError, kind: type) -> Any:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            unpacked = kind()
            detail.Unpack(unpacked)
            return unpacked
    return None


def test_a_fit_is_refused_with_retry_info_when_every_slot_is_held(start_server: ServerFactory) -> None:
    server = start_server(max_concurrent_fits=1)
    target = f"127.0.0.1:{server.port}"

    async def scenario() -> grpc.aio.AioRpcError:
        release = asyncio.Event()
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.ClusteringServiceStub(channel)
            holder = stub.QuantizeImage(_then_wait(_quantize_spec(), release))
            await asyncio.sleep(0.3)
            spec = pb.FitRequest(spec=pb.FitSpec(model="late", config=pb.KMeansConfig(n_clusters=2)))
            refused = stub.Fit(_then_wait(spec, release))  # the spec alone: no data is sent
            try:
                async for _ in refused:
                    pass
            except grpc.aio.AioRpcError as error:
                return error
            finally:
                release.set()
                holder.cancel()
            raise AssertionError("the fit was not refused")

    error = asyncio.run(scenario())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-concurrent-fits" in (error.details() or "")
    assert _retry_delay(error) == pytest.approx(1.0)
    # As the .proto documents: reason BUSY, and no field of the request named, as none is at fault.
    assert _details(error, error_details_pb2.ErrorInfo).reason == "BUSY"
    assert _details(error, error_details_pb2.BadRequest) is None


def test_a_quiet_call_ends_with_deadline_exceeded_and_frees_its_slot(start_server: ServerFactory) -> None:
    server = start_server(idle_timeout=0.5, max_concurrent_fits=1)
    target = f"127.0.0.1:{server.port}"

    async def scenario() -> tuple[grpc.aio.AioRpcError, grpc.aio.AioRpcError]:
        release = asyncio.Event()
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.ClusteringServiceStub(channel)
            errors = []
            # The client's own deadline ends a call the server never ends, and names no flag.
            for call in (stub.StreamMiniBatch(_then_wait(_opening("quiet"), release), timeout=20),
                         stub.QuantizeImage(_then_wait(_quantize_spec(), release), timeout=20)):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    async for _ in call:
                        pass
                errors.append(raised.value)
            release.set()
            return errors[0], errors[1]

    stream_error, image_error = asyncio.run(scenario())
    for error in (stream_error, image_error):
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "--idle-timeout" in (error.details() or "")
    # The quiet quantisation's slot is free again: a fit runs.
    with Client(target) as client:
        assert client.fit("after", POINTS, 4, seed=0).version == 1


def test_the_idle_clock_stops_while_the_server_owes_an_ack(start_server: ServerFactory) -> None:
    server = start_server(idle_timeout=0.5)
    rng = np.random.default_rng(1)
    # The first batch seeds 600 centers with k-means++ on 40,000 points: well past 0.5 s.
    points = rng.normal(size=(40_000, 32)).astype(np.float32)
    opening = pb.MiniBatchRequest(open=pb.MiniBatchOpen(
        model="slow", create_if_missing=pb.MiniBatchConfig(n_clusters=600)
    ))
    batch = pb.MiniBatchRequest(batch=pb.MiniBatch(producer_id="p", sequence=1, points=pb.Matrix(
        dtype=pb.DTYPE_FLOAT32, rows=points.shape[0], cols=points.shape[1], data=points.tobytes()
    )))

    later = pb.MiniBatchRequest()
    later.CopyFrom(batch)
    later.batch.sequence = 2

    async def scenario() -> tuple[float, pb.MiniBatchAck, pb.MiniBatchAck]:
        acked = asyncio.Event()

        async def requests() -> AsyncIterator[pb.MiniBatchRequest]:
            yield opening
            yield batch
            await acked.wait()  # the client waits for its ack, sending nothing meanwhile
            await asyncio.sleep(0.3)  # then idles for less than the timeout: idle counts from the ack
            yield later

        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = pb_grpc.ClusteringServiceStub(channel).StreamMiniBatch(requests())
            started = asyncio.get_running_loop().time()
            first = await call.read()
            waited = asyncio.get_running_loop().time() - started
            acked.set()
            second = await call.read()  # the stream is still open
            call.cancel()
            return waited, first, second

    waited, first, second = asyncio.run(scenario())
    assert waited > 0.5  # longer than the idle timeout
    assert not first.HasField("error") and first.version == 1
    assert not second.HasField("error") and second.version == 2


def test_a_declared_upload_is_answered_without_the_half_close(start_server: ServerFactory) -> None:
    """A client that sends every declared row and then waits, its side still open, gets its
    answer; one that sends rows past n_samples is refused, and nothing is stored."""
    server = start_server(idle_timeout=1.0, warmup=False)
    X = np.random.default_rng(0).normal(size=(300, 2))
    matrix = pb.Matrix(rows=300, cols=2, dtype=pb.DTYPE_FLOAT64, data=X.tobytes())
    config = pb.KMeansConfig(n_clusters=3, seed=0)
    release = threading.Event()

    def open_ended(first: object, *more: object) -> Iterator[object]:
        yield first
        yield from more
        release.wait(30)  # the client keeps its side open, well past the idle timeout

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.ClusteringServiceStub(channel)
        try:
            fit = pb.FitRequest(spec=pb.FitSpec(model="m", config=config, n_samples=300), points=matrix)
            answers = list(stub.Fit(open_ended(fit), timeout=20))
            assert answers[-1].WhichOneof("event") == "result", answers[-1]
            assert answers[-1].result.n_samples == 300
            spec = pb.EvaluateSpec(model="m", n_samples=300)
            evaluated = stub.Evaluate(open_ended(pb.EvaluateRequest(spec=spec, points=matrix)), timeout=20)
            assert evaluated.n_samples == 300
            suggest = pb.SuggestKRequest(spec=pb.SuggestKSpec(k_min=2, k_max=3, n_samples=300), points=matrix)
            answers = list(stub.SuggestK(open_ended(suggest), timeout=20))
            assert answers[-1].WhichOneof("event") == "result", answers[-1]
            too_many = pb.FitRequest(spec=pb.FitSpec(model="m", config=config, n_samples=300), points=matrix)
            with pytest.raises(grpc.RpcError) as raised:
                list(stub.Fit(open_ended(too_many, pb.FitRequest(points=matrix)), timeout=20))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "more rows than spec.n_samples=300" in raised.value.details()
        finally:
            release.set()
    with Client(f"127.0.0.1:{server.port}") as client:
        assert client.get_model("m").version == 1
