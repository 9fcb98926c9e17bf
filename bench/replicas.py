"""Replicas: `serve --workers 2` against `--workers 1`, both up at once, taking turns.

- Small Predicts (8x16 float32, k=16) at 64 concurrent streams, driven by h2load (Debian's
  nghttp2-client) with a prepared gRPC body, so that the load generator leaves the cores
  to the server (a Python client costs about as much CPU per call as the server). Each
  figure is the median of its rounds: throughput, p99, and the server's CPU seconds (the
  supervisor's and every worker's) per 1,000 requests.
- The time from a fit's commit on one worker to its version being read on another.
- Stream ingest into one model from four producers, each on a connection of its own.
- The failover: kill -9 of a stream's owner, to the first batch the new owner applies.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from centroidal.client import Client
from centroidal.client.results import BatchAck
from centroidal.v1 import clustering_pb2 as pb

ROUNDS = 3
LOAD_SECONDS = 5.0
# 64 streams: 8 connections (spread over the workers by the kernel) of 8 streams each.
CONNECTIONS, STREAMS_PER_CONNECTION = 32, 2
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
_PREDICT = "/centroidal.v1.ClusteringService/Predict"


@dataclass
class Group:
    """A `centroidal serve --workers N` and what its log told."""

    workers: int
    data_dir: Path
    process: subprocess.Popen[str]
    port: int
    own: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU the supervisor and its workers used so far (a lone server: itself)."""
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        if children.exists():
            pids += [int(pid) for pid in children.read_text().split()]
        ticks = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def owner_pid(self, model: str) -> int:
        with sqlite3.connect(self.data_dir / "models.sqlite3") as db:
            (owner,) = db.execute("SELECT owner FROM leases WHERE name = ?", (model,)).fetchone()
        return int(owner.split("/")[1])


@contextmanager
def serving(workers: int, *flags: str) -> Iterator[Group]:
    """`centroidal serve --workers N` with ``flags``, warmed up, until the block ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "data"
        process = subprocess.Popen(
            [sys.executable, "-m", "centroidal.client.cli", "serve", "--workers", str(workers),
             "--port", str(port), "--data-dir", str(data_dir), "--warmup-before-serving", *flags],
            stderr=subprocess.PIPE, text=True,
        )
        group = Group(workers, data_dir, process, port)
        assert process.stderr is not None
        ready = 0
        for line in process.stderr:
            found = re.search(r"worker \d+ listening on \S+ \(its own address (\S+)\)", line)
            if found:
                group.own.append(found.group(1))
            if found or "centroidal listening on" in line:
                ready += 1
                if ready == workers:
                    break
        else:
            raise RuntimeError(f"--workers {workers} exited before serving")
        threading.Thread(target=process.stderr.read, daemon=True).start()
        try:
            yield group
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(120)


# ---- Small Predicts under h2load ---------------------------------------------------------


def grpc_body(model: str) -> bytes:
    """A gRPC message as it travels: a 0 byte, the big-endian length, the PredictRequest."""
    points = np.random.default_rng(1).normal(size=(8, 16)).astype(np.float32)
    message = pb.PredictRequest(model=model, points=pb.Matrix(
        dtype=pb.DTYPE_FLOAT32, rows=8, cols=16, data=points.tobytes())).SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_status(target: str, body: Path) -> str:
    """grpc-status of one Predict sent as h2load sends it, read by curl from the trailers."""
    answer = subprocess.run(
        ["curl", "-sv", "--http2-prior-knowledge", "-o", "/dev/null", "--data-binary", f"@{body}",
         "-H", "content-type: application/grpc", "-H", "te: trailers", f"http://{target}{_PREDICT}"],
        capture_output=True, text=True, timeout=30,
    )
    found = re.search(r"grpc-status: (\d+)", answer.stderr)
    return found.group(1) if found else "none"


def h2load(groups: list[Group], body: Path, scratch: Path) -> tuple[float, float, float, int]:
    """Requests per second, p99 in ms, CPU seconds per 1,000 requests and failed requests,
    with the 64 streams split evenly over ``groups`` (one h2load each, all at once)."""
    before = sum(group.cpu_seconds() for group in groups)
    runs = [subprocess.Popen(
        ["h2load", "-c", str(CONNECTIONS // len(groups)), "-m", str(STREAMS_PER_CONNECTION),
         "-D", f"{LOAD_SECONDS:g}", "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"--log-file={scratch / f'latencies{index}.tsv'}", f"http://{group.target}{_PREDICT}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) for index, group in enumerate(groups)]
    outputs = [run.communicate(timeout=LOAD_SECONDS * 6) for run in runs]
    cpu = sum(group.cpu_seconds() for group in groups) - before
    rate = succeeded = failed = 0.0
    for stdout, stderr in outputs:
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", stdout)
        speed = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", stdout)
        if done is None or speed is None:
            raise RuntimeError(f"h2load said:\n{stdout}\n{stderr}")
        rate += float(speed.group(2))
        succeeded += int(done.group(2))
        failed += int(done.group(3))
    durations = np.concatenate([np.loadtxt(scratch / f"latencies{index}.tsv", usecols=2, ndmin=1)
                                for index in range(len(groups))]) / 1e3  # microseconds
    return rate, float(np.percentile(durations, 99)), 1000 * cpu / max(succeeded, 1), int(failed)


def _small_predicts(one: Group, two: Group, apart: Group) -> tuple[list[str], dict[str, float]]:
    """--workers 1, --workers 2, and (for reference) two single servers on ports of their own,
    each given half the streams: what two processes reach here without any replica protocol."""
    centers = np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)
    for group in (one, two, apart):
        with Client(group.target) as client:
            client.fit("small", centers, n_clusters=16, seed=0)
    setups = {"--workers 1": [one], "--workers 2": [two], "2 single servers": [one, apart]}
    with tempfile.TemporaryDirectory() as scratch:
        body = Path(scratch) / "predict.grpc"
        body.write_bytes(grpc_body("small"))
        statuses = {grpc_status(group.target, body) for group in (one, two)}
        rounds: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in setups}
        for _ in range(ROUNDS):
            for name, groups in setups.items():
                rounds[name].append(h2load(groups, body, Path(scratch)))
    medians = {name: [float(np.median(column)) for column in zip(*found)] for name, found in rounds.items()}
    lines = [f"small Predicts (8x16, k=16) at {CONNECTIONS * STREAMS_PER_CONNECTION} streams, h2load, "
             f"median of {ROUNDS} rounds of {LOAD_SECONDS:g} s (grpc-status of a probe: {', '.join(sorted(statuses))})"]
    for name in setups:
        rate, p99, cpu, failed = medians[name]
        lines.append(f"  {name:<17} {rate:8.0f} req/s   p99 {p99:6.2f} ms   "
                     f"{cpu:5.3f} CPU s per 1,000   {failed:.0f} failed")
    one_worker, two_workers, apart_servers = (medians[name] for name in setups)
    throughput = two_workers[0] / one_worker[0]
    cpu_ratio = two_workers[2] / one_worker[2]
    lines.append(f"  2 workers / 1: throughput {throughput:.2f}x (target >= 1.4), CPU per request "
                 f"{cpu_ratio:.2f}x (target <= 1.1); 2 workers / 2 single servers: throughput "
                 f"{two_workers[0] / apart_servers[0]:.2f}x, CPU per request {two_workers[2] / apart_servers[2]:.2f}x")
    facts = {"replicas_predict_rps_w1": one_worker[0], "replicas_predict_rps_w2": two_workers[0],
             "replicas_predict_throughput_ratio": throughput, "replicas_predict_cpu_ratio": cpu_ratio,
             "replicas_predict_vs_apart": two_workers[0] / apart_servers[0]}
    return lines, facts


# ---- Visibility, ingest, failover -----------------------------------------------------------


def visible_after(writer: str, reader: str, fits: int, jitter: float = 0.0) -> tuple[float, float]:
    """p50 and p99 ms from a fit's answer on ``writer`` (sent after its commit) to ``reader``
    reading that version; one GetModel takes part of it. The reader fits the model first,
    so that it holds it (a name it has not heard of is read from the store at once). Each
    fit starts a random 0-``jitter`` s after the last was seen, so that it lands anywhere
    in the reader's poll."""
    points = np.random.default_rng(2).normal(size=(200, 4))
    pauses = np.random.default_rng(5).uniform(0, jitter, size=fits)
    waits = []
    with Client(writer, options=OWN_CONNECTION) as on_a, Client(reader, options=OWN_CONNECTION) as on_b:
        on_b.fit("seen", points, n_clusters=2, seed=0, max_iter=5)
        for index in range(fits):
            time.sleep(pauses[index])
            version = on_a.fit("seen", points, n_clusters=2, seed=index, max_iter=5).version
            committed = time.perf_counter()
            while on_b.get_model("seen").version != version:
                pass
            waits.append(time.perf_counter() - committed)
    ms = np.array(waits) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _visibility(two: Group, fits: int = 40) -> tuple[list[str], dict[str, float]]:
    """From a fit's answer on worker 0 to worker 1 reading that version."""
    p50, p99 = visible_after(two.own[0], two.own[1], fits)
    return ([f"fit committed on worker 0 -> its version read on worker 1: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
             f"({fits} fits; one GetModel takes part of it)"],
            {"replicas_visible_p50_ms": p50, "replicas_visible_p99_ms": p99})


def ingest(targets: list[str], model: str, batches: int = 40, rows: int = 1000) -> float:
    """Points a second from four producers, each on a connection of its own, into one model;
    producer i starts at ``targets[i % len(targets)]`` (and is sent on to the owner)."""
    data = np.random.default_rng(3).normal(size=(4, batches, rows, 16)).astype(np.float32)

    def produce(index: int) -> None:
        with Client(targets[index % len(targets)], options=OWN_CONNECTION) as client:
            with client.stream(model, n_clusters=16, producer_id=f"p{index}", seed=0) as stream:
                for batch in data[index]:
                    stream.send(batch)

    threads = [threading.Thread(target=produce, args=(index,)) for index in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return data.shape[0] * batches * rows / (time.perf_counter() - started)


def _ingests(one: Group, two: Group) -> tuple[list[str], dict[str, float]]:
    rates: dict[int, list[float]] = {1: [], 2: []}
    for round_ in range(ROUNDS):
        for group in (one, two):
            rates[group.workers].append(ingest([group.target], f"ingest{round_}"))
    w1, w2 = float(np.median(rates[1])), float(np.median(rates[2]))
    return ([f"stream ingest, 4 producers into one model: --workers 1 {w1:,.0f} points/s, --workers 2 "
             f"{w2:,.0f} points/s: {w2 / w1:.2f}x (target >= 0.9)"],
            {"replicas_ingest_ratio": w2 / w1})


def _failover(two: Group, trials: int = 3) -> tuple[list[str], dict[str, float]]:
    """kill -9 of the owner mid-stream, to the first ack from the one that took over."""
    waits = []
    batch = np.random.default_rng(4).normal(size=(200, 16)).astype(np.float32)
    for trial in range(trials):
        acks: list[float] = []

        def acked(ack: BatchAck) -> None:
            acks.append(time.perf_counter())

        with Client(two.target, options=OWN_CONNECTION) as client:
            with client.stream(f"failover{trial}", n_clusters=8, producer_id="p", seed=0, on_ack=acked,
                               reconnect_timeout=120) as stream:
                for _ in range(50):
                    stream.send(batch)
                stream.flush()
                killed = time.perf_counter()
                os.kill(two.owner_pid(f"failover{trial}"), signal.SIGKILL)
                for _ in range(50):
                    stream.send(batch)
                stream.flush()
        waits.append(min(at for at in acks if at > killed) - killed)
        time.sleep(3.0)  # the supervisor starts the killed worker again
    ms = np.array(waits) * 1e3
    return ([f"failover: kill -9 of a stream's owner -> first batch applied by the next owner: median "
             f"{np.median(ms):.0f} ms, worst {ms.max():.0f} ms ({trials} trials)"],
            {"replicas_failover_ms": float(np.median(ms))})


def run() -> tuple[list[str], dict[str, float]]:
    lines = ["replicas: serve --workers 2 against --workers 1, both up at once, taking turns"]
    facts: dict[str, float] = {}
    with serving(1) as one, serving(2) as two, serving(1) as apart:
        parts = [_visibility(two), _ingests(one, two), _failover(two)]
        if shutil.which("h2load") and shutil.which("curl"):
            parts.insert(0, _small_predicts(one, two, apart))
        else:
            lines.append("  (small Predicts skipped: h2load, from Debian's nghttp2-client, and curl are needed)")
        for part_lines, part_facts in parts:
            lines += part_lines
            facts.update(part_facts)
    return lines, facts


if __name__ == "__main__":
    print("\n".join(run()[0]))
