"""`make soak`: a bounded mixed load on one `centroidal serve` over loopback.

For ``--seconds`` (60 by default) these run at once against a fresh server, once it has
compiled its kernels:
- 8 producers streaming mini-batches into 2 models;
- 8 clients calling Predict on a fitted model;
- a loop refitting a model;
- a loop of ListModels and GetModel;
- a client that opens a stream, sends a few batches and drops the connection mid-stream,
  every 2 seconds.

It prints the calls made, the errors by status code, p50 and p99 latency per kind, and
the server's resident memory after warm-up and at the end. It exits 1 unless there was
no error and the memory grew by less than 10% after warm-up; a SIGTERM at the end must
then exit 0, with everything acknowledged stored.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from centroidal.client import CentroidalError, Client

from .common import warm_address

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
WARMUP_SHARE = 0.25  # memory is measured from here on
RSS_GROWTH_LIMIT = 0.10
FEATURES = 8


class Tally:
    """Calls, errors by code and latencies per kind of call; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.latency: dict[str, list[float]] = defaultdict(list)

    def time(self, kind: str, call: object) -> object:
        started = time.perf_counter()
        try:
            result = call()  # type: ignore[operator]
        except CentroidalError as error:
            with self.lock:
                self.calls[kind] += 1
                self.errors[f"{kind} {error.code.name}"] += 1
                self.examples.setdefault(f"{kind} {error.code.name}", error.message[:200])
            return None
        with self.lock:
            self.calls[kind] += 1
            self.latency[kind].append(time.perf_counter() - started)
        return result


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def producer(target: str, index: int, stop: threading.Event, tally: Tally) -> None:
    rng = np.random.default_rng(index)
    with Client(target, timeout=30) as client:
        stream = client.stream(f"soak-stream-{index % 2}", n_clusters=16, seed=1, producer_id=f"p{index}")
        while not stop.is_set():
            batch = rng.normal(size=(500, FEATURES)).astype(np.float32)
            tally.time("stream batch", lambda: (stream.send(batch, timeout=30), stream.flush(timeout=30)))
        tally.time("stream close", lambda: stream.close(timeout=60))


def predictor(target: str, index: int, stop: threading.Event, tally: Tally) -> None:
    points = np.random.default_rng(100 + index).normal(size=(100, FEATURES)).astype(np.float32)
    with Client(target, timeout=30) as client:
        while not stop.is_set():
            tally.time("predict", lambda: client.predict("soak-fit", points))


def refitter(target: str, stop: threading.Event, tally: Tally) -> None:
    rng = np.random.default_rng(7)
    with Client(target, timeout=120) as client:
        while not stop.is_set():
            data = rng.normal(size=(20_000, FEATURES)).astype(np.float32)
            tally.time("refit", lambda: client.fit("soak-refit", data, 16, n_init=1, max_iter=20))


def browser(target: str, stop: threading.Event, tally: Tally) -> None:
    with Client(target, timeout=30) as client:
        while not stop.is_set():
            tally.time("list", client.list_models)
            tally.time("get", lambda: client.get_model("soak-fit", include_centers=True))
            time.sleep(0.05)


def dropper(target: str, stop: threading.Event, tally: Tally) -> None:
    """Opens a stream, sends, and drops the connection mid-stream, every 2 s."""
    rng = np.random.default_rng(99)
    round_ = 0
    while not stop.wait(2.0):
        round_ += 1
        client = Client(target, timeout=30)
        stream = client.stream("soak-dropped", n_clusters=4, seed=1, producer_id=f"d{round_}")
        for _ in range(3):
            stream.send(rng.normal(size=(200, FEATURES)).astype(np.float32))
        stream.abort()
        client.close()
        with tally.lock:
            tally.calls["dropped stream"] += 1


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as data_dir:
        server = subprocess.Popen(
            [sys.executable, "-m", "centroidal.client.cli", "serve", "--port", "0", "--data-dir", data_dir],
            stderr=subprocess.PIPE, text=True,
        )
        assert server.stderr is not None
        log: list[str] = []
        # The load starts once the server has compiled (or loaded) every kernel: memory a
        # background compilation takes during the run is not the server's growth.
        target = warm_address(server.stderr, log)
        if target is None:
            print("".join(log), file=sys.stderr)
            return 1
        drain = threading.Thread(target=lambda: log.extend(server.stderr), daemon=True)  # type: ignore[arg-type]
        drain.start()
        try:
            return run(target, server, args.seconds, log)
        finally:
            if server.poll() is None:
                server.kill()


def run(target: str, server: subprocess.Popen[str], seconds: float, log: list[str]) -> int:
    with Client(target, timeout=60) as client:
        client.fit("soak-fit", np.random.default_rng(0).normal(size=(50_000, FEATURES)).astype(np.float32), 32)
    tally, stop = Tally(), threading.Event()
    workers = [threading.Thread(target=producer, args=(target, i, stop, tally)) for i in range(8)]
    workers += [threading.Thread(target=predictor, args=(target, i, stop, tally)) for i in range(8)]
    workers += [threading.Thread(target=task, args=(target, stop, tally)) for task in (refitter, browser, dropper)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    time.sleep(seconds * WARMUP_SHARE)
    rss_warm = rss_bytes(server.pid)
    samples = [rss_warm]
    while time.monotonic() - started < seconds:
        time.sleep(1.0)
        samples.append(rss_bytes(server.pid))
    stop.set()
    for worker in workers:
        worker.join(120)
    rss_end = rss_bytes(server.pid)
    elapsed = time.monotonic() - started
    server.send_signal(signal.SIGTERM)
    exit_code = server.wait(120)
    growth = rss_end / rss_warm - 1

    print(f"soak: {elapsed:.0f} s against {target} ({os.cpu_count()} cores)")
    print(f"{'calls':>16} {'count':>8} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in sorted(tally.calls):
        errors = sum(n for key, n in tally.errors.items() if key.startswith(kind + " "))
        latencies = tally.latency.get(kind, [])
        print(f"{kind:>16} {tally.calls[kind]:>8} {errors:>7} "
              f"{percentile(latencies, 0.5) * 1e3:>8.1f} {percentile(latencies, 0.99) * 1e3:>8.1f}")
    for key, count in sorted(tally.errors.items()):
        print(f"  error {key}: {count} (e.g. {tally.examples[key]})")
    print(f"server RSS: {rss_warm / 2**20:.0f} MiB after warm-up, {max(samples) / 2**20:.0f} MiB at most, "
          f"{rss_end / 2**20:.0f} MiB at the end: {growth:+.1%} (limit +{RSS_GROWTH_LIMIT:.0%})")
    print(f"SIGTERM: exit {exit_code}")
    record = {
        "seconds": elapsed, "calls": dict(tally.calls), "errors": dict(tally.errors),
        "p50_ms": {k: percentile(v, 0.5) * 1e3 for k, v in tally.latency.items()},
        "p99_ms": {k: percentile(v, 0.99) * 1e3 for k, v in tally.latency.items()},
        "rss_warm": rss_warm, "rss_end": rss_end, "rss_max": max(samples), "rss_growth": growth,
        "exit_code": exit_code,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    failed = bool(tally.errors) or growth >= RSS_GROWTH_LIMIT or exit_code != 0
    if exit_code != 0:
        print("".join(log[-20:]), file=sys.stderr)
    print("soak: " + ("FAILED" if failed else "passed: no errors, memory flat, clean stop"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
