"""The store suite, run on both backends (SQLite and a real PostgreSQL), so the two cannot
drift apart: durability, numbering and the compare-and-swap, the change feed, leases and
fencing, checksums, and the failure classes (full, damaged; unreachable is PostgreSQL's
alone, as SQLite runs in the process)."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from centroidal.server.exceptions import ModelNotFound, StoreDamaged, StoreFull, VersionConflict
from centroidal.server.leases import CEILING_STEP, Holder, Lease, LeaseLost
from centroidal.server.registry import Registry
from centroidal.server.snapshots import ModelSnapshot
from tests.server.conftest import Backend


def snapshot(name: str, version: int = 0, value: float = 1.0, rows: int = 3) -> ModelSnapshot:
    return ModelSnapshot(
        name=name,
        version=version,
        centers=np.full((rows, 2), value, dtype=np.float32),
        config={"init": "k-means++", "n_init": 1, "max_iter": 300, "tol": 1e-4, "seed": 1},
        inertia=2.5,
        n_iter=4,
        n_samples_seen=100,
        created_at=10.0,
        updated_at=20.0,
    )


def refresh_until_known(registry: Registry, name: str) -> None:
    registry.refresh(force=True)
    assert name in registry.names()


# ---- Durability, numbering, the compare-and-swap ----------------------------------------------


def test_saved_model_survives_reopening(backend: Backend) -> None:
    store = backend.open()
    store.put(snapshot("a", 1), keep_versions=5)
    store.close()
    [loaded] = backend.open().load_all().current
    assert loaded.name == "a" and loaded.version == 1
    assert loaded.centers.dtype == np.float32
    np.testing.assert_array_equal(loaded.centers, np.ones((3, 2), dtype=np.float32))
    assert loaded.config["seed"] == 1 and loaded.n_samples_seen == 100


def test_version_counter_survives_delete(backend: Backend) -> None:
    store = backend.open()
    store.put(snapshot("a", 1), keep_versions=5)
    store.delete("a", 2)
    stored = store.load_all()
    assert stored.current == []
    assert stored.last_versions == {"a": 2}
    assert store.load_version("a", 1) is None


def test_only_the_newest_versions_are_kept(backend: Backend) -> None:
    store = backend.open()
    for version in range(1, 6):
        store.put(snapshot("a", version, float(version)), keep_versions=2)
    assert store.load_version("a", 3) is None
    kept = store.load_version("a", 4)
    assert kept is not None and kept.centers[0, 0] == 4.0
    [current] = store.load_all().current
    assert current.version == 5


def test_a_version_at_or_below_the_stored_one_is_refused(backend: Backend) -> None:
    store = backend.open()
    store.put(snapshot("a", 3), keep_versions=5)
    store.delete("a", 4)
    for stale in (3, 4):
        with pytest.raises(VersionConflict):
            store.put(snapshot("a", stale), keep_versions=5)
    with pytest.raises(VersionConflict):
        store.delete("a", 4)
    store.put(snapshot("a", 5), keep_versions=5)
    assert [s.version for s in store.load_all().current] == [5]


def test_versions_are_numbered_in_the_store_so_replicas_never_reuse_one(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    written: list[int] = []
    start = threading.Barrier(8)

    def write(index: int) -> None:
        start.wait()
        for _ in range(5):
            written.append(stores[index % 2].put(snapshot("shared"), keep_versions=100).version)

    threads = [threading.Thread(target=write, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(written) == list(range(1, 41))
    assert stores[1].delete("shared") == 41
    assert stores[0].put(snapshot("shared"), keep_versions=5).version == 42  # not back to 1


def test_expected_version_is_checked_in_the_writing_transaction(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.put(snapshot("m"), keep_versions=5)
    assert second.put(snapshot("m"), keep_versions=5, expected_version=1).version == 2
    with pytest.raises(VersionConflict, match="at version 2 in the store, not the expected_version 1"):
        first.put(snapshot("m"), keep_versions=5, expected_version=1)
    with pytest.raises(VersionConflict):
        first.delete("m", expected_version=1)
    with pytest.raises(ModelNotFound):
        second.delete("never-written")


# ---- The change feed, and replicas over it ---------------------------------------------------


def test_each_replica_reads_what_the_other_wrote_through_the_change_feed(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    one = Registry(first, max_models=10, keep_versions=5, preload=False, shared=True)
    two = Registry(second, max_models=10, keep_versions=5, preload=False, shared=True)
    second.changes(two._position, True)
    assert second.changes(two._position) is None  # nothing written since (or not asked): no table is read
    one.commit(snapshot("a", value=1.0))
    # A name the replica has not heard of is looked up in the store, without waiting for a poll.
    model = two.get("a")
    assert model.version == 1 and model.centers[0, 0] == 1.0
    one.commit(snapshot("a", value=2.0))
    two.refresh(force=True)  # what the change feed's thread does on a hint or on its timer
    assert two.get("a").centers[0, 0] == 2.0
    assert two.get_version("a", 1).centers[0, 0] == 1.0
    one.delete("a")
    two.refresh(force=True)
    with pytest.raises(ModelNotFound):
        two.get("a")
    assert two.names() == [] and len(two) == 0
    assert two.commit(snapshot("a", value=3.0)).version == 4  # numbered after the delete's 3


def test_a_replica_loads_models_on_use_and_sheds_the_least_recently_used(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    writer = Registry(first, max_models=10, keep_versions=5, preload=False, shared=True)
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


# ---- Stream leases and fencing --------------------------------------------------------------


def test_a_lease_has_one_owner_and_fences_the_one_that_lost_it(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.lease_ttl = second.lease_ttl = 30.0
    lease = first.take_lease("s", "host/1/a", "h:1")
    assert isinstance(lease, Lease) and lease.epoch == 1
    held = second.take_lease("s", "host/2/b", "h:2")
    assert isinstance(held, Holder) and held.address == "h:1" and 0 < held.expires_in <= 30.0
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
    stored = first.load_version("s", published)
    assert stored is not None and stored.extra["producers"] == {"p": 1}
    # A fit on any replica ends the stream's lease and numbers above its ceiling.
    fitted = first.put(snapshot("s"), keep_versions=5)
    assert fitted.version == renewed.ceiling + 1
    with pytest.raises(LeaseLost, match="revoked by a fit or a delete"):
        second.renew_lease(renewed, renewed.ceiling)


def test_an_expired_lease_is_taken_over_and_its_owner_fenced(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.lease_ttl = 1.0
    lease = first.take_lease("s", "host/1/a", "h:1")
    assert isinstance(lease, Lease)
    assert isinstance(second.take_lease("s", "host/2/b", "h:2"), Holder)
    threading.Event().wait(1.2)  # past its expiry, on the store's clock
    taken = second.take_lease("s", "host/2/b", "h:2")
    assert isinstance(taken, Lease) and taken.epoch == lease.epoch + 1
    with pytest.raises(LeaseLost):
        first.renew_lease(lease, lease.ceiling)


def test_the_owner_numbers_a_fit_after_exactly_what_it_published(backend: Backend) -> None:
    store = backend.open()
    lease = store.take_lease("s", "host/1/a", "h:1")
    assert isinstance(lease, Lease)
    assert store.put(snapshot("s"), keep_versions=5, writer="host/1/a", published=7).version == 8
    # Given up cleanly, the lease leaves nothing to skip: the next owner numbers on from there.
    again = store.take_lease("s", "host/1/b", "h:1")
    assert isinstance(again, Lease) and again.floor == 8


def test_expected_version_may_name_what_a_streams_owner_published(backend: Backend) -> None:
    store = backend.open()
    lease = store.take_lease("s", "host/1/a", "h:1")
    assert isinstance(lease, Lease)
    # Version 3 was published by the owner but not stored yet: it is current all the same.
    assert store.put(snapshot("s"), keep_versions=5, expected_version=3).version == lease.ceiling + 1


def test_stream_opens_leave_no_lease_rows_behind(backend: Backend) -> None:
    store = backend.open()
    for index in range(50):  # streams opened on names that never got a batch
        lease = store.take_lease(f"tried{index}", "host/1/a", "h:1")
        assert isinstance(lease, Lease)
        store.give_up_lease(lease, published=0)
    stored = store.put(snapshot("kept"), keep_versions=5)
    lease = store.take_lease("kept", "host/1/a", "h:1")
    assert isinstance(lease, Lease)
    store.give_up_lease(lease, published=stored.version)  # everything published was stored
    assert backend.sql("SELECT count(*) FROM leases") == [(0,)]


# ---- Checksums, and what a failure is ---------------------------------------------------------


def test_a_row_that_fails_its_checksum_is_refused_and_the_others_still_load(backend: Backend) -> None:
    store = backend.open()
    store.put(snapshot("good"), keep_versions=5)
    store.put(snapshot("bad", value=2.0), keep_versions=5)
    backend.sql("UPDATE versions SET centers = ? WHERE name = 'bad'", (np.zeros((3, 2), np.float32).tobytes(),))
    with pytest.raises(StoreDamaged, match="'bad' version 1 fails its checksum"):
        store.load_version("bad", 1)
    with pytest.raises(StoreDamaged, match="'bad'"):
        store.load_all()
    good = store.load_version("good", 1)
    assert good is not None and good.centers[0, 0] == 1.0
    store.delete("bad")  # the way out works
    assert [model.name for model in store.load_all().current] == ["good"]


def test_a_full_store_refuses_writes_whole_and_deletes_make_room(backend: Backend) -> None:
    store = backend.open(max_bytes=300_000)  # SQLite's file, or PostgreSQL's quota
    kept = store.put(snapshot("kept", value=5.0), keep_versions=5)
    big = snapshot("big", rows=20_000)  # 160 kB a version
    store.put(big, keep_versions=1)
    with pytest.raises(StoreFull) as refused:
        store.put(snapshot("other", rows=20_000), keep_versions=1)
    assert refused.value.reason == "STORE_FULL" and refused.value.retry_after
    # Nothing of the refused write is stored, and nothing already stored is lost.
    assert store.load_version("other", 1) is None
    loaded = store.load_version("kept", kept.version)
    assert loaded is not None and loaded.centers[0, 0] == 5.0
    store.delete("big")
    assert store.put(snapshot("other", rows=20_000), keep_versions=1).version == 1
