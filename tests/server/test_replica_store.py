"""Replicas over one SQLite store, in one process: the supervisor's store and a worker's, as
the workers of `serve --workers` open it (sharing the supervisor's directory lock). What
both backends do alike is test_store.py's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from centroidal.server.integrity import StoreLocked
from centroidal.server.leases import Holder, Lease
from centroidal.server.store import SQLiteStore


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


