"""Replicas across hosts: three `centroidal serve --store postgresql://…` against one, on a
throwaway PostgreSQL the bench starts itself (tests/postgres.py; skipped without its
binaries), every process up at once, taking turns.

- The store's write latency, in process: a fit's commit and a streamed model's
  checkpoint, PostgreSQL against SQLite.
- From a fit's commit on replica A to its version being read on replica B: with NOTIFY,
  and with the poll alone (`--no-store-notify`, `--store-poll-interval` 2 s).
- Small Predicts (8x16, k=16) under h2load: one replica against three, each given a
  third of the streams.
- Stream ingest into one model from four producers: through three replicas (each
  producer sent to the owner) against one.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from centroidal.client import Client
from centroidal.server.snapshots import MINIBATCH_KMEANS, ModelSnapshot
from centroidal.server.store import SQLiteStore

from .replicas import CONNECTIONS, ROUNDS, STREAMS_PER_CONNECTION, grpc_body, h2load, ingest, serving, visible_after

WRITES = 200


@contextmanager
def _postgres() -> Iterator[str | None]:
    from tests.postgres import ThrowawayPostgres, server_binaries

    binaries = server_binaries()
    if binaries is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="centroidal-bench-postgres-"))
    try:
        server = ThrowawayPostgres(root, binaries)
        try:
            yield server.url
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _database(url: str, name: str) -> str:
    import psycopg

    from tests.postgres import with_database

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return with_database(url, name)


# ---- The store's writes, in process ------------------------------------------------------


def _write_latencies(store: object, writes: int = WRITES) -> tuple[float, float]:
    """Median ms of a fit's commit (64x16 centers) and of a checkpoint (with its state)."""
    rng = np.random.default_rng(0)
    fitted = ModelSnapshot("fitted", 0, rng.normal(size=(64, 16)).astype(np.float32), {"seed": 0}, 1.0, 10, 1000, 0.0, 0.0)
    streamed = replace(fitted, name="streamed", kind=MINIBATCH_KMEANS, state=rng.bytes(64 * 16 * 8 + 512))
    commits, checkpoints = [], []
    for index in range(writes):
        started = time.perf_counter()
        store.put(fitted, keep_versions=5)  # type: ignore[attr-defined]
        commits.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.checkpoint(replace(streamed, version=index + 1), {"p": index}, keep_versions=5)  # type: ignore[attr-defined]
        checkpoints.append(time.perf_counter() - started)
    return float(np.median(commits) * 1e3), float(np.median(checkpoints) * 1e3)


def _writes(url: str) -> tuple[list[str], dict[str, float]]:
    from centroidal.server.postgres import PostgresStore

    with tempfile.TemporaryDirectory() as scratch:
        sqlite = SQLiteStore(Path(scratch))
        try:
            lite = _write_latencies(sqlite)
        finally:
            sqlite.close()
    postgres = PostgresStore(_database(url, "bench_writes"), listen=False)
    try:
        pg = _write_latencies(postgres)
    finally:
        postgres.close()
    return ([f"store writes, median of {WRITES}: a fit's commit PostgreSQL {pg[0]:.2f} ms, SQLite {lite[0]:.2f} ms "
             f"({pg[0] / lite[0]:.2f}x); a checkpoint PostgreSQL {pg[1]:.2f} ms, SQLite {lite[1]:.2f} ms "
             f"({pg[1] / lite[1]:.2f}x)"],
            {"hosts_commit_ms_postgres": pg[0], "hosts_commit_ms_sqlite": lite[0],
             "hosts_checkpoint_ms_postgres": pg[1], "hosts_checkpoint_ms_sqlite": lite[1]})


# ---- Visibility ------------------------------------------------------------------------------


def _visibility(url: str) -> tuple[list[str], dict[str, float]]:
    lines, facts = [], {}
    for label, flags, fits in (("NOTIFY", (), 40), ("poll alone (2 s)", ("--no-store-notify",), 30)):
        store = _database(url, f"bench_visible_{len(facts)}")
        with serving(1, "--store", store, *flags) as a, serving(1, "--store", store, *flags) as b:
            p50, p99 = visible_after(a.target, b.target, fits, jitter=2.0 if flags else 0.05)
        lines.append(f"fit committed on replica A -> its version read on B, {label}: p50 {p50:.2f} ms, "
                     f"p99 {p99:.2f} ms ({fits} fits)")
        key = "notify" if not flags else "poll"
        facts.update({f"hosts_visible_{key}_p50_ms": p50, f"hosts_visible_{key}_p99_ms": p99})
    return lines, facts


# ---- Throughput: one replica against three ------------------------------------------------


def _throughput(url: str) -> tuple[list[str], dict[str, float]]:
    lines: list[str] = []
    facts: dict[str, float] = {}
    store = _database(url, "bench_throughput")
    with ExitStack() as stack:
        replicas = [stack.enter_context(serving(1, "--store", store)) for _ in range(3)]
        centers = np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)
        with Client(replicas[0].target) as client:
            client.fit("small", centers, n_clusters=16, seed=0)
        if shutil.which("h2load"):
            with tempfile.TemporaryDirectory() as scratch:
                body = Path(scratch) / "predict.grpc"
                body.write_bytes(grpc_body("small"))
                rounds: dict[int, list[tuple[float, float, float, int]]] = {1: [], 3: []}
                for _ in range(ROUNDS):
                    for count in (1, 3):
                        rounds[count].append(h2load(replicas[:count], body, Path(scratch)))
            one, three = ([float(np.median(column)) for column in zip(*rounds[count])] for count in (1, 3))
            lines.append(f"small Predicts (8x16, k=16) on PostgreSQL at {CONNECTIONS * STREAMS_PER_CONNECTION} streams, "
                         f"h2load, median of {ROUNDS} rounds")
            for label, found in (("1 replica", one), ("3 replicas", three)):
                lines.append(f"  {label:<11} {found[0]:8.0f} req/s   p99 {found[1]:6.2f} ms   "
                             f"{found[2]:5.3f} CPU s per 1,000   {found[3]:.0f} failed")
            lines.append(f"  3 replicas / 1: throughput {three[0] / one[0]:.2f}x, CPU per request {three[2] / one[2]:.2f}x "
                         "(three processes on this machine's cores)")
            facts.update({"hosts_predict_rps_1": one[0], "hosts_predict_rps_3": three[0],
                          "hosts_predict_throughput_ratio": three[0] / one[0],
                          "hosts_predict_cpu_ratio": three[2] / one[2]})
        else:
            lines.append("  (small Predicts skipped: h2load, from Debian's nghttp2-client, is needed)")
        rates: dict[int, list[float]] = {1: [], 3: []}
        for round_ in range(ROUNDS):
            for count in (1, 3):
                rates[count].append(ingest([group.target for group in replicas[:count]], f"ingest{count}_{round_}"))
        one_rate, three_rate = float(np.median(rates[1])), float(np.median(rates[3]))
        lines.append(f"stream ingest on PostgreSQL, 4 producers into one model: 1 replica {one_rate:,.0f} points/s, "
                     f"through 3 replicas {three_rate:,.0f} points/s: {three_rate / one_rate:.2f}x (target >= 0.9)")
        facts["hosts_ingest_ratio"] = three_rate / one_rate
    return lines, facts


def run() -> tuple[list[str], dict[str, float]]:
    lines = ["replicas across hosts: `serve --store postgresql://…`, three replicas against one"]
    facts: dict[str, float] = {}
    with _postgres() as url:
        if url is None:
            return [*lines, "  (skipped: no PostgreSQL server binaries; apt-get install postgresql)"], facts
        for part_lines, part_facts in (_writes(url), _visibility(url), _throughput(url)):
            lines += part_lines
            facts.update(part_facts)
    return lines, facts


if __name__ == "__main__":
    print("\n".join(run()[0]))
