"""Replicas across hosts: three `centroidal serve` processes on loopback, each with a data
directory of its own as separate hosts would have, sharing one real PostgreSQL database.
They run as docker-compose.yml configures its three replicas (its environment, its
password file, its health check), with the database's address and the ports made the
test's own. Clients reach them as users would: by one replica's address, or by a name
gRPC resolves to all three (``ipv4:a,b,c``), round robin. The heavier cases are marked
slow: CI runs them (make test-slow), the default run keeps one of each kind of call."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
import yaml

from centroidal.client import Client
from centroidal.client.errors import NotFound, Unavailable
from tests.conftest import throwaway_postgres
from tests.server.test_replicas import (
    BLOBS,
    OWN_CONNECTION,
    START_WAIT_S,
    contend_for_one_name,
    free_port,
    produce_from_four,
    stream_killing_the_owner,
)

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
# What the tests add to a replica's command: a short checkpoint interval, metrics to count calls.
TEST_FLAGS = ("--checkpoint-interval", "0.2")


def compose_replicas() -> dict[str, dict[str, object]]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return {name: service for name, service in services.items() if name.startswith("centroidal")}


def compose_environment(service: dict[str, object], url: str, password_file: Path, port: int) -> dict[str, str]:
    """A compose replica's environment, pointed at the test's database, password file and port
    (``${VAR:-default}`` read as compose does, from this environment or the default)."""
    environment: dict[str, str] = {}
    for key, value in service["environment"].items():  # type: ignore[attr-defined]
        value = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda found: os.environ.get(found.group(1), found.group(2)), str(value))
        environment[key] = value
    assert environment["CENTROIDAL_STORE"] == "postgresql://centroidal@postgres:5432/centroidal"
    assert environment["CENTROIDAL_STORE_PASSWORD_FILE"] == "/run/secrets/postgres-password"
    return {**environment, "CENTROIDAL_STORE": url, "CENTROIDAL_STORE_PASSWORD_FILE": str(password_file),
            "CENTROIDAL_PORT": str(port)}


class Host:
    """One replica as docker-compose.yml runs it (the image's command, `centroidal serve`),
    its log read as it runs."""

    def __init__(self, service: dict[str, object], url: str, root: Path) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.lines: list[str] = []
        self._changed = threading.Condition()
        root.mkdir(parents=True, exist_ok=True)
        password_file = root / "postgres-password"
        password_file.write_text("the throwaway server trusts loopback\n")
        self.environment = compose_environment(service, url, password_file, self.port)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "centroidal.client.cli", "serve", "--data-dir", str(root / "data"),
             "--metrics-port", str(self.metrics_port), *TEST_FLAGS],
            stderr=subprocess.PIPE, text=True, env={**os.environ, **self.environment},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: str, limit: float = START_WAIT_S) -> None:
        give_up = time.monotonic() + limit
        with self._changed:
            while not any(re.search(pattern, line) for line in self.lines):
                left = give_up - time.monotonic()
                assert left > 0 and self.process.poll() is None, f"no {pattern!r} in:\n{''.join(self.lines)}"
                self._changed.wait(min(left, 0.5))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def served(self, method: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        found = re.search(rf'centroidal_rpc_requests_total\{{code="OK",method="{method}"\}} (\S+)', text)
        return float(found.group(1)) if found else 0.0

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)


class Hosts:
    """Three replicas on one database."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.hosts = [Host(service, url, root / name) for name, service in compose_replicas().items()]
        for host in self.hosts:
            host.wait_for("centroidal listening on")

    @property
    def target(self) -> str:
        """The name gRPC resolves to every replica."""
        return "ipv4:" + ",".join(host.address for host in self.hosts)

    def client(self, target: str) -> Client:
        return Client(target, options=OWN_CONNECTION, timeout=60)

    def stream_owner_pid(self, model: str) -> int:
        with psycopg.connect(self.url) as db:
            (owner,) = db.execute("SELECT owner FROM leases WHERE name = %s", (model,)).fetchone()
        return int(owner.split("/")[1])

    def stop(self) -> list[int]:
        for host in self.hosts:  # all drain at once
            if host.process.poll() is None:
                host.process.send_signal(signal.SIGTERM)
        return [host.process.wait(120) for host in self.hosts]


@pytest.fixture(scope="module")
def hosts(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    """Three replicas the module's tests share (each on names of its own); a test that kills
    one takes ``own_hosts``."""
    import uuid

    from tests.postgres import with_database

    name = f"hosts_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    group = Hosts(with_database(postgres_url, name), tmp_path_factory.mktemp("hosts"))
    yield group
    assert group.stop() == [0, 0, 0]


@pytest.fixture
def own_hosts(postgres_database: str, tmp_path: Path) -> Iterator[Hosts]:
    group = Hosts(postgres_database, tmp_path)
    yield group
    group.stop()
    # Every replica's log, which pytest shows with a failing test (as the replicas fixture does).
    sys.stderr.write("".join(line for host in group.hosts for line in host.lines))


def test_the_compose_file_runs_three_replicas_on_a_healthy_database() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    database = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(database["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in database["volumes"])
    assert database["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-password"
    replicas = compose_replicas()
    assert len(replicas) == 3
    for service in replicas.values():
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert "centroidal health" in " ".join(service["healthcheck"]["test"])  # type: ignore[index]
        assert service["secrets"] == ["postgres-password"]
        assert int(service["stop_grace_period"].rstrip("s")) > 10  # type: ignore[attr-defined]
    published = [service["ports"][0] for service in replicas.values()]  # type: ignore[index]
    ports = [service["environment"]["CENTROIDAL_PORT"] for service in replicas.values()]  # type: ignore[index]
    assert published == [f"{port}:{port}" for port in ports]  # the port advertised is the one published


def test_the_compose_health_check_passes_on_a_replica(hosts: Hosts) -> None:
    replica = next(iter(compose_replicas().values()))
    command = replica["healthcheck"]["test"][1].replace("$$", "$")  # type: ignore[index]
    host = hosts.hosts[0]
    done = subprocess.run(["sh", "-c", command.replace("centroidal ", f"{sys.executable} -m centroidal.client.cli ", 1)],
                          env={**os.environ, **host.environment}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def eventually(check: Callable[[], bool], limit: float = 10.0) -> float:
    """Seconds until ``check`` holds (it must within ``limit``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < limit, "never happened"
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_fit_on_one_host_is_predicted_on_another(hosts: Hosts) -> None:
    a, b, _ = hosts.hosts
    with hosts.client(a.address) as on_a, hosts.client(b.address) as on_b:
        fitted = on_a.fit("shared", BLOBS, n_clusters=3, seed=0, return_labels=True)
        # At once: a name B has not heard of is looked up in the database.
        np.testing.assert_array_equal(on_b.predict("shared", BLOBS[::50]), fitted.labels[::50])
        refit = on_a.fit("shared", BLOBS, n_clusters=2, seed=0)
        assert on_b.predict("shared", BLOBS[:4], version=refit.version).max() <= 1  # pinned: read from the store
        # Unpinned, B answers with the new version once the NOTIFY reached it.
        eventually(lambda: on_b.get_model("shared").version == refit.version)
        assert on_b.predict("shared", BLOBS[:200]).max() <= 1


def test_concurrent_fits_of_one_name_on_two_hosts_each_win_one_version(hosts: Hosts) -> None:
    a, b, _ = hosts.hosts
    contend_for_one_name(lambda writer: hosts.client((a, b)[writer % 2].address))


def test_a_delete_on_one_host_is_seen_by_another(hosts: Hosts) -> None:
    a, b, _ = hosts.hosts
    with hosts.client(a.address) as on_a, hosts.client(b.address) as on_b:
        on_a.fit("doomed", BLOBS, n_clusters=3, seed=0)
        on_a.predict("doomed", BLOBS[:3])  # A holds it in memory
        assert on_b.delete_model("doomed") == 2

        def gone() -> bool:
            try:
                on_a.predict("doomed", BLOBS[:3])
            except NotFound:
                return True
            return False

        eventually(gone)
        assert "doomed" not in [model.name for model in on_a.list_models()]
        assert on_a.fit("doomed", BLOBS, n_clusters=3, seed=0).version == 3


@pytest.mark.slow
def test_four_producers_through_different_hosts_feed_one_model_once(hosts: Hosts) -> None:
    points, redirects = produce_from_four(lambda index: hosts.client(hosts.hosts[index % 3].address), "fed")
    assert len(redirects) == 4 and sum(redirects) >= 1
    with hosts.client(hosts.target) as client:  # every replica, once the last checkpoint's NOTIFY reached it
        for _ in range(6):
            eventually(lambda: client.get_model("fed").n_samples_seen == points.size // 3)


def _stream(hosts: Hosts, name: str, points: np.ndarray, kill_at: int | None = None) -> tuple[np.ndarray, int]:
    """As one producer through every host's name (see stream_killing_the_owner)."""
    with hosts.client(hosts.target) as client:
        return stream_killing_the_owner(client, hosts.stream_owner_pid, name, points, kill_at)


@pytest.mark.slow
def test_kill_9_of_the_owner_mid_stream_moves_it_to_another_host_and_loses_nothing(own_hosts: Hosts) -> None:
    hosts = own_hosts
    points = np.random.default_rng(2).normal(size=(120, 50, 3)).astype(np.float32)
    calm, _ = _stream(hosts, "calm", points)
    killed, reconnects = _stream(hosts, "killed", points, kill_at=60)
    assert reconnects >= 1
    assert sum(host.process.poll() is not None for host in hosts.hosts) == 1
    np.testing.assert_array_equal(killed, calm)  # exactly once: as if nothing had happened


@pytest.mark.slow
def test_round_robin_spreads_calls_and_moves_them_off_a_dead_replica(own_hosts: Hosts) -> None:
    hosts = own_hosts
    with hosts.client(hosts.target) as client:
        fitted = client.fit("spread", BLOBS, n_clusters=3, seed=0, return_labels=True)
        for _ in range(30):
            client.predict("spread", BLOBS[:8])
        assert all(host.served("Predict") >= 5 for host in hosts.hosts)  # every replica took its turn
        hosts.hosts[0].process.kill()
        hosts.hosts[0].process.wait()
        for _ in range(30):  # none fails: gRPC moves them to the replicas still there
            np.testing.assert_array_equal(client.predict("spread", BLOBS[::50]), fitted.labels[::50])


@pytest.mark.slow
def test_a_database_restart_loses_nothing_acknowledged_and_the_replicas_recover(tmp_path: Path) -> None:
    with throwaway_postgres() as database:
        group = Hosts(database.url, tmp_path)
        a, b, c = group.hosts
        try:
            with group.client(a.address) as on_a, group.client(b.address) as on_b, \
                    group.client(c.address) as on_c:
                before = on_a.fit("before", BLOBS, n_clusters=3, seed=0, return_labels=True)
                with on_b.stream("streamed", n_clusters=3, producer_id="p", seed=0) as stream:
                    for batch in np.array_split(BLOBS.astype(np.float32), 6):
                        stream.send(batch)
                database.stop()
                eventually(lambda: on_a.health() == "NOT_SERVING", 30)
                with pytest.raises(Unavailable) as refused:
                    on_c.fit("during", BLOBS, n_clusters=3, seed=0)
                assert refused.value.reason == "STORE_UNREACHABLE" and refused.value.retry_after
                # A model in memory is still predicted; one that must be read is UNAVAILABLE.
                np.testing.assert_array_equal(on_a.predict("before", BLOBS[::50]), before.labels[::50])
                with pytest.raises(Unavailable):
                    on_c.predict("before", BLOBS[:3])
                database.start()
                for client in (on_a, on_b, on_c):  # by themselves: nobody restarted them
                    eventually(lambda client=client: client.health() == "SERVING", 30)
                np.testing.assert_array_equal(on_c.predict("before", BLOBS[::50]), before.labels[::50])
                assert on_a.get_model("streamed").n_samples_seen == len(BLOBS)
                assert on_c.fit("after", BLOBS, n_clusters=3, seed=0).version == 1
        finally:
            assert group.stop() == [0, 0, 0]


def readme_commands() -> list[str]:
    readme = (COMPOSE_FILE.parent / "README.md").read_text()
    section = readme[readme.index("## Replicas across hosts: PostgreSQL"):]
    return section.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()


@pytest.mark.slow
def test_the_readmes_command_lines_run_three_replicas_on_one_database(postgres_database: str, tmp_path: Path) -> None:
    """The README's lines as written, with the test's database, password file and ports."""
    environment = dict(os.environ)
    ports: dict[str, str] = {}
    processes: list[subprocess.Popen[str]] = []
    lines = readme_commands()
    try:
        for line in lines:
            words = line.rstrip(" &").split()
            if words[0] == "export":
                key, _, value = words[1].partition("=")
                if key == "CENTROIDAL_STORE":
                    assert value.startswith("postgresql://")
                    value = postgres_database
                elif key == "CENTROIDAL_STORE_PASSWORD_FILE":
                    value = str(tmp_path / "postgres-password")
                    Path(value).write_text("the throwaway server trusts loopback\n")
                environment[key] = value
                continue
            assert words[0] == "centroidal"
            for index, word in enumerate(words):  # each port the lines name, made a free one
                for port in re.findall(r"5005\d", word):
                    ports.setdefault(port, str(free_port()))
                    words[index] = words[index].replace(port, ports[port])
            command = [sys.executable, "-m", "centroidal.client.cli", *words[1:]]
            if words[1] == "serve":
                processes.append(subprocess.Popen(command, cwd=tmp_path, env=environment, text=True,
                                                  stderr=subprocess.DEVNULL))
                continue
            target = words[words.index("--target") + 1]
            eventually(lambda: subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True,
                                              timeout=60).returncode == 0, START_WAIT_S)
        assert len(processes) == 3
        with Client(target, timeout=60) as client:
            fitted = client.fit("readme", BLOBS, n_clusters=3, seed=0, return_labels=True)
            for _ in range(6):
                np.testing.assert_array_equal(client.predict("readme", BLOBS[::50]), fitted.labels[::50])
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(120) for process in processes] == [0, 0, 0]


@pytest.mark.slow
def test_workers_of_one_host_share_the_database_like_any_replica(postgres_database: str, tmp_path: Path) -> None:
    """`serve --workers 2 --store postgresql://…`: no directory lock to hand down; the workers
    are replicas of the database, and a dead worker's leases are ended by its supervisor."""
    from tests.server.test_replicas import Replicas

    group = Replicas(tmp_path / "data", 2, "--store", postgres_database)
    try:
        with group.client() as client:
            fitted = client.fit("pooled", BLOBS, n_clusters=3, seed=0, return_labels=True)
        for _ in range(24):  # new connections, which the kernel spreads over the workers
            with group.client() as client:
                np.testing.assert_array_equal(client.predict("pooled", BLOBS[::50]), fitted.labels[::50])
        assert len(group.served_by_worker("Predict")) == 2
        with group.client() as client, client.stream("owned", n_clusters=2, producer_id="p", seed=0) as stream:
            stream.send(BLOBS[:100].astype(np.float32))
            stream.flush()
            with psycopg.connect(postgres_database) as db:
                (owner,) = db.execute("SELECT owner FROM leases WHERE name = 'owned'").fetchone()
            subprocess.run(["kill", "-9", owner.split("/")[1]], check=True)
            group.wait_for(r"died after .* its 1 stream leases were ended")
            stream.send(BLOBS[100:200].astype(np.float32))
        with group.client() as client:
            eventually(lambda: client.get_model("owned").n_samples_seen == 200)
    finally:
        assert group.stop() == 0
