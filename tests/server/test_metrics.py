"""Prometheus metrics on their own port."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest

from centroidal.client import Client, FailedPrecondition, NotFound
from tests.conftest import ServerFactory


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


def test_metrics_count_rpcs_points_and_models(start_server: ServerFactory) -> None:
    server = start_server(metrics_port=free_port())
    X = np.random.default_rng(0).normal(size=(400, 3))
    with Client(f"127.0.0.1:{server.port}") as client:
        client.fit("measured", X, 4, seed=0, max_iter=5)
        client.predict("measured", X[:50])
        with pytest.raises(NotFound):
            client.predict("absent", X)
        with client.stream("streamed", n_clusters=2, producer_id="p") as stream:
            stream.send(X[:100])
            stream.send(X[:20, :2])  # rejected: wrong dimension
            with pytest.raises(FailedPrecondition):
                stream.flush()
        with client.stream("streamed", producer_id="p") as stream:
            stream.send(X[:100], timeout=10)  # sequence 1 again: a duplicate
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    assert sample(text, 'centroidal_rpc_requests_total{code="OK",method="Fit"}') == 1
    assert sample(text, 'centroidal_rpc_requests_total{code="OK",method="Predict"}') == 1
    assert sample(text, 'centroidal_rpc_requests_total{code="NOT_FOUND",method="Predict"}') == 1
    assert sample(text, "centroidal_points_ingested_total") == 500
    assert sample(text, 'centroidal_stream_batches_total{outcome="OK"}') == 1
    assert sample(text, 'centroidal_stream_batches_total{outcome="FAILED_PRECONDITION"}') == 1
    assert sample(text, 'centroidal_stream_batches_total{outcome="DUPLICATE"}') == 1
    assert sample(text, 'centroidal_rpc_requests_total{code="OK",method="StreamMiniBatch"}') == 2
    assert sample(text, "centroidal_points_predicted_total") == 50
    assert 1 <= sample(text, "centroidal_fit_iterations_total") <= 5
    assert sample(text, "centroidal_models") == 2
    server.warmed_up.wait(300)
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    assert sample(text, "centroidal_kernels_compiled") == 1
    assert 'centroidal_rpc_duration_seconds_count{method="Fit"} 1.0' in text


def test_rpc_latency_buckets_count_each_call_at_or_below_their_bound() -> None:
    from prometheus_client import generate_latest

    from centroidal.server.metrics import Metrics

    metrics = Metrics()
    for seconds in (0.0005, 0.001, 0.003, 400.0):  # at a bound counts in it; past the last, only +Inf
        metrics.observe("Predict", "OK", seconds)
    metrics.observe("Predict", "NOT_FOUND", 0.002)
    text = generate_latest(metrics.registry).decode()
    assert sample(text, 'centroidal_rpc_requests_total{code="OK",method="Predict"}') == 4
    assert sample(text, 'centroidal_rpc_requests_total{code="NOT_FOUND",method="Predict"}') == 1
    buckets = {"0.001": 2, "0.0025": 3, "0.005": 4, "300.0": 4, "+Inf": 5}
    for bound, count in buckets.items():
        assert sample(text, f'centroidal_rpc_duration_seconds_bucket{{le="{bound}",method="Predict"}}') == count
    assert sample(text, 'centroidal_rpc_duration_seconds_count{method="Predict"}') == 5
    assert sample(text, 'centroidal_rpc_duration_seconds_sum{method="Predict"}') == pytest.approx(400.0065)
