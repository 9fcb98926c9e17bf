"""`centroidal serve --workers N`: real processes on loopback sharing one store.

Each test starts a supervisor and its workers as `centroidal serve` would, and reaches
them as users do: through the shared port, on new connections (gRPC shares one connection
between channels of a process unless told otherwise, so each client here asks for its
own, which the kernel hands to any worker), or through a worker's own address.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from centroidal.client import Client
from centroidal.client.errors import Aborted, NotFound
from tests.server.conftest import Pki

# A connection of its own for each client (see the module's docstring).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
START_WAIT_S = 120.0


def free_port(run: int = 1) -> int:
    """The first of ``run`` consecutive ports free on loopback, below the kernel's ephemeral
    range, which every client connection's own port comes from: a port picked there can be
    taken by one before the server binds it (a worker's metrics port, P + 1 + i, was)."""
    low, _ = (int(bound) for bound in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    rng = random.Random()
    for _ in range(1000):
        base = rng.randrange(10_000, low - run)
        with contextlib.ExitStack() as probes:
            try:
                for port in range(base, base + run):
                    probe = probes.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise RuntimeError(f"no {run} free ports in a row below {low}")


class Replicas:
    """A supervisor and its workers; its log is read as it runs."""

    def __init__(self, data_dir: Path, workers: int, *flags: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port(run=2 + workers)  # the supervisor's, then P + 1 + i for worker i
        self.data_dir = data_dir
        self.workers = workers
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "centroidal.client.cli", "serve", "--workers", str(workers),
             "--port", str(self.port), "--data-dir", str(data_dir), "--metrics-port", str(self.metrics_port),
             "--checkpoint-interval", "0.2", *flags],
            stderr=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        for index in range(workers):
            self.wait_for(rf"worker {index} listening on" if workers > 1 else "centroidal listening on")

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: str, after: int = 0, limit: float = START_WAIT_S) -> re.Match[str]:
        """The first log line from index ``after`` on that matches ``pattern``."""
        give_up = time.monotonic() + limit
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    found = re.search(pattern, line)
                    if found:
                        return found
                left = give_up - time.monotonic()
                assert left > 0 and self.process.poll() is None, f"no {pattern!r} in:\n{''.join(self.lines)}"
                self._changed.wait(min(left, 0.5))

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def own_addresses(self) -> list[str]:
        """Each worker's own address, as its latest start logged it."""
        addresses = {}
        for line in self.lines:
            found = re.search(r"worker (\d+) listening on \S+ \(its own address (\S+)\)", line)
            if found:
                addresses[int(found.group(1))] = found.group(2)
        return [addresses[index] for index in range(self.workers)]

    def client(self, target: str | None = None) -> Client:
        return Client(target or self.target, options=OWN_CONNECTION, timeout=60)

    def served_by_worker(self, method: str) -> dict[str, float]:
        """Calls of ``method`` each worker answered, from the supervisor's metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        counts: dict[str, float] = {}
        pattern = rf'centroidal_rpc_requests_total\{{code="OK",method="{method}",worker="(\d+)"\}} (\S+)'
        for worker, value in re.findall(pattern, text):
            counts[worker] = float(value)
        return counts

    def stream_owner_pid(self, model: str) -> int:
        with sqlite3.connect(self.data_dir / "models.sqlite3") as db:
            (owner,) = db.execute("SELECT owner FROM leases WHERE name = ?", (model,)).fetchone()
        return int(owner.split("/")[1])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)


@pytest.fixture
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replicas]:
    group = Replicas(tmp_path / "data", getattr(request, "param", 2))
    yield group
    if group.process.poll() is None:
        group.stop()
    # The supervisor's and its workers' log, which pytest shows with a failing test: an
    # INTERNAL answer carries only a request id, and its exception is logged here.
    sys.stderr.write("".join(group.lines))


BLOBS = np.random.default_rng(0).normal(size=(600, 3)) + np.repeat(np.eye(3) * 8, 200, axis=0)


@pytest.mark.parametrize("replicas", [2, 4], indirect=True)
def test_a_fit_through_one_connection_is_answered_alike_through_many(replicas: Replicas) -> None:
    with replicas.client() as client:
        fitted = client.fit("shared", BLOBS, n_clusters=3, seed=0, return_labels=True)
    answers, versions = set(), set()
    for _ in range(24):
        with replicas.client() as client:
            answers.add(client.predict("shared", BLOBS[::50]).tobytes())
            versions.add(client.get_model("shared").version)
            assert [model.name for model in client.list_models()] == ["shared"]
    assert answers == {fitted.labels[::50].astype(np.int32).tobytes()}
    assert versions == {fitted.version}
    assert len(replicas.served_by_worker("Predict")) >= 2  # more than one worker answered


def contend_for_one_name(connect: Callable[[int], Client]) -> None:
    """Four writers, writer i on ``connect(i)``, fit one name at once, half of their fits
    conditional on the version they just read: no version is given twice, none is skipped,
    and every conditional fit that lost says so on expected_version."""
    with connect(0) as client:
        client.fit("contested", BLOBS, n_clusters=3, seed=0)
    versions: list[int] = []
    conflicts: list[Aborted] = []
    start = threading.Barrier(4)

    def fit(seed: int) -> None:
        with connect(seed) as client:
            start.wait()
            for attempt in range(3):
                versions.append(client.fit("contested", BLOBS, n_clusters=3, seed=seed + attempt).version)
                try:  # conditional on the version it just saw: at most one such write wins
                    current = client.get_model("contested").version
                    versions.append(client.fit("contested", BLOBS, n_clusters=3, seed=seed,
                                               expected_version=current).version)
                except Aborted as conflict:
                    conflicts.append(conflict)

    threads = [threading.Thread(target=fit, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(versions) == len(set(versions)), "two fits were given one version"
    assert sorted(versions) == list(range(2, 2 + len(versions)))
    assert len(versions) + len(conflicts) == 24
    assert all(conflict.field == "expected_version" for conflict in conflicts)


def test_concurrent_fits_of_one_name_each_win_one_version(replicas: Replicas) -> None:
    contend_for_one_name(lambda _: replicas.client())


def test_a_delete_is_seen_by_every_worker(replicas: Replicas) -> None:
    with replicas.client() as client:
        client.fit("doomed", BLOBS, n_clusters=3, seed=0)
    with replicas.client() as client:
        assert client.delete_model("doomed") == 2
    for _ in range(16):
        with replicas.client() as client:
            with pytest.raises(NotFound):
                client.predict("doomed", BLOBS[:3])
    with replicas.client() as client:
        assert client.fit("doomed", BLOBS, n_clusters=3, seed=0).version == 3


def produce_from_four(connect: Callable[[int], Client], name: str) -> tuple[np.ndarray, list[int]]:
    """Four producers, producer i on ``connect(i)``, stream into one model at once: whichever
    opens first owns it, and the others are sent to it. Returns the points each sent
    (producer, batch, rows, features) and each stream's redirects."""
    points = np.random.default_rng(1).normal(size=(4, 30, 40, 3)).astype(np.float32)
    redirects: list[int] = []

    def produce(index: int) -> None:
        with connect(index) as client:
            with client.stream(name, n_clusters=4, producer_id=f"p{index}", seed=0, init_size=40) as stream:
                for batch in points[index]:
                    stream.send(batch)
            redirects.append(stream.redirects)

    threads = [threading.Thread(target=produce, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return points, redirects


def test_four_producers_through_different_workers_feed_one_model_once(replicas: Replicas) -> None:
    own = replicas.own_addresses()
    # Producers 0 and 2 start on worker 0's own port, 1 and 3 on worker 1's.
    points, redirects = produce_from_four(lambda index: replicas.client(own[index % 2]), "fed")
    assert len(redirects) == 4 and sum(redirects) >= 1
    with replicas.client() as client:
        model = client.get_model("fed")
    assert model.n_samples_seen == points.shape[0] * points.shape[1] * points.shape[2]


def stream_killing_the_owner(
    client: Client, owner_pid: Callable[[str], int], name: str, points: np.ndarray, kill_at: int | None = None,
) -> tuple[np.ndarray, int]:
    """Stream ``points`` batch by batch as one producer; kill -9 the model's owner (its pid
    from ``owner_pid``) after ``kill_at`` batches. Returns the final centers and the
    stream's reconnects."""
    with client.stream(name, n_clusters=5, producer_id="only", seed=3, init_size=100,
                       reconnect_timeout=120) as stream:
        for index, batch in enumerate(points):
            stream.send(batch)
            if index == kill_at:
                stream.flush()
                subprocess.run(["kill", "-9", str(owner_pid(name))], check=True)
    model = client.get_model(name, include_centers=True)
    assert model.n_samples_seen == points.shape[0] * points.shape[1]
    return model.centers, stream.reconnects


def _stream(replicas: Replicas, name: str, points: np.ndarray, kill_at: int | None = None) -> tuple[np.ndarray, int]:
    with replicas.client() as client:
        return stream_killing_the_owner(client, replicas.stream_owner_pid, name, points, kill_at)


def test_kill_9_of_the_owner_mid_stream_moves_the_stream_and_loses_nothing(replicas: Replicas) -> None:
    points = np.random.default_rng(2).normal(size=(120, 50, 3)).astype(np.float32)
    calm, _ = _stream(replicas, "calm", points)
    seen = len(replicas.lines)
    killed, reconnects = _stream(replicas, "killed", points, kill_at=60)
    assert reconnects >= 1
    replicas.wait_for(r"worker \d+ \(pid \d+\) died after .* \(signal SIGKILL\); its 1 stream leases were ended", seen)
    replicas.wait_for(r"worker \d+ started, pid", seen)
    np.testing.assert_array_equal(killed, calm)  # exactly once: as if nothing had happened
    assert replicas.stop() == 0


def test_a_second_unrelated_server_on_the_directory_is_refused(replicas: Replicas) -> None:
    alone = subprocess.run(
        [sys.executable, "-m", "centroidal.client.cli", "serve", "--port", "0", "--data-dir",
         str(replicas.data_dir)], capture_output=True, text=True, timeout=120,
    )
    assert alone.returncode == 2
    assert f"in use by another centroidal server (pid {replicas.process.pid})" in alone.stderr


def test_sigterm_drains_every_worker_and_stores_what_was_acknowledged(replicas: Replicas) -> None:
    with replicas.client() as client:
        stream = client.stream("kept", n_clusters=2, producer_id="p", seed=0)
        for batch in np.array_split(BLOBS.astype(np.float32), 6):
            stream.send(batch)
        stream.flush()
        acknowledged = stream.last_ack
        assert acknowledged is not None
        stream.abort()
    assert replicas.stop() == 0
    assert "stopped cleanly: every worker stored everything it acknowledged" in "".join(replicas.lines)
    again = Replicas(replicas.data_dir, 1)
    try:
        with again.client() as client:
            assert client.get_model("kept").version == acknowledged.version
    finally:
        assert again.stop() == 0


def test_a_pinned_version_another_worker_wrote_is_read_from_the_store(replicas: Replicas) -> None:
    own = replicas.own_addresses()
    with replicas.client(own[0]) as client:
        first = client.fit("pinned", BLOBS, n_clusters=3, seed=0)
        second = client.fit("pinned", BLOBS, n_clusters=2, seed=0)
    with replicas.client(own[1]) as client:
        assert client.predict("pinned", BLOBS[:4], version=first.version).max() <= 2
        assert client.predict("pinned", BLOBS[:4], version=second.version).max() <= 1
        with pytest.raises(NotFound) as missing:
            client.predict("pinned", BLOBS[:4], version=99)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND and missing.value.field == "version"


def test_a_stream_on_a_replica_that_does_not_own_it_names_the_owner(replicas: Replicas) -> None:
    """What a client built from the .proto alone sees: the owner's address in the headers at
    once, then FAILED_PRECONDITION with ErrorInfo STREAM_OWNER_ELSEWHERE naming it again."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from centroidal.v1 import clustering_pb2 as pb
    from centroidal.v1 import clustering_pb2_grpc as pb_grpc

    own = replicas.own_addresses()
    with replicas.client(own[0]) as client:
        holder = client.stream("owned", n_clusters=2, producer_id="first", seed=0)
        holder.send(BLOBS[:50].astype(np.float32))
        holder.flush()
        opening = pb.MiniBatchRequest(open=pb.MiniBatchOpen(model="owned"))
        with grpc.insecure_channel(own[1], options=OWN_CONNECTION) as channel:
            call = pb_grpc.ClusteringServiceStub(channel).StreamMiniBatch(iter([opening]))
            headers = dict(call.initial_metadata())
            with pytest.raises(grpc.RpcError) as refused:
                next(call)
        holder.close()
    assert headers["centroidal-stream-owner"] == own[0]
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(refused.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    [detail] = [detail for detail in status.details if detail.Is(info.DESCRIPTOR)]
    detail.Unpack(info)
    assert info.reason == "STREAM_OWNER_ELSEWHERE" and info.metadata["owner"] == own[0]


def test_an_async_producer_is_sent_to_the_owner_too(replicas: Replicas) -> None:
    import asyncio

    from centroidal.client.aio import AsyncClient

    own = replicas.own_addresses()
    batches = np.array_split(BLOBS.astype(np.float32), 12)

    async def run() -> int:
        async with AsyncClient(own[0], options=OWN_CONNECTION) as first, \
                AsyncClient(own[1], options=OWN_CONNECTION) as second:
            holding = first.stream("async", n_clusters=3, producer_id="p0", seed=0)
            await holding.send(batches[0])
            await holding.flush()  # worker 0 owns the stream while this one is open
            sent = second.stream("async", n_clusters=3, producer_id="p1", seed=0)
            for batch in batches[1:6]:
                await sent.send(batch)
            await sent.close()
            for batch in batches[6:]:
                await holding.send(batch)
            await holding.close()
            return sent.redirects

    assert asyncio.run(run()) == 1
    with replicas.client() as client:
        assert client.get_model("async").n_samples_seen == BLOBS.shape[0]


def test_a_redirect_keeps_tls_and_the_token(tmp_path: Path, pki: Pki) -> None:
    """Under TLS and tokens, a producer sent to the owner's own port connects there with the
    same token, checking the certificate against the name it was given for the service."""
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    group = Replicas(tmp_path / "data", 2, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
                     "--token-file", str(tokens))
    try:
        own = group.own_addresses()
        port = {address: address.rpartition(":")[2] for address in own}

        def client(address: str) -> Client:  # by the name the certificate gives the service
            return Client(f"localhost:{port[address]}", root_certificates=pki.ca, token="s3cret",
                          options=OWN_CONNECTION, timeout=60)

        with client(own[0]) as first, client(own[1]) as second:
            holding = first.stream("secure", n_clusters=2, producer_id="p0", seed=0)
            holding.send(BLOBS[:100].astype(np.float32))
            holding.flush()
            with second.stream("secure", n_clusters=2, producer_id="p1", seed=0) as sent:
                sent.send(BLOBS[100:200].astype(np.float32))
            holding.close()
            assert sent.redirects == 1
            assert first.get_model("secure").n_samples_seen == 200
    finally:
        assert group.stop() == 0


def test_workers_listen_on_the_own_ports_given_them(tmp_path: Path) -> None:
    """--worker-port-base: worker i's own address is that port + i (ports a container can
    publish), named by --advertise-host."""
    base = free_port(run=2)
    group = Replicas(tmp_path / "data", 2, "--worker-port-base", str(base), "--advertise-host", "localhost")
    try:
        assert group.own_addresses() == [f"localhost:{base}", f"localhost:{base + 1}"]
        with group.client(f"127.0.0.1:{base + 1}") as client:
            assert client.health() == "SERVING"
    finally:
        assert group.stop() == 0


def test_workers_refuse_a_port_another_server_listens_on(tmp_path: Path) -> None:
    """SO_REUSEPORT would let the workers join another listener of the same user on the port
    and split its calls: the supervisor refuses the port instead."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        refused = subprocess.run(
            [sys.executable, "-m", "centroidal.client.cli", "serve", "--workers", "2", "--port", str(port),
             "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=120,
        )
    assert refused.returncode == 2
    assert f"could not bind 127.0.0.1:{port}: Address already in use" in refused.stderr
