"""ModelStore in SQLite (WAL mode, synchronous=FULL), every row checksummed, shared by the
replicas of one host. It is the embedded default; ``postgres.py`` is the store for many hosts.

Each write is one transaction (``writes.py``, shared with the PostgreSQL store): the
compare-and-swap on the name's versions, the new row, the name's counter, the pruning,
and the stream lease it touches. ``BEGIN IMMEDIATE`` makes writers take turns.

- **Opened with checks** (``integrity.py``): the directory's lock, the write-ahead log,
  ``quick_check``; then every current version's SHA-256 is verified as it loads. Any
  failure raises StoreDamaged naming the models and the way back. A worker of
  ``serve --workers`` opens the store its supervisor checked, without the checks again.
- **A write that failed is never reported as stored.** SQLite errors become StoreFull
  (RESOURCE_EXHAUSTED) or StoreUnavailable (UNAVAILABLE) after the transaction is rolled
  back; ``conditions.py`` refuses writes up front while they would fail.
- **Replicas**: the change feed (``feed.py``) tells what other replicas wrote; stream
  leases (``leases.py``) are taken, renewed and checked in the store's transactions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from . import wal
from .commits import Acknowledged, CommitRecord
from .conditions import DEFAULT_MIN_FREE_BYTES, WriteConditions, refusal, shutting_down
from .checksums import MISSING_CURRENT, verified_current, verified_snapshot
from .integrity import (
    STORE_FILE,
    VERSION_ROWS,
    Discarded,
    StoreCondition,
    classify,
    lock_directory,
    open_checked,
    open_read_only,
    open_shared,
    recovery_advice,
)
from .feed import ChangeFeed
from .snapshots import Catalog, ModelSnapshot, StoredModels
from .writes import VersionedWrites

log = logging.getLogger("centroidal.server")


# Each name's current version, as the checksum covers it.
_CURRENT_ROWS = (
    "SELECT v.name, v.version, CAST(v.meta AS BLOB), v.centers, v.state, v.checksum FROM versions v "
    "JOIN names n ON n.name = v.name AND n.current_version = v.version"
)


class SQLiteStore(VersionedWrites):
    """ModelStore in one SQLite file under the data directory.

    min_free_bytes : writes are refused while the disk has less free space (deletes run)
    max_bytes : the largest the database may grow (0: only the disk limits it)
    on_condition : called with the new StoreCondition, or None when writes work again
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        max_bytes: int = 0,
        on_condition: Callable[[StoreCondition | None], None] | None = None,
        shared_lock: int | None = None,
    ) -> None:
        """shared_lock: the descriptor of the directory's lock held by this worker's
        supervisor, which checked the store before starting its workers; the store is then
        opened as one of several replicas, without the checks again."""
        self.dir = Path(data_dir)
        self.path = self.dir / STORE_FILE
        self._lock = threading.Lock()
        self._closed = False
        self.dir.mkdir(parents=True, exist_ok=True)
        # A read-only data directory (a read-only mount, or no write permission) is served
        # for reads, with every write refused as STORE_READ_ONLY.
        self.read_only = not os.access(self.dir, os.W_OK)
        self._conditions = WriteConditions(self.dir, self.path, min_free_bytes, self.read_only, on_condition)
        self._lock_file = lock_directory(self.dir, self.read_only, shared_lock)
        self._feed = ChangeFeed(self.path)
        try:
            # What the end of the log lost at this open: a write never acknowledged (logged;
            # one that was acknowledged is refused as damage by open_checked).
            self.discarded: Discarded | None = None
            self._record: CommitRecord | None = None
            if self.read_only:
                self._db = open_read_only(self.path)
            elif shared_lock is not None:
                self._db = open_shared(self.path)
                self._record = CommitRecord(self.path)
            else:
                self._db, self.discarded = open_checked(self.path)
                if self.discarded:
                    log.warning("%s", self.discarded.message)
                self._record = CommitRecord(self.path)
            if not self.read_only:
                if max_bytes:
                    page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
                    self._db.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")
                self._conditions.keep_reserve()
        except BaseException:
            if self._lock_file is not None:
                self._lock_file.close()
            raise

    # ---- Reads -------------------------------------------------------------------------

    def load_all(self) -> StoredModels:
        """Every current version, each verified; raises StoreDamaged naming every bad one."""
        with self._lock, self._reading():
            rows = self._db.execute(_CURRENT_ROWS).fetchall()
            names = self._db.execute("SELECT name, last_version FROM names").fetchall()
            missing = self._db.execute(MISSING_CURRENT).fetchall()
        snapshots = list(verified_current(rows, missing, recovery_advice(self.path)))
        return StoredModels(snapshots, {name: int(version) for name, version in names})

    def verify_current(self) -> int:
        """Verify every current version's checksum as ``load_all`` does, one row in memory at
        a time, keeping none; returns how many were verified."""
        with self._lock, self._reading():
            missing = self._db.execute(MISSING_CURRENT).fetchall()
            current = verified_current(self._db.execute(_CURRENT_ROWS), missing, recovery_advice(self.path))
            return sum(1 for _ in current)

    @property
    def lock_descriptor(self) -> int:
        """The descriptor of the directory's lock, for a supervisor to hand to its workers."""
        if self._lock_file is None:
            raise OSError(f"the data directory {self.dir} has no lock file to share")
        return self._lock_file.fileno()

    def load_version(self, name: str, version: int) -> ModelSnapshot | None:
        with self._lock, self._reading():
            row = self._db.execute(f"{VERSION_ROWS} WHERE name = ? AND version = ?", (name, version)).fetchone()
        return verified_snapshot(*row) if row else None

    def load_catalog(self) -> Catalog:
        """Every name's version numbers, and the change feed's position they are as of; no
        model is read."""
        with self._lock, self._reading():
            return self._feed.catalog(self._db)

    @property
    def changed(self) -> None:
        """Nothing hints at changes: asking is cheap enough to do before every read of a model."""
        return None

    @property
    def location(self) -> str:
        return str(self.path)

    def changes(self, since: int, force: bool = False) -> Catalog | None:
        """Names written by any replica since feed position ``since``; None when the store
        has not changed at all (cheap enough to ask before every read of a model, so
        ``force`` changes nothing)."""
        with self._reading():
            return self._feed.changes(since)

    # ---- Writes ------------------------------------------------------------------------

    # ---- What the shared writes need (writes.py) ----------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        with self._lock, self._transaction() as seq:
            yield self._db, seq

    def _now(self, db: object) -> float:
        return time.time()  # every replica of a SQLite store runs on its host

    def _refuse_delete(self) -> None:
        if self.read_only and self.condition is not None:
            raise refusal(self.condition)

    def _free_space(self) -> bool:
        return self._conditions.release_reserve()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[int]:
        """One write transaction, which yields its commit number (the change feed's position
        of what it writes); a SQLite failure rolls it back and becomes a store error. The
        caller holds ``_lock``."""
        if self._closed:
            raise shutting_down()
        count = None
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # The row is made at open; never trust a hand-edited store to keep it.
                count = self._db.execute(
                    "UPDATE commits SET count = count + 1 WHERE id = 1 RETURNING count"
                ).fetchone()
                yield int(count[0]) if count is not None else 0
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            failure = classify(exc, self.path)
            self._conditions.set(failure)
            raise refusal(failure) from exc
        if count is not None:
            self._acknowledge(int(count[0]))
        self._conditions.set(None)

    def _acknowledge(self, count: int) -> None:
        """Record the commit as acknowledged, with its log's generation (see commits.py)."""
        salts = wal.header_salts(wal.log_path(self.path))
        if self._record is None or salts is None:
            return
        try:
            self._record.write(Acknowledged(salts, count))
        except OSError as exc:  # the commit stands; only the evidence for a later check is missing
            log.warning("could not record commit %d as acknowledged in %s: %s", count, self.dir, exc)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        if self._closed:
            raise shutting_down()
        try:
            yield
        except sqlite3.Error as exc:
            raise refusal(classify(exc, self.path)) from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            self._feed.close()
            if self._record is not None:
                self._record.close()
            if self._lock_file is not None:
                self._lock_file.close()

