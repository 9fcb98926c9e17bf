"""Honest durability: a write that could not be stored is never reported as stored.

The store is filled for real: ``max_store_bytes`` caps the SQLite file (its
max_page_count), so SQLite itself answers SQLITE_FULL, exactly as on a full disk;
``min_free_disk`` set above the disk's free space refuses writes from statvfs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from centroidal.client import Client, ResourceExhausted
from centroidal.server import CentroidalServer
from tests.conftest import ServerFactory
from tests.server.test_metrics import free_port

QUOTA = 256 * 1024  # bytes of store: a few small models fit, a big one does not


def blobs(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=10, size=(4, d))
    return (centers[rng.integers(0, 4, n)] + rng.normal(size=(n, d))).astype(np.float32)


def metric(server: CentroidalServer, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_full_store_refuses_writes_keeps_reads_and_lets_deletes_free_space(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_store_bytes=QUOTA, metrics_port=free_port())
    with Client(f"127.0.0.1:{server.port}", timeout=60) as client:
        small = client.fit("small", blobs(500, 4), 4, seed=1)
        with pytest.raises(ResourceExhausted) as refused:  # 256 KiB of centers
            client.fit("big", blobs(1000, 128, seed=2), 512, seed=1, max_iter=1)
        assert refused.value.reason == "STORE_FULL"
        assert "full" in refused.value.message and refused.value.code.name == "RESOURCE_EXHAUSTED"
        # Reads go on; the refused write left nothing behind, and health says writes stop.
        assert client.get_model("small").version == small.model.version
        assert client.predict("small", blobs(10, 4)).shape == (10,)
        assert client.health() == "SERVING"
        assert client.health("centroidal.writes") == "NOT_SERVING"
        assert metric(server, "centroidal_store_writable ") == 0
        # A new write is refused up front while the failure is fresh, before any data is sent.
        with pytest.raises(ResourceExhausted):
            client.fit("other", blobs(100, 4), 2)
        # Deletes still run; after the retry delay writes work again.
        client.delete_model("small")
        time.sleep(5.1)
        client.fit("again", blobs(500, 4), 4, seed=1)
        assert client.health("centroidal.writes") == "SERVING"
        assert metric(server, "centroidal_store_writable ") == 1
        assert metric(server, 'centroidal_store_write_failures_total{reason="STORE_FULL"}') >= 1


def test_writes_are_refused_below_the_free_disk_floor(start_server: ServerFactory) -> None:
    server = start_server()
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        client.fit("kept", blobs(200, 3), 3, seed=1)
    server.stop(0)
    free = os.statvfs(server.store.dir).f_bavail * os.statvfs(server.store.dir).f_frsize
    floor = start_server(min_free_disk=free * 4)
    with Client(f"127.0.0.1:{floor.port}", timeout=30) as client:
        with pytest.raises(ResourceExhausted) as refused:
            client.fit("new", blobs(200, 3), 3)
        assert refused.value.reason == "STORE_FULL" and "--min-free-disk" in refused.value.message
        assert client.predict("kept", blobs(5, 3)).shape == (5,)
        client.delete_model("kept")  # a delete needs no free-space floor
        assert client.list_models() == []


def test_a_stream_whose_model_cannot_be_stored_raises_and_keeps_its_batches(
    start_server: ServerFactory,
) -> None:
    # Only the close checkpoints: with the filler it cannot fit, without it it does.
    server = start_server(max_store_bytes=QUOTA * 3 // 2, checkpoint_interval=3600)
    batches = [blobs(200, 64, seed=s) for s in range(12)]
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        # Most of the quota goes to a model that will be deleted to make room.
        client.fit("filler", blobs(1100, 64, seed=9), 1024, seed=1, max_iter=1)
        stream = client.stream("s", n_clusters=256, seed=3, producer_id="p", reconnect_timeout=2.0)
        with pytest.raises(ResourceExhausted) as full:
            for batch in batches:
                stream.send(batch)
            stream.close(timeout=60)
        assert full.value.reason == "STORE_FULL"
        stored = stream.durable_sequence
        assert stored < len(batches), "batches were reported stored that were not"
        assert client.health("centroidal.writes") == "NOT_SERVING"
        # Room is made; closing again resends what was kept, and now it is stored.
        client.delete_model("filler")
        time.sleep(5.1)
        sent = stream.next_sequence - 1
        stream.close(timeout=60)
        assert stream.durable_sequence == sent
        assert stream.last_ack is not None
        model = client.get_model("s")
        assert stream.last_ack.durable_version == model.version == model.durable_version
        assert model.n_samples_seen == sent * 200  # each batch exactly once
    server.stop(0)
    reopened = start_server()
    with Client(f"127.0.0.1:{reopened.port}", timeout=30) as client:
        assert client.get_model("s").n_samples_seen == sent * 200


def test_batches_are_refused_while_checkpoints_fail(start_server: ServerFactory) -> None:
    server = start_server(max_store_bytes=2 * QUOTA, checkpoint_interval=0.1, keep_versions=1)
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        client.fit("filler", blobs(1100, 64, seed=9), 1024, seed=1, max_iter=1)
        stream = client.stream("s", n_clusters=256, seed=3, producer_id="p", reconnect_timeout=1.0)
        with pytest.raises(ResourceExhausted) as full:
            for seed in range(200):  # until a checkpoint fails and the next batch is refused
                stream.send(blobs(200, 64, seed=seed))
                stream.flush(timeout=30)
                time.sleep(0.05)
        assert full.value.reason == "STORE_FULL"
        assert client.health("centroidal.writes") == "NOT_SERVING"
        applied = stream.last_ack
        assert applied is not None and applied.durable_version < applied.version
        # Nothing was applied in memory past the refusal.
        assert client.get_model("s").version == applied.version
        sent = stream.next_sequence - 1
        assert applied.sequence < sent
        client.delete_model("filler")
        time.sleep(5.1)
        stream.close(timeout=60)
        model = client.get_model("s")
        assert model.n_samples_seen == sent * 200 and model.durable_version == model.version


def test_close_reports_the_durable_version(client: Client) -> None:
    stream = client.stream("d", n_clusters=2, seed=1)
    for seed in range(3):
        stream.send(blobs(50, 3, seed=seed))
    stream.close(timeout=30)
    assert stream.last_ack is not None
    model = client.get_model("d")
    assert stream.last_ack.durable_version == model.version == 3


def serve(data_dir: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "centroidal.server.cli", "--port", "0", "--data-dir", str(data_dir),
         "--no-warmup", *flags],
        stderr=subprocess.PIPE, text=True,
    )


def wait_for_port(process: subprocess.Popen[str]) -> tuple[int, list[str]]:
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "centroidal listening on" in line:
            return int(line.split("listening on ")[1].split(":")[1].split(" ")[0]), lines
    raise AssertionError("the server did not start:\n" + "".join(lines))


def test_sigterm_with_unstored_batches_exits_non_zero_and_names_them(tmp_path: Path) -> None:
    # The stream stays open: a short grace period, not the 10 s default, before the server stops it.
    process = serve(tmp_path / "data", "--max-store-bytes", "65536", "--checkpoint-interval", "3600",
                    "--grace-period", "1")
    try:
        port, _ = wait_for_port(process)
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            stream = client.stream("unsaved", n_clusters=256, seed=1, reconnect_timeout=1.0)
            for seed in range(4):
                stream.send(blobs(300, 64, seed=seed))
            stream.flush(timeout=60)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 1
            stream.abort()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.stderr is not None
    log = process.stderr.read()
    assert "not stored: model 'unsaved'" in log and "stopped cleanly" not in log


def test_sigterm_with_everything_stored_exits_zero(tmp_path: Path) -> None:
    process = serve(tmp_path / "data")
    try:
        port, _ = wait_for_port(process)
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            with client.stream("saved", n_clusters=2, seed=1) as stream:
                stream.send(blobs(50, 3))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
