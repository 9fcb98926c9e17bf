"""The SQLite store on its own: durability, version counters and pruning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from centroidal.server.snapshots import ModelSnapshot
from centroidal.server.exceptions import VersionConflict
from centroidal.server.store import SQLiteStore


def snapshot(name: str, version: int, value: float = 1.0) -> ModelSnapshot:
    return ModelSnapshot(
        name=name,
        version=version,
        centers=np.full((3, 2), value, dtype=np.float32),
        config={"init": "k-means++", "n_init": 1, "max_iter": 300, "tol": 1e-4, "seed": 1},
        inertia=2.5,
        n_iter=4,
        n_samples_seen=100,
        created_at=10.0,
        updated_at=20.0,
    )


def test_saved_model_survives_reopening(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.put(snapshot("a", 1), keep_versions=5)
    store.close()
    reopened = SQLiteStore(tmp_path)
    [loaded] = reopened.load_all().current
    assert loaded.name == "a" and loaded.version == 1
    assert loaded.centers.dtype == np.float32
    np.testing.assert_array_equal(loaded.centers, np.ones((3, 2), dtype=np.float32))
    assert loaded.config["seed"] == 1 and loaded.n_samples_seen == 100


def test_version_counter_survives_delete(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.put(snapshot("a", 1), keep_versions=5)
    store.delete("a", 2)
    stored = store.load_all()
    assert stored.current == []
    assert stored.last_versions == {"a": 2}
    assert store.load_version("a", 1) is None


def test_only_the_newest_versions_are_kept(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    for version in range(1, 6):
        store.put(snapshot("a", version, float(version)), keep_versions=2)
    assert store.load_version("a", 3) is None
    kept = store.load_version("a", 4)
    assert kept is not None and kept.centers[0, 0] == 4.0
    [current] = store.load_all().current
    assert current.version == 5


def test_a_version_at_or_below_the_stored_one_is_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.put(snapshot("a", 3), keep_versions=5)
    store.delete("a", 4)
    for stale in (3, 4):
        with pytest.raises(VersionConflict):
            store.put(snapshot("a", stale), keep_versions=5)
    with pytest.raises(VersionConflict):
        store.delete("a", 4)
    store.put(snapshot("a", 5), keep_versions=5)
    assert [s.version for s in store.load_all().current] == [5]
