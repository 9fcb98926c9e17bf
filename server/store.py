"""ModelStore in SQLite (WAL mode, synchronous=FULL), locked to one server, every row checksummed.

Each write is one transaction: the check that its version is above the name's
last one, the new version's row, the name's version counter, and the pruning of
versions past ``keep_versions``. A name's counter survives a delete, so versions
never go backwards for a name.

- **Opened with checks** (``integrity.py``): the directory's lock, the write-ahead
  log, ``quick_check``; then every current version's SHA-256 is verified as it
  loads. Any failure raises StoreDamaged naming the models and the way back.
- **A write that failed is never reported as stored.** SQLite errors become
  StoreFull (RESOURCE_EXHAUSTED) or StoreUnavailable (UNAVAILABLE) after the
  transaction is rolled back. While the disk has less than ``min_free_bytes`` free,
  or for ``RETRY_AFTER_S`` after a write failed, writes are refused before any work;
  deletes always run, and a small reserve file is given up to let one through a
  full disk.
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

from . import wal
from .commits import Acknowledged, CommitRecord
from .exceptions import ShuttingDown, StoreDamaged, StoreFull, StoreUnavailable, VersionConflict
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
    recovery_advice,
    row_checksum,
    verified_snapshot,
)
from .snapshots import ModelSnapshot, StoredModels

log = logging.getLogger("centroidal.server")

RESERVE_FILE = "reserve"
RESERVE_BYTES = 8 * 1024 * 1024
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
# After a failed write, writes are refused this long before the store tries again.
RETRY_AFTER_S = 5.0


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
    ) -> None:
        self.dir = Path(data_dir)
        self.path = self.dir / STORE_FILE
        self.min_free_bytes = min_free_bytes
        self._on_condition = on_condition
        self._lock = threading.Lock()
        self._closed = False
        self._condition: StoreCondition | None = None
        self._failed_at = 0.0
        self.dir.mkdir(parents=True, exist_ok=True)
        # A read-only data directory (a read-only mount, or no write permission) is served
        # for reads, with every write refused as STORE_READ_ONLY.
        self.read_only = not os.access(self.dir, os.W_OK)
        self._lock_file = lock_directory(self.dir, self.read_only)
        try:
            # What the end of the log lost at this open: a write never acknowledged (logged;
            # one that was acknowledged is refused as damage by open_checked).
            self.discarded: Discarded | None = None
            self._record: CommitRecord | None = None
            if self.read_only:
                self._db = open_read_only(self.path)
            else:
                self._db, self.discarded = open_checked(self.path)
                if self.discarded:
                    log.warning("%s", self.discarded.message)
                self._record = CommitRecord(self.path)
            if self.read_only:
                self._condition = StoreCondition(
                    "STORE_READ_ONLY",
                    f"the data directory {self.dir} is read-only: the server answers reads, and "
                    "refuses every write; make it writable and restart to take writes",
                )
                log.warning("%s", self._condition.message)
            else:
                if max_bytes:
                    page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
                    self._db.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")
                self._keep_reserve()
        except BaseException:
            if self._lock_file is not None:
                self._lock_file.close()
            raise

    # ---- Reads -------------------------------------------------------------------------

    def load_all(self) -> StoredModels:
        """Every current version, each verified; raises StoreDamaged naming every bad one."""
        with self._lock, self._reading():
            rows = self._db.execute(
                "SELECT v.name, v.version, CAST(v.meta AS BLOB), v.centers, v.state, v.checksum FROM versions v "
                "JOIN names n ON n.name = v.name AND n.current_version = v.version"
            ).fetchall()
            names = self._db.execute("SELECT name, last_version FROM names").fetchall()
            missing = self._db.execute(
                "SELECT n.name FROM names n LEFT JOIN versions v "
                "ON v.name = n.name AND v.version = n.current_version "
                "WHERE n.current_version IS NOT NULL AND v.name IS NULL"
            ).fetchall()
        snapshots, damaged = [], [str(name) for (name,) in missing]
        for row in rows:
            try:
                snapshots.append(verified_snapshot(*row))
            except StoreDamaged:
                damaged.append(str(row[0]))
        if damaged:
            shown = ", ".join(repr(name) for name in sorted(damaged)[:20])
            more = f" and {len(damaged) - 20} more" if len(damaged) > 20 else ""
            raise StoreDamaged(
                f"{len(damaged)} stored models fail their checksum or are missing: {shown}{more}; "
                + recovery_advice(self.path),
                metadata={"models": ",".join(sorted(damaged)[:20])},
            )
        return StoredModels(snapshots, {name: int(version) for name, version in names})

    def load_version(self, name: str, version: int) -> ModelSnapshot | None:
        with self._lock, self._reading():
            row = self._db.execute(f"{VERSION_ROWS} WHERE name = ? AND version = ?", (name, version)).fetchone()
        return verified_snapshot(*row) if row else None

    # ---- Writes ------------------------------------------------------------------------

    def put(self, snapshot: ModelSnapshot, *, keep_versions: int) -> None:
        self._write(snapshot, keep_versions)

    def checkpoint(
        self, snapshot: ModelSnapshot, producers: Mapping[str, int], *, keep_versions: int
    ) -> None:
        """Store a streamed model with each producer's last sequence, in the same row."""
        extra = {**snapshot.extra, "producers": dict(producers)}
        self._write(replace(snapshot, extra=extra), keep_versions)

    def check_writable(self) -> None:
        """Raise StoreFull or StoreUnavailable when a write would be refused now; cheap enough
        to call before accepting a request's data."""
        if self._closed:
            raise _shutting_down()
        failed = self._condition
        if failed is not None and (self.read_only or time.monotonic() - self._failed_at < RETRY_AFTER_S):
            raise _refusal(failed)
        free = _free_bytes(self.dir)
        if free is not None and free < self.min_free_bytes:
            condition = StoreCondition(
                "STORE_FULL",
                f"the disk of the data directory {self.dir} has {free} bytes free, under the "
                f"{self.min_free_bytes} bytes --min-free-disk keeps; nothing was written. Delete "
                "models (deletes still work) or free disk space",
            )
            self._set_condition(condition)
            raise _refusal(condition)

    @property
    def condition(self) -> StoreCondition | None:
        """Why writes are refused, or None while they work."""
        return self._condition

    def _write(self, snapshot: ModelSnapshot, keep_versions: int) -> None:
        self.check_writable()  # before the row is serialised
        meta = json.dumps(
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
        centers = np.ascontiguousarray(snapshot.centers).tobytes()
        digest = row_checksum(snapshot.name, snapshot.version, meta, centers, snapshot.state)
        with self._lock, self._transaction():
            self._check_newer(snapshot.name, snapshot.version)
            self._db.execute(
                "INSERT INTO versions (name, version, meta, centers, state, checksum) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (snapshot.name, snapshot.version, meta, centers, snapshot.state, digest),
            )
            self._db.execute(
                "INSERT INTO names (name, last_version, current_version) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version, "
                "current_version = excluded.current_version",
                (snapshot.name, snapshot.version, snapshot.version),
            )
            self._db.execute(
                "DELETE FROM versions WHERE name = ? AND version <= ?",
                (snapshot.name, snapshot.version - keep_versions),
            )

    def delete(self, name: str, version: int) -> None:
        """Delete a name's versions. Runs even while writes are refused, to free space; on a
        full disk it gives up the reserve file once and tries again."""
        try:
            self._delete(name, version)
        except StoreFull:
            if not self._release_reserve():
                raise
            self._delete(name, version)

    def _delete(self, name: str, version: int) -> None:
        if self.read_only and self._condition is not None:
            raise _refusal(self._condition)
        with self._lock, self._transaction():
            self._check_newer(name, version)
            # An upsert: a streamed model deleted before its first checkpoint has no row yet,
            # and its version counter must still not go backwards.
            self._db.execute(
                "INSERT INTO names (name, last_version, current_version) VALUES (?, ?, NULL) "
                "ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version, "
                "current_version = NULL",
                (name, version),
            )
            self._db.execute("DELETE FROM versions WHERE name = ?", (name,))

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
    def _transaction(self) -> Iterator[None]:
        """One write transaction; a SQLite failure rolls it back and becomes a store error.
        The caller holds ``_lock``."""
        if self._closed:
            raise _shutting_down()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                count = self._db.execute(
                    "UPDATE commits SET count = count + 1 WHERE id = 1 RETURNING count"
                ).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            failure = classify(exc, self.path)
            self._set_condition(failure)
            raise _refusal(failure) from exc
        if count is not None:  # the row is made at open; never trust a hand-edited store to keep it
            self._acknowledge(int(count[0]))
        self._set_condition(None)

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
            raise _shutting_down()
        try:
            yield
        except sqlite3.Error as exc:
            raise _refusal(classify(exc, self.path)) from exc

    def _set_condition(self, condition: StoreCondition | None) -> None:
        previous = self._condition
        if condition is not None:
            self._failed_at = time.monotonic()
        self._condition = condition
        if (previous is None) == (condition is None):
            return
        if condition is None:
            log.warning("store writes work again: %s", self.path)
            self._keep_reserve()
        else:
            log.error("store writes refused: %s", condition.message)
        if self._on_condition is not None:
            self._on_condition(condition)

    # ---- The reserve: a little disk space given up to let a delete through ------------

    def _keep_reserve(self) -> None:
        reserve = self.dir / RESERVE_FILE
        free = _free_bytes(self.dir)
        if reserve.exists() or free is None or free < self.min_free_bytes + 2 * RESERVE_BYTES:
            return
        try:
            with open(reserve, "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, RESERVE_BYTES)
        except OSError as exc:  # a filesystem without fallocate, or no room after all
            log.warning("could not keep a %d-byte reserve file in %s: %s", RESERVE_BYTES, self.dir, exc)
            reserve.unlink(missing_ok=True)

    def _release_reserve(self) -> bool:
        reserve = self.dir / RESERVE_FILE
        try:
            reserve.unlink()
        except FileNotFoundError:
            return False
        log.warning("the disk is full: gave up the %d-byte reserve file to let a delete through", RESERVE_BYTES)
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            if self._record is not None:
                self._record.close()
            if self._lock_file is not None:
                self._lock_file.close()


# ---- Failures -------------------------------------------------------------------------


def _refusal(condition: StoreCondition) -> StoreUnavailable | StoreDamaged:
    if condition.reason == "STORE_FULL":
        return StoreFull(condition.message, retry_after=RETRY_AFTER_S)
    if condition.reason == "STORE_DAMAGED":
        return StoreDamaged(condition.message)
    return StoreUnavailable(condition.message, reason=condition.reason, retry_after=RETRY_AFTER_S)


def _shutting_down() -> ShuttingDown:
    return ShuttingDown("the server is shutting down; nothing was written, retry on another replica or later")


def _free_bytes(directory: Path) -> int | None:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize
