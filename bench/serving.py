"""The server under many clients: small Predicts at 1, 8 and 64 clients, and Health and
Predict while 1,000 idle streams and 100 idle quantisations are open.

Each row runs against this tree's server and a baseline server (by default the
commit before the grpc.aio server, `BENCH_BASELINE` overrides it), each
`centroidal serve` in its own process, both up at once. The load comes from one
grpc.aio client process: N coroutines, each sending its next request when the
last one is answered. The two servers take turns, ROUNDS times per row, and each
figure is the median of its rounds, so that a noisy stretch of the shared
machine hits both alike.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from centroidal.client import Client
from centroidal.v1 import clustering_pb2 as pb

from .common import served

ROOT = Path(__file__).resolve().parents[1]
BASELINE = os.environ.get("BENCH_BASELINE", "a79f063")
LOAD_SECONDS = 2.0
ROUNDS = 5
CLIENTS = (1, 8, 64)
_PREDICT = "/centroidal.v1.ClusteringService/Predict"


@contextmanager
def _baseline_tree(ref: str) -> Iterator[str]:
    """The baseline commit laid out as an importable `centroidal` package; yields PYTHONPATH."""
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        package = Path(scratch) / "path" / "centroidal"
        shutil.copytree(tree / "protos" / "centroidal", package)
        # Every subpackage the tree has: one left out would be imported from this tree (the
        # editable install's finder), so the baseline would run today's code there.
        for part in ("engine", "server", "client", "codec", "sources", "partitioned"):
            if (tree / part).is_dir():
                shutil.copytree(tree / part, package / part)
        yield str(package.parent)


def _predict_request() -> bytes:
    points = np.random.default_rng(1).normal(size=(8, 16)).astype(np.float32)
    return pb.PredictRequest(model="small", points=pb.Matrix(
        dtype=pb.DTYPE_FLOAT32, rows=8, cols=16, data=points.tobytes()
    )).SerializeToString()


async def _load(address: str, clients: int, seconds: float) -> tuple[float, float, float, int]:
    """Requests per second, p50 and p99 latency in ms, and failed calls."""
    request = _predict_request()
    latencies: list[float] = []
    failures = 0
    async with grpc.aio.insecure_channel(address) as channel:
        predict = channel.unary_unary(_PREDICT, request_serializer=bytes, response_deserializer=bytes)
        await predict(request, timeout=10)
        stop = time.monotonic() + seconds

        async def one_client() -> None:
            nonlocal failures
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    await predict(request, timeout=10)
                except grpc.aio.AioRpcError:
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.monotonic() - began
    ms = np.array(latencies) * 1e3
    return len(latencies) / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), failures


async def _then_wait(first: object, release: asyncio.Event):  # type: ignore[no-untyped-def]
    yield first
    await release.wait()


async def _while_idle(address: str, streams: int, images: int, probes: int) -> dict[str, float]:
    """p99 of Health.Check and of a small Predict with idle calls open; failures counted."""
    release = asyncio.Event()
    request = _predict_request()
    result: dict[str, float] = {}
    async with grpc.aio.insecure_channel(address) as idle_channel, grpc.aio.insecure_channel(address) as channel:
        stub = idle_channel.stream_stream("/centroidal.v1.ClusteringService/StreamMiniBatch",
                                          request_serializer=bytes, response_deserializer=bytes)
        quantize = idle_channel.stream_stream("/centroidal.v1.ClusteringService/QuantizeImage",
                                              request_serializer=bytes, response_deserializer=bytes)
        opening = pb.MiniBatchRequest(open=pb.MiniBatchOpen(
            model="idle", create_if_missing=pb.MiniBatchConfig(n_clusters=4))).SerializeToString()
        spec = pb.QuantizeImageRequest(spec=pb.QuantizeSpec(n_colors=4)).SerializeToString()
        idle = [stub(_then_wait(opening, release)) for _ in range(streams)]
        idle += [quantize(_then_wait(spec, release)) for _ in range(images)]
        await asyncio.sleep(3.0)
        health = health_pb2_grpc.HealthStub(channel)
        predict = channel.unary_unary(_PREDICT, request_serializer=bytes, response_deserializer=bytes)
        for name, call in (("health", lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=2)),
                           ("predict", lambda: predict(request, timeout=2))):
            latencies, failed = [], 0
            for _ in range(probes):
                started = time.perf_counter()
                try:
                    await call()
                    latencies.append(time.perf_counter() - started)
                except grpc.aio.AioRpcError:
                    failed += 1
            result[f"{name}_p99_ms"] = float(np.percentile(np.array(latencies) * 1e3, 99)) if latencies else float("nan")
            result[f"{name}_failed"] = failed
        release.set()
        for call in idle:
            call.cancel()
    return result


def _median_load(address: str, clients: int, rounds: list[tuple[float, float, float, int]]) -> None:
    rounds.append(asyncio.run(_load(address, clients, LOAD_SECONDS)))


def _medians(rounds: list[tuple[float, float, float, int]]) -> tuple[float, float, float, int]:
    columns = list(zip(*rounds))
    return (float(np.median(columns[0])), float(np.median(columns[1])), float(np.median(columns[2])),
            int(sum(columns[3])))


def run() -> tuple[list[str], dict[str, float]]:
    """Lines of the table, and the facts for results/latest.json."""
    X = np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)
    with _baseline_tree(BASELINE) as path, served(path) as old, served() as new:
        for address in (old, new):
            with Client(address) as client:
                client.fit("small", X, 16, seed=0)
        before: dict[str, object] = {"loads": {}}
        after: dict[str, object] = {"loads": {}}
        for clients in CLIENTS:
            rounds: dict[str, list[tuple[float, float, float, int]]] = {old: [], new: []}
            for _ in range(ROUNDS):
                for address in (old, new):
                    _median_load(address, clients, rounds[address])
            before["loads"][clients] = _medians(rounds[old])  # type: ignore[index]
            after["loads"][clients] = _medians(rounds[new])  # type: ignore[index]
        # Idle calls last: the old server may not recover from them.
        after["idle"] = asyncio.run(_while_idle(new, 1000, 100, 200))
        before["idle"] = asyncio.run(_while_idle(old, 1000, 100, 200))
    lines = [f"small Predicts (8x16, k=16), this tree against {BASELINE}, medians of {ROUNDS} "
             f"alternating rounds of {LOAD_SECONDS:g} s:",
             "| clients | ours req/s | p50 ms | p99 ms | baseline req/s | p50 ms | p99 ms | throughput ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    facts: dict[str, float] = {}
    for clients in CLIENTS:
        ours, base = after["loads"][clients], before["loads"][clients]  # type: ignore[index]
        lines.append(
            f"| {clients} | {ours[0]:.0f} | {ours[1]:.2f} | {ours[2]:.2f} | {base[0]:.0f} | {base[1]:.2f} | "
            f"{base[2]:.2f} | {ours[0] / base[0]:.2f} |"
        )
        facts[f"predict_rps_{clients}_clients"] = ours[0]
        facts[f"predict_rps_{clients}_clients_baseline"] = base[0]
        facts[f"predict_p99_ms_{clients}_clients"] = ours[2]
        facts[f"predict_p99_ms_{clients}_clients_baseline"] = base[2]
    lines.append("with 1,000 idle StreamMiniBatch and 100 idle QuantizeImage calls open, 200 probes each:")
    for name, result in (("ours", after["idle"]), ("baseline", before["idle"])):
        lines.append(
            f"  {name:<9} Health.Check p99 {result['health_p99_ms']:.2f} ms ({result['health_failed']:.0f} "  # type: ignore[index]
            f"failed), Predict p99 {result['predict_p99_ms']:.2f} ms ({result['predict_failed']:.0f} failed)"  # type: ignore[index]
        )
        for key, value in result.items():  # type: ignore[union-attr]
            facts[f"idle_{name}_{key}"] = value
    return lines, facts


if __name__ == "__main__":
    table, _ = run()
    print("\n".join(table))
