"""One queue per streamed model: batches wait there from when they arrive, whoever applies
one applies every batch waiting ahead of it too, and a stream that ends takes its own back
out.

These drive a real server's StreamHub directly, so that a stream's batch can be queued
while no pool thread has taken its job yet, which a client cannot arrange on purpose.
"""

from __future__ import annotations

import asyncio
import gc
import threading

import numpy as np

from centroidal import codec
from centroidal.client import Client
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState
from centroidal.server.live import BatchResult, Pending
from centroidal.server.shared_rows import StreamMaps
from centroidal.server.turns import InOrder, TurnPool
from tests.conftest import ServerFactory

RNG = np.random.default_rng(3)
ROWS = [(RNG.normal(size=(40, 3)) + offset).astype(np.float32) for offset in (0, 5, 10, 15)]
CONFIG = codec.MiniBatchConfig(n_clusters=3, init_size=40, seed=0)
PEER = "ipv4:127.0.0.1:50000"  # grpc's address of a client on this host
MAPS = StreamMaps()  # the streams' mappings of shared memory (these batches name none)


def batch(producer: str, sequence: int, rows: np.ndarray) -> codec.MiniBatch:
    return codec.MiniBatch(producer_id=producer, sequence=sequence, points=rows)


def test_whoever_applies_a_batch_applies_every_stream_s_batches_waiting_ahead_of_it_in_order(
    start_server: ServerFactory,
) -> None:
    hub = start_server().servicer.hub
    live = hub.open("queued", CONFIG)
    told: list[str] = []

    def tell(entry: Pending) -> None:
        told.append(f"{entry.producer} {entry.sequence}")

    first = hub.queue(live, batch("a", 1, ROWS[0]), "stream a", PEER, MAPS)
    second = hub.queue(live, batch("b", 1, ROWS[1]), "stream b", PEER, MAPS)
    third = hub.queue(live, batch("a", 2, ROWS[2]), "stream a", PEER, MAPS)
    first.applied = second.applied = third.applied = tell

    # Stream b's job applies the batch stream a sent before it, and tells stream a at once;
    # its own is told by its job's return. The batch after it waits for its own job.
    assert hub.apply(live, second).version == 2
    assert first.result is not None and first.result.version == 1
    assert told == ["a 1"]
    assert list(live.queue) == [third] and third.result is None
    assert hub.apply(live, third).version == 3
    assert told == ["a 1"]  # a job's own batch is told by its return
    assert hub.apply(live, first).version == 1  # already applied: its job only reads it
    assert live.producers == {"a": 2, "b": 1}

    # The same steps as one engine state taking the batches in the order they arrived.
    expected = MiniBatchState(MiniBatchParams(n_clusters=3, init_size=40, seed=0), 3, np.dtype(np.float32))
    for rows in ROWS[:3]:
        expected.partial_fit(*expected.check_batch(rows))
    assert live.state is not None
    np.testing.assert_array_equal(live.state.centers, expected.centers)
    assert hub.close(live) == 3


def test_a_stream_that_ended_takes_its_waiting_batches_back(start_server: ServerFactory) -> None:
    hub = start_server().servicer.hub
    live = hub.open("withdrawn", CONFIG)
    gone = [hub.queue(live, batch("a", 1, ROWS[0]), "stream a", PEER, MAPS)]
    kept = hub.queue(live, batch("b", 1, ROWS[1]), "stream b", PEER, MAPS)
    gone.append(hub.queue(live, batch("a", 2, ROWS[2]), "stream a", PEER, MAPS))

    live.withdraw("stream a")
    assert list(live.queue) == [kept]
    assert hub.apply(live, kept).version == 1
    assert all(entry.result is None and entry.error is None for entry in gone)
    assert live.state is not None and live.state.n_samples_seen == ROWS[1].shape[0]
    assert live.producers == {"b": 1}
    assert hub.close(live) == 1


def test_a_refused_batch_in_the_queue_is_told_to_its_own_stream_alone(start_server: ServerFactory) -> None:
    hub = start_server().servicer.hub
    live = hub.open("refused", CONFIG)
    good = hub.queue(live, batch("a", 1, ROWS[0]), "stream a", PEER, MAPS)
    wide = hub.queue(live, batch("b", 1, np.zeros((5, 4), dtype=np.float32)), "stream b", PEER, MAPS)
    after = hub.queue(live, batch("a", 2, ROWS[1]), "stream a", PEER, MAPS)

    assert hub.apply(live, good).version == 1
    assert hub.apply(live, after).version == 2  # after the refused batch, which it applied
    assert wide.error is not None and "features" in str(wide.error)
    assert hub.close(live) == 2


def test_a_batch_applied_by_another_stream_s_job_is_acked_before_its_own_job_runs(
    start_server: ServerFactory,
) -> None:
    servicer = start_server().servicer
    hub = servicer.hub
    live = hub.open("early", CONFIG)
    blocked = threading.Event()
    pool = TurnPool(1, thread_name_prefix="test-blocked")  # its one thread kept busy below

    async def scenario() -> BatchResult:
        pool.submit(blocked.wait)  # stream b's own job cannot start until this is set
        jobs = InOrder(pool)
        # What the stream's task does with a batch as it arrives.
        _, _, outcome = servicer.sessions._queue_batch(live, batch("b", 1, ROWS[0]), jobs, PEER, MAPS)
        after = hub.queue(live, batch("a", 1, ROWS[1]), "stream a", PEER, MAPS)
        # Stream a's job applies b's batch, queued ahead of its own, on a thread of its own.
        applied = await asyncio.to_thread(hub.apply, live, after)
        assert applied.version == 2
        result = await asyncio.wait_for(outcome, 30)
        assert not blocked.is_set()  # b's job has not run: the ack came from a's
        return result

    try:
        result = asyncio.run(scenario())
    finally:
        blocked.set()
        pool.shutdown(wait=True)
    assert result.version == 1 and not result.duplicate
    assert live.producers == {"a": 1, "b": 1}
    assert hub.close(live) == 2


def test_streamed_batches_are_let_go_once_acked_without_the_cycle_collector(start_server: ServerFactory) -> None:
    # A queued batch holds its rows: a reference cycle through it would keep every batch's
    # rows until the cycle collector ran, past the memory budget's count of them.
    server = start_server()
    points = RNG.normal(size=(40 * 50, 3)).astype(np.float32)
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        with client.stream("let-go", n_clusters=3, seed=0, producer_id="setup") as first:
            first.send(ROWS[0])
        gc.collect()
        gc.disable()
        try:
            def produce(index: int) -> None:
                with client.stream("let-go", producer_id=f"producer-{index}") as stream:
                    for rows in np.split(points, 50):
                        stream.send(rows)

            producers = [threading.Thread(target=produce, args=(index,)) for index in range(4)]
            for producer in producers:
                producer.start()
            for producer in producers:
                producer.join()
            # type(), not isinstance: the heap may hold weak proxies whose referents are gone,
            # which isinstance would look through and raise ReferenceError on.
            alive = sum(type(held) is Pending for held in gc.get_objects())
        finally:
            gc.enable()
        seen = client.get_model("let-go").n_samples_seen
    assert seen == ROWS[0].shape[0] + 4 * points.shape[0]  # every producer's batches applied
    assert alive == 0
