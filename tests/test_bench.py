"""`make bench` keeps running as the code moves: each suite's rows, on tiny data. Nothing is
timed here; a benchmark that no longer runs is a regression nobody would see until then."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import engine, scoring


def test_a_run_takes_every_suite() -> None:
    """Each module of bench with a ``run`` is a suite of ``python -m bench``, once (but the
    soak, which ``make soak`` runs on its own)."""
    import importlib
    import pkgutil

    import bench
    from bench.__main__ import suites

    modules = {info.name for info in pkgutil.iter_modules(bench.__path__)
               if hasattr(importlib.import_module(f"bench.{info.name}"), "run")}
    names = [name for name, _ in suites(quick=True)]
    assert sorted(names) == sorted(modules - {"__main__", "soak"})


def test_engine_rows_run() -> None:
    rows = engine.lloyd_iterations(3_000, 3, 4, np.float32, "overlapping", repeats=1)
    rows += engine.lloyd_iterations(3_000, 32, 24, np.float64, repeats=1)
    rows += [engine.full_fit(3_000, 3, 4, seeds=1), engine.plusplus(3_000, 3, 4), engine.predict(3_000, 3, 4)]
    assert all(row.ours_s > 0 and row.reference_s > 0 for row in rows)


def test_scoring_rows_run() -> None:
    rows = [scoring.cosine_fit(2_000, 16, 4), scoring.silhouette(2_000, 4, 4, sample_size=None)]
    assert all(row.ours_s > 0 and row.reference_s > 0 for row in rows)


def test_transport_floor_runs(tmp_path: Path) -> None:
    """The trivial grpc.aio server of bench.floors, in its own process, moving 3 MB each way."""
    from bench import floors

    with floors.floor_server(str(tmp_path)) as (address, pid):
        times = floors.bulk_floor(address, repeats=1, nbytes=3 << 20)
        assert floors.process_cpu_seconds(pid) > 0
        with floors.bulk_ways(address, nbytes=3 << 20, keep=True) as ways:
            assert len(ways[floors.KEPT_WAY]()) == floors.ANSWER_BYTES  # type: ignore[arg-type]
    assert set(times) == {"unary, one message"} | {f"stream of {size >> 20} MiB chunks" for size in floors.CHUNKS}
    assert all(seconds > 0 for seconds in times.values())


def test_stream_rows_run(server: object) -> None:
    from sklearn.datasets import make_blobs

    from bench import streaming

    batches = [points.astype(np.float32) for points in np.array_split(make_blobs(4_000, random_state=0)[0], 4)]
    seconds, latencies = streaming._stream(f"127.0.0.1:{server.port}", "bench", batches, producers=2)  # type: ignore[attr-defined]
    assert seconds > 0 and latencies


def test_floor_client_streams_into_our_server(server: object) -> None:
    """The floor's client, fed the SDK's requests after an open, gets every batch of two
    producers applied by our server: each is acked, and the model has seen every row."""
    from centroidal.client import Client

    from bench import floors, streaming

    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(300, 16)).astype(np.float32) for _ in range(7)]
    address = f"127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    with floors.acked_streams(address, streaming.STREAM_METHOD) as raw:
        seconds = streaming._from_floor_client(raw, address, "raw", batches, streaming._floor_messages(batches, 2))
    assert seconds > 0
    with Client(address) as client:
        assert client.get_model("raw").n_samples_seen == 300 * len(batches)


def test_stream_floor_sends_what_the_sdk_sends(tmp_path: Path) -> None:
    """The acking floor gets the SDK's requests for the same batches, each producer's share in
    order, and answers every one (acked_streams raises when an ack is missing)."""
    from centroidal import codec

    from bench import floors, streaming

    batches = [np.full((50, 16), i, dtype=np.float32) for i in range(8)]
    messages = streaming._floor_messages(batches, 3)
    read = [[codec.read_minibatch_request(message, in_place_from=0) for message in mine] for mine in messages]
    assert [[(batch.producer_id, batch.sequence, int(batch.points[0, 0])) for batch in mine] for mine in read] == [
        [("producer-0", 1, 1), ("producer-0", 2, 4), ("producer-0", 3, 7)],
        [("producer-1", 1, 2), ("producer-1", 2, 5)],
        [("producer-2", 1, 3), ("producer-2", 2, 6)],
    ]
    with floors.floor_server(str(tmp_path)) as (address, _), floors.acked_streams(address) as acked:
        assert acked(messages, 2) > 0
    assert streaming._kernel(batches) > 0


def test_learning_and_predicting_floors_answer_every_message(tmp_path: Path) -> None:
    """The learning floor acks every batch of two producers into the model its first batch
    started (acked_streams raises when an ack is missing); the predicting floor answers a
    label for every row (predicting_floor's call raises when one is missing)."""
    import grpc

    from bench import floor_work, floors, streaming

    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(300, 16)).astype(np.float32) for _ in range(7)]
    X = rng.normal(size=(70_000, 16)).astype(np.float32)  # three chunks of 2 MiB at most
    with floors.floor_server(str(tmp_path)) as (address, _), grpc.insecure_channel(address) as channel, \
            floors.acked_streams(address, floor_work.LEARN) as learned, \
            floor_work.predicting_floor(address, X, X[:5]) as predicting:
        channel.unary_unary(floor_work.LEARN_FROM)(floor_work.learning_from(batches[0], 4))
        assert learned(streaming._floor_messages(batches, 2), 2) > 0
        assert predicting() == 4 * X.shape[0]


@pytest.mark.slow  # the bench rows start servers and clusters of processes: make test-slow
def test_replica_rows_run() -> None:
    """The replicas rows' parts on tiny work: visibility, ingest and a failover, for real."""
    from bench import replicas

    with replicas.serving(2) as two:
        lines, facts = replicas._visibility(two, fits=3)
        assert facts["replicas_visible_p99_ms"] > 0
        assert replicas.ingest([two.target], "tiny", batches=2, rows=100) > 0
        lines, facts = replicas._failover(two, trials=1)
        assert facts["replicas_failover_ms"] > 0


@pytest.mark.slow
def test_host_rows_run(postgres_database: str) -> None:
    """The PostgreSQL rows' parts on tiny work: the store's writes, and visibility between
    two replicas with NOTIFY."""
    from bench import hosts, replicas
    from centroidal.server.postgres import PostgresStore

    store = PostgresStore(postgres_database, listen=False)
    try:
        commit_ms, checkpoint_ms = hosts._write_latencies(store, writes=3)
    finally:
        store.close()
    assert commit_ms > 0 and checkpoint_ms > 0
    with replicas.serving(1, "--store", postgres_database) as a, replicas.serving(1, "--store", postgres_database) as b:
        p50, p99 = replicas.visible_after(a.target, b.target, fits=3)
        assert 0 < p50 <= p99
        assert replicas.ingest([a.target, b.target], "tiny", batches=2, rows=100) > 0


@pytest.mark.slow  # the bench rows start servers and clusters of processes: make test-slow
def test_dataset_rows_run() -> None:
    """The Dask rows on tiny data: ours and dask-ml on one LocalCluster of worker processes,
    the out-of-core fit, and the overhead against the local engine."""
    from bench import datasets

    lines, facts = datasets.lloyd_and_full_fit(n_rows=40_000, n_features=4, k=4)
    assert facts["dask_lloyd_iter_ratio"] > 0 and facts["dask_inertia_ratio"] > 0
    lines, facts = datasets.out_of_core(memory_limit=1 << 30, times=0.01, n_features=4, k=4, max_iter=2)
    assert 0 < facts["dask_out_of_core_peak_share"]
    lines, facts = datasets.overhead(n_rows=20_000, n_features=4, k=4, iterations=2)
    assert facts["dask_overhead_ratio"] > 0
