"""The model registry: immutable snapshots read without waiting, one writer lock per model.

Readers receive a frozen ModelSnapshot. A write takes the model's lock, commits to the
store (which numbers the version and checks ``expected_version`` in its own
transaction) and only then publishes the new snapshot, so a reader sees either the old
model or the new one, and never a model that is not on disk.

The registry knows every name and its current version (the catalog). A replica holds
only the models it was asked for: a model is loaded from the store on first use, and
the least recently used ones are shed when the memory budget needs room. ``refresh``
applies the store's change feed: versions other replicas wrote, or deletes, replace
what this one knew. A single server loads every model at start instead (``preload``),
which also verifies every current version's checksum before it serves.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from .exceptions import LimitExceeded, ModelNotFound, ModelReplaced, VersionConflict
from .leases import Holder, Lease
from .snapshots import ModelSnapshot, ModelStore, NameState

_WRITER_LOCKS = 64
# Versions are stored as SQLite's signed 64-bit integers.
MAX_VERSION = 2**63 - 1


class Registry:
    """Maps model names to their current snapshot; the store is the source of truth.

    shared : other replicas write the same store; a name this one does not know may exist,
        and its own view of a version may be behind until the next ``refresh``
    """

    def __init__(
        self, store: ModelStore, *, max_models: int, keep_versions: int, preload: bool = True, shared: bool = False
    ) -> None:
        self._store = store
        self._max_models = max_models
        self._keep_versions = keep_versions
        self._shared = shared
        self._guard = threading.Lock()
        # Loaded models, least recently used first; the current version of every name; the
        # last version of every name ever written (deleted ones too, so numbers never go back).
        self._resident: OrderedDict[str, ModelSnapshot] = OrderedDict()
        self._resident_bytes = 0
        self._current: dict[str, int] = {}
        self._last_versions: dict[str, int] = {}
        # Names whose current version is published but not stored yet (a streamed model
        # between checkpoints): never shed, as the store cannot give them back.
        self._unsaved: set[str] = set()
        catalog = store.load_catalog()
        self._position = catalog.position
        for state in catalog.names:
            self._learn(state)
        if preload:
            for snapshot in store.load_all().current:
                self._resident[snapshot.name] = snapshot
                self._resident_bytes += snapshot.nbytes
        # The stream-lease identity of this replica (set with the server's address).
        self.identity = ""
        # Called after a load, to make room for it (the memory budget sheds other models).
        self.on_load: Callable[[], None] | None = None
        # Names being created right now count against max_models before they are published.
        self._creating: set[str] = set()
        # A fixed set of writer locks, one per name hash: bounded however many names are tried.
        self._writer_locks = [threading.Lock() for _ in range(_WRITER_LOCKS)]

    def __len__(self) -> int:
        return len(self._current)

    @property
    def shared(self) -> bool:
        return self._shared

    @property
    def store_changed(self) -> threading.Event | None:
        """Set by the store when another replica may have written (see ModelStore.changed)."""
        return self._store.changed

    def resident_bytes(self) -> int:
        """Bytes the loaded models hold in memory: centers, and spectral models' rows."""
        return self._resident_bytes

    def resident_models(self) -> int:
        return len(self._resident)

    # ---- Reads ------------------------------------------------------------------------

    def lookup(self, name: str, field: str = "name") -> ModelSnapshot | None:
        """The current snapshot when it is loaded, else None (``get`` loads it); never reads
        the store except to ask whether another replica wrote since the last look (then
        what it wrote is applied first, so a write acknowledged anywhere is seen here by
        the next call). Raises ModelNotFound for a name no replica can have."""
        if self._shared:
            self.refresh()
        with self._guard:
            snapshot = self._resident.get(name)
            if snapshot is not None and snapshot.version == self._current.get(name):
                self._resident.move_to_end(name)
                return snapshot
            known = name in self._current
        if not known and not self._shared:
            raise ModelNotFound(f"model {name!r} does not exist", field=field)
        return None

    def is_loaded(self, name: str) -> bool:
        """Whether ``get`` would answer without reading the store."""
        snapshot = self._resident.get(name)
        return snapshot is not None and snapshot.version == self._current.get(name)

    def get(self, name: str, field: str = "name") -> ModelSnapshot:
        """The current snapshot, loaded from the store when it is not in memory."""
        snapshot = self.lookup(name, field)
        return snapshot if snapshot is not None else self._load(name, field)

    def _load(self, name: str, field: str) -> ModelSnapshot:
        for _ in range(3):
            version = self._current.get(name)
            loaded = self._store.load_version(name, version) if version is not None else None
            if loaded is not None:
                self._admit(loaded)
                return loaded
            if not self._shared:
                break
            # Written or deleted by another replica since this one looked: catch up (the
            # change feed's thread may have caught up meanwhile, so ask the catalog again).
            self.refresh(force=True)
            if version is None and name not in self._current:
                break
        raise ModelNotFound(f"model {name!r} does not exist", field=field)

    def _admit(self, snapshot: ModelSnapshot) -> None:
        with self._guard:
            if self._current.get(snapshot.name) != snapshot.version or snapshot.name in self._resident:
                return
            self._resident[snapshot.name] = snapshot
            self._resident_bytes += snapshot.nbytes
        if self.on_load is not None:
            self.on_load()

    def stored(self, name: str, version: int) -> ModelSnapshot | None:
        """A version as the store holds it (a streamed model's with its learning state)."""
        return self._store.load_version(name, version)

    def get_version(self, name: str, version: int | None, field: str = "model") -> ModelSnapshot:
        """The current snapshot, or a pinned version still kept in the store (one another
        replica wrote is read from the store even before this one has heard of it)."""
        if version is None:
            return self.get(name, field)
        current = self.lookup(name, field)
        if current is not None and current.version == version:
            return current
        known = self._current.get(name)
        if version > MAX_VERSION:  # no store can hold it, so no model has it
            raise ModelNotFound(
                f"model {name!r} has no version {version}: versions go up to {MAX_VERSION}"
                + (f" (current is {known})" if known else ""),
                field="version",
            )
        stored = self._store.load_version(name, version)
        if stored is not None:
            if version == known:
                self._admit(stored)
            return stored
        if self._shared:
            self.refresh(force=True)
            known = self._current.get(name)
        if known is None:
            raise ModelNotFound(f"model {name!r} does not exist", field=field)
        raise ModelNotFound(
            f"model {name!r} has no version {version} (current is {known}; "
            f"only the newest {self._keep_versions} versions are kept)",
            field="version",
        )

    def names(self) -> list[str]:
        if self._shared:
            self.refresh(force=True)
        return sorted(self._current)

    def current_version(self, name: str) -> int:
        return self._current.get(name, 0)

    def last_version(self, name: str) -> int:
        return self._last_versions.get(name, 0)

    def check_expected(self, name: str, expected_version: int | None) -> None:
        """Refuse early, before a request's data, an expected_version that does not match.
        A replica's view may be behind another's write: there the store, which checks again
        in the write's transaction, decides."""
        if expected_version is None:
            return
        current = self.current_version(name)
        if current != expected_version and not self._shared:
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

    # ---- The change feed --------------------------------------------------------------

    def refresh(self, force: bool = False) -> int:
        """Apply what other replicas wrote since the last refresh; returns how many names
        changed. Cheap when nothing did (SQLite tells without reading a table); a store
        elsewhere is only asked with ``force`` (by the change feed's thread, and where a
        name must be known exactly)."""
        changes = self._store.changes(self._position, force)
        if changes is None:
            return 0
        with self._guard:
            changed = sum(self._learn(state) for state in changes.names)
            self._position = max(self._position, changes.position)
        return changed

    def _learn(self, state: NameState) -> bool:
        """Take a name's numbers from the store unless this replica already knows as much
        (its own write, or a version it published ahead of the store). Holds ``_guard``
        (or runs in __init__)."""
        name = state.name
        if state.last_version <= self._last_versions.get(name, 0):
            return False
        self._last_versions[name] = state.last_version
        if state.current_version is None:
            self._current.pop(name, None)
        else:
            self._current[name] = state.current_version
        self._unsaved.discard(name)  # another writer replaced what this one published
        old = self._resident.get(name)
        if old is not None and old.version != state.current_version:
            del self._resident[name]
            self._resident_bytes -= old.nbytes
        return True

    # ---- Memory -----------------------------------------------------------------------

    def shed(self, nbytes: int) -> int:
        """Let go of the least recently used models until ``nbytes`` are freed (or none is
        left to let go of); returns the bytes freed. A shed model loads again on its next use."""
        freed = 0
        with self._guard:
            for name in list(self._resident):
                if freed >= nbytes:
                    break
                if name in self._unsaved:
                    continue
                freed += self._resident.pop(name).nbytes
            self._resident_bytes -= freed
        return freed

    # ---- Writes -----------------------------------------------------------------------

    def writer_lock(self, name: str) -> threading.Lock:
        """The lock every write to ``name`` holds in this process: fits, deletes and
        streamed batches (across replicas, the store's transaction and leases order them)."""
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

    def start_numbering(self, name: str, floor: int) -> None:
        """A stream's owner took the name's lease: its versions go on above ``floor``."""
        with self._guard:
            self._last_versions[name] = max(self._last_versions.get(name, 0), floor)

    def take_lease(self, name: str, owner: str, address: str, alive: Callable[[str], bool]) -> Lease | Holder:
        return self._store.take_lease(name, owner, address, alive)

    def renew_lease(self, lease: Lease, ceiling: int) -> Lease:
        return self._store.renew_lease(lease, ceiling)

    def give_up_lease(self, lease: Lease, published: int) -> None:
        self._store.give_up_lease(lease, published)

    def publish_unsaved(self, snapshot: ModelSnapshot) -> ModelSnapshot:
        """Publish the next version without storing it; the caller holds the writer lock.

        Streamed models publish every batch and store a checkpoint now and then
        (``save_checkpoint``), so readers may see versions that are not on disk yet.
        """
        name = snapshot.name
        published = self._next_version(snapshot, self._resident.get(name))
        self._publish(name, published, published.version, saved=False)
        with self._guard:
            self._creating.discard(name)
        return published

    def save_checkpoint(self, snapshot: ModelSnapshot, producers: dict[str, int], lease: Lease | None) -> Lease | None:
        """Store a published version of a streamed model; the caller holds the writer lock.
        Returns the lease as the checkpoint renewed it."""
        renewed = self._store.checkpoint(snapshot, producers, keep_versions=self._keep_versions, lease=lease)
        with self._guard:
            if self._current.get(snapshot.name) == snapshot.version:
                self._unsaved.discard(snapshot.name)
        return renewed

    def _reserve(self, name: str) -> bool:
        """Count a new name against max_models; False when the name already exists."""
        with self._guard:
            if name in self._current:
                return False
            held = len(self._current) + len(self._creating)
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
                snapshot.centers.setflags(write=False)
                stored = self._store.put(
                    replace(snapshot, version=0), keep_versions=self._keep_versions,
                    expected_version=expected_version, writer=self.identity, published=self.last_version(name),
                )
                self._publish(name, stored, stored.version)
                return stored
            finally:
                if creating:
                    with self._guard:
                        self._creating.discard(name)

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
            if not self._shared:
                self.get(name)
            self.check_expected(name, expected_version)
            version = self._store.delete(
                name, expected_version=expected_version, writer=self.identity, published=self.last_version(name)
            )
            self._publish(name, None, version)
            return version

    def _publish(self, name: str, snapshot: ModelSnapshot | None, version: int, *, saved: bool = True) -> None:
        with self._guard:
            previous = self._resident.pop(name, None)
            if previous is not None:
                self._resident_bytes -= previous.nbytes
            if snapshot is not None:
                self._resident[name] = snapshot
                self._resident_bytes += snapshot.nbytes
                self._current[name] = snapshot.version
            else:
                self._current.pop(name, None)
            self._last_versions[name] = max(self._last_versions.get(name, 0), version)
            if saved:
                self._unsaved.discard(name)
            else:
                self._unsaved.add(name)
