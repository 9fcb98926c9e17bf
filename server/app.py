"""Assembles the server: grpc.aio with the handlers, health, reflection and auth, over the store.

The gRPC server runs on the process's one event loop (``eventloop``), in a thread of its
own shared by every server of the process, so that ``start`` and ``stop`` are plain calls
for ``centroidal serve`` and for tests; ``tls`` makes its credentials.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

import grpc
import grpc.aio
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from centroidal import codec
from centroidal.engine import configure_threads, warmup
from centroidal.partitioned.cluster import DaskCluster
from centroidal.partitioned.partitions import ClusterError
from centroidal.v1 import clustering_pb2 as pb

from . import replicas
from .admission import STREAM_WINDOW_BYTES
from .auth import BearerTokenInterceptor, Tokens
from .config import ServerConfig
from .edges import CallLimit, add_edges, register
from .eventloop import EventLoop
from .handlers import ClusteringHandlers
from .integrity import StoreCondition
from .memory import give_freed_memory_back
from .metrics import Metrics
from .parsing import parser
from .registry import Registry
from .store import SQLiteStore
from .stores import on_postgres, open_store
from .tls import server_credentials

log = logging.getLogger("centroidal.server")

SERVICE_NAME = codec.SERVICE_NAME
# A health service of its own: NOT_SERVING while the store refuses writes (reads still work).
WRITES_HEALTH = "centroidal.writes"
# How long stop() waits for a background warm-up to reach its next step (one compilation).
WARMUP_EXIT_WAIT_S = 60.0
FIT_EXIT_WAIT_S = 30.0
# The log line that says the warm-up is over (the bench's start-up row waits for it).
WARMUP_DONE = "warm-up done: every kernel compiled"
# A first group of kernels that takes longer than this was compiled, not loaded from the cache.
COLD_GROUP_S = 1.0
# The later groups each take about this share of the first's time to compile (measured from an
# empty cache in one process: the first group, float32's tile labelling, 4.1 s, the 20 others
# 48.5 s).
LATER_GROUP_SHARE = 0.6
# Processes that compile kernels from a cold cache, at most (each holds its own numba, about
# 200 MB, while it runs).
MAX_COMPILERS = 4


class CentroidalServer:
    """A configured server; ``start`` binds, warms up and reports SERVING."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        configure_threads()
        give_freed_memory_back()  # process-wide, like the threads: a call's arrays go back when it ends
        self.metrics = Metrics()
        self.health = health_aio.HealthServicer()
        # A worker of `serve --workers N`: one replica of several, under a supervisor that
        # checked the store before starting it (and, on SQLite, holds the directory's lock).
        lock = replicas.inherited_lock()
        self.worker_index = replicas.worker_index()
        self._serving = False
        self.store = open_store(config, on_condition=self._store_condition, shared_lock=lock)
        # Alone on a SQLite store, the server holds every model; on PostgreSQL, replicas on
        # other hosts may write at any time.
        alone = lock is None and not on_postgres(config)
        try:
            if alone and isinstance(self.store, SQLiteStore):  # no lease left by an earlier server can be live
                replicas.end_stale_leases(self.store)
            self.registry = Registry(
                self.store, max_models=config.max_models, keep_versions=config.keep_versions,
                # Nobody writes a read-only store: there is no feed to follow.
                preload=alone, shared=not alone and not self.store.read_only,
            )
        except BaseException:
            self.store.close()
            raise
        self.feed: replicas.Feed | None = None
        self.unsaved: list[str] = []
        self.metrics.store_writable.set(0 if self.store.condition else 1)
        self.metrics.store_log_discarded.set(self.store.discarded.frames if self.store.discarded else 0)
        self.metrics_port: int | None = None
        self.servicer = ClusteringHandlers(config, self.registry, self.metrics)
        self.stopping = threading.Event()
        # Set once every kernel is compiled (at once when warm-up is off); a fit waiting for
        # compilation says so in its progress until then.
        self.warmed_up = self.servicer.runtime.kernels_compiled
        self._warmer: threading.Thread | None = None
        try:
            self.grpc_server, self.port = EventLoop.run(self._build(), kind=self.config.event_loop)
        except RuntimeError as exc:
            self.store.close()
            raise OSError(f"could not bind {config.address}: {exc}") from exc
        except BaseException:  # a TLS or token file that cannot be read
            self.store.close()
            raise

    async def _build(self) -> tuple[grpc.aio.Server, int]:
        config = self.config
        self.tokens = Tokens(config.tokens, config.token_file) if config.tokens or config.token_file else None
        interceptors = [BearerTokenInterceptor(self.tokens, self.metrics)] if self.tokens else []
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                # Workers share the port; a lone server refuses one already taken.
                ("grpc.so_reuseport", 0 if self.worker_index is None else 1),
                # A fixed window per stream, so that what gRPC buffers for a call that is not
                # reading (waiting for memory, say) is bounded and counted (gathering.py).
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
            ],
        )
        # Counted by us, not grpcio (maximum_concurrent_rpcs), so that health stays outside it.
        limit = CallLimit(config.max_concurrent_rpcs)
        _add_service(self.servicer, server, limit)
        add_edges(server, self.health, SERVICE_NAME, self.metrics, limit)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        credentials = server_credentials(config)

        def bind(address: str) -> int:
            if credentials is None:
                return server.add_insecure_port(address)
            return server.add_secure_port(address, credentials)

        port = own_port = bind(config.address)
        if self.worker_index is not None:  # a port of this worker's own, where producers of its streams are sent
            host = f"[{config.host}]" if ":" in config.host else config.host
            own = config.worker_port_base + self.worker_index if config.worker_port_base else 0
            own_port = bind(f"{host}:{own}")
        self.servicer.hub.owner = owner = replicas.this_replica(
            replicas.advertised(config.host, own_port, config.advertise_host)
        )
        self.registry.identity = owner.identity
        return server, port

    async def _set_health(self, status: int) -> None:
        serving = status == health_pb2.HealthCheckResponse.SERVING
        if serving and _unreachable(self.store.condition):  # a load balancer should send calls elsewhere
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)
        await self._set_writes_health(serving and self.store.condition is None)

    async def _set_writes_health(self, writable: bool) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING if writable else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(WRITES_HEALTH, serving)

    def _store_condition(self, condition: StoreCondition | None) -> None:
        """The store began or stopped refusing writes (from any thread): health and metrics."""
        self.metrics.store_writable.set(0 if condition else 1)
        if condition is not None:
            self.metrics.store_failures.labels(condition.reason).inc()
        loop = EventLoop.loop()
        if loop is not None and self._serving and not self.stopping.is_set():
            asyncio.run_coroutine_threadsafe(self._set_health(health_pb2.HealthCheckResponse.SERVING), loop)

    def start(self) -> None:
        """Start serving; health turns SERVING once every kernel is compiled."""
        EventLoop.run(self.grpc_server.start())
        config = self.config
        if config.metrics_port:
            allowed = self.tokens.accepts if config.metrics_auth and self.tokens else None
            try:
                self.metrics_port = self.metrics.serve(config.metrics_host, config.metrics_port, allowed)
            except OSError as exc:
                raise OSError(f"could not serve metrics on {config.metrics_host}:{config.metrics_port} "
                              f"(--metrics-port): {exc.strerror or exc}") from exc
            log.info("metrics on http://%s:%d/metrics (%s)", config.metrics_host, self.metrics_port,
                     "bearer token required" if allowed else "no token required")
        self._log_security()
        if self.config.warmup:
            if self.config.warmup_before_serving:
                self._warm_up()
            else:
                self._warmer = threading.Thread(target=self._warm_up, name="centroidal-warmup", daemon=True)
                self._warmer.start()
        else:
            self.warmed_up.set()
            self.metrics.warmed_up.set(1)
        self.servicer.hub.start()
        dask = self.servicer.runtime.dask
        if dask is not None:  # a LocalCluster takes seconds to start: not on the first fit's time
            threading.Thread(target=_reach, args=(dask,), name="centroidal-dask", daemon=True).start()
        if self.registry.shared:
            self.feed = replicas.Feed(self.registry, config.poll_interval, self._models_changed)
            self.feed.start()
        self._serving = True
        EventLoop.run(self._set_health(health_pb2.HealthCheckResponse.SERVING))
        if self.worker_index is None and not self.registry.shared:
            log.info(
                "centroidal listening on %s:%d with %d models from %s (checked: locked, quick_check "
                "ok, every current version's checksum verified)",
                self.config.host, self.port, len(self.registry), self.store.location,
            )
        else:
            log.info("%s listening on %s:%d (its own address %s), a replica of %d models in %s",
                     "centroidal" if self.worker_index is None else f"worker {self.worker_index}",
                     self.config.host, self.port, self.servicer.hub.owner.address, len(self.registry),
                     self.store.location)

    def _models_changed(self) -> None:
        self.metrics.models.set(len(self.registry))

    def _warm_up(self) -> None:
        """Compile every kernel signature the handlers use, Predict's first.

        Run in the background, it competes with early requests for the compiler: a request
        whose kernel is not compiled yet compiles it (numba serialises compilations), so it
        waits for at most the compilation in progress and its own, and never runs uncompiled.
        """
        started = time.monotonic()
        log.info("compiling kernels in the background, into numba's cache: about 35 s on 2 "
                 "cores from an empty cache, seconds from a warm one; until then a call that needs a "
                 "kernel not compiled yet waits for it")
        groups = self.servicer.runtime.kernel_groups
        helpers = min(os.cpu_count() or 1, MAX_COMPILERS) if warmup.cache_is_cold() else 0
        if helpers > 1:
            log.info("numba's cache is cold: %d processes compile the kernels, then this one loads them",
                     helpers)
            groups.update({name: threading.Event() for name in warmup.group_names()})
        try:
            for done, total, group in warmup.steps(helpers, self.stopping):
                if group in groups:
                    groups[group].set()
                elapsed = time.monotonic() - started
                log.debug("warm-up: %s compiled after %.2fs", group, elapsed)
                if done == 1 and elapsed > COLD_GROUP_S and total > 1 and helpers < 2:
                    log.info("kernels: %d of %d groups compiled in %.0f s; about %.0f s to go", done,
                             total, elapsed, elapsed * (total - done) * LATER_GROUP_SHARE)
                if self.stopping.is_set():
                    return
            if self.stopping.is_set():  # the helpers' steps end early when the server stops
                return
        except Exception:  # a server that cannot compile still answers; each call compiles its own
            log.exception("warm-up failed after %.2fs", time.monotonic() - started)
            return
        finally:
            for ready in groups.values():  # stopped or failed: calls compile what they need
                ready.set()
        log.info("%s in %.2fs", WARMUP_DONE, time.monotonic() - started)
        self.warmed_up.set()  # after the line: whoever waits for the event finds it logged
        self.metrics.warmed_up.set(1)

    def _log_security(self) -> None:
        config = self.config
        if self.tokens is not None:
            log.info("auth: on, bearer tokens required (%s); health checks stay open", self.tokens.describe())
        else:
            log.warning("auth: OFF, any client that reaches %s may call; set CENTROIDAL_TOKEN or "
                        "--token-file to require a token", self.address)
        if config.tls_client_ca:
            log.info("TLS: on, with client certificates signed by %s required (mutual TLS)", config.tls_client_ca)
        elif config.tls_cert:
            log.info("TLS: on, certificate %s", config.tls_cert)
        else:
            log.warning("TLS: off, calls and tokens travel in plaintext; set --tls-cert and --tls-key")

    @property
    def address(self) -> str:
        """Where the server listens: its host and the port it bound (not 0)."""
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def stop(self, grace: float | None = None) -> list[str]:
        """Report NOT_SERVING, let in-flight calls finish for ``grace`` seconds, close the store.

        Returns a line for each streamed model whose newest version could not be stored
        (also kept in ``unsaved``); empty when everything acknowledged is on disk.
        """
        if self.stopping.is_set():
            return self.unsaved
        self.stopping.set()
        EventLoop.run(self.health.enter_graceful_shutdown())
        EventLoop.run(self.grpc_server.stop(self.config.grace_period if grace is None else grace))
        # Cancelled fits notice within one iteration; let them leave before the store closes.
        give_up = time.monotonic() + FIT_EXIT_WAIT_S
        while self.servicer.fits_in_flight and time.monotonic() < give_up:
            time.sleep(0.05)
        # Batches still running publish before the last checkpoint, which stores them.
        self.servicer.workers.shutdown(storage=False)
        self.unsaved = self.servicer.hub.stop()
        self.servicer.workers.shutdown(storage=True)
        if self.feed is not None:
            self.feed.stop()
        self.metrics.close()
        self.store.close()
        if self.servicer.runtime.dask is not None:
            self.servicer.runtime.dask.close()
        if self._warmer is not None:
            # It stops at its next step; a kernel still running as the process exits could crash it.
            self._warmer.join(WARMUP_EXIT_WAIT_S)
        return self.unsaved

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return EventLoop.run(self.grpc_server.wait_for_termination(timeout))


def _reach(dask: DaskCluster) -> None:
    try:
        dask.client()
    except ClusterError as exc:
        log.warning("%s; fits of datasets will try again", exc)


def _unreachable(condition: StoreCondition | None) -> bool:
    """The store cannot be reached at all (a database elsewhere): not even models that are
    not in memory can be read, so the replica reports NOT_SERVING until it can."""
    return condition is not None and condition.reason == "STORE_UNREACHABLE"


def _serializer(message_type: type[Message]) -> Callable[[Message | bytes], bytes]:
    """A response serializer that also takes a response a handler serialised itself."""
    serialize = message_type.SerializeToString

    def to_bytes(response: Message | bytes) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    return to_bytes


# Methods whose handlers get each request's bytes and read them with the codec, leaving the
# rows in place instead of protobuf's two copies of them (parsing.read_stream).
RAW_REQUESTS = frozenset({"Evaluate", "Fit", "Predict", "PredictStream", "StreamMiniBatch", "SuggestK"})


def _add_service(servicer: ClusteringHandlers, server: grpc.aio.Server, limit: CallLimit) -> None:
    """The generated registration, with request deserializers that never raise (bytes that
    are not the request reach the handler, which answers INVALID_ARGUMENT), each method
    counted against the limit on open calls."""
    handlers = {}
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    for method in codec.SERVICE.methods:
        request, response = getattr(pb, method.input_type.name), getattr(pb, method.output_type.name)
        handlers[method.name] = kinds[(method.client_streaming, method.server_streaming)](
            limit.wrap(getattr(servicer, method.name)),
            request_deserializer=None if method.name in RAW_REQUESTS else parser(request),
            response_serializer=_serializer(response),
        )
    register(server, SERVICE_NAME, handlers)


def create_server(config: ServerConfig) -> tuple[CentroidalServer, int]:
    """Build a server bound to config's address (port 0 picks one); returns it and the port."""
    server = CentroidalServer(config)
    return server, server.port
