"""`centroidal serve` as a real subprocess: start, serve, SIGTERM, restart on the same data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from centroidal.client import Client

CENTROIDAL = [sys.executable, "-m", "centroidal.client.cli"]
LISTENING = re.compile(r"centroidal listening on ([\d.]+):(\d+)")


class ServeProcess:
    """A `centroidal serve` child whose log lines are collected as they arrive."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "CENTROIDAL_DATA_DIR": str(data_dir), **(env or {})}
        self.process = subprocess.Popen(
            [*CENTROIDAL, "serve", "--port", "0", "--grace-period", "5", *extra],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_for_address(self, limit_s: float = 180.0) -> str:
        give_up = time.monotonic() + limit_s
        while time.monotonic() < give_up:
            for line in list(self.lines):
                match = LISTENING.search(line)
                if match:
                    return f"{match.group(1)}:{match.group(2)}"
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError("server did not start:\n" + "".join(self.lines))

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self._reader.join(5)
        return code


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[ServeProcess]]:
    started: list[ServeProcess] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> ServeProcess:
        child = ServeProcess(tmp_path / "data", *extra, env=env)
        started.append(child)
        return child

    yield start  # type: ignore[misc]
    for child in started:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait()


def _helpers_of(pid: int) -> list[int]:
    """Processes still compiling kernels for the server ``pid`` (engine.warmup --for pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"centroidal.engine.warmup" in words and str(pid).encode() in words:
            found.append(int(entry.name))
    return found


def health(address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CENTROIDAL, "health", "--target", address], capture_output=True, text=True, timeout=60
    )


def test_serve_answers_drains_on_sigterm_and_reloads_models(serve) -> None:
    X = np.random.default_rng(3).normal(size=(500, 3)).astype(np.float32)
    first = serve()
    address = first.wait_for_address()
    checked = health(address)
    assert checked.returncode == 0 and checked.stdout.strip() == "SERVING"
    with Client(address) as client:
        fitted = client.fit("persisted", X, 5, seed=2, return_labels=True)
    assert first.terminate() == 0
    assert any("stopped cleanly" in line for line in first.lines)
    assert health(address).returncode != 0

    second = serve()
    address = second.wait_for_address()
    with Client(address) as client:
        assert client.get_model("persisted").version == 1
        np.testing.assert_array_equal(client.predict("persisted", X), fitted.labels)
    assert second.terminate() == 0


def test_serve_refuses_a_busy_port(serve) -> None:
    first = serve()
    address = first.wait_for_address()
    port = address.rsplit(":", 1)[1]
    second = serve("--port", port)
    assert second.process.wait(120) == 2
    assert any("cannot start" in line for line in second.lines)
    assert first.terminate() == 0


def _line_index(lines: list[str], text: str) -> int:
    return next((i for i, line in enumerate(lines) if text in line), -1)


@pytest.mark.slow
def test_a_cold_server_serves_while_it_compiles(serve, tmp_path: Path) -> None:
    """With an empty numba cache the server reports SERVING before its kernels are compiled;
    calls that arrive meanwhile compile their own kernels and give the engine's answers."""
    from centroidal.engine import kmeans

    cache = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "CENTROIDAL_LOG_LEVEL": "DEBUG"}
    X = np.random.default_rng(5).normal(size=(2_000, 4)).astype(np.float32)
    cold = serve(env=cache)
    address = cold.wait_for_address(limit_s=600)
    listening = _line_index(cold.lines, "centroidal listening on")
    assert health(address).stdout.strip() == "SERVING"
    with Client(address) as client:
        fitted = client.fit("cold", X, 6, seed=4, return_labels=True)
        predicted = client.predict("cold", X)
    np.testing.assert_array_equal(predicted, fitted.labels)
    np.testing.assert_array_equal(predicted, kmeans.predict(X, fitted.centers))
    # The first compilation alone takes longer than getting to SERVING did.
    first_step = _line_index(cold.lines, "warm-up: predict float32 compiled")
    assert listening >= 0 and (first_step == -1 or first_step > listening)
    # From an empty cache, processes of their own compile the kernels; none outlives the server.
    assert any("processes compile the kernels" in line for line in cold.lines)
    pid = cold.process.pid
    assert cold.terminate() == 0
    assert any("stopped cleanly" in line for line in cold.lines)
    for _ in range(20):  # a helper notices its parent gone within half a second
        if not _helpers_of(pid):
            break
        time.sleep(0.25)
    assert _helpers_of(pid) == [], "compiling helpers outlived their server"

    # Asked to, the server compiles everything first: the warm-up ends before SERVING.
    eager = serve("--warmup-before-serving", env=cache)
    eager.wait_for_address(limit_s=600)
    done = _line_index(eager.lines, "warm-up done")
    assert 0 <= done < _line_index(eager.lines, "centroidal listening on")
    assert eager.terminate() == 0
