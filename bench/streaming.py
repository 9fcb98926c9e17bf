"""StreamMiniBatch ingest through the SDK against scikit-learn's partial_fit in process, and
against the floor of a stream: grpc-python moving the same messages to a handler that acks
each one (bench.floors), plus our engine's partial_fit on the same batches in process; and
against the learning floor, that handler applying each batch with the same partial_fit on a
worker thread as it goes, which pays for the transport and the kernel sharing the machine.
The floor's client also streams the same requests into our server, which tells the
server's share of the gap from the SDK's; and the SDK streams the same batches through
shared memory (``Client(shared_memory=True)``), where no bytes travel for the rows.

The server runs as a `centroidal serve` subprocess, as it would in production,
so the producers and the server do not share one interpreter. Both sides see
the same 8192-point float32 batches in the same order.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import grpc
import numpy as np
from sklearn.cluster import MiniBatchKMeans

from centroidal import codec
from centroidal.client import Client
from centroidal.client.stream import DEFAULT_WINDOW
from centroidal.engine import kmeans
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState

from . import floor_work, floors
from .common import Row, served, time_producers
from .engine import blobs

D, K, BATCH, N_BATCHES = 16, 64, 8192, 160
STREAM_METHOD = f"/{codec.SERVICE_NAME}/StreamMiniBatch"
REPEATS = 3
# The SDK's streams, the floor's and the kernel take turns this many times.
FLOOR_ROUNDS = 11


def _inertia(X: np.ndarray, centers: np.ndarray) -> float:
    _, distances = kmeans.predict(X, centers.astype(X.dtype), return_distance=True)
    return float(np.square(distances.astype(np.float64)).sum())


def _stream(
    address: str, name: str, batches: list[np.ndarray], producers: int, shared_memory: bool = False,
) -> tuple[float, list[float]]:
    """Seconds to send every batch with ``producers`` threads (batch i goes to producer i mod p),
    through close(), and the ack latencies; with ``shared_memory``, the rows through the
    client's shared memory."""
    latencies: list[float] = []
    lock = threading.Lock()
    with Client(address, shared_memory=shared_memory) as client:
        # Create the model first so every producer streams into the same one.
        with client.stream(name, n_clusters=K, seed=0, producer_id="setup") as first:
            first.send(batches[0])
        start = threading.Barrier(producers + 1)

        def produce(index: int) -> None:
            with client.stream(name, producer_id=f"producer-{index}") as stream:
                start.wait()
                for batch in batches[1 + index :: producers]:
                    stream.send(batch)
            with lock:
                latencies.extend(stream.ack_latencies)

        seconds = time_producers(produce, producers, start)
    return seconds, latencies


def _from_floor_client(raw: Callable[..., float], address: str, name: str, batches: list[np.ndarray],
                       messages: list[list[bytes]]) -> float:
    """Seconds for the floor's client (bench.floors.acked_streams: the same requests, made
    before the stream starts) to stream ``messages`` into model ``name`` of our server,
    created first by the SDK's setup stream, untimed as in ``_stream``. Against the learning
    floor it is our server's share of the stream's time; against ``_stream``, the SDK's."""
    with Client(address) as client, client.stream(name, n_clusters=K, seed=0, producer_id="setup") as first:
        first.send(batches[0])
    return raw(messages, DEFAULT_WINDOW, codec.serialize_minibatch_request(codec.MiniBatchOpen(name)))


def _kernel(batches: list[np.ndarray]) -> float:
    """Seconds for our engine's partial_fit on every batch but the first, which creates the
    model (untimed, as the SDK's setup stream is), in process."""
    state = MiniBatchState(MiniBatchParams(n_clusters=K, seed=0).check(), D, np.float32)
    state.partial_fit(batches[0])
    began = time.perf_counter()
    for batch in batches[1:]:
        state.partial_fit(batch)
    return time.perf_counter() - began


def _floor_messages(batches: list[np.ndarray], producers: int) -> list[list[bytes]]:
    """The requests the SDK's producers send (as bench's _stream divides the batches)."""
    return [
        [codec.serialize_minibatch_request(codec.MiniBatch(f"producer-{index}", sequence, batch, None))
         for sequence, batch in enumerate(batches[1 + index :: producers], start=1)]
        for index in range(producers)
    ]


def against_floor(address: str, batches: list[np.ndarray]) -> tuple[list[Row], dict[str, float]]:
    """The SDK's producers against the acking floor plus the kernel, and against the learning
    floor (bench.floors: the acking handler applying each batch with the same kernel on a
    worker thread); the floor's client into our server against the learning floor; and the
    SDK's producers through shared memory against floor + kernel; all taking turns."""
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch, floors.floor_server(scratch) as (floor_address, _), \
            floors.acked_streams(floor_address) as acked, \
            floors.acked_streams(floor_address, floor_work.LEARN) as learned, \
            floors.acked_streams(address, STREAM_METHOD) as raw, \
            grpc.insecure_channel(floor_address) as channel:
        learn_from = channel.unary_unary(floor_work.LEARN_FROM)
        setup = floor_work.learning_from(batches[0], K)
        messages = {producers: _floor_messages(batches, producers) for producers in (1, 4)}
        for turn in range(FLOOR_ROUNDS + 1):  # the first round warms up, untimed
            timed = {"kernel": _kernel(batches)}
            for producers in (1, 4):
                timed[f"floor {producers}"] = acked(messages[producers], DEFAULT_WINDOW)
                learn_from(setup)  # a new model, untimed as the SDK's setup stream is
                timed[f"learning {producers}"] = learned(messages[producers], DEFAULT_WINDOW)
                timed[f"ours {producers}"] = _stream(address, f"bench-floor-{producers}-{turn}", batches, producers)[0]
                timed[f"server {producers}"] = _from_floor_client(
                    raw, address, f"bench-raw-{producers}-{turn}", batches, messages[producers])
                timed[f"shared {producers}"] = _stream(
                    address, f"bench-shared-{producers}-{turn}", batches, producers, shared_memory=True)[0]
            if turn:
                for name, seconds in timed.items():
                    runs.setdefault(name, []).append(seconds)
    median = {name: statistics.median(seconds) for name, seconds in runs.items()}
    kernel = median["kernel"]
    rows, facts = [], {"stream_kernel_ms": kernel * 1e3}
    for producers in (1, 4):
        ours, floor, learning, server, shared = (
            median[f"{way} {producers}"] for way in ("ours", "floor", "learning", "server", "shared"))
        rows.append(Row(
            f"stream ingest {len(batches) - 1} batches, {producers} producer(s), against floor + kernel",
            ours, "acked grpc stream + partial_fit in process", floor + kernel,
            extra={"floor_s": floor, "kernel_s": kernel},
        ))
        rows.append(Row(
            f"stream ingest {len(batches) - 1} batches, {producers} producer(s), against the learning floor",
            ours, "acking handler applying partial_fit on a thread", learning,
        ))
        rows.append(Row(
            f"stream ingest {len(batches) - 1} batches, {producers} producer(s), the floor's client into our "
            "server, against the learning floor",
            server, "acking handler applying partial_fit on a thread", learning,
        ))
        rows.append(Row(
            f"stream ingest {len(batches) - 1} batches, {producers} producer(s), through shared memory, "
            "against floor + kernel",
            shared, "acked grpc stream + partial_fit in process", floor + kernel,
        ))
        facts[f"stream_{producers}p_sdk_over_floor_client"] = ours / server
        facts[f"stream_{producers}p_shared_over_learning_floor"] = shared / learning
        facts[f"stream_{producers}p_floor_ms"] = floor * 1e3
        facts[f"stream_{producers}p_learning_floor_ms"] = learning * 1e3
        facts[f"stream_{producers}p_over_floor_and_kernel"] = ours / (floor + kernel)
        facts[f"stream_{producers}p_learning_floor_over_floor_and_kernel"] = learning / (floor + kernel)
    return rows, facts


def run() -> tuple[list[Row], dict[str, float]]:
    X = blobs(BATCH * N_BATCHES, D, K, np.float32, seed=5)
    X = X[np.random.default_rng(6).permutation(X.shape[0])]
    batches = [X[i * BATCH : (i + 1) * BATCH] for i in range(N_BATCHES)]
    streamed_points = BATCH * (N_BATCHES - 1)  # the first batch creates the model, untimed

    def reference_pass() -> tuple[float, MiniBatchKMeans]:
        model = MiniBatchKMeans(K, random_state=0, n_init=1)
        model.partial_fit(batches[0])
        began = time.perf_counter()
        for batch in batches[1:]:
            model.partial_fit(batch)
        return time.perf_counter() - began, model

    # The machine is shared: the median of a few passes, ours and the reference alternating.
    reference_times = []
    for _ in range(REPEATS):
        seconds, reference = reference_pass()
        reference_times.append(seconds)
    reference_s = statistics.median(reference_times)
    reference_inertia = _inertia(X, reference.cluster_centers_)

    rows: list[Row] = []
    facts: dict[str, float] = {}
    with served() as address:
        for producers in (1, 4):
            passes = [
                _stream(address, f"bench-stream-{producers}-{i}", batches, producers)
                for i in range(REPEATS)
            ]
            seconds = statistics.median(p[0] for p in passes)
            latencies = [latency for p in passes for latency in p[1]]
            name = f"bench-stream-{producers}-0"
            with Client(address) as client:
                centers = client.get_model(name, include_centers=True).centers
            assert centers is not None
            ratio = _inertia(X, centers) / reference_inertia
            # Throughput is compared as time for the same points: below 1 is faster.
            rows.append(
                Row(
                    f"stream ingest d={D} k={K} {BATCH}/batch, {producers} producer(s)",
                    seconds, "sklearn partial_fit", reference_s,
                    extra={
                        "points_per_s": streamed_points / seconds,
                        "reference_points_per_s": streamed_points / reference_s,
                        "inertia_ratio": ratio,
                    },
                )
            )
            facts[f"stream_{producers}p_points_per_s_millions"] = streamed_points / seconds / 1e6
            facts[f"stream_{producers}p_ack_p50_ms"] = 1e3 * float(np.percentile(latencies, 50))
            facts[f"stream_{producers}p_ack_p99_ms"] = 1e3 * float(np.percentile(latencies, 99))
            facts[f"stream_{producers}p_inertia_over_sklearn"] = ratio
        floor_rows, floor_facts = against_floor(address, batches)
    facts["sklearn_partial_fit_points_per_s_millions"] = streamed_points / reference_s / 1e6
    return rows + floor_rows, facts | floor_facts


if __name__ == "__main__":
    rows, facts = run()
    for row in rows:
        print(f"{row.name:<60} ours {row.ours_s:.3f}s  sklearn {row.reference_s:.3f}s  ratio {row.ratio:.2f}")
    for key, value in facts.items():
        print(f"{key:<44} {value:10.3f}")
