"""`centroidal serve --workers N`: one supervisor, N worker processes on one port.

On SQLite the supervisor takes the data directory's lock and opens the store with every
check (the log, ``quick_check``, every current version's checksum), ends the stream
leases an earlier run left, and only then starts the workers; on PostgreSQL it creates
or migrates the schema (replicas elsewhere may hold leases). It creates no gRPC object: each
worker is a new Python process (``python -m centroidal.server.cli``), never a fork of
one with gRPC's threads in it. A worker inherits the lock's descriptor, which admits
it to the directory (an unrelated server is still refused), binds the public port with
``SO_REUSEPORT`` (the kernel spreads new connections over the workers) and a port of
its own, where producers are sent to the owner of their stream.

- **A worker that dies** is started again (after 1 s, doubling to 30 s while it keeps
  dying within a minute of its start). Its stream leases are ended at once, so another
  worker takes its streams over from their last checkpoints without waiting for the
  leases to lapse.
- **SIGTERM or SIGINT** is passed to every worker, each drains and checkpoints, and the
  supervisor exits 0 only when every worker did (everything acknowledged is stored).
- **Memory**: the default ``--memory-budget`` (a share of the machine's memory) is split
  evenly among the workers; one given explicitly is each worker's.
- **Metrics**: with ``--metrics-port P`` the supervisor serves every worker's metrics
  at P, each series labelled ``worker="i"``, plus its own; worker i serves its own on
  loopback port P + 1 + i.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from .config import ServerConfig, read_token_file
from .memory import default_budget
from .metrics import serve_http
from .replicas import INDEX_ENV, LOCK_FD_ENV, READY_FD_ENV, end_stale_leases, owner_prefix
from .store import SQLiteStore
from .stores import open_store

log = logging.getLogger("centroidal.server")

FIRST_RESTART_S = 1.0
MOST_RESTART_S = 30.0
# A worker that lived this long before dying is restarted after the first delay again.
STEADY_S = 60.0
# A worker that exits with this code could not start (a port in use, a bad flag).
CANNOT_START = 2
SCRAPE_TIMEOUT_S = 2.0
# How often the supervisor looks for a dead worker.
WATCH_S = 0.1
# A draining worker gets this long past --grace-period (fits leaving, the last checkpoint).
DRAIN_MARGIN_S = 60.0


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = FIRST_RESTART_S
    restart_at: float | None = None
    restarts: int = 0
    # The pipe it writes to once it serves, and whether it did: before that it holds nothing.
    ready_pipe: int | None = None
    ready: bool = False

    def check_ready(self) -> bool:
        if not self.ready and self.ready_pipe is not None:
            try:
                self.ready = bool(os.read(self.ready_pipe, 1))
            except BlockingIOError:
                return False
            if self.ready:
                self.close_pipe()
        return self.ready

    def close_pipe(self) -> None:
        if self.ready_pipe is not None:
            os.close(self.ready_pipe)
            self.ready_pipe = None


class Supervisor:
    """Starts, watches, restarts and stops the workers of one ``serve --workers N``."""

    def __init__(self, config: ServerConfig, argv: Sequence[str]) -> None:
        self.config = config
        self.count = config.worker_count
        # Every worker binds the same port (0: chosen here), which must be free (see _free).
        config = self.config = replace(config, port=_free(config.host, config.port))
        self._argv = list(argv)
        # Opened for its checks (SQLite's: the log, quick_check, every checksum; PostgreSQL's:
        # the schema), and to end the leases of workers that die.
        self.store = open_store(config, listen=False)
        self._lock_fd: int | None = None
        checked = "on PostgreSQL, verified as they load"
        try:
            if isinstance(self.store, SQLiteStore):
                checked = f"{self.store.verify_current()} checked"
                end_stale_leases(self.store)
                self._lock_fd = self.store.lock_descriptor
        except BaseException:
            self.store.close()
            raise
        self.workers = [Worker(index) for index in range(self.count)]
        self._signals: list[int] = []  # SIGTERM or SIGINT received
        self._metrics = CollectorRegistry()
        self._alive = Gauge("centroidal_workers_alive", "Worker processes serving", registry=self._metrics)
        self._restarts = Counter("centroidal_worker_restarts", "Workers started again after they died",
                                 registry=self._metrics)
        self._refused = Counter("centroidal_supervisor_scrapes_refused",
                                "Scrapes of the supervisor's metrics refused for a missing or wrong token",
                                ["reason"], registry=self._metrics)
        log.info("supervisor pid %d: %d workers on %s over %s (models %s)", os.getpid(), self.count,
                 config.address, self.store.location, checked)

    # ---- Workers ---------------------------------------------------------------------

    def _start(self, worker: Worker) -> None:
        config = self.config
        argv = [sys.executable, "-m", "centroidal.server.cli", *self._argv,
                "--workers", "1", "--port", str(config.port)]
        if config.metrics_port:  # the supervisor serves the public one
            argv += ["--metrics-port", str(self.worker_metrics_port(worker.index)), "--metrics-host", "127.0.0.1"]
        if config.memory_budget == default_budget():  # the machine's share, split among the workers
            argv += ["--memory-budget", str(config.memory_budget // self.count)]
        reading, writing = os.pipe()
        os.set_blocking(reading, False)
        env = {**os.environ, INDEX_ENV: str(worker.index), READY_FD_ENV: str(writing), "CENTROIDAL_WORKERS": "1"}
        passed = [writing]
        if self._lock_fd is not None:
            env[LOCK_FD_ENV] = str(self._lock_fd)
            passed.append(self._lock_fd)
        try:
            worker.process = subprocess.Popen(argv, env=env, pass_fds=passed)
        finally:
            os.close(writing)
        worker.close_pipe()
        worker.ready_pipe, worker.ready = reading, False
        worker.started = time.monotonic()
        worker.restart_at = None
        log.info("worker %d started, pid %d", worker.index, worker.process.pid)

    def worker_metrics_port(self, index: int) -> int:
        return self.config.metrics_port + 1 + index

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit status (see cli.main)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        if self.config.metrics_port:
            try:
                self._serve_metrics()
            except OSError as exc:
                self.store.close()
                raise OSError(f"could not serve metrics on {self.config.metrics_host}:{self.config.metrics_port} "
                              f"(--metrics-port): {exc.strerror or exc}") from exc
        for worker in self.workers:
            self._start(worker)
        while not self._signals:
            time.sleep(WATCH_S)
            failed = self._watch()
            if failed is not None:
                self._stop_all()
                return failed
        return self._stop_all()

    def _request_stop(self, signum: int, frame: object) -> None:
        """Only noted here: a handler that took a lock (an Event's, logging's) could deadlock
        with the main thread holding it when the signal lands."""
        self._signals.append(signum)

    def _watch(self) -> int | None:
        """Restart dead workers; returns an exit status when the service cannot start."""
        now = time.monotonic()
        alive = 0
        for worker in self.workers:
            process = worker.process
            if process is not None and process.poll() is None:
                alive += worker.check_ready()
                continue
            if process is not None:  # it just died
                code = process.returncode
                worker.process = None
                ended = self._end_leases(process.pid)
                lived = now - worker.started
                if code == CANNOT_START and worker.restarts == 0 and not worker.check_ready():
                    log.error("worker %d could not start (exit %d); stopping", worker.index, code)
                    return CANNOT_START
                if lived > STEADY_S:
                    worker.delay = FIRST_RESTART_S
                wait, worker.delay = worker.delay, min(worker.delay * 2, MOST_RESTART_S)
                worker.restart_at = now + wait
                log.error("worker %d (pid %d) died after %.1fs (%s); its %d stream leases were ended, "
                          "and it starts again in %.0fs", worker.index, process.pid, lived, _exit(code),
                          ended, wait)
            if worker.restart_at is not None and now >= worker.restart_at:
                worker.restarts += 1
                self._restarts.inc()
                self._start(worker)
        self._alive.set(alive)
        return None

    def _end_leases(self, pid: int) -> int:
        try:
            return self.store.revoke_leases(owner_prefix(pid))
        except Exception as exc:  # noqa: BLE001 - they lapse by themselves
            log.warning("could not end the stream leases of worker pid %d (they lapse in %.0f s): %s",
                        pid, self.config.lease_ttl, getattr(exc, "message", None) or exc)
            return 0

    def _stop_all(self) -> int:
        """SIGTERM every worker and wait for each to drain; 0 only if every one stored
        everything it acknowledged."""
        if self._signals:
            log.info("supervisor received %s: draining every worker for up to %.1fs",
                     signal.Signals(self._signals[0]).name, self.config.grace_period)
        running = [w for w in self.workers if w.process is not None and w.process.poll() is None]
        for worker in running:
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
        status = 0
        give_up = time.monotonic() + self.config.grace_period + DRAIN_MARGIN_S
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                code = worker.process.wait(max(0.0, give_up - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) did not stop %.0f s after its grace period: killed, and "
                          "what it held may not be stored", worker.index, worker.process.pid, DRAIN_MARGIN_S)
                worker.process.kill()
                code = worker.process.wait()
            if code != 0 and (worker.check_ready() or code != -signal.SIGTERM):
                log.error("worker %d stopped with %s", worker.index, _exit(code))
                status = 1
            worker.close_pipe()
        self._alive.set(0)
        self.store.close()
        if status == 0:
            log.info("stopped cleanly: every worker stored everything it acknowledged")
        return status

    # ---- Metrics ---------------------------------------------------------------------

    def _serve_metrics(self) -> None:
        config = self.config
        token = None
        if config.metrics_auth:
            tokens = config.tokens or (read_token_file(config.token_file) if config.token_file else ())
            token = tokens[0] if tokens else None
        self._metrics.register(_WorkersCollector(self, token))
        allowed = None
        if config.metrics_auth:
            from .auth import Tokens

            allowed = Tokens(config.tokens, config.token_file).accepts
        serve_http(self._metrics, config.metrics_host, config.metrics_port, allowed, self._refused)
        log.info("metrics of every worker on http://%s:%d/metrics, labelled worker=\"i\"",
                 config.metrics_host, config.metrics_port)


class _WorkersCollector:
    """Every worker's metrics, read from its own endpoint at each scrape and labelled."""

    def __init__(self, supervisor: Supervisor, token: str | None) -> None:
        self._supervisor = supervisor
        self._token = token

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for worker in self._supervisor.workers:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self._supervisor.worker_metrics_port(worker.index)}/metrics"
            )
            if self._token:
                request.add_header("Authorization", f"Bearer {self._token}")
            try:
                with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT_S) as answer:  # noqa: S310 - loopback
                    text = answer.read().decode()
            except OSError:
                continue  # a worker starting or restarting: its series are missing this once
            for family in text_string_to_metric_families(text):
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                for sample in family.samples:
                    target.samples.append(sample._replace(labels={**sample.labels, "worker": str(worker.index)}))
        yield from merged.values()


def _exit(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def _free(host: str, port: int) -> int:
    """``port`` (0: one the system picks), once a bind to it shows nothing listens there;
    raises OSError otherwise. The workers' SO_REUSEPORT would share a port with another
    server of the same user, and split its calls."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past connections in TIME_WAIT
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"could not bind {host}:{port}: {exc.strerror or exc}; is another server "
                          "running there?") from None
        return int(probe.getsockname()[1])
