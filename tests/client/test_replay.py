"""Where a producer keeps its requests until they are stored: slabs reused, never overwritten
while a request in them can still be read."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from centroidal import codec
from centroidal.client import replay
from centroidal.v1 import clustering_pb2 as pb

ROWS = 4096  # 4096 x 16 float32: 256 KiB a request and its head, 31 to a slab


def batch(sequence: int, rows: int = ROWS) -> codec.MiniBatch:
    points = np.random.default_rng(sequence).normal(size=(rows, 16)).astype(np.float32)
    return codec.MiniBatch("producer", sequence, points, None)


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "POOL", replay._Pool())


def test_a_kept_request_is_the_request_serialised() -> None:
    kept = replay.ReplayBuffer()
    for sequence, rows in [(1, ROWS), (2, 10), (3, ROWS * 40)]:  # in a slab, small, over a slab
        item = batch(sequence, rows)
        request = kept.keep(codec.minibatch_request_parts(item))
        assert bytes(request) == codec.serialize_minibatch_request(item)
        assert pb.MiniBatchRequest.FromString(bytes(request)).batch.sequence == sequence
    assert isinstance(kept.keep(codec.minibatch_request_parts(batch(4, 10))), bytes)


def test_a_request_still_read_somewhere_is_never_overwritten() -> None:
    kept = replay.ReplayBuffer()
    first = kept.keep(codec.minibatch_request_parts(batch(1)))
    expected = bytes(first)
    # Many slabs' worth more, each dropped at once: their slabs come back and are reused,
    # but never the one the first request is in.
    for sequence in range(2, 200):
        request = kept.keep(codec.minibatch_request_parts(batch(sequence)))
        assert not np.shares_memory(request, first)
        del request
    assert bytes(first) == expected


def test_a_slab_comes_back_once_every_request_in_it_is_gone() -> None:
    kept = replay.ReplayBuffer()
    requests = [kept.keep(codec.minibatch_request_parts(batch(sequence))) for sequence in range(1, 40)]
    first_slab = requests[0].base
    assert requests[30].base is first_slab and requests[31].base is not first_slab
    slabs = {id(first_slab), id(requests[31].base)}
    del requests[1:]
    gc.collect()
    assert replay.POOL.idle_bytes() == 0  # the first request still holds it
    del requests
    assert replay.POOL.idle_bytes() == replay.SLAB_BYTES
    kept.close()  # the slab being filled comes back too
    assert replay.POOL.idle_bytes() == 2 * replay.SLAB_BYTES
    again = replay.ReplayBuffer().keep(codec.minibatch_request_parts(batch(99)))
    assert id(again.base) in slabs and replay.POOL.idle_bytes() == replay.SLAB_BYTES


def test_the_pool_keeps_at_most_its_idle_bytes() -> None:
    kept = replay.ReplayBuffer()
    slabs = 2 * replay.IDLE_BYTES // replay.SLAB_BYTES
    requests = [kept.keep(codec.minibatch_request_parts(batch(1, ROWS * 31))) for _ in range(slabs)]
    assert len({id(request.base) for request in requests}) == slabs
    del requests
    kept.close()
    assert replay.POOL.idle_bytes() == replay.IDLE_BYTES
