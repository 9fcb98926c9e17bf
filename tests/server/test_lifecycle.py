"""Health, reflection and graceful shutdown of an in-process server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from centroidal.client import Client, Unavailable
from centroidal.server import CentroidalServer
from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc
from tests.conftest import ServerFactory


def test_reflection_describes_the_service(server: CentroidalServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"centroidal.v1.ClusteringService", "grpc.health.v1.Health"} <= services
        pool = DescriptorPool(database)
        service = pool.FindServiceByName("centroidal.v1.ClusteringService")
        methods = {method.name for method in service.methods}
    assert methods == {
        "Fit", "Predict", "PredictStream", "StreamMiniBatch", "QuantizeImage",
        "GetModel", "ListModels", "DeleteModel", "Evaluate", "SuggestK", "PredictDataset",
    }


def test_health_reports_each_service(server: CentroidalServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "centroidal.v1.ClusteringService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_shutdown_lets_an_inflight_fit_finish(start_server: ServerFactory) -> None:
    server = start_server(grace_period=120.0)
    X = np.random.default_rng(0).normal(size=(200_000, 16))
    started = threading.Event()
    outcome: dict[str, object] = {}

    def fit() -> None:
        with Client(f"127.0.0.1:{server.port}") as client:
            def on_progress(event) -> None:
                if event.stage == "iteration":
                    started.set()
            outcome["result"] = client.fit("drained", X, 128, seed=0, max_iter=15, tol=0,
                                           on_progress=on_progress)

    worker = threading.Thread(target=fit)
    worker.start()
    assert started.wait(120)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    assert server.stopping.wait(60)
    in_flight_at_shutdown = server.servicer.fits_in_flight
    worker.join(300)
    stopper.join(300)
    assert in_flight_at_shutdown == 1, "the fit ended before the shutdown began"
    assert "result" in outcome, "the in-flight fit was cut off by the shutdown"
    assert outcome["result"].n_samples == 200_000  # type: ignore[attr-defined]
    with Client(f"127.0.0.1:{server.port}", timeout=2) as client, pytest.raises(Unavailable):
        client.list_models()


def test_fit_progress_reports_the_distances_the_bounds_skipped(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.datasets import make_blobs

    from centroidal.server import steps

    monkeypatch.setattr(steps, "PROGRESS_INTERVAL_S", 0.0)  # every iteration's event
    server = start_server()
    # 17 features: bounds start once fewer than 30% of the labels change (at 16 and fewer,
    # under 1% and from k * d = 1024).
    X, _ = make_blobs(20_000, n_features=17, centers=32, cluster_std=2.0, random_state=3)
    shares: list[float] = []

    def on_progress(event) -> None:
        if event.stage == "iteration":
            shares.append(event.distances_skipped)

    with Client(f"127.0.0.1:{server.port}") as client:
        # A random start: from k-means++ the fit converges before bounds start.
        fitted = client.fit("bounded", X, 32, seed=1, tol=0, max_iter=50, init="random", n_init=1,
                            on_progress=on_progress)
    assert len(shares) == fitted.n_iter
    assert shares[0] == 0.0 and all(0.0 <= share < 1.0 for share in shares)
    assert max(shares) > 0.5


def test_a_fit_says_when_it_may_wait_for_the_kernels_to_compile(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    import logging

    from centroidal.client import Client
    from centroidal.client.cli import main

    caplog.set_level(logging.INFO, "centroidal.server")
    server = start_server()
    assert any("compiling kernels in the background" in record.getMessage() for record in caplog.records)
    assert server.warmed_up.wait(300)
    from centroidal.server.app import WARMUP_DONE

    assert any(WARMUP_DONE in record.getMessage() for record in caplog.records)  # the bench waits for it
    X = np.random.default_rng(0).normal(size=(200, 3))
    with Client(f"127.0.0.1:{server.port}") as client:
        events: list[str] = []
        client.fit("warm", X, 3, seed=0, on_progress=lambda event: events.append(event.stage))
        assert "compiling" not in events  # every kernel is compiled: nothing to wait for
        server.warmed_up.clear()  # as it is in the first minute after a cold start
        events.clear()
        client.fit("cold", X, 3, seed=0, on_progress=lambda event: events.append(event.stage))
        # The server's events, in order (the SDK's own upload events may interleave with them).
        served = [stage for stage in events if stage != "uploading"]
        assert served.index("compiling") == served.index("data_received") + 1
    np.save(tmp_path / "points.npy", X)
    assert main(["--target", f"127.0.0.1:{server.port}", "fit", str(tmp_path / "points.npy"), "--model", "m",
                 "-k", "3"]) == 0
    assert "waiting for the server to compile its kernels" in capsys.readouterr().err


REFLECTION_PATHS = ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")


def test_reflection_answers_v1_as_current_grpcurl_asks(server: CentroidalServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for path in REFLECTION_PATHS:
            call = channel.stream_stream(
                path, request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            asks = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="grpc.reflection.v1.ServerReflection")]
            listed, described = list(call(iter(asks), timeout=10))
            names = {service.name for service in listed.list_services_response.service}
            assert {"centroidal.v1.ClusteringService", "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= names
            files = [descriptor_pb2.FileDescriptorProto.FromString(blob)
                     for blob in described.file_descriptor_response.file_descriptor_proto]
            assert any(file.package == "grpc.reflection.v1" for file in files), path


def test_bytes_that_do_not_parse_to_health_or_reflection_are_invalid_argument(
    server: CentroidalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Health needs no token, so its refusals must not be able to fill the log either."""
    caplog.set_level(logging.INFO)
    garbage = b"\xff\xff\xff"
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        calls = [
            lambda: channel.unary_unary("/grpc.health.v1.Health/Check")(garbage, timeout=10),
            lambda: list(channel.unary_stream("/grpc.health.v1.Health/Watch")(garbage, timeout=10)),
            *(lambda path=path: list(channel.stream_stream(path)(iter([garbage]), timeout=10))
              for path in REFLECTION_PATHS),
        ]
        for call in calls * 15:
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
            assert "is not a valid" in raised.value.details()
        assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == \
            health_pb2.HealthCheckResponse.SERVING
    records = [record for record in caplog.records if record.name.startswith(("centroidal", "grpc"))]
    assert not [record for record in records if record.levelno >= logging.ERROR]
    refused = [record for record in records if " refused: " in record.getMessage()]
    assert 0 < len(refused) <= 4 * server.metrics.refusal_lines.lines  # 60 refusals, 4 methods


def test_health_is_answered_while_every_call_slot_is_taken(start_server: ServerFactory) -> None:
    server = start_server(max_concurrent_rpcs=5)
    release = threading.Event()

    def silent() -> Iterator[pb.PredictRequest]:
        release.wait(60)
        return
        yield

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.ClusteringServiceStub(channel)
        streams = [stub.PredictStream(silent(), timeout=60) for _ in range(5)]
        try:
            give_up = time.monotonic() + 30
            while True:  # until the five streams hold every slot
                try:
                    stub.ListModels(pb.ListModelsRequest(), timeout=10)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                    assert "--max-concurrent-rpcs 5" in error.details()
                    break
                assert time.monotonic() < give_up, "the idle streams never took the slots"
                time.sleep(0.05)
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "centroidal.v1.ClusteringService"):
                answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            release.set()
            for stream in streams:
                list(stream)
        assert stub.ListModels(pb.ListModelsRequest(), timeout=10) is not None  # the slots came back
