"""ModelStore in SQLite (WAL mode, synchronous=FULL), every row checksummed, shared by replicas.

Each write is one transaction: the compare-and-swap on the name's versions (its number is
chosen in the transaction, above anything any replica wrote or a stream's owner published),
the new version's row, the name's version counter, and the pruning of versions past
``keep_versions``. A name's counter survives a delete, so versions never go backwards.

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
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import leases, wal
from .commits import Acknowledged, CommitRecord
from .conditions import DEFAULT_MIN_FREE_BYTES, WriteConditions, refusal, shutting_down
from .exceptions import ModelNotFound, StoreDamaged, StoreFull, VersionConflict
from .integrity import (
    KIND_ON_DISK,
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
    row_checksum,
    verified_snapshot,
)
from .feed import ChangeFeed
from .leases import Holder, Lease
from .snapshots import Catalog, ModelSnapshot, StoredModels

log = logging.getLogger("centroidal.server")


# Each name's current version, as the checksum covers it; and names whose current version
# has no row (damage).
_CURRENT_ROWS = (
    "SELECT v.name, v.version, CAST(v.meta AS BLOB), v.centers, v.state, v.checksum FROM versions v "
    "JOIN names n ON n.name = v.name AND n.current_version = v.version"
)
_MISSING_CURRENT = (
    "SELECT n.name FROM names n LEFT JOIN versions v ON v.name = n.name AND v.version = n.current_version "
    "WHERE n.current_version IS NOT NULL AND v.name IS NULL"
)


class SQLiteStore:
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
            missing = self._db.execute(_MISSING_CURRENT).fetchall()
        snapshots, damaged = [], [str(name) for (name,) in missing]
        for row in rows:
            try:
                snapshots.append(verified_snapshot(*row))
            except StoreDamaged:
                damaged.append(str(row[0]))
        if damaged:
            raise _damaged(damaged, self.path)
        return StoredModels(snapshots, {name: int(version) for name, version in names})

    def verify_current(self) -> int:
        """Verify every current version's checksum as ``load_all`` does, one row in memory at
        a time, keeping none; returns how many were verified."""
        verified = 0
        with self._lock, self._reading():
            damaged = [str(name) for (name,) in self._db.execute(_MISSING_CURRENT).fetchall()]
            for row in self._db.execute(_CURRENT_ROWS):
                try:
                    verified_snapshot(*row)
                except StoreDamaged:
                    damaged.append(str(row[0]))
                verified += 1
        if damaged:
            raise _damaged(damaged, self.path)
        return verified

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

    def changes(self, since: int) -> Catalog | None:
        """Names written by any replica since feed position ``since``; None when the store
        has not changed at all (cheap enough to ask before every read of a model)."""
        with self._reading():
            return self._feed.changes(since)

    # ---- Writes ------------------------------------------------------------------------

    def check_writable(self) -> None:
        """Raise StoreFull or StoreUnavailable when a write would be refused now; cheap enough
        to call before accepting a request's data."""
        if self._closed:
            raise shutting_down()
        self._conditions.check()

    @property
    def condition(self) -> StoreCondition | None:
        """Why writes are refused, or None while they work."""
        return self._conditions.current

    def put(
        self, snapshot: ModelSnapshot, *, keep_versions: int, expected_version: int | None = None,
        writer: str = "", published: int = 0,
    ) -> ModelSnapshot:
        """Store ``snapshot`` and return it as stored.

        With version 0 the store numbers it, in the write's transaction, above every version
        of the name any replica wrote or published under a stream's lease, and timestamps it
        (created_at carried over from the current version). A fit or palette replaces a
        streamed model: the stream's lease ends. ``expected_version`` is checked against the
        current version in the same transaction (VersionConflict). ``writer`` is the calling
        replica's lease identity and ``published`` the newest version it published of the
        name: when it owns the name's stream, that is what the new version goes above.
        """
        return self._write(snapshot, keep_versions, expected_version=expected_version,
                           writer=writer, published=published)

    def checkpoint(
        self, snapshot: ModelSnapshot, producers: Mapping[str, int], *, keep_versions: int,
        lease: Lease | None = None,
    ) -> Lease | None:
        """Store a streamed model with each producer's last sequence, in the same row. Under a
        lease the write is fenced (LeaseLost when the lease is no longer the caller's) and
        renews it; returns the renewed lease."""
        extra = {**snapshot.extra, "producers": dict(producers)}
        renewed: list[Lease] = []
        self._write(replace(snapshot, extra=extra), keep_versions, lease=lease, renewed=renewed)
        return renewed[0] if renewed else None

    def _write(
        self,
        snapshot: ModelSnapshot,
        keep_versions: int,
        *,
        expected_version: int | None = None,
        lease: Lease | None = None,
        renewed: list[Lease] | None = None,
        writer: str = "",
        published: int = 0,
    ) -> ModelSnapshot:
        self.check_writable()  # before the row is serialised
        centers = np.ascontiguousarray(snapshot.centers).tobytes()
        name = snapshot.name
        with self._lock, self._transaction() as seq:
            last, current = self._name_row(name)
            if expected_version is not None:
                self._check_expected(name, expected_version, current)
            if lease is not None:
                leases.check(self._db, lease)
                renewed_lease = leases.renew(self._db, lease, self.lease_ttl, snapshot.version + leases.CEILING_STEP)
                if renewed is not None:
                    renewed.append(renewed_lease)
            if snapshot.version:
                self._check_newer(name, snapshot.version)
            else:  # numbered here: above every version written or published under a lease
                now = time.time()
                created = self._created_at(name, current)
                snapshot = replace(
                    snapshot, version=max(last, leases.published_up_to(self._db, name, writer, published)) + 1,
                    created_at=now if created is None else created, updated_at=now,
                )
            if lease is None:
                leases.revoke(self._db, name, snapshot.version)
            meta = _meta(snapshot)
            digest = row_checksum(name, snapshot.version, meta, centers, snapshot.state)
            self._db.execute(
                "INSERT INTO versions (name, version, meta, centers, state, checksum) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, snapshot.version, meta, centers, snapshot.state, digest),
            )
            self._db.execute(
                "INSERT INTO names (name, last_version, current_version, seq) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version, "
                "current_version = excluded.current_version, seq = excluded.seq",
                (name, snapshot.version, snapshot.version, seq),
            )
            self._db.execute(
                "DELETE FROM versions WHERE name = ? AND version <= ?",
                (name, snapshot.version - keep_versions),
            )
        return snapshot

    def delete(
        self, name: str, version: int = 0, *, expected_version: int | None = None, writer: str = "",
        published: int = 0,
    ) -> int:
        """Delete a name's versions; returns the version the delete wrote (numbered by the
        store when ``version`` is 0). Runs even while writes are refused, to free space; on a
        full disk it gives up the reserve file once and tries again."""
        try:
            return self._delete(name, version, expected_version, writer, published)
        except StoreFull:
            if not self._conditions.release_reserve():
                raise
            return self._delete(name, version, expected_version, writer, published)

    def _delete(self, name: str, version: int, expected_version: int | None, writer: str, published: int) -> int:
        if self.read_only and self.condition is not None:
            raise refusal(self.condition)
        with self._lock, self._transaction() as seq:
            last, current = self._name_row(name)
            ceiling = leases.published_up_to(self._db, name, writer, published)
            if not version and current is None and ceiling <= last:
                # Nothing stored and no stream publishing it (a live one's lease lifts the ceiling).
                raise ModelNotFound(f"model {name!r} does not exist", field="name")
            if expected_version is not None:
                self._check_expected(name, expected_version, current)
            if version:
                self._check_newer(name, version)
            else:
                version = max(last, ceiling) + 1
            leases.revoke(self._db, name, version)
            # An upsert: a streamed model deleted before its first checkpoint has no row yet,
            # and its version counter must still not go backwards.
            self._db.execute(
                "INSERT INTO names (name, last_version, current_version, seq) VALUES (?, ?, NULL, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version, "
                "current_version = NULL, seq = excluded.seq",
                (name, version, seq),
            )
            self._db.execute("DELETE FROM versions WHERE name = ?", (name,))
        return version

    def _name_row(self, name: str) -> tuple[int, int | None]:
        row = self._db.execute("SELECT last_version, current_version FROM names WHERE name = ?", (name,)).fetchone()
        if row is None:
            return 0, None
        return int(row[0]), None if row[1] is None else int(row[1])

    def _created_at(self, name: str, current: int | None) -> float | None:
        if current is None:
            return None
        row = self._db.execute(
            "SELECT json_extract(meta, '$.created_at') FROM versions WHERE name = ? AND version = ?",
            (name, current),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def _check_expected(self, name: str, expected: int, current: int | None) -> None:
        """expected_version against the stored current version; a version a stream's owner
        published but has not stored yet (under its ceiling) counts as current too."""
        stored = current or 0
        if expected == stored:
            return
        row = self._db.execute("SELECT owner, expires, ceiling FROM leases WHERE name = ?", (name,)).fetchone()
        if row is not None and row[0] and stored < expected <= int(row[2]):
            return
        raise VersionConflict(
            f"model {name!r} is at version {stored} in the store, not the expected_version {expected}",
            field="expected_version",
            metadata={"current_version": str(stored)},
        )

    # ---- Stream leases (leases.py) -------------------------------------------------------

    lease_ttl = 10.0

    def take_lease(
        self, name: str, owner: str, address: str, alive: Callable[[str], bool] = lambda holder: True
    ) -> Lease | Holder:
        """Take ``name``'s stream lease, or learn who holds it (``alive``: see leases.take)."""
        self.check_writable()
        with self._lock, self._transaction():
            last, _ = self._name_row(name)
            return leases.take(self._db, name, owner, address, self.lease_ttl, last, alive)

    def renew_lease(self, lease: Lease, ceiling: int) -> Lease:
        """Keep holding ``lease`` (LeaseLost when it is gone), raising its ceiling to ``ceiling``."""
        with self._lock, self._transaction():
            return leases.renew(self._db, lease, self.lease_ttl, ceiling)

    def give_up_lease(self, lease: Lease, published: int) -> None:
        with self._lock, self._transaction():
            last, _ = self._name_row(lease.name)
            leases.give_up(self._db, lease, published, last)

    def revoke_leases(self, owner_prefix: str) -> int:
        """End every lease of owners whose identity starts with ``owner_prefix``."""
        with self._lock, self._transaction():
            return leases.revoke_owners(self._db, owner_prefix)

    def _check_newer(self, name: str, version: int) -> None:
        """The compare-and-swap: refuse a version at or below one already stored for name."""
        row = self._db.execute("SELECT last_version FROM names WHERE name = ?", (name,)).fetchone()
        if row is not None and int(row[0]) >= version:
            raise VersionConflict(
                f"model {name!r} already has version {row[0]} in the store; version {version} "
                "was not written",
                field="version",
                metadata={"current_version": str(row[0])},
            )

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


# ---- Failures -------------------------------------------------------------------------


def _damaged(damaged: list[str], path: Path) -> StoreDamaged:
    shown = ", ".join(repr(name) for name in sorted(damaged)[:20])
    more = f" and {len(damaged) - 20} more" if len(damaged) > 20 else ""
    return StoreDamaged(
        f"{len(damaged)} stored models fail their checksum or are missing: {shown}{more}; "
        + recovery_advice(path),
        metadata={"models": ",".join(sorted(damaged)[:20])},
    )


def _meta(snapshot: ModelSnapshot) -> str:
    """A stored version's metadata: everything but its centers and state."""
    return json.dumps(
        {
            "kind": KIND_ON_DISK.get(snapshot.kind, snapshot.kind),
            "config": snapshot.config,
            "inertia": snapshot.inertia,
            "n_iter": snapshot.n_iter,
            "n_samples_seen": snapshot.n_samples_seen,
            "created_at": snapshot.created_at,
            "updated_at": snapshot.updated_at,
            "dtype": snapshot.centers.dtype.str,
            "shape": list(snapshot.centers.shape),
            "extra": snapshot.extra,
        }
    )



