"""What an estimator holds on the server, and for how long: streams and connections are let
go of when it is closed, collected or the interpreter exits; an ephemeral one's model too."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from centroidal.client import Client, RemoteKMeans, RemoteMiniBatchKMeans, RemoteSpectralClustering
from centroidal.server import CentroidalServer

X = np.random.default_rng(0).normal(size=(60, 2))


def wait_for_no_open_streams(server: CentroidalServer, limit_s: float = 30.0) -> None:
    """Poll the server's live models until none counts an open stream (a bound on the wait,
    not a timing check)."""
    live = server.servicer.hub._live
    give_up = time.monotonic() + limit_s
    while any(model.streams for model in list(live.values())):
        left = {name: model.streams for name, model in list(live.items()) if model.streams}
        assert time.monotonic() < give_up, f"streams still open: {left}"
        time.sleep(0.05)


def drop_estimators_in_a_loop(server: CentroidalServer, count: int, prefix: str) -> None:
    target = f"127.0.0.1:{server.port}"
    for index in range(count):  # more than a thread-per-call server once had threads
        estimator = RemoteMiniBatchKMeans(n_clusters=2, model_name=f"{prefix}{index}", target=target)
        estimator.partial_fit(X)
        del estimator
    gc.collect()
    wait_for_no_open_streams(server)
    with Client(target, timeout=10) as client:
        assert client.health() == "SERVING"
        assert client.get_model(f"{prefix}{count - 1}").n_samples_seen == 60  # stored as its stream ended


def test_collected_estimators_hold_no_stream(server: CentroidalServer) -> None:
    drop_estimators_in_a_loop(server, 40, "loop")


@pytest.mark.slow
def test_collected_estimators_hold_no_stream_under_cpu_load(server: CentroidalServer) -> None:
    """Under load, a stream's close used to wait for a storage thread, and a second cancel
    of the call cancelled the queued close: the model counted the stream forever."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for attempt in range(10):
            drop_estimators_in_a_loop(server, 40, f"load{attempt}-")
    finally:
        for burner in burners:
            burner.kill()


@pytest.mark.parametrize("kind", [RemoteKMeans, RemoteMiniBatchKMeans, RemoteSpectralClustering])
def test_ephemeral_models_go_with_their_estimator(server: CentroidalServer, kind: type) -> None:
    target = f"127.0.0.1:{server.port}"
    with Client(target, timeout=10) as client:
        kept = kind(n_clusters=2, target=target, ephemeral=False).fit(X)
        closed = kind(n_clusters=2, target=target, ephemeral=True).fit(X)
        copy = pickle.loads(pickle.dumps(closed))
        collected = kind(n_clusters=2, target=target, ephemeral=True).fit(X)
        retargeted = kind(n_clusters=2, target=target, ephemeral=True).fit(X)
        retargeted.set_params(timeout=30.0)  # a new connection, the same owned model
        names = {kept.model_name_, closed.model_name_, collected.model_name_, retargeted.model_name_}
        collected_name = collected.model_name_
        closed.close()
        copy.close()  # a pickled copy owns nothing
        del collected
        gc.collect()
        give_up = time.monotonic() + 20
        while collected_name in {info.name for info in client.list_models()}:
            assert time.monotonic() < give_up, "a collected ephemeral estimator left its model"
            time.sleep(0.05)
        left = {info.name for info in client.list_models()} & names
        assert left == {kept.model_name_, retargeted.model_name_}
        retargeted.close()
        assert {info.name for info in client.list_models()} & names == {kept.model_name_}
        kept.close()
        assert kept.model_name_ in {info.name for info in client.list_models()}


@pytest.mark.parametrize("kind", [RemoteKMeans, RemoteMiniBatchKMeans, RemoteSpectralClustering])
def test_an_unnamed_model_belongs_to_its_estimator_and_a_named_one_stays(server: CentroidalServer,
                                                                         kind: type) -> None:
    """check_estimator's thousands of estimators once left hundreds of unnamed models behind."""
    target = f"127.0.0.1:{server.port}"
    with Client(target, timeout=10) as client:
        before = {info.name for info in client.list_models()}
        unnamed = kind(n_clusters=2, target=target).fit(X)
        named = kind(n_clusters=2, target=target, model_name=f"named-{kind.__name__}").fit(X)
        assert unnamed.is_ephemeral and not named.is_ephemeral
        assert unnamed.model_name_ in {info.name for info in client.list_models()}
        for _ in range(3):  # dropped without a close: collected
            kind(n_clusters=2, target=target).fit(X)
        gc.collect()
        unnamed.close()
        named.close()
        give_up = time.monotonic() + 20
        while {info.name for info in client.list_models()} - before != {named.model_name_}:
            assert time.monotonic() < give_up, {info.name for info in client.list_models()} - before
            time.sleep(0.05)


def test_interpreter_exit_releases_streams_and_ephemeral_models(server: CentroidalServer) -> None:
    target = f"127.0.0.1:{server.port}"
    script = f"""
import numpy as np
from centroidal.client import RemoteKMeans, RemoteMiniBatchKMeans
X = np.random.default_rng(0).normal(size=(60, 2))
streaming = RemoteMiniBatchKMeans(n_clusters=2, model_name="left-open", target="{target}").partial_fit(X)
gone = RemoteKMeans(n_clusters=2, model_name="gone-at-exit", ephemeral=True, target="{target}").fit(X)
kept = RemoteKMeans(n_clusters=2, model_name="kept-at-exit", target="{target}").fit(X)
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, env=dict(os.environ))
    wait_for_no_open_streams(server)
    with Client(target, timeout=10) as client:
        names = {info.name for info in client.list_models()}
        assert "gone-at-exit" not in names
        assert {"kept-at-exit", "left-open"} <= names
        assert client.get_model("left-open").durable_version == client.get_model("left-open").version
