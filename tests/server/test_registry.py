"""The registry's limits and locking, over the real SQLite store."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from centroidal.server.exceptions import DomainError, ModelNotFound, ShuttingDown
from centroidal.server.registry import Registry
from centroidal.server.snapshots import ModelSnapshot
from centroidal.server.store import SQLiteStore


class SlowStore(SQLiteStore):
    """The real store, with each save held open long enough for writers to overlap."""

    def put(self, snapshot: ModelSnapshot, **options: Any) -> ModelSnapshot:
        time.sleep(0.2)
        return super().put(snapshot, **options)


def snapshot(name: str) -> ModelSnapshot:
    return ModelSnapshot(name, 0, np.zeros((2, 2)), {"init": "k-means++", "n_init": 1,
                         "max_iter": 300, "tol": 1e-4, "seed": 0}, 0.0, 1, 10, 0.0, 0.0)


def test_model_limit_holds_when_new_models_are_created_at_once(tmp_path: Path) -> None:
    registry = Registry(SlowStore(tmp_path), max_models=1, keep_versions=5)
    outcomes: list[str] = []
    start = threading.Barrier(4)

    def create(name: str) -> None:
        start.wait()
        try:
            registry.commit(snapshot(name))
            outcomes.append("stored")
        except DomainError as error:
            outcomes.append(type(error).__name__)

    workers = [threading.Thread(target=create, args=(f"m{i}",)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(outcomes) == ["LimitExceeded"] * 3 + ["stored"]
    assert len(registry) == 1


def test_writes_after_close_are_refused_as_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    registry = Registry(store, max_models=10, keep_versions=5)
    store.close()
    with pytest.raises(ShuttingDown):
        registry.commit(snapshot("late"))
    with pytest.raises(ModelNotFound):
        registry.get("late")
