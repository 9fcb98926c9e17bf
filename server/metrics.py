"""Prometheus metrics, each server with its own registry, served on their own port."""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class LogRate:
    """At most ``lines`` log lines per method in each ``window`` seconds; the next line let
    through says how many were held back. Refusals need no credentials to cause (health,
    reflection, a bad token), so their lines must not be able to fill the log."""

    def __init__(self, lines: int = 10, window: float = 60.0) -> None:
        self.lines, self.window = lines, window
        self._spent: dict[str, tuple[float, int, int]] = {}  # method: (window start, logged, held)

    def allow(self, method: str) -> tuple[bool, int]:
        """Whether to log a line for ``method`` now, and how many lines were held back before it."""
        now = time.monotonic()
        started, logged, held = self._spent.get(method, (now, 0, 0))
        if now - started >= self.window:
            started, logged = now, 0
        if logged < self.lines:
            self._spent[method] = (started, logged + 1, 0)
            return True, held
        self._spent[method] = (started, logged, held + 1)
        return False, 0


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class RpcTally:
    """``centroidal_rpc_requests_total{method,code}`` and the
    ``centroidal_rpc_duration_seconds{method}`` histogram, counted as plain numbers and
    turned into prometheus_client's metric families when scraped.

    Every RPC ends on the event loop's thread, the only caller of ``observe``, so the counts
    need no lock; prometheus_client's locked Counter and Histogram cost a small Predict about
    6 us of its 285 us of server CPU (measured under h2load). A scrape (another thread) copies
    each list at once, so its buckets, count and sum agree.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        # Per method: a count per bucket (the last past every bound), then the sum of seconds.
        self._latency: dict[str, list[float]] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        self._counts[key] = self._counts.get(key, 0) + 1
        tally = self._latency.get(method)
        if tally is None:
            tally = self._latency[method] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        tally[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        tally[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("centroidal_rpc_requests", "RPCs handled, by method and status code",
                                       labels=["method", "code"])
        for (method, code), count in list(self._counts.items()):
            requests.add_metric([method, code], count)
        yield requests
        durations = HistogramMetricFamily(
            "centroidal_rpc_duration_seconds", "Time from an RPC's start to its end, by method", labels=["method"]
        )
        bounds = [floatToGoString(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]
        for method, tally in list(self._latency.items()):
            counts = list(tally)
            durations.add_metric([method], list(zip(bounds, itertools.accumulate(counts[:-1]))), counts[-1])
        yield durations


class Metrics:
    """RPC counts and latency by method and code, points ingested, models, fit iterations."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Refusals are counted here and logged at a limited rate.
        self.refusal_lines = LogRate()
        self.rpcs = RpcTally()
        self.registry.register(self.rpcs)
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
        # Every acked batch counts one of these: the children looked up once, not per batch.
        self.batches_ok = self.batches.labels("OK")
        self.batches_duplicate = self.batches.labels("DUPLICATE")
        self.models = Gauge("centroidal_models", "Models held", registry=self.registry)
        self.store_writable = Gauge(
            "centroidal_store_writable", "1 while the model store takes writes, 0 while it refuses them",
            registry=self.registry,
        )
        self.store_writable.set(1)
        self.store_log_discarded = Gauge(
            "centroidal_store_log_frames_discarded",
            "Frames SQLite discarded from the end of the write-ahead log when this server opened the "
            "store: a write cut short before it was acknowledged (0 after a clean stop)",
            registry=self.registry,
        )
        self.warmed_up = Gauge(
            "centroidal_kernels_compiled",
            "1 once the start-up warm-up has compiled every kernel; 0 while it runs in the background",
            registry=self.registry,
        )
        self.store_failures = Counter(
            "centroidal_store_write_failures",
            "Times the store began refusing writes, by reason (STORE_FULL, STORE_READ_ONLY, ...)",
            ["reason"], registry=self.registry,
        )
        self.auth_refused = Counter(
            "centroidal_auth_refused",
            "Calls refused for a missing or wrong bearer token, by reason (no_token, not_bearer, "
            "wrong_token); metrics scrapes refused for the same reasons count too",
            ["reason"], registry=self.registry,
        )
        self._http: WSGIServer | None = None

    def observe(self, method: str, code: str, seconds: float) -> None:
        """One RPC ended with ``code`` after ``seconds``; on the event loop's thread only."""
        self.rpcs.observe(method, code, seconds)

    def serve(self, host: str, port: int, allowed: Callable[[bytes], bool] | None = None) -> int:
        """Expose /metrics over HTTP on its own thread; returns the bound port.

        allowed : when given, a scrape must send ``Authorization: Bearer <token>`` it accepts.
        Every other path is 404.
        """
        self._http = serve_http(self.registry, host, port, allowed, self.auth_refused)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not logged."""


def serve_http(
    registry: CollectorRegistry, host: str, port: int, allowed: Callable[[bytes], bool] | None, refused: Counter,
) -> WSGIServer:
    """Serve ``registry`` at /metrics on a thread of its own; ``allowed`` checks bearer tokens."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/metrics/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: metrics are at /metrics\n"]
        if allowed is not None:
            scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme.lower() != "bearer" or not allowed(token.strip().encode()):
                refused.labels("wrong_token" if token else "no_token").inc()
                start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                    ("WWW-Authenticate", "Bearer")])
                return [b"a bearer token is required\n"]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    http = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=http.serve_forever, name="centroidal-metrics", daemon=True).start()
    return http
