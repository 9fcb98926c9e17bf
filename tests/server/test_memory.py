"""The memory budget: images, uploads and buffered points are counted before they are taken."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from centroidal.client import Client, ResourceExhausted
from centroidal.client.errors import error_from_rpc
from centroidal.server.app import WARMUP_DONE
from centroidal.server.exceptions import Busy, LimitExceeded
from centroidal.server import memory
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


def test_a_fit_that_would_not_fit_beside_another_waits_for_its_room(start_server: ServerFactory) -> None:
    server = start_server(memory_budget=80 * MIB)
    rows = 1_000_000  # 3 float64 features: 24 MB of data and 16 MB of working arrays
    spec = pb.FitSpec(model="a", config=pb.KMeansConfig(n_clusters=3, max_iter=3), n_samples=rows)
    data = np.random.default_rng(0).normal(size=(rows, 3))
    first = pb.FitRequest(spec=spec, points=pb.Matrix(dtype=pb.DTYPE_FLOAT64, rows=1000, cols=3,
                                                         data=data[:1000].tobytes()))
    release = threading.Event()
    budget = server.servicer.memory

    def holding() -> object:
        yield first
        release.wait(30)

    def whole(model: str) -> Iterator[pb.FitRequest]:
        for start in range(0, rows, 100_000):
            part = data[start : start + 100_000]
            yield pb.FitRequest(spec=pb.FitSpec(model=model, config=spec.config, n_samples=rows) if not start else None,
                                points=pb.Matrix(dtype=pb.DTYPE_FLOAT64, rows=part.shape[0], cols=3,
                                                 data=part.tobytes()))

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        fit = channel.stream_stream("/centroidal.v1.ClusteringService/Fit",
                                    request_serializer=pb.FitRequest.SerializeToString,
                                    response_deserializer=pb.FitResponse.FromString)
        held = fit(holding(), timeout=60)
        next(held)  # admitted
        give_up = time.monotonic() + 20
        while budget.reserved == 0:  # the first chunk reserved the whole fit
            assert time.monotonic() < give_up
            time.sleep(0.01)
        answers: list[object] = []
        second = threading.Thread(target=lambda: answers.extend(fit(whole("b"), timeout=60)))
        second.start()
        while not budget._waiting:  # b waits for the room a holds, instead of being refused
            assert time.monotonic() < give_up and second.is_alive()
            time.sleep(0.01)
        held.cancel()
        release.set()
        second.join(60)
    assert answers and answers[-1].WhichOneof("event") == "result"  # type: ignore[attr-defined]
    give_up = time.monotonic() + 20
    while budget.reserved:  # given back once the calls are gone
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


# In a process of its own, as mallopt is process-wide: 20 MiB in 512 KiB blocks (a streamed
# batch's size, each below the mmap threshold, so from the heap) freed together, RSS read
# before and after, then after the quiet trim. Prints the MiB each dropped by.
HEAP_PROBE = """
import time
from centroidal.server import memory
assert memory.give_freed_memory_back()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
blocks = [b"x" * (512 * 1024) for _ in range(40)]  # written, so resident (bytes(n) is calloc)
held = rss()
del blocks
freed = rss()
memory.trim()
time.sleep(memory.TRIM_QUIET_S + 1.0)
print((held - freed) / 2**20, (held - rss()) / 2**20)
"""


def test_a_heap_keeps_what_calls_free_until_the_quiet_trim() -> None:
    """Blocks that a stream's batches free together (20 MiB, less than HEAP_TOP_KEPT) stay in
    malloc's heap for the next batches instead of going back at once, to come again as
    fresh pages; the trim once the server is quiet hands them back."""
    done = subprocess.run([sys.executable, "-c", HEAP_PROBE], capture_output=True, text=True, check=True)
    dropped_when_freed, dropped_after_trim = map(float, done.stdout.split())
    assert dropped_when_freed < 2, done.stdout
    assert dropped_after_trim > 16, done.stdout


# In a process of its own: eight threads each allocate from the heap at once, then
# malloc_info's XML tells how many heaps malloc made. Prints that count and the limit.
ARENA_PROBE = """
import ctypes, os, re, sys, tempfile, threading
from centroidal.server import memory
if sys.argv[1] == "limited":
    assert memory.give_freed_memory_back()
start = threading.Barrier(8)
def allocate():
    start.wait()
    held = [b"x" * (256 * 1024) for _ in range(4)]  # below the mmap threshold: from a heap
    start.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    heaps = len(re.findall(r'<heap nr="\\d+">', open(out.name).read()))
print(heaps, memory.arena_limit())
"""


@pytest.mark.parametrize("limited", [True, False])
def test_malloc_keeps_one_heap_per_core(limited: bool) -> None:
    """Threads that allocate at once share at most one heap per core once the server set
    malloc up: each heap keeps up to HEAP_TOP_KEPT free, so glibc's own limit (8 per core)
    would let a server with many threads hold hundreds of MiB it does not use."""
    done = subprocess.run([sys.executable, "-c", ARENA_PROBE, "limited" if limited else "glibc"],
                          capture_output=True, text=True, check=True)
    heaps, limit = map(int, done.stdout.split())
    if limited:
        assert 1 <= heaps <= limit, done.stdout
    else:  # the probe can see more: without the limit, the same threads made more heaps
        assert heaps > limit, done.stdout


def test_malloc_trims_once_the_server_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Free pages go back TRIM_QUIET_S after the last request, so calls that come back to back
    reuse them; and no later than TRIM_LATEST_S after the first, however steady the calls."""
    trims: list[float] = []

    class Libc:
        def malloc_trim(self, pad: int) -> int:
            if threading.current_thread() is trimmer._thread:  # not the server's own trimmer
                trims.append(time.monotonic())
            return 1

    monkeypatch.setattr(memory, "_LIBC", Libc())
    monkeypatch.setattr(memory, "TRIM_QUIET_S", 0.3)
    monkeypatch.setattr(memory, "TRIM_LATEST_S", 1.0)
    trimmer = memory._Trimmer()
    began = time.monotonic()
    trimmer.request()
    time.sleep(0.2)
    trimmer.request()  # postpones the first
    deadline = time.monotonic() + 30
    while not trims and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert len(trims) == 1 and trims[0] - began >= 0.5, [round(at - began, 2) for at in trims]

    trims.clear()
    began = requested = time.monotonic()
    longest_pause = 0.0
    while time.monotonic() - began < 2.5:
        trimmer.request()
        time.sleep(0.02)
        longest_pause, requested = max(longest_pause, time.monotonic() - requested), time.monotonic()
    assert trims, "no trim while requests kept coming"
    if longest_pause < memory.TRIM_QUIET_S:  # never quiet: the trim came from the latest bound
        assert trims[0] - began >= memory.TRIM_LATEST_S, [round(at - began, 2) for at in trims]


class ServeProcess:
    """`centroidal serve` in a process of its own, whose memory is the server's alone."""

    def __init__(self, data_dir: Path, *flags: str, compiled: bool = False) -> None:
        """compiled: start once every kernel is compiled, so that the idle size includes them."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "centroidal.client.cli", "serve", "--port", "0", "--data-dir", str(data_dir),
             *([] if compiled else ["--no-warmup"]), *flags], stderr=subprocess.PIPE, text=True)
        assert self.process.stderr is not None
        self.target = ""
        for line in self.process.stderr:
            found = re.search(r"centroidal listening on (\S+)", line)
            if found:
                self.target = found.group(1)
            if self.target and (not compiled or WARMUP_DONE in line):
                break
        assert self.target, "the server did not start"
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise AssertionError(key)

    def settled_rss(self) -> int:
        """RSS once it has stopped falling (a call's memory goes back when the call ends,
        the free pages of malloc's heaps once the server has been quiet for TRIM_QUIET_S)."""
        time.sleep(memory.TRIM_QUIET_S)
        previous = self.status("VmRSS:")
        for _ in range(20):
            time.sleep(0.25)
            now = self.status("VmRSS:")
            if now >= previous:
                return now
            previous = now
        return previous

    def peak_during(self, call: Callable[[int], None], calls: int) -> int:
        """The process's peak RSS while ``calls`` threads each run ``call(index)``."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # the peak counts from here
        threads = [threading.Thread(target=call, args=(index,)) for index in range(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        return self.status("VmHWM:")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


def undeclared_upload(mib: int, model: str = "refused") -> Iterator[pb.FitRequest]:
    chunk = np.random.default_rng(0).normal(size=(32768, 16))  # 4 MiB
    spec = pb.FitSpec(model=model, config=pb.KMeansConfig(n_clusters=8, max_iter=2))
    for index in range(mib // 4):
        yield pb.FitRequest(spec=spec if index == 0 else None, points=pb.Matrix(
            dtype=pb.DTYPE_FLOAT64, rows=chunk.shape[0], cols=16, data=chunk.tobytes()))


@pytest.mark.slow  # over 10 s: in make test-slow
def test_a_refused_upload_gives_its_memory_back(tmp_path: Path) -> None:
    """Five uploads without n_samples, each refused at a 128 MiB budget: the process returns
    near its idle size after each (it kept about the budget for good before, every time).
    Idle is measured after a first refusal, which loads the code of the path once (10-20
    MiB of modules and caches that stay whatever the uploads do)."""
    server = ServeProcess(tmp_path / "data", "--memory-budget", "128M")
    try:
        settled = []
        with grpc.insecure_channel(server.target) as channel:
            fit = channel.stream_stream("/centroidal.v1.ClusteringService/Fit",
                                        request_serializer=pb.FitRequest.SerializeToString,
                                        response_deserializer=pb.FitResponse.FromString)
            with pytest.raises(grpc.RpcError):
                list(fit(undeclared_upload(200), timeout=120))
            idle = server.settled_rss()
            for _ in range(5):
                with pytest.raises(grpc.RpcError) as refused:
                    list(fit(undeclared_upload(200), timeout=120))
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                settled.append(server.settled_rss())
    finally:
        server.stop()
    assert max(settled) - idle < 32 * MIB, [round((rss - idle) / MIB) for rss in settled]


def test_uploads_that_fill_the_budget_together_do_not_starve_each_other(tmp_path: Path) -> None:
    """Three undeclared 100 MiB uploads at once under a budget that holds two: they all wait
    for room, the youngest gives way (with a RetryInfo), and the other two are fitted. The
    process stays within the budget plus its idle size, plus 10%."""
    server = ServeProcess(tmp_path / "data", "--memory-budget", "256M", compiled=True)
    outcomes: list[str] = []
    try:
        idle = server.settled_rss()

        def upload(index: int) -> None:
            with grpc.insecure_channel(server.target) as channel:
                fit = channel.stream_stream("/centroidal.v1.ClusteringService/Fit",
                                            request_serializer=pb.FitRequest.SerializeToString,
                                            response_deserializer=pb.FitResponse.FromString)
                try:
                    list(fit(undeclared_upload(100, f"u{index}"), timeout=300))
                    outcomes.append("OK")
                except grpc.RpcError as error:
                    refused = error_from_rpc(error)
                    outcomes.append(f"{refused.code.name} retry_after={refused.retry_after}")

        peak = server.peak_during(upload, calls=3)
    finally:
        server.stop()
    assert sorted(outcomes)[:2] == ["OK", "OK"], outcomes
    assert all(outcome == "OK" or outcome == "RESOURCE_EXHAUSTED retry_after=2.0" for outcome in outcomes), outcomes
    assert peak <= 1.1 * (idle + 256 * MIB), (round(idle / MIB), round(peak / MIB))


def test_buffered_streams_keep_the_process_within_the_budget(tmp_path: Path) -> None:
    """Three streamed models buffering init points until the budget refuses their batches:
    the points are counted with the copies a checkpoint makes of them."""
    server = ServeProcess(tmp_path / "data", "--memory-budget", "256M", compiled=True)
    outcomes: list[str] = []
    try:
        idle = server.settled_rss()
        batch = np.random.default_rng(0).normal(size=(32768, 16))  # 4 MiB

        def produce(index: int) -> None:
            with Client(server.target, timeout=120) as client:
                stream = client.stream(f"s{index}", n_clusters=8, init_size=2_000_000)
                try:
                    for _ in range(40):
                        stream.send(batch)
                    stream.flush(timeout=60)
                    outcomes.append("all acked")
                except ResourceExhausted:
                    outcomes.append("refused")
                with contextlib.suppress(ResourceExhausted):  # the stream itself may be refused
                    stream.close(timeout=60)

        peak = server.peak_during(produce, calls=3)
    finally:
        server.stop()
    assert "refused" in outcomes, outcomes  # the budget did bind
    assert peak <= 1.1 * (idle + 256 * MIB), (round(idle / MIB), round(peak / MIB))


def test_models_past_the_budget_are_shed_and_loaded_again_on_use(start_server: Callable[..., Any]) -> None:
    """Twenty-four 512 KiB models under an 8 MiB budget: the least recently used are let go to make
    room for each fit and each load, every one still answers (loaded again from the store),
    and what the server holds stays within the budget."""
    server = start_server(memory_budget=8 * MIB)
    rng = np.random.default_rng(0)
    registry = server.registry
    with Client(f"127.0.0.1:{server.port}") as client:
        for index in range(24):
            client.fit(f"m{index}", rng.normal(size=(256, 256)), n_clusters=256, max_iter=1, seed=0,
                       init="random")
            assert registry.resident_bytes() <= 8 * MIB
        points = rng.normal(size=(3, 256))
        for _ in range(2):
            for index in range(24):
                assert client.predict(f"m{index}", points).shape == (3,)
                assert registry.resident_bytes() <= 8 * MIB
    assert registry.resident_models() < 24 and len(registry) == 24
