"""`centroidal stream --source`: a producer killed mid-dataset runs again with the same
arguments and the model ends as an uninterrupted run leaves it, each batch taken once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from centroidal.client import Client
from tests.e2e.test_serve import ServeProcess
from tests.sources.datasets import blobs, split_parquet


# Enough that the producer is still sending seconds after its first durable batches.
BATCHES = 6000


def producer(address: str, model: str, source: Path, resume: Path) -> list[str]:
    return [sys.executable, "-m", "centroidal.client.cli", "stream", "--target", address, "--model", model,
            "-k", "6", "--seed", "3", "--source", str(source), "--batch-size", "50", "--window", "1",
            "--resume-file", str(resume), "--quiet"]


@pytest.mark.slow  # over 10 s: in make test-slow
def test_a_killed_producer_resumes_where_the_server_made_it_durable(tmp_path: Path) -> None:
    source = tmp_path / "points"
    X = blobs(BATCHES * 50, 4, centers=6)
    split_parquet(source, X, 4, row_group_size=2000)
    server = ServeProcess(tmp_path / "data", "--checkpoint-interval", "0.2")
    try:
        address = server.wait_for_address()
        resume = tmp_path / "resume.json"
        running = subprocess.Popen(producer(address, "resumed", source, resume), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        give_up = time.monotonic() + 60
        durable = 0
        while durable < 100 and time.monotonic() < give_up and running.poll() is None:
            time.sleep(0.1)
            if resume.exists():
                durable = json.loads(resume.read_text())["durable_sequence"]
        assert running.poll() is None, f"the producer finished before it could be killed: {running.communicate()}"
        os.kill(running.pid, signal.SIGKILL)
        running.wait(30)
        assert 100 <= durable < BATCHES
        again = subprocess.run(producer(address, "resumed", source, resume), capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 0, again.stderr
        assert json.loads(resume.read_text())["durable_sequence"] == BATCHES
        whole = subprocess.run(producer(address, "whole", source, tmp_path / "other.json"), capture_output=True,
                               text=True, timeout=300)
        assert whole.returncode == 0, whole.stderr
        with Client(address, timeout=60) as client:
            resumed, uninterrupted = client.get_model("resumed", include_centers=True), client.get_model(
                "whole", include_centers=True)
        # Every batch once: nothing lost with the killed producer, nothing it sent applied twice.
        assert resumed.n_batches == uninterrupted.n_batches == BATCHES
        assert resumed.n_samples_seen == X.shape[0]
        np.testing.assert_array_equal(resumed.centers, uninterrupted.centers)
    finally:
        assert server.terminate() == 0
