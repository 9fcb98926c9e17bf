"""The service's heavy paths on this tree's server and on the baseline server, in one run.

Fit, Predict, StreamMiniBatch (1 and 4 producers) and QuantizeImage go through
today's SDK to each server, a `centroidal serve` of its own (the baseline from
`BENCH_BASELINE`, as in bench.serving); the two take turns, ROUNDS times, the one that
goes first changing each round, and each figure is the median of its rounds. A ratio
below 1 means this tree is faster. A stream's row times its producers, from when every
one has opened its stream until the last has closed it (bench.streaming's measure); the
whole call, which first connects and creates the model with one batch (k-means++ seeding
and a checkpoint), is its own row. Then, on each server, small Predicts are timed while a
large fit runs: a fit must not hold them up by more than one kernel call.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

import numpy as np

from centroidal.client import Client

from .common import served
from .engine import blobs
from .images import _photo
from .serving import BASELINE, _baseline_tree
from .streaming import BATCH, K, N_BATCHES, _stream

# The stream rows moved from 0.94 to 1.47 between runs of 5 rounds; a round costs about a
# second, so the medians take 15.
ROUNDS = 15


# A workload returns the seconds to report, or None for its whole wall time.
Workload = Callable[[], float | None]
WHOLE_STREAM = " (whole call: connect, create the model, then the producers)"


def _workloads(address: str, tag: str) -> dict[str, Workload]:
    X = blobs(200_000, 16, 64, np.float32, seed=2)
    big = blobs(1_000_000, 16, 64, np.float32, seed=3)
    stream_data = blobs(BATCH * N_BATCHES // 2, 16, K, np.float32, seed=5)
    batches = [stream_data[i * BATCH : (i + 1) * BATCH] for i in range(N_BATCHES // 2)]
    photo = _photo("china.jpg")
    counter = iter(range(1_000_000))
    client = Client(address)
    client.fit("predict-model", X[:50_000], 64, seed=0, max_iter=5)
    return {
        "fit 2e5x16 k=64 (seed 0, 20 iterations)": lambda: _whole(client.fit(
            f"fit-{tag}-{next(counter)}", X, 64, seed=0, max_iter=20, tol=0
        )),
        "predict 1e6x16 k=64": lambda: _whole(client.predict("predict-model", big)),
        "stream 79 batches of 8192x16, 1 producer": lambda: _stream(
            address, f"s1-{tag}-{next(counter)}", batches, 1
        )[0],
        "stream 79 batches of 8192x16, 4 producers": lambda: _stream(
            address, f"s4-{tag}-{next(counter)}", batches, 4
        )[0],
        "quantize china.jpg to 16 colours": lambda: _whole(client.quantize_image(photo, 16, seed=0)),
    }


def _whole(answer: object) -> None:
    """A workload timed whole: its answer is not needed."""


def _timed(work: Workload) -> tuple[float, float]:
    """The seconds ``work`` reports (its wall time when it reports none), and its wall time."""
    began = time.perf_counter()
    reported = work()
    wall = time.perf_counter() - began
    return (wall if reported is None else reported), wall


def _predicts_during_fit(address: str) -> tuple[float, float]:
    """p99 of small Predicts (ms) with nothing else running, then while a 1e6x16 k=64 fit runs."""
    X = blobs(1_000_000, 16, 64, np.float32, seed=7)
    small = X[:8]
    with Client(address) as client:
        client.fit("probe-model", X[:2000], 16, seed=0)

        def probe(seconds: float) -> float:
            latencies = []
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                began = time.perf_counter()
                client.predict("probe-model", small)
                latencies.append(time.perf_counter() - began)
            return float(np.percentile(np.array(latencies) * 1e3, 99))

        quiet = probe(2.0)
        fitting = threading.Thread(
            target=lambda: Client(address).fit("busy", X, 64, seed=0, max_iter=30, tol=0)
        )
        fitting.start()
        time.sleep(1.0)  # the upload is over and the fit iterating
        busy = probe(3.0)
        fitting.join()
    return quiet, busy


def run() -> tuple[list[str], dict[str, float]]:
    with _baseline_tree(BASELINE) as path, served(path) as old, served() as new:
        ours, theirs = _workloads(new, "new"), _workloads(old, "old")
        names = list(ours) + [name + WHOLE_STREAM for name in ours if name.startswith("stream")]
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
        for turn in range(ROUNDS):
            for name in ours:
                # Whoever goes second meets what the first left running (a checkpoint, a
                # pool's threads still spinning): each goes first every other round.
                for side in ((1, 0) if turn % 2 == 0 else (0, 1)):
                    reported, wall = _timed((ours, theirs)[side][name])
                    times[name][side].append(reported)
                    if name.startswith("stream"):
                        times[name + WHOLE_STREAM][side].append(wall)
        during = {"ours": _predicts_during_fit(new), "baseline": _predicts_during_fit(old)}
    lines = [f"whole-service paths, this tree against {BASELINE}, medians of {ROUNDS} alternating rounds:",
             "| path | ours | baseline | ratio |", "| --- | --- | --- | --- |"]
    facts: dict[str, float] = {}
    for name, (new_times, old_times) in times.items():
        mine, base = statistics.median(new_times), statistics.median(old_times)
        lines.append(f"| {name} | {mine * 1e3:.0f} ms | {base * 1e3:.0f} ms | {mine / base:.2f} |")
        facts[f"regression {name}"] = mine / base
    for name, (quiet, busy) in during.items():
        lines.append(f"  {name:<9} small Predict p99 {quiet:.2f} ms alone, {busy:.2f} ms while a 1e6x16 k=64 fit runs")
        facts[f"predict_p99_ms_alone_{name}"] = quiet
        facts[f"predict_p99_ms_during_fit_{name}"] = busy
    return lines, facts


if __name__ == "__main__":
    table, _ = run()
    print("\n".join(table))
