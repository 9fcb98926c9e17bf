"""Random, mutated and extreme requests to every RPC through a real channel.

A client's mistake must get a client's status code: the run fails on any INTERNAL
or UNKNOWN, on a server that stops answering, and on a store that is not whole
afterwards. The default run is bounded; the slow one is forty times larger.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from centroidal.client import Client
from centroidal.server import ServerConfig, create_server
from centroidal.server.checks import inspect
from tests.conftest import ServerFactory
from tests.fuzzing import METHODS, Fuzzer, NearValid

CALL_DEADLINE_S = 5.0
FORBIDDEN = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def png(size: int = 16) -> bytes:
    rng = np.random.default_rng(0)
    encoded = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(encoded, format="PNG")
    return encoded.getvalue()


def seed_models(client: Client) -> list[str]:
    rng = np.random.default_rng(0)
    client.fit("km", rng.normal(size=(200, 3)).astype(np.float32), 4, seed=1)
    client.fit("km64", rng.normal(size=(300, 64)), 8, seed=1)
    with client.stream("mb", n_clusters=3, seed=1) as stream:
        stream.send(rng.normal(size=(100, 3)))
    client.stream("mb-empty", n_clusters=3, init_size=1000).close()  # no centers yet
    client.quantize_image(png(), n_colors=4, save_palette_as="pal")
    return ["km", "km64", "mb", "mb-empty", "pal", "missing"]


def call(channel: grpc.Channel, method: object, requests: list[bytes]) -> grpc.StatusCode:
    """Send one call's raw requests; its final status code."""
    path = method.path  # type: ignore[attr-defined]
    try:
        if method.client_streaming:  # type: ignore[attr-defined]
            responses = channel.stream_stream(path)(iter(requests), timeout=CALL_DEADLINE_S)
            for _ in responses:
                pass
        elif method.server_streaming:  # type: ignore[attr-defined]
            for _ in channel.unary_stream(path)(requests[0], timeout=CALL_DEADLINE_S):
                pass
        else:
            channel.unary_unary(path)(requests[0], timeout=CALL_DEADLINE_S)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def server_codes(server: object) -> Counter[str]:
    """The calls the server itself counted as ended, by status code: its own view, which
    sees a failure that came after the client's deadline, and misses a call still hanging."""
    codes: Counter[str] = Counter()
    for family in server.metrics.registry.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name == "centroidal_rpc_requests_total":
                codes[sample.labels["code"]] += int(sample.value)
    return codes


def run_fuzz(start_server: ServerFactory, tmp_path: Path, calls: int, seed: int) -> Counter[str]:
    server = start_server(max_concurrent_fits=2)
    with Client(f"127.0.0.1:{server.port}", timeout=60) as client:
        names = seed_models(client)
    before = server_codes(server)
    fuzzer, near = Fuzzer(seed, names), NearValid(seed, png())
    codes: Counter[str] = Counter()
    failures: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for index in range(calls):
            method = fuzzer.rng.choice(METHODS)
            requests = (fuzzer if index % 2 else near).requests(method)
            code = call(channel, method, requests)
            codes[code.name] += 1
            if code in FORBIDDEN and len(failures) < 10:
                failures.append(f"call {index} {method.name} -> {code.name}: {[r[:80] for r in requests]}")
    assert not failures, "client mistakes answered as server faults:\n" + "\n".join(failures)
    # Every call has ended on the server too (none hangs), and none there as a server fault.
    give_up = time.monotonic() + 60
    while sum((server_codes(server) - before).values()) < calls:
        assert time.monotonic() < give_up, f"calls still running on the server: {server_codes(server) - before}"
        time.sleep(0.1)
    ended = server_codes(server) - before
    assert not {code: ended[code] for code in ("INTERNAL", "UNKNOWN") if ended[code]}, ended
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        assert client.health() == "SERVING"
    data_dir = server.store.dir
    server.stop(0)
    report = inspect(data_dir)
    assert not report.problems, report.problems
    reopened, _ = create_server(ServerConfig(port=0, data_dir=str(data_dir), warmup=False))
    reopened.stop(0)  # every current version verified against its checksum on the way in
    return codes


def test_fuzz_every_rpc(start_server: ServerFactory, tmp_path: Path) -> None:
    codes = run_fuzz(start_server, tmp_path, calls=500, seed=1)
    assert codes["INVALID_ARGUMENT"] > 0 and sum(codes.values()) == 500


@pytest.mark.slow
def test_fuzz_every_rpc_at_length(start_server: ServerFactory, tmp_path: Path) -> None:
    codes = run_fuzz(start_server, tmp_path, calls=20_000, seed=2)
    print(dict(codes))
