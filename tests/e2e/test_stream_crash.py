"""kill -9 during a mini-batch stream: what was acked as durable survives, and resuming
producers end with the model an uninterrupted run gives."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import grpc
import numpy as np

from centroidal.client import Client
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState
from tests.e2e.test_serve import ServeProcess

RNG = np.random.default_rng(8)
BATCHES = [
    (RNG.normal(size=(200, 5)) + RNG.integers(0, 4, size=(200, 1)) * 4).astype(np.float32)
    for _ in range(60)
]


def uninterrupted(count: int) -> MiniBatchState:
    state = MiniBatchState(MiniBatchParams(4, seed=7), 5, np.dtype(np.float32))
    for batch in BATCHES[:count]:
        state.partial_fit(*state.check_batch(batch))
    return state


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(data_dir: Path, port: int) -> tuple[ServeProcess, str]:
    process = ServeProcess(data_dir, "--port", str(port), "--checkpoint-interval", "0.3")
    return process, process.wait_for_address()


def kill(process: ServeProcess) -> None:
    process.process.send_signal(signal.SIGKILL)
    assert process.process.wait(30) == -signal.SIGKILL


def test_sigkill_loses_nothing_durable_and_producers_resume(tmp_path: Path) -> None:
    port = free_port()
    server, address = serve(tmp_path, port)
    with Client(address, timeout=60) as client:
        # Phase 1: the SDK stream rides through a kill -9 on its own.
        stream = client.stream("crash", n_clusters=4, seed=7, producer_id="p", window=4)
        for batch in BATCHES[:20]:
            stream.send(batch)
        stream.flush()
        give_up = time.monotonic() + 10
        while stream.durable_sequence < 20 and time.monotonic() < give_up:
            time.sleep(0.4)  # past a checkpoint; the next ack reports it
            stream.send(BATCHES[stream.next_sequence - 1])
            stream.flush()
        assert stream.next_sequence <= 26
        durable_before_kill = stream.last_ack.durable_version
        assert durable_before_kill >= 20
        for batch in BATCHES[stream.next_sequence - 1 : 30]:
            stream.send(batch)
        stream.flush()
        acked = stream.last_ack
        kill(server)
        server, _ = serve(tmp_path, port)
        # Channels in one process share connections unless told otherwise: ask on a
        # connection of its own.
        with Client(address, options=[("grpc.use_local_subchannel_pool", 1)]) as fresh:
            grpc.channel_ready_future(fresh._channel).result(timeout=30)
            restored = fresh.get_model("crash")
        # Everything acked as durable came back; at most what was not yet stored is missing,
        # unless the stream already resent it (it reconnects on its own, and the new server
        # numbers its versions above the dead one's lease ceiling, so count batches).
        assert durable_before_kill <= restored.n_batches <= acked.sequence
        assert restored.version >= durable_before_kill
        for batch in BATCHES[30:40]:
            stream.send(batch)
        stream.close(timeout=60)
        assert stream.reconnects >= 1
        model = client.get_model("crash", include_centers=True)  # connected again by the stream
        expected = uninterrupted(40)
        assert model.n_batches == 40 and model.n_samples_seen == expected.n_samples_seen
        np.testing.assert_allclose(model.centers, expected.centers, rtol=1e-5, atol=1e-5)

        # Phase 2: the producer itself dies with the server, and a new one resumes from the
        # last durable sequence it was told about.
        stream = client.stream("crash", producer_id="p", first_sequence=41, window=4)
        for batch in BATCHES[40:50]:
            stream.send(batch)
        stream.flush()
        resume_from = stream.durable_sequence + 1
        kill(server)
        stream.abort()
        server, _ = serve(tmp_path, port)
        resumed = client.stream("crash", producer_id="p", first_sequence=resume_from, window=4)
        for batch in BATCHES[resume_from - 1 : 60]:
            resumed.send(batch)
        resumed.close(timeout=60)
        model = client.get_model("crash", include_centers=True)  # connected by the new stream
        expected = uninterrupted(60)
        assert model.n_batches == 60 and model.n_samples_seen == expected.n_samples_seen
        np.testing.assert_allclose(model.centers, expected.centers, rtol=1e-5, atol=1e-5)
    assert server.terminate() == 0


def test_sigterm_stores_every_acked_batch(tmp_path: Path) -> None:
    port = free_port()
    # The stream stays open: a short grace period, not the 10 s default, before the server stops it.
    server = ServeProcess(tmp_path, "--port", str(port), "--checkpoint-interval", "3600", "--grace-period", "1")
    address = server.wait_for_address()
    with Client(address, timeout=60) as client:
        stream = client.stream("term", n_clusters=4, seed=7, producer_id="p")
        for batch in BATCHES[:10]:
            stream.send(batch)
        stream.flush()
        assert stream.last_ack.durable_version < stream.last_ack.version  # nothing stored yet
        acked = stream.last_ack.version
        assert server.terminate() == 0
        stream.abort()
    assert any("stopped cleanly" in line for line in server.lines)
    server, address = serve(tmp_path, port)
    with Client(address, timeout=60, options=[("grpc.use_local_subchannel_pool", 1)]) as client:
        model = client.get_model("term", include_centers=True)
    assert model.version == acked and model.n_batches == 10
    np.testing.assert_array_equal(model.centers, uninterrupted(10).centers)
    assert server.terminate() == 0
