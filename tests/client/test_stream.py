"""The SDK's producer stream: window, acks, errors, durability and reconnects."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from centroidal.client import BatchAck, Client, DeadlineExceeded, FailedPrecondition, NotFound
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState
from tests.conftest import ServerFactory

RNG = np.random.default_rng(2)
BATCHES = [
    (RNG.normal(size=(150, 4)) + RNG.integers(0, 3, size=(150, 1)) * 6).astype(np.float32)
    for _ in range(30)
]


def expected_centers(batches: list[np.ndarray], **params: object) -> np.ndarray:
    state = MiniBatchState(MiniBatchParams(**params), 4, np.dtype(np.float32))
    for batch in batches:
        state.partial_fit(*state.check_batch(batch))
    return state.centers


def test_send_flush_close(client: Client) -> None:
    acks: list[BatchAck] = []
    with client.stream("s", n_clusters=3, seed=1, producer_id="me", on_ack=acks.append) as stream:
        sequences = [stream.send(batch) for batch in BATCHES[:10]]
        stream.flush()
        assert stream.pending == 0
        assert [a.sequence for a in acks] == sequences == list(range(1, 11))
    assert stream.durable_sequence == 10  # the close stored everything
    model = client.get_model("s", include_centers=True)
    assert model.version == model.durable_version == 10
    np.testing.assert_array_equal(model.centers, expected_centers(BATCHES[:10], n_clusters=3, seed=1))


def test_a_rejected_batch_raises_from_flush_with_its_sequence(client: Client) -> None:
    with client.stream("s", n_clusters=3) as stream:
        stream.send(BATCHES[0])
        stream.send(BATCHES[1][:, :3])
        stream.send(BATCHES[2])
        with pytest.raises(FailedPrecondition) as raised:
            stream.flush()
        assert raised.value.sequence == 2 and raised.value.field == "batch.points.cols"
        stream.flush()  # reported once
        assert [e.sequence for e in stream.errors] == [2]
    assert client.get_model("s").n_samples_seen == 300


def test_send_pushes_back_when_the_window_is_full(server, client: Client) -> None:
    with client.stream("s", n_clusters=3, window=2) as stream:
        with server.registry.writer_lock("s"):  # the server cannot apply anything meanwhile
            stream.send(BATCHES[0])
            stream.send(BATCHES[1])
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                stream.send(BATCHES[2], timeout=0.3)
            assert time.monotonic() - started >= 0.3
            assert stream.pending == 2
        stream.send(BATCHES[2], timeout=10)
    assert client.get_model("s").n_batches == 3


def test_opening_an_unknown_model_without_n_clusters_fails_on_flush(client: Client) -> None:
    stream = client.stream("nowhere")
    stream.send(BATCHES[0])
    with pytest.raises(NotFound) as raised:
        stream.flush(timeout=10)
    assert raised.value.field == "open.model"
    with pytest.raises(NotFound):
        stream.send(BATCHES[0])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Batches of 80 KB, which the SDK keeps in its replay slabs (client/replay.py), not as bytes.
LARGE_BATCHES = [np.repeat(batch, 34, axis=0) + RNG.normal(size=(150 * 34, 4)).astype(np.float32)
                 for batch in BATCHES]


@pytest.mark.parametrize("large", [False, True])
def test_the_stream_reconnects_and_replays_after_a_server_restart(
    start_server: ServerFactory, large: bool
) -> None:
    batches = LARGE_BATCHES if large else BATCHES
    rows = len(batches[0])
    port = free_port()
    server = start_server(port=port, checkpoint_interval=3600.0)  # nothing stored but at close
    acks: list[BatchAck] = []
    with Client(f"127.0.0.1:{port}") as client:
        stream = client.stream("r", n_clusters=3, seed=4, producer_id="p", on_ack=acks.append)
        for batch in batches[:8]:
            stream.send(batch)
        stream.flush()
        # A restart that loses everything since the last checkpoint: here, everything.
        server.store.close()
        server.stop(0)
        restarted = threading.Timer(0.5, lambda: start_server(port=port))
        restarted.start()
        for batch in batches[8:16]:
            stream.send(batch)
        stream.close(timeout=60)
        restarted.join()
        assert stream.reconnects >= 1 and stream.durable_sequence == 16
        model = client.get_model("r", include_centers=True)
    # Every batch applied once, in order, as if nothing had happened.
    assert model.n_samples_seen == 16 * rows and model.n_batches == 16
    np.testing.assert_allclose(
        model.centers, expected_centers(batches[:16], n_clusters=3, seed=4), rtol=1e-6
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_hand_encoded_batches_parse_as_the_protobuf_message(dtype: type, weighted: bool) -> None:
    from centroidal import codec
    from centroidal.v1 import clustering_pb2 as pb

    points = np.arange(300 * 7, dtype=dtype).reshape(300, 7) / 7
    weights = np.linspace(0.5, 2.0, 300) if weighted else None
    expected = pb.MiniBatchRequest(
        batch=pb.MiniBatch(producer_id="producer-é", sequence=2**40 + 3, points=codec.encode_matrix(points))
    )
    if weights is not None:
        expected.batch.sample_weight.CopyFrom(codec.encode_vector(weights))
    encoded = codec.serialize_minibatch_request(codec.MiniBatch("producer-é", 2**40 + 3, points, weights))
    assert pb.MiniBatchRequest.FromString(encoded) == expected


def test_an_on_ack_callback_that_raises_ends_the_stream_with_its_error(client: Client) -> None:
    def explode(ack: BatchAck) -> None:
        raise KeyError("callback failed")

    stream = client.stream("s", n_clusters=3, on_ack=explode, window=2)
    stream.send(BATCHES[0])
    with pytest.raises(KeyError):
        stream.flush(timeout=10)
    with pytest.raises(KeyError):
        stream.send(BATCHES[1], timeout=10)
    with pytest.raises(KeyError):
        stream.close(timeout=10)


def test_a_reconnect_does_not_recreate_a_model_deleted_meanwhile(
    start_server: ServerFactory, tmp_path
) -> None:
    port = free_port()
    server = start_server(port=port, checkpoint_interval=0.05)
    with Client(f"127.0.0.1:{port}") as client:
        stream = client.stream("gone", n_clusters=3, producer_id="p")
        stream.send(BATCHES[0])
        give_up = time.monotonic() + 10
        while stream.durable_sequence < 1 and time.monotonic() < give_up:
            time.sleep(0.1)
            stream.send(BATCHES[1])
            stream.flush()
        assert stream.durable_sequence >= 1
        server.stop(0)
        # The server comes back without the model, as after a delete.
        start_server(port=port, data_dir=str(tmp_path / "elsewhere"))
        with pytest.raises(NotFound) as raised:
            stream.send(BATCHES[2])
            stream.close(timeout=60)
        assert raised.value.field == "open.model"
        with pytest.raises(NotFound):
            client.get_model("gone")


def test_a_stream_quiet_past_the_idle_timeout_reconnects_and_goes_on(start_server) -> None:
    server = start_server(idle_timeout=0.5)
    rng = np.random.default_rng(4)
    with Client(f"127.0.0.1:{server.port}") as client:
        with client.stream("quiet", n_clusters=3, seed=0) as stream:
            stream.send(rng.normal(size=(300, 4)).astype(np.float32))
            stream.flush(30)
            time.sleep(1.5)  # the server ends the quiet stream; the SDK opens another
            stream.send(rng.normal(size=(300, 4)).astype(np.float32))
            stream.flush(30)
        assert stream.reconnects >= 1
        assert client.get_model("quiet").n_samples_seen == 600


def test_a_quiet_stream_holds_nothing_on_the_server_until_its_next_batch(start_server) -> None:
    """The server ends a stream idle past --idle-timeout; the producer then keeps none open
    until it has a batch to send (or closes), rather than reconnecting at once, forever."""
    import asyncio

    from centroidal.client.aio import AsyncClient
    from tests.client.test_sdk import wait_until

    server = start_server(idle_timeout=0.5)
    live = server.servicer.hub._live
    target = f"127.0.0.1:{server.port}"
    X = np.random.default_rng(0).normal(size=(60, 2))

    def open_streams(name: str) -> int:
        model = live.get(name)
        return 0 if model is None else model.streams

    with Client(target, timeout=30) as client:
        stream = client.stream("quiet", n_clusters=2)
        stream.send(X)
        stream.flush(30)
        assert open_streams("quiet") == 1
        wait_until(lambda: open_streams("quiet") == 0)
        time.sleep(1.5)  # three idle timeouts: a producer that reconnected would hold one again
        assert open_streams("quiet") == 0 and stream.reconnects == 0
        stream.send(X)
        stream.flush(30)
        stream.close(30)
        assert stream.last_ack is not None and stream.last_ack.durable_version == client.get_model("quiet").version
        assert client.get_model("quiet").n_samples_seen == 120

    async def quiet_async() -> None:
        async with AsyncClient(target, timeout=30) as client:
            stream = client.stream("quiet-async", n_clusters=2)
            await stream.send(X)
            await stream.flush(30)
            await asyncio.to_thread(wait_until, lambda: open_streams("quiet-async") == 0)
            await asyncio.sleep(1.5)
            assert open_streams("quiet-async") == 0
            await stream.send(X)
            await stream.flush(30)
            await stream.close(30)
            assert (await client.get_model("quiet-async")).n_samples_seen == 120

    asyncio.run(quiet_async())
