"""The memory budget: images, uploads and buffered points are counted before they are taken."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from centroidal.client import Client, ResourceExhausted
from centroidal.client.errors import error_from_rpc
from centroidal.server.exceptions import Busy, LimitExceeded
from centroidal.server.memory import MemoryBudget, machine_memory
from centroidal.v1 import clustering_pb2 as pb
from tests.conftest import ServerFactory

MIB = 1024 * 1024


def big_png(side: int) -> bytes:
    """A large image that compresses to little: blocks of a few colours."""
    small = np.random.default_rng(0).integers(0, 255, (side // 100, side // 100, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(small).resize((side, side), Image.NEAREST).save(encoded, format="PNG")
    return encoded.getvalue()


def test_an_image_is_refused_from_its_header_before_it_is_decoded(start_server: ServerFactory) -> None:
    server = start_server(memory_budget=256 * MIB)
    image = big_png(7000)  # 49 megapixels, a few hundred KB encoded
    with Client(f"127.0.0.1:{server.port}", timeout=60) as client:
        with pytest.raises(ResourceExhausted) as refused:
            client.quantize_image(image, n_colors=4)
        assert refused.value.reason == "MEMORY_BUDGET" and refused.value.field == "image"
        assert "cannot fit" in refused.value.message and refused.value.retry_after is None
        assert server.servicer.memory.reserved == 0  # nothing held after the refusal
        small = client.quantize_image(big_png(400), n_colors=4)
        assert small.width == 400


def test_a_fit_that_would_not_fit_beside_another_is_told_when_to_retry(start_server: ServerFactory) -> None:
    server = start_server(memory_budget=80 * MIB)
    rows = 1_000_000  # 3 float64 features: 24 MB of data and 16 MB of working arrays
    spec = pb.FitSpec(model="a", config=pb.KMeansConfig(n_clusters=3, max_iter=3), n_samples=rows)
    chunk = np.zeros((1000, 3))
    first = pb.FitRequest(spec=spec, points=pb.Matrix(dtype=pb.DTYPE_FLOAT64, rows=1000, cols=3,
                                                         data=chunk.tobytes()))
    release = threading.Event()

    def holding() -> object:
        yield first
        release.wait(30)

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        fit = channel.stream_stream("/centroidal.v1.ClusteringService/Fit",
                                    request_serializer=pb.FitRequest.SerializeToString,
                                    response_deserializer=pb.FitResponse.FromString)
        held = fit(holding(), timeout=60)
        next(held)  # admitted
        give_up = time.monotonic() + 20
        while server.servicer.memory.reserved == 0:  # the first chunk reserved the whole fit
            assert time.monotonic() < give_up
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as second:
            list(fit(iter([pb.FitRequest(spec=pb.FitSpec(model="b", config=spec.config, n_samples=rows),
                                         points=first.points)]), timeout=60))
        refused = error_from_rpc(second.value)
        assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED and refused.reason == "MEMORY_BUDGET"
        assert refused.retry_after == pytest.approx(2.0)
        held.cancel()
        release.set()
    give_up = time.monotonic() + 20
    while server.servicer.memory.reserved:  # given back once the call is gone
        assert time.monotonic() < give_up
        time.sleep(0.01)


def test_buffered_init_points_count_against_the_budget(start_server: ServerFactory) -> None:
    server = start_server(memory_budget=8 * MIB)
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        stream = client.stream("buffering", n_clusters=4, init_size=2_000_000)
        batch = np.zeros((20_000, 8))  # 1.28 MB each, all kept until init_size points
        with pytest.raises(ResourceExhausted) as refused:
            for _ in range(10):
                stream.send(batch)
                stream.flush(timeout=30)
        assert refused.value.reason is None or "memory" in refused.value.message
        assert "--memory-budget" in refused.value.message
        stream.close(timeout=30)
        kept = client.get_model("buffering").init_points_buffered
        assert 0 < kept * 8 * 8 <= 8 * MIB


def test_the_default_budget_follows_the_machine() -> None:
    from centroidal.server import ServerConfig

    assert 0 < ServerConfig().memory_budget < machine_memory()
    budget = MemoryBudget(100)
    budget.add_resident(lambda: 60)
    with budget.reservation("a") as held:
        held.grow(40)
        with pytest.raises(Busy, match="retry later"):
            budget.reservation("b").grow(1)
    assert budget.reserved == 0
    with pytest.raises(LimitExceeded, match="cannot fit"):
        budget.reservation("c").grow(41)


class ServeProcess:
    """`centroidal serve` in a process of its own, whose memory is the server's alone."""

    def __init__(self, data_dir: Path, *flags: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "centroidal.client.cli", "serve", "--port", "0", "--data-dir", str(data_dir),
             "--no-warmup", *flags], stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        self.target = ""
        for line in self.process.stderr:
            found = re.search(r"centroidal listening on (\S+)", line)
            if found:
                self.target = found.group(1)
                break
        assert self.target, "the server did not start"
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise AssertionError(key)

    def settled_rss(self) -> int:
        """RSS once it has stopped falling (a call's memory goes back when the call ends)."""
        previous = self.status("VmRSS:")
        for _ in range(20):
            time.sleep(0.25)
            now = self.status("VmRSS:")
            if now >= previous:
                return now
            previous = now
        return previous

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def undeclared_upload(mib: int) -> Iterator[pb.FitRequest]:
    chunk = np.random.default_rng(0).normal(size=(32768, 16))  # 4 MiB
    spec = pb.FitSpec(model="refused", config=pb.KMeansConfig(n_clusters=8, max_iter=2))
    for index in range(mib // 4):
        yield pb.FitRequest(spec=spec if index == 0 else None, points=pb.Matrix(
            dtype=pb.DTYPE_FLOAT64, rows=chunk.shape[0], cols=16, data=chunk.tobytes()))


def test_a_refused_upload_gives_its_memory_back(tmp_path: Path) -> None:
    """Five uploads without n_samples, each refused at a 128 MiB budget: the process returns
    near its idle size after each (it kept about the budget for good before, every time)."""
    server = ServeProcess(tmp_path / "data", "--memory-budget", "128M")
    try:
        idle = server.settled_rss()
        settled = []
        with grpc.insecure_channel(server.target) as channel:
            fit = channel.stream_stream("/centroidal.v1.ClusteringService/Fit",
                                        request_serializer=pb.FitRequest.SerializeToString,
                                        response_deserializer=pb.FitResponse.FromString)
            for _ in range(5):
                with pytest.raises(grpc.RpcError) as refused:
                    list(fit(undeclared_upload(200), timeout=120))
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                settled.append(server.settled_rss())
    finally:
        server.stop()
    assert max(settled) - idle < 32 * MIB, [round((rss - idle) / MIB) for rss in settled]
