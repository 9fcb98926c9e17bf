"""Whole-service measurements: predict through the SDK, fit memory, start-up time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from centroidal.client import Client
from centroidal.engine import kmeans
from centroidal.engine.nearest import NearestCenters
from centroidal.server.app import WARMUP_DONE

from . import floor_work, floors
from .common import Row, medians_taking_turns, served
from .engine import blobs

ROOT = Path(__file__).resolve().parents[1]
# Rounds of the SDK's bulk calls and the floor's ways taking turns. The floor is the
# fastest of four medians: in three runs of five rounds it came to 20, 27 and 30 ms, in
# three runs of fifteen to 20-21 ms.
ROUNDS = 15


def sdk_predict(n: int, d: int, k: int) -> tuple[list[Row], dict[str, float]]:
    """Client.predict over loopback, sending the rows and through shared memory, against
    sklearn's predict in process; and the rows sent against the transport's floor (the
    fastest way grpc-python moves the same bytes, bench.floors, its ways timed taking turns
    with our calls) plus our kernel's time, and against the predicting floor (the trivial
    handler labelling each chunk with the same kernel on a worker thread as the next arrive)."""
    X = blobs(n, d, k, np.float32)
    model = KMeans(k, n_init=1, max_iter=5, random_state=0).fit(X[:50_000])
    # The server runs in its own process, as in production: in this one it would compete
    # with the client for the GIL.
    with tempfile.TemporaryDirectory() as scratch, floors.floor_server(scratch) as (floor_address, _), \
            floors.bulk_ways(floor_address) as ways, served() as address, Client(address) as client, \
            Client(address, shared_memory=True) as shared, \
            floor_work.predicting_floor(floor_address, X, model.cluster_centers_) as predicting:
        client.fit("bench", X[:50_000], k, init=model.cluster_centers_, max_iter=1)
        kernel = NearestCenters(model.cluster_centers_)
        work = {"sent": lambda: client.predict("bench", X), "shared": lambda: shared.predict("bench", X),
                "sklearn": lambda: model.predict(X), "kernel": lambda: kernel.predict(X),
                "predicting": predicting, **ways}
        ours = medians_taking_turns(work, warmup=2, rounds=ROUNDS)  # the shared object is made in the first
        floor = min(ours[way] for way in ways)
    rows = [
        Row(f"predict via SDK over loopback {n:.0e}x{d} k={k} f32", ours["sent"], "sklearn in-process",
            ours["sklearn"], flops=2.0 * n * k * d),
        Row(f"predict via SDK, shared memory {n:.0e}x{d} k={k} f32", ours["shared"], "sklearn in-process",
            ours["sklearn"], flops=2.0 * n * k * d),
        Row(f"predict via SDK over loopback {n:.0e}x{d} k={k} f32", ours["sent"],
            "grpc-python 64 MB floor + our kernel", floor + ours["kernel"]),
        Row(f"predict via SDK over loopback {n:.0e}x{d} k={k} f32", ours["sent"],
            "predicting floor: kernel on a thread", ours["predicting"]),
    ]
    return rows, {
        "transport_floor_64mb_ms": floor * 1e3, "predict_kernel_in_process_ms": ours["kernel"] * 1e3,
        "predicting_floor_ms": ours["predicting"] * 1e3,
        "predicting_floor_over_floor_and_kernel": ours["predicting"] / (floor + ours["kernel"]),
    }


def sdk_fit_upload(n: int, d: int, k: int) -> tuple[list[Row], dict[str, float]]:
    """Client.fit over loopback from given centers, one Lloyd iteration (the rows' upload
    is most of it), against the transport's floor for the same bytes plus the same fit in
    process (the floor's ways timed taking turns with the fit): what the upload costs beyond
    moving the bytes. And against the floor of an upload whose rows the server keeps
    (floors.KEPT_WAY) plus the fit in process: the in-process fit has its rows in memory
    already, and the floor's handler drops them."""
    X = blobs(n, d, k, np.float32, seed=4)
    init = X[np.random.default_rng(1).choice(n, k, replace=False)].copy()
    fit = {"init": init, "max_iter": 1, "tol": 0.0}
    phases: list[tuple[float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as scratch, floors.floor_server(scratch) as (floor_address, _), \
            floors.bulk_ways(floor_address, keep=True) as ways, served() as address, Client(address) as client:
        counter = iter(range(1_000_000))

        def sdk_fit() -> None:
            # Where the call's time went, by the server's clock in its progress: the rows all
            # received, the engine's last event, the model committed and answered.
            seen: dict[str, float] = {}
            began = time.perf_counter()
            result = client.fit(f"upload-{next(counter)}", X, k, **fit,
                                on_progress=lambda event: seen.__setitem__(event.stage, event.elapsed_seconds))
            wall = time.perf_counter() - began
            received, fitted = seen["data_received"], seen["restart_done"]
            phases.append((received, fitted - received, result.elapsed_seconds - fitted, wall - result.elapsed_seconds))

        work = {"sdk": sdk_fit, "engine": lambda: kmeans.fit(X, k, **fit), **ways}
        ours = medians_taking_turns(work, warmup=1, rounds=ROUNDS)
        floor = min(ours[way] for way in ways if way != floors.KEPT_WAY)
    upload, fitting, committing, outside = (float(np.median(column)) * 1e3 for column in zip(*phases[1:]))
    name = f"fit via SDK over loopback {n:.0e}x{d} k={k} f32, 1 iteration from given centers"
    rows = [Row(name, ours["sdk"], "grpc-python 64 MB floor + the same fit in process", floor + ours["engine"]),
            Row(name, ours["sdk"], "floor keeping the rows + the same fit in process",
                ours[floors.KEPT_WAY] + ours["engine"])]
    return rows, {"fit_upload_sdk_ms": ours["sdk"] * 1e3, "fit_upload_engine_ms": ours["engine"] * 1e3,
                  "fit_upload_floor_ms": floor * 1e3, "fit_upload_kept_floor_ms": ours[floors.KEPT_WAY] * 1e3,
                  # The SDK fit's phases (medians): the handler's start to every row received,
                  # then to the engine's end, then to the model committed; the rest is outside
                  # the handler (the call's set-up, the answer's way back).
                  "fit_upload_rows_received_ms": upload, "fit_upload_fit_on_server_ms": fitting,
                  "fit_upload_commit_ms": committing, "fit_upload_outside_handler_ms": outside}


FIT_MEMORY = textwrap.dedent(
    """
    import ctypes

    import numpy as np
    from centroidal.engine import kmeans, warmup

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    warmup.compile_all()
    n, d, k = 1_000_000, 16, 64
    X = np.empty((n, d), dtype=np.float32)
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=10.0, size=(k, d)) + 50.0
    for start in range(0, n, 100_000):
        X[start:start + 100_000] = centers[rng.integers(k, size=100_000)] + rng.normal(size=(100_000, d))
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap goes back, so reuse cannot hide growth
    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")  # restart the peak-RSS count (VmHWM) from the current RSS
    base = status("VmRSS")
    kmeans.fit(X, k, seed=0, max_iter=20)
    print((status("VmHWM") - base) / X.nbytes)
    """
)


def fit_memory() -> float:
    """Peak memory growth during a 1e6x16 float32 fit, as a fraction of the input's size."""
    done = subprocess.run([sys.executable, "-c", FIT_MEMORY], capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


def start_up(cache_dir: str) -> dict[str, float]:
    """From launching `centroidal serve` with the given numba cache: seconds to its SERVING
    log line; to the answer of a first fit and predict (1,000x4 float32, k=4) sent as soon
    as it serves, which wait for their kernels; and to the background warm-up's report that
    every kernel is compiled."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    X = np.random.default_rng(0).normal(size=(1_000, 4)).astype(np.float32)
    with tempfile.TemporaryDirectory() as data_dir:
        started = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-m", "centroidal.client.cli", "serve", "--port", "0",
             "--data-dir", data_dir],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        assert child.stderr is not None
        try:
            address, serving = "", 0.0
            for line in child.stderr:
                listening = re.search(r"centroidal listening on ([\d.]+):(\d+)", line)
                if listening:
                    serving = time.monotonic() - started
                    address = f"{listening.group(1)}:{listening.group(2)}"
                    break
            else:
                raise RuntimeError("server exited before serving")
            with Client(address) as client:
                client.fit("first", X, 4, seed=0)
                client.predict("first", X)
            first_call = time.monotonic() - started
            for line in child.stderr:
                if WARMUP_DONE in line:
                    return {"serving_s": serving, "first_fit_and_predict_s": first_call,
                            "all_compiled_s": time.monotonic() - started}
            raise RuntimeError("server exited before its warm-up ended")
        finally:
            child.terminate()
            child.wait(60)


def run() -> tuple[list[Row], dict[str, float]]:
    rows, facts = sdk_predict(1_000_000, 16, 64)
    upload_rows, upload_facts = sdk_fit_upload(1_000_000, 16, 64)
    rows += upload_rows
    facts.update(upload_facts)
    facts["fit_peak_memory_over_input"] = fit_memory()
    with tempfile.TemporaryDirectory() as cache_dir:
        for cache in ("cold", "warm"):  # the first start fills the empty cache
            for key, value in start_up(cache_dir).items():
                facts[f"start_{cache}_{key}"] = value
    return rows, facts
