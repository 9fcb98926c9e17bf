"""A stream's batches through shared memory with the SDK (``Client(shared_memory=True)``),
against a real server: the model the same as with the rows sent, the slabs kept free for the
next stream, and a server that will not read shared memory getting every batch anyway."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from centroidal.client import Client
from centroidal.client.shared_memory import IDLE_SLAB_BYTES, SLAB_BYTES, SLABS
from tests.conftest import ServerFactory

RNG = np.random.default_rng(5)
# 12 batches of 256 KiB: several fill one 8 MiB slab, and the last batches share one.
BATCHES = [(RNG.normal(size=(4096, 16)) + 4 * (index % 4)).astype(np.float32) for index in range(12)]


def _objects() -> set[str]:
    return {path.name for path in Path("/dev/shm").glob(f"centroidal-{os.getpid()}-*")}


def _streamed(target: str, model: str, shared_memory: bool) -> tuple[np.ndarray, int, bool]:
    """The centers and points seen after streaming BATCHES into ``model``, and whether the
    stream still used shared memory at its end."""
    with Client(target, shared_memory=shared_memory) as client:
        with client.stream(model, n_clusters=5, seed=0, window=4) as stream:
            for index, rows in enumerate(BATCHES):
                stream.send(rows, sample_weight=np.full(rows.shape[0], 1.5) if index == 3 else None)
            stream.flush()
            used = stream.shared_memory
        model_info = client.get_model(model, include_centers=True)
    assert model_info.centers is not None
    return model_info.centers, model_info.n_samples_seen, used


def test_a_stream_through_shared_memory_makes_the_model_the_rows_sent_make(start_server: ServerFactory) -> None:
    target = f"127.0.0.1:{start_server().port}"
    shared, seen, used = _streamed(target, "shared", True)
    plain, plain_seen, _ = _streamed(target, "plain", False)
    assert used
    np.testing.assert_array_equal(shared, plain)
    assert seen == plain_seen == sum(rows.shape[0] for rows in BATCHES)


def test_the_slabs_wait_free_for_the_next_stream(start_server: ServerFactory) -> None:
    target = f"127.0.0.1:{start_server().port}"
    _streamed(target, "first", True)
    left = _objects()
    free = {region.name for region in SLABS._free}
    # Every object the stream left is a free slab, within what the process keeps.
    assert left and left <= free and len(free) * SLAB_BYTES <= IDLE_SLAB_BYTES
    _streamed(target, "second", True)
    assert _objects() == left  # the next stream wrote into the same ones


def test_a_server_without_shared_memory_gets_every_batch_sent_instead(start_server: ServerFactory) -> None:
    target = f"127.0.0.1:{start_server(shared_memory=False).port}"
    shared, seen, used = _streamed(target, "fallback", True)
    plain, _, _ = _streamed(target, "plain", False)
    assert not used
    assert seen == sum(rows.shape[0] for rows in BATCHES)  # each batch applied once
    np.testing.assert_array_equal(shared, plain)


_NO_ROOM = """
import resource, sys
import numpy as np
from centroidal.client import Client

# No file of this process may grow past 1 MiB: every slab (8 MiB) is refused, as a full
# /dev/shm refuses it.
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
rng = np.random.default_rng(5)
with Client(sys.argv[1], shared_memory=True) as client:
    with client.stream("no-room", n_clusters=5, seed=0, window=4) as stream:
        for _ in range(6):
            stream.send(rng.normal(size=(4096, 16)).astype(np.float32))
        stream.flush()
        print(stream.shared_memory)
    print(client.get_model("no-room").n_samples_seen)
"""


def test_a_producer_without_room_in_dev_shm_sends_the_rows(start_server: ServerFactory) -> None:
    import subprocess
    import sys

    target = f"127.0.0.1:{start_server().port}"
    done = subprocess.run([sys.executable, "-c", _NO_ROOM, target], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", str(6 * 4096)]
