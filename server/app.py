"""Assembles the gRPC server: servicer, health, reflection, auth, store and warm-up."""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from centroidal.engine import kmeans, minibatch
from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc

from .auth import BearerTokenInterceptor
from .config import ServerConfig
from .metrics import Metrics
from .registry import Registry
from .service import ClusteringServicer
from .store import SQLiteStore

log = logging.getLogger("centroidal.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ClusteringService"].full_name
THREAD_SAFE_LAYERS = ("omp", "tbb")
FIT_EXIT_WAIT_S = 30.0


class CentroidalServer:
    """A configured server; ``start`` binds, warms up and reports SERVING."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = SQLiteStore(config.data_dir)
        self.registry = Registry(
            self.store, max_models=config.max_models, keep_versions=config.keep_versions
        )
        self.metrics = Metrics()
        self.metrics_port: int | None = None
        self.servicer = ClusteringServicer(config, self.registry, self.metrics)
        self.health = health.HealthServicer()
        interceptors = [BearerTokenInterceptor(config.tokens)] if config.tokens else []
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=config.max_workers, thread_name_prefix="centroidal-rpc"
            ),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=config.max_workers * 4,
        )
        pb_grpc.add_ClusteringServiceServicer_to_server(self.servicer, self.grpc_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc_server
        )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            self.port = self.grpc_server.add_insecure_port(config.address)
        except RuntimeError as exc:
            self.store.close()
            raise OSError(f"could not bind {config.address}: {exc}") from exc
        self.stopping = threading.Event()

    def _set_health(self, status: int) -> None:
        for service in ("", SERVICE_NAME):
            self.health.set(service, status)

    def start(self) -> None:
        """Start serving; health turns SERVING once every kernel is compiled."""
        self.grpc_server.start()
        if self.config.metrics_port:
            self.metrics_port = self.metrics.serve(self.config.host, self.config.metrics_port)
            log.info("metrics on http://%s:%d/metrics", self.config.host, self.metrics_port)
        started = time.monotonic()
        if self.config.warmup:
            layer = kmeans.warmup()
            minibatch.warmup()
            if layer not in THREAD_SAFE_LAYERS:
                self.stop(0)
                raise RuntimeError(
                    f"numba chose the {layer!r} threading layer, which is not safe for "
                    "concurrent calls; install the OpenMP runtime (libgomp) or tbb"
                )
            log.info("warm-up done in %.2fs, threading layer %s", time.monotonic() - started, layer)
        self.servicer.hub.start()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "centroidal listening on %s:%d with %d models from %s",
            self.config.host, self.port, len(self.registry), self.store.path,
        )

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish for ``grace`` seconds, close the store."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(self.config.grace_period if grace is None else grace).wait()
        # Cancelled fits notice within one iteration; let them leave before the store closes.
        give_up = time.monotonic() + FIT_EXIT_WAIT_S
        while self.servicer.fits_in_flight and time.monotonic() < give_up:
            time.sleep(0.05)
        self.servicer.hub.stop()
        self.metrics.close()
        self.store.close()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)


def create_server(config: ServerConfig) -> tuple[CentroidalServer, int]:
    """Build a server bound to config's address (port 0 picks one); returns it and the port."""
    server = CentroidalServer(config)
    return server, server.port
