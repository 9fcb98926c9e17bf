"""StreamMiniBatch ingest through the SDK against scikit-learn's partial_fit in process.

The server runs as a `centroidal serve` subprocess, as it would in production,
so the producers and the server do not share one interpreter. Both sides see
the same 8192-point float32 batches in the same order.
"""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np
from sklearn.cluster import MiniBatchKMeans

from centroidal.client import Client
from centroidal.engine import kmeans

from .common import Row, served
from .engine import blobs

D, K, BATCH, N_BATCHES = 16, 64, 8192, 160
REPEATS = 3


def _inertia(X: np.ndarray, centers: np.ndarray) -> float:
    _, distances = kmeans.predict(X, centers.astype(X.dtype), return_distance=True)
    return float(np.square(distances.astype(np.float64)).sum())


def _stream(address: str, name: str, batches: list[np.ndarray], producers: int) -> tuple[float, list[float]]:
    """Seconds to send every batch with ``producers`` threads (batch i goes to producer i mod p),
    through close(), and the ack latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    with Client(address) as client:
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

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
    return seconds, latencies


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
    facts["sklearn_partial_fit_points_per_s_millions"] = streamed_points / reference_s / 1e6
    return rows, facts


if __name__ == "__main__":
    rows, facts = run()
    for row in rows:
        print(f"{row.name:<60} ours {row.ours_s:.3f}s  sklearn {row.reference_s:.3f}s  ratio {row.ratio:.2f}")
    for key, value in facts.items():
        print(f"{key:<44} {value:10.3f}")
