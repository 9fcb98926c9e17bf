"""Prometheus metrics, each server with its own registry, served on their own port."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    """RPC counts and latency by method and code, points ingested, models, fit iterations."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpcs = Counter(
            "centroidal_rpc_requests", "RPCs handled, by method and status code",
            ["method", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "centroidal_rpc_duration_seconds", "Time from an RPC's start to its end, by method",
            ["method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.points = Counter(
            "centroidal_points_ingested", "Points received by Fit and learnt from streams",
            registry=self.registry,
        )
        self.predicted = Counter(
            "centroidal_points_predicted", "Points assigned by Predict", registry=self.registry
        )
        self.iterations = Counter(
            "centroidal_fit_iterations", "Lloyd iterations run by fits", registry=self.registry
        )
        self.batches = Counter(
            "centroidal_stream_batches", "Mini-batches acknowledged, by outcome",
            ["outcome"], registry=self.registry,
        )
        self.models = Gauge("centroidal_models", "Models held", registry=self.registry)
        self.store_writable = Gauge(
            "centroidal_store_writable", "1 while the model store takes writes, 0 while it refuses them",
            registry=self.registry,
        )
        self.store_writable.set(1)
        self.store_failures = Counter(
            "centroidal_store_write_failures",
            "Times the store began refusing writes, by reason (STORE_FULL, STORE_READ_ONLY, ...)",
            ["reason"], registry=self.registry,
        )
        self._http: WSGIServer | None = None
        # Labelled children looked up once: labels() costs more than the count itself.
        self._rpc_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        children = self._rpc_children.get((method, code))
        if children is None:
            children = (self.rpcs.labels(method, code), self.latency.labels(method))
            self._rpc_children[(method, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP; returns the bound port."""
        http, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http = http
        return int(http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
