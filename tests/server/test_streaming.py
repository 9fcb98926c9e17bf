"""StreamMiniBatch on a real server: acks, exactly-once, bad batches, many producers."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from centroidal.client import (
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from centroidal.client.errors import error_from_rpc
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState
from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc
from tests.conftest import ServerFactory

RNG = np.random.default_rng(1)
POINTS = (RNG.normal(size=(2000, 3)) + RNG.integers(0, 4, size=(2000, 1)) * 5).astype(np.float32)


def matrix(X: np.ndarray) -> pb.Matrix:
    dtype = pb.DTYPE_FLOAT32 if X.dtype == np.float32 else pb.DTYPE_FLOAT64
    return pb.Matrix(dtype=dtype, rows=X.shape[0], cols=X.shape[1], data=X.astype(X.dtype.newbyteorder("<")).tobytes())


def opening(model: str, n_clusters: int | None = 4, **config: object) -> pb.MiniBatchRequest:
    message = pb.MiniBatchOpen(model=model)
    if n_clusters is not None:
        message.create_if_missing.CopyFrom(pb.MiniBatchConfig(n_clusters=n_clusters, **config))
    return pb.MiniBatchRequest(open=message)


def batch(sequence: int, X: np.ndarray, producer: str = "p", weights: np.ndarray | None = None) -> pb.MiniBatchRequest:
    message = pb.MiniBatch(producer_id=producer, sequence=sequence, points=matrix(X))
    if weights is not None:
        message.sample_weight.CopyFrom(pb.Vector(dtype=pb.DTYPE_FLOAT64, data=weights.astype("<f8").tobytes()))
    return pb.MiniBatchRequest(batch=message)


def run(stub: pb_grpc.ClusteringServiceStub, *requests: pb.MiniBatchRequest) -> list[pb.MiniBatchAck]:
    return list(stub.StreamMiniBatch(iter(requests)))


def test_first_batch_creates_the_model_and_each_batch_is_acked(stub, client: Client) -> None:
    acks = run(stub, opening("live", seed=3), *(batch(s, POINTS[(s - 1) * 200 : s * 200]) for s in (1, 2, 3)))
    assert [a.sequence for a in acks] == [1, 2, 3]
    assert [a.version for a in acks] == [1, 2, 3]
    assert [a.n_samples_seen for a in acks] == [200, 400, 600]
    assert all(a.batch_inertia > 0 and not a.duplicate and not a.HasField("error") for a in acks)
    # The stream's close stores the model.
    model = client.get_model("live", include_centers=True)
    assert (model.kind, model.version, model.durable_version, model.n_batches) == ("minibatch-kmeans", 3, 3, 3)
    assert model.settings()["seed"] == 3 and model.n_samples_seen == 600
    # The server learns exactly what the engine learns from the same batches.
    state = MiniBatchState(MiniBatchParams(4, seed=3), 3, np.dtype(np.float32))
    for s in (1, 2, 3):
        state.partial_fit(*state.check_batch(POINTS[(s - 1) * 200 : s * 200]))
    np.testing.assert_array_equal(model.centers, state.centers)
    labels = client.predict("live", POINTS[:50])
    assert labels.shape == (50,) and labels.max() < 4


def test_a_streamed_model_reports_its_defaults_filled_in(stub, client: Client) -> None:
    """The .proto: the model's config has its defaults filled in. A stream that sets neither
    init_size nor seed gets the init size its first batch decided, and a seed drawn for it."""
    run(stub, opening("defaults"), batch(1, POINTS[:200]))
    first = client.get_model("defaults").minibatch
    assert first is not None and first.init_size == 200  # max(3 * 4, the first batch's 200 rows)
    assert first.seed is not None
    run(stub, opening("defaults-too"), batch(1, POINTS[:200]))
    second = client.get_model("defaults-too").minibatch
    assert second is not None and second.seed != first.seed  # drawn, not a shared 0
    empty = client.get_model("defaults").settings()
    assert empty["init_size"] == 200 and empty["reassignment_ratio"] == 0.01


def test_a_replayed_sequence_is_acked_as_duplicate_and_not_applied(stub, client: Client) -> None:
    run(stub, opening("once"), batch(1, POINTS[:300]), batch(2, POINTS[300:600]))
    before = client.get_model("once", include_centers=True)
    acks = run(stub, opening("once", None), batch(2, POINTS[600:900]), batch(1, POINTS[:300]))
    assert all(a.duplicate and a.version == before.version for a in acks)
    after = client.get_model("once", include_centers=True)
    assert after.version == before.version and after.n_samples_seen == 600
    np.testing.assert_array_equal(after.centers, before.centers)
    # Another producer's sequence 1 is its own.
    (ack,) = run(stub, opening("once", None), batch(1, POINTS[:300], producer="other"))
    assert not ack.duplicate and ack.version == before.version + 1


BAD_BATCHES = [
    (lambda: batch(5, POINTS[:10, :2]), grpc.StatusCode.FAILED_PRECONDITION, "batch.points.cols"),
    (lambda: batch(5, POINTS[:10].astype(np.float64)), grpc.StatusCode.FAILED_PRECONDITION, "batch.points.dtype"),
    (lambda: batch(5, np.where(np.arange(30).reshape(10, 3) == 7, np.nan, POINTS[:10]).astype(np.float32)),
     grpc.StatusCode.INVALID_ARGUMENT, "batch.points.data"),
    (lambda: batch(0, POINTS[:10]), grpc.StatusCode.INVALID_ARGUMENT, "batch.sequence"),
    (lambda: batch(5, POINTS[:10], producer=""), grpc.StatusCode.INVALID_ARGUMENT, "batch.producer_id"),
    (lambda: batch(5, POINTS[:10], weights=np.ones(3)), grpc.StatusCode.INVALID_ARGUMENT, "batch.sample_weight.data"),
    (lambda: batch(5, POINTS[:10], weights=-np.ones(10)), grpc.StatusCode.INVALID_ARGUMENT, "batch.sample_weight.data"),
    (lambda: batch(5, POINTS[:10], weights=np.zeros(10)), grpc.StatusCode.INVALID_ARGUMENT, "batch.sample_weight"),
    (lambda: pb.MiniBatchRequest(batch=pb.MiniBatch(producer_id="p", sequence=5)), grpc.StatusCode.INVALID_ARGUMENT, "batch.points"),
    (lambda: pb.MiniBatchRequest(batch=pb.MiniBatch(
        producer_id="p", sequence=5, points=pb.Matrix(dtype=pb.DTYPE_FLOAT32, rows=10, cols=3, data=b"x"))),
     grpc.StatusCode.INVALID_ARGUMENT, "batch.points.data"),
    # A malformed matrix is the client's mistake, not a mismatch with the model.
    (lambda: pb.MiniBatchRequest(batch=pb.MiniBatch(
        producer_id="p", sequence=5, points=pb.Matrix(rows=10, cols=3, data=POINTS[:10].tobytes()))),
     grpc.StatusCode.INVALID_ARGUMENT, "batch.points.dtype"),
    (lambda: pb.MiniBatchRequest(batch=pb.MiniBatch(
        producer_id="p", sequence=5, points=pb.Matrix(dtype=pb.DTYPE_FLOAT32, rows=0, cols=0))),
     grpc.StatusCode.INVALID_ARGUMENT, "batch.points.cols"),
]


@pytest.mark.parametrize("make_bad, code, field", BAD_BATCHES)
def test_a_bad_batch_gets_an_error_ack_and_the_stream_goes_on(stub, client: Client, make_bad, code, field) -> None:
    run(stub, opening("steady"), batch(1, POINTS[:100]))
    before = client.get_model("steady", include_centers=True)
    bad, good = run(stub, opening("steady", None), make_bad(), batch(6, POINTS[100:200]))
    assert bad.error.code == code.value[0] and bad.error.field == field, bad.error
    assert bad.error.message and bad.version == 0
    assert not good.HasField("error") and good.version == before.version + 1
    assert good.n_samples_seen == 200
    # The rejected sequence was not recorded: it can still be sent with good data.
    (retried,) = run(stub, opening("steady", None), batch(5, POINTS[200:300]))
    assert retried.duplicate  # 5 < 6, which was applied: sequences only go up
    np.testing.assert_array_equal(before.centers.shape, client.get_model("steady", include_centers=True).centers.shape)


def stream_error(stub, *requests: pb.MiniBatchRequest):
    with pytest.raises(grpc.RpcError) as raised:
        run(stub, *requests)
    return error_from_rpc(raised.value)


def test_bad_openings_are_refused_and_nothing_is_created(stub, client: Client) -> None:
    client.fit("batch-model", POINTS, 3, seed=0)
    cases = [
        ((batch(1, POINTS[:10]),), InvalidArgument, "open"),
        ((opening("missing", None), batch(1, POINTS[:10])), NotFound, "open.model"),
        ((opening("bad name!"),), InvalidArgument, "open.model"),
        ((opening("batch-model"), batch(1, POINTS[:10])), FailedPrecondition, "open.model"),
        ((opening("new", init_size=2),), InvalidArgument, "open.create_if_missing.init_size"),
        ((opening("new", reassignment_ratio=2.0),), InvalidArgument, "open.create_if_missing.reassignment_ratio"),
        ((opening("new", half_life=-1.0),), InvalidArgument, "open.create_if_missing.half_life"),
        ((opening("new", 0),), InvalidArgument, "open.create_if_missing.n_clusters"),
        ((opening("new", 10**6),), ResourceExhausted, "open.create_if_missing.n_clusters"),
    ]
    for requests, kind, field in cases:
        error = stream_error(stub, *requests)
        assert isinstance(error, kind), (requests, error)
        assert error.field == field, error
    assert [m.name for m in client.list_models()] == ["batch-model"]
    assert client.get_model("batch-model").version == 1


def test_a_second_message_that_opens_again_ends_the_stream(stub) -> None:
    error = stream_error(stub, opening("twice"), opening("twice"))
    assert isinstance(error, InvalidArgument) and error.field == "open"


def test_batches_before_a_stray_open_are_acked_before_the_stream_ends(stub) -> None:
    call = stub.StreamMiniBatch(iter([opening("stray", init_size=10), batch(1, POINTS[:20]),
                                      batch(2, POINTS[20:40]), opening("stray")]))
    acks = []
    with pytest.raises(grpc.RpcError) as raised:
        for ack in call:
            acks.append(ack)
    assert [(ack.sequence, ack.HasField("error")) for ack in acks] == [(1, False), (2, False)]
    error = error_from_rpc(raised.value)
    assert isinstance(error, InvalidArgument) and error.field == "open" and "message 3" in error.message


def test_many_producers_stream_into_one_model(stub, client: Client) -> None:
    producers, per_producer = 4, 12
    acks: dict[str, list[pb.MiniBatchAck]] = {}
    snapshots: list[int] = []
    stop = threading.Event()

    def produce(index: int) -> None:
        name = f"producer-{index}"
        rng = np.random.default_rng(index)
        requests = [opening("shared")] + [
            batch(s, rng.normal(size=(100, 3)).astype(np.float32), producer=name)
            for s in range(1, per_producer + 1)
        ]
        acks[name] = run(stub, *requests)

    def read() -> None:
        while not stop.is_set():
            try:
                model = client.get_model("shared", include_centers=True)
            except NotFound:
                continue
            if model.centers is not None:
                assert model.centers.shape == (4, 3)
                snapshots.append(model.version)

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    reader.join()
    versions = sorted(a.version for stream in acks.values() for a in stream)
    assert versions == list(range(1, producers * per_producer + 1))  # every batch, once each
    for stream in acks.values():
        assert [a.version for a in stream] == sorted(a.version for a in stream)
    model = client.get_model("shared")
    assert model.n_samples_seen == producers * per_producer * 100
    assert model.durable_version == model.version
    assert snapshots == sorted(snapshots)


def test_a_new_model_buffers_until_init_size(stub, client: Client) -> None:
    first, second = run(stub, opening("slow-start", init_size=500), batch(1, POINTS[:300]), batch(2, POINTS[300:450]))
    assert math.isnan(first.batch_inertia) and math.isnan(second.batch_inertia)
    model = client.get_model("slow-start", include_centers=True)
    assert model.centers is None and model.init_points_buffered == 450 and model.n_clusters == 4
    with pytest.raises(FailedPrecondition) as raised:
        client.predict("slow-start", POINTS[:5])
    assert raised.value.field == "model" and "450" in raised.value.message
    (third,) = run(stub, opening("slow-start", None), batch(3, POINTS[450:600]))
    assert third.batch_inertia > 0
    model = client.get_model("slow-start", include_centers=True)
    assert model.centers.shape == (4, 3) and model.init_points_buffered == 0


def test_deleting_a_streamed_model_ends_its_open_streams(stub, client: Client) -> None:
    gate = threading.Event()

    def requests() -> Iterator[pb.MiniBatchRequest]:
        yield opening("doomed")
        yield batch(1, POINTS[:100])
        gate.wait(10)
        yield batch(2, POINTS[100:200])

    call = stub.StreamMiniBatch(requests())
    assert next(call).version == 1
    client.delete_model("doomed")
    gate.set()
    with pytest.raises(grpc.RpcError) as raised:
        next(call)
    assert raised.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(NotFound):
        client.get_model("doomed")


def test_streamed_models_survive_a_restart(start_server: ServerFactory, tmp_path) -> None:
    server = start_server(checkpoint_interval=0.05)
    with Client(f"127.0.0.1:{server.port}") as client:
        with client.stream("kept", n_clusters=4, seed=2, producer_id="p") as stream:
            for s in range(5):
                stream.send(POINTS[s * 100 : (s + 1) * 100])
        before = client.get_model("kept", include_centers=True)
    server.stop(0)
    again = start_server()
    with Client(f"127.0.0.1:{again.port}") as client:
        after = client.get_model("kept", include_centers=True)
        assert (after.version, after.n_samples_seen, after.n_batches) == (5, 500, 5)
        np.testing.assert_array_equal(after.centers, before.centers)
        # The producers' sequences came back with the model.
        with client.stream("kept", producer_id="p", first_sequence=5) as stream:
            stream.send(POINTS[:100])
        assert stream.last_ack is not None and stream.last_ack.duplicate
        assert client.get_model("kept").version == 5


def test_model_limit_applies_to_streamed_models(start_server: ServerFactory) -> None:
    server = start_server(max_models=1)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.ClusteringServiceStub(channel)
        run(stub, opening("one"), batch(1, POINTS[:50]))
        (ack,) = run(stub, opening("two"), batch(1, POINTS[:50]))
    assert ack.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and ack.error.field == "model"


def test_a_refused_stream_leaves_no_receiving_thread_behind(stub) -> None:
    before = {t.ident for t in threading.enumerate() if t.name == "centroidal-read-ahead"}
    for _ in range(3):
        # A second opening ends the call while 40 batches are still coming.
        error = stream_error(
            stub, opening("twice"), batch(1, POINTS[:50]), opening("twice"),
            *(batch(s, POINTS[:50]) for s in range(2, 42)),
        )
        assert isinstance(error, InvalidArgument)
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        left = {t.ident for t in threading.enumerate() if t.name == "centroidal-read-ahead"} - before
        if not left:
            break
        time.sleep(0.05)
    assert not left


def test_a_fit_that_takes_the_name_first_is_never_overwritten(stub, client: Client) -> None:
    gate = threading.Event()

    def requests() -> Iterator[pb.MiniBatchRequest]:
        yield opening("contested")
        gate.wait(10)
        yield batch(1, POINTS[:100])

    call = stub.StreamMiniBatch(requests())
    time.sleep(0.3)  # the stream is open, its model not created yet
    fitted = client.fit("contested", POINTS, 3, seed=0)
    gate.set()
    with pytest.raises(grpc.RpcError) as raised:
        list(call)
    assert raised.value.code() == grpc.StatusCode.ABORTED
    model = client.get_model("contested", include_centers=True)
    assert model.kind == "kmeans" and model.version == fitted.version
    np.testing.assert_array_equal(model.centers, fitted.centers)


def test_a_streamed_model_deleted_before_its_first_checkpoint_keeps_counting(
    start_server: ServerFactory,
) -> None:
    server = start_server(checkpoint_interval=3600.0)
    with Client(f"127.0.0.1:{server.port}") as client:
        stream = client.stream("short-lived", n_clusters=2, producer_id="p")
        for s in range(3):
            stream.send(POINTS[s * 50 : (s + 1) * 50])
        stream.flush()
        assert stream.last_ack.durable_version == 0
        assert client.delete_model("short-lived") == 4
        stream.abort()
    server.stop(0)
    again = start_server()
    with Client(f"127.0.0.1:{again.port}") as client:
        with client.stream("short-lived", n_clusters=2, producer_id="p") as stream:
            stream.send(POINTS[:50])
        assert stream.last_ack.version == 5  # not 1: versions never go backwards


def test_init_size_is_limited_by_the_fit_byte_limit(start_server: ServerFactory) -> None:
    server = start_server(max_fit_bytes=1000)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.ClusteringServiceStub(channel)
        # 100 points x 3 float32 features would be 1200 bytes held back.
        (ack,) = run(stub, opening("greedy", init_size=100), batch(1, POINTS[:10]))
    assert ack.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert ack.error.field == "open.create_if_missing.init_size"
