"""The model registry: immutable snapshots read without locks, one writer lock per model.

Readers call ``get`` and receive a frozen ModelSnapshot; they never wait. A
write takes the model's lock, checks the expected version, commits to the store
and only then publishes the new snapshot by swapping a reference, so a reader
sees either the old model or the new one, and never a model that is not on disk.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from .exceptions import LimitExceeded, ModelNotFound, ModelReplaced, VersionConflict
from .snapshots import ModelSnapshot, ModelStore

_WRITER_LOCKS = 64
# Versions are stored as SQLite's signed 64-bit integers.
MAX_VERSION = 2**63 - 1


class Registry:
    """Maps model names to their current snapshot; the store is the source of truth."""

    def __init__(self, store: ModelStore, *, max_models: int, keep_versions: int) -> None:
        self._store = store
        self._max_models = max_models
        self._keep_versions = keep_versions
        stored = store.load_all()
        self._snapshots: dict[str, ModelSnapshot] = {snap.name: snap for snap in stored.current}
        self._resident = sum(snap.nbytes for snap in stored.current)
        self._last_versions: dict[str, int] = dict(stored.last_versions)
        self._guard = threading.Lock()
        # Names being created right now count against max_models before they are published.
        self._creating: set[str] = set()
        # A fixed set of writer locks, one per name hash: bounded however many names are tried.
        self._writer_locks = [threading.Lock() for _ in range(_WRITER_LOCKS)]

    def __len__(self) -> int:
        return len(self._snapshots)

    def resident_bytes(self) -> int:
        """Bytes the current versions hold in memory: centers, and spectral models' rows."""
        return self._resident

    def get(self, name: str, field: str = "name") -> ModelSnapshot:
        snapshot = self._snapshots.get(name)
        if snapshot is None:
            raise ModelNotFound(f"model {name!r} does not exist", field=field)
        return snapshot

    def get_version(self, name: str, version: int | None, field: str = "model") -> ModelSnapshot:
        """The current snapshot, or a pinned older version still kept in the store."""
        current = self.get(name, field)
        if version is None or version == current.version:
            return current
        if version > MAX_VERSION:  # no store can hold it, so no model has it
            raise ModelNotFound(
                f"model {name!r} has no version {version}: versions go up to {MAX_VERSION} "
                f"(current is {current.version})",
                field="version",
            )
        older = self._store.load_version(name, version)
        if older is None:
            raise ModelNotFound(
                f"model {name!r} has no version {version} (current is {current.version}; "
                f"only the newest {self._keep_versions} versions are kept)",
                field="version",
            )
        return older

    def names(self) -> list[str]:
        return sorted(self._snapshots)

    def current_version(self, name: str) -> int:
        snapshot = self._snapshots.get(name)
        return snapshot.version if snapshot is not None else 0

    def check_expected(self, name: str, expected_version: int | None) -> None:
        if expected_version is None:
            return
        current = self.current_version(name)
        if current != expected_version:
            raise VersionConflict(
                f"model {name!r} is at version {current}, not the expected_version "
                f"{expected_version}",
                field="expected_version",
                metadata={"current_version": str(current)},
            )

    def check_writable(self) -> None:
        """Raise StoreFull or StoreUnavailable when the store would refuse a write now; called
        before a write's data is accepted."""
        self._store.check_writable()

    def writer_lock(self, name: str) -> threading.Lock:
        """The lock every write to ``name`` holds: fits, deletes and streamed batches."""
        return self._writer_locks[hash(name) % _WRITER_LOCKS]

    def reserve(self, name: str) -> None:
        """Count a new streamed model against max_models until it is published.

        Raises ModelReplaced when another writer created the name meanwhile.
        """
        if not self._reserve(name):
            raise ModelReplaced(
                f"model {name!r} was created by another writer while this stream was opening; "
                "open a new stream",
                field="open.model",
            )

    def release(self, name: str) -> None:
        with self._guard:
            self._creating.discard(name)

    def publish_unsaved(self, snapshot: ModelSnapshot) -> ModelSnapshot:
        """Publish the next version without storing it; the caller holds the writer lock.

        Streamed models publish every batch and store a checkpoint now and then
        (``save_checkpoint``), so readers may see versions that are not on disk yet.
        """
        name = snapshot.name
        published = self._next_version(snapshot, self._snapshots.get(name))
        self._publish(name, published, published.version)
        with self._guard:
            self._creating.discard(name)
        return published

    def save_checkpoint(self, snapshot: ModelSnapshot, producers: dict[str, int]) -> None:
        """Store a published version of a streamed model; the caller holds the writer lock."""
        self._store.checkpoint(snapshot, producers, keep_versions=self._keep_versions)

    def _reserve(self, name: str) -> bool:
        """Count a new name against max_models; False when the name already exists."""
        with self._guard:
            if name in self._snapshots:
                return False
            held = len(self._snapshots) + len(self._creating)
            if held >= self._max_models:
                raise LimitExceeded(
                    f"the server holds {held} models, its limit of {self._max_models}; delete "
                    f"one before creating {name!r}",
                    field="model",
                )
            self._creating.add(name)
            return True

    def commit(self, snapshot: ModelSnapshot, expected_version: int | None = None) -> ModelSnapshot:
        """Store ``snapshot`` as the model's next version and publish it.

        The version and timestamps of ``snapshot`` are replaced. Raises VersionConflict on an
        expected_version mismatch and LimitExceeded past the model limit.
        """
        name = snapshot.name
        with self.writer_lock(name):
            self.check_expected(name, expected_version)
            creating = self._reserve(name)
            try:
                return self._write(snapshot, creating)
            finally:
                if creating:
                    with self._guard:
                        self._creating.discard(name)

    def _write(self, snapshot: ModelSnapshot, creating: bool) -> ModelSnapshot:
        """Store and publish under the name's writer lock."""
        name = snapshot.name
        published = self._next_version(snapshot, None if creating else self._snapshots.get(name))
        self._store.put(published, keep_versions=self._keep_versions)
        self._publish(name, published, published.version)
        return published

    def _next_version(self, snapshot: ModelSnapshot, previous: ModelSnapshot | None) -> ModelSnapshot:
        """``snapshot`` frozen, numbered after the name's last version and timestamped."""
        now = time.time()
        snapshot.centers.setflags(write=False)
        return replace(
            snapshot,
            version=self._last_versions.get(snapshot.name, 0) + 1,
            created_at=previous.created_at if previous is not None else now,
            updated_at=now,
        )

    def delete(self, name: str, expected_version: int | None = None) -> int:
        """Delete a model; returns the version the delete wrote."""
        with self.writer_lock(name):
            self.get(name)
            self.check_expected(name, expected_version)
            version = self._last_versions.get(name, 0) + 1
            self._store.delete(name, version)
            self._publish(name, None, version)
            return version

    def _publish(self, name: str, snapshot: ModelSnapshot | None, version: int) -> None:
        with self._guard:
            snapshots = dict(self._snapshots)
            previous = snapshots.pop(name, None)
            if previous is not None:
                self._resident -= previous.nbytes
            if snapshot is not None:
                snapshots[name] = snapshot
                self._resident += snapshot.nbytes
            self._snapshots = snapshots
            self._last_versions[name] = version
