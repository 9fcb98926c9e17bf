"""Replicas over one SQLite store, in one process: the supervisor's store and a worker's, as
the workers of `serve --workers` open it (sharing the supervisor's directory lock)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from centroidal.server.exceptions import ModelNotFound, VersionConflict
from centroidal.server.integrity import StoreLocked
from centroidal.server.leases import CEILING_STEP, Holder, Lease, LeaseLost
from centroidal.server.registry import Registry
from centroidal.server.snapshots import ModelSnapshot
from centroidal.server.store import SQLiteStore


def snapshot(name: str, value: float = 1.0) -> ModelSnapshot:
    return ModelSnapshot(name, 0, np.full((2, 2), value), {"seed": 0}, 0.0, 1, 10, 0.0, 0.0)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SQLiteStore, SQLiteStore]]:
    """The supervisor's store (checked, holding the lock) and a worker's (sharing it)."""
    first = SQLiteStore(tmp_path)
    second = SQLiteStore(tmp_path, shared_lock=first.lock_descriptor)
    yield first, second
    second.close()
    first.close()


def test_an_unrelated_store_on_the_directory_is_still_refused(
    stores: tuple[SQLiteStore, SQLiteStore], tmp_path: Path
) -> None:
    with pytest.raises(StoreLocked, match="in use by another centroidal server"):
        SQLiteStore(tmp_path)


def test_a_lock_descriptor_of_another_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "lock").touch()
    other = (tmp_path / "elsewhere").open("w")
    try:
        with pytest.raises(StoreLocked, match="is not"):
            SQLiteStore(tmp_path / "data", shared_lock=other.fileno())
    finally:
        other.close()


def test_versions_are_numbered_in_the_store_so_replicas_never_reuse_one(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    first, second = stores
    written: list[int] = []
    start = threading.Barrier(8)

    def write(store: SQLiteStore) -> None:
        start.wait()
        for _ in range(5):
            written.append(store.put(snapshot("shared"), keep_versions=100).version)

    threads = [threading.Thread(target=write, args=(stores[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(written) == list(range(1, 41))
    assert second.delete("shared") == 41
    assert first.put(snapshot("shared"), keep_versions=5).version == 42  # not back to 1


def test_expected_version_is_checked_in_the_writing_transaction(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    first, second = stores
    first.put(snapshot("m"), keep_versions=5)
    assert second.put(snapshot("m"), keep_versions=5, expected_version=1).version == 2
    with pytest.raises(VersionConflict, match="at version 2 in the store, not the expected_version 1"):
        first.put(snapshot("m"), keep_versions=5, expected_version=1)
    with pytest.raises(VersionConflict):
        first.delete("m", expected_version=1)
    with pytest.raises(ModelNotFound):
        second.delete("never-written")


def test_each_replica_reads_what_the_other_wrote_through_the_change_feed(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    first, second = stores
    one = Registry(first, max_models=10, keep_versions=5)
    two = Registry(second, max_models=10, keep_versions=5, preload=False, shared=True)
    second.changes(two._position)
    assert second.changes(two._position) is None  # nothing written since: no table is read
    one.commit(snapshot("a", 1.0))
    # The next read on the other replica sees the write, without waiting for a poll.
    model = two.get("a")
    assert model.version == 1 and model.centers[0, 0] == 1.0
    one.commit(snapshot("a", 2.0))
    assert two.get("a").centers[0, 0] == 2.0
    assert two.get_version("a", 1).centers[0, 0] == 1.0
    one.delete("a")
    with pytest.raises(ModelNotFound):
        two.get("a")
    assert two.names() == [] and len(two) == 0
    assert two.commit(snapshot("a", 3.0)).version == 4  # numbered after the delete's 3


def test_a_replica_loads_models_on_use_and_sheds_the_least_recently_used(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    first, second = stores
    writer = Registry(first, max_models=10, keep_versions=5)
    for name in "abc":
        writer.commit(snapshot(name))
    replica = Registry(second, max_models=10, keep_versions=5, preload=False, shared=True)
    assert replica.resident_models() == 0 and len(replica) == 3
    for name in "abc":
        replica.get(name)
    replica.get("a")  # now the most recently used
    size = replica.resident_bytes() // 3
    assert replica.shed(size) == size
    assert not replica.is_loaded("b") and replica.is_loaded("a") and replica.is_loaded("c")
    assert replica.get("b").version == 1  # loaded again


def test_a_lease_has_one_owner_and_fences_the_one_that_lost_it(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    first, second = stores
    first.lease_ttl = second.lease_ttl = 30.0
    lease = first.take_lease("s", "host/1/a", "h:1")
    assert isinstance(lease, Lease) and lease.epoch == 1
    held = second.take_lease("s", "host/2/b", "h:2")
    assert isinstance(held, Holder) and held.address == "h:1"
    # The supervisor ends a dead worker's leases: the next replica takes over at once.
    assert second.revoke_leases("host/1/") == 1
    taken = second.take_lease("s", "host/2/b", "h:2")
    assert isinstance(taken, Lease) and taken.epoch == 3
    # Whatever the first owner may have published is skipped: the next numbers on above it.
    assert taken.floor == lease.ceiling
    state = snapshot("s")
    with pytest.raises(LeaseLost, match="another replica took it over"):
        first.checkpoint(replace(state, version=5), {"p": 1}, keep_versions=5, lease=lease)
    published = taken.floor + 5
    renewed = second.checkpoint(replace(state, version=published), {"p": 1}, keep_versions=5, lease=taken)
    assert renewed is not None and renewed.ceiling == published + CEILING_STEP
    # A fit on any replica ends the stream's lease and numbers above its ceiling.
    fitted = first.put(snapshot("s"), keep_versions=5)
    assert fitted.version == renewed.ceiling + 1
    with pytest.raises(LeaseLost, match="revoked by a fit or a delete"):
        second.renew_lease(renewed, renewed.ceiling)


def test_the_owner_numbers_a_fit_after_exactly_what_it_published(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    first, _ = stores
    lease = first.take_lease("s", "host/1/a", "h:1")
    assert isinstance(lease, Lease)
    assert first.put(snapshot("s"), keep_versions=5, writer="host/1/a", published=7).version == 8
    # Given up cleanly, the lease leaves nothing to skip: the next owner numbers on from there.
    again = first.take_lease("s", "host/1/b", "h:1")
    assert isinstance(again, Lease) and again.floor == 8


def test_a_lease_of_a_process_of_this_host_that_is_gone_is_taken_at_once(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    import subprocess
    import sys

    from centroidal.server.replicas import owner_alive, owner_prefix

    first, second = stores
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = owner_prefix(gone.pid) + "nonce"
    assert isinstance(first.take_lease("s", dead, "h:1"), Lease)
    assert not owner_alive(dead) and owner_alive(owner_prefix(1) + "x")
    assert isinstance(second.take_lease("s", "other/2/b", "h:2"), Holder)  # no way to tell: wait
    taken = second.take_lease("s", "other/2/b", "h:2", owner_alive)
    assert isinstance(taken, Lease) and taken.owner == "other/2/b"


def test_stream_opens_leave_no_lease_rows_behind(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    import sqlite3

    first, _ = stores
    for index in range(50):  # streams opened on names that never got a batch
        lease = first.take_lease(f"tried{index}", "host/1/a", "h:1")
        assert isinstance(lease, Lease)
        first.give_up_lease(lease, published=0)
    stored = first.put(snapshot("kept"), keep_versions=5)
    lease = first.take_lease("kept", "host/1/a", "h:1")
    assert isinstance(lease, Lease)
    first.give_up_lease(lease, published=stored.version)  # everything published was stored
    with sqlite3.connect(first.path) as db:
        assert db.execute("SELECT count(*) FROM leases").fetchone() == (0,)
