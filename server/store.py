"""ModelStore in SQLite (WAL mode, synchronous=FULL), locked to one server, every row checksummed.

Each write is one transaction: the check that its version is above the name's
last one, the new version's row, the name's version counter, and the pruning of
versions past ``keep_versions``. A name's counter survives a delete, so versions
never go backwards for a name.

Trust, in order of when it is checked:
- **One server per data directory.** ``open`` takes an exclusive ``flock`` on
  ``<data-dir>/lock`` and holds it until ``close``; a second server refuses to start.
- **Damage is refused, never served.** A new store is built under a temporary name
  and renamed into place, so a ``models.sqlite3`` that is empty or not SQLite is
  damage, not a fresh start. At open, the write-ahead log is checked frame by frame
  (``wal.py``: committed frames past a broken one mean lost writes), then SQLite's
  ``quick_check`` runs, then every current version's SHA-256 is verified. Any
  failure raises StoreDamaged naming the models and the way back.
- **A write that failed is never reported as stored.** SQLite errors become
  StoreFull (RESOURCE_EXHAUSTED) or StoreUnavailable (UNAVAILABLE) after the
  transaction is rolled back. While the disk has less than ``min_free_bytes`` free,
  or for ``RETRY_AFTER_S`` after a write failed, writes are refused before any work;
  deletes always run, and a small reserve file is given up to let one through a
  full disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import numpy as np

from . import wal
from .exceptions import ShuttingDown, StoreDamaged, StoreFull, StoreUnavailable, VersionConflict
from .snapshots import MINIBATCH_KMEANS, ModelSnapshot, StoredModels

log = logging.getLogger("centroidal.server")

STORE_FILE = "models.sqlite3"
LOCK_FILE = "lock"
RESERVE_FILE = "reserve"
RESERVE_BYTES = 8 * 1024 * 1024
DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
# After a failed write, writes are refused this long before the store tries again.
RETRY_AFTER_S = 5.0

# Streamed models keep the spelling stores have always had, so older servers still read them.
_KIND_ON_DISK = {MINIBATCH_KMEANS: "minibatch_kmeans"}
_KIND_FROM_DISK = {disk: kind for kind, disk in _KIND_ON_DISK.items()}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL,
    current_version INTEGER
);
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    meta TEXT NOT NULL,
    centers BLOB NOT NULL,
    state BLOB,
    checksum TEXT,
    PRIMARY KEY (name, version)
);
"""

_RECOVERY = (
    "stop every server on this directory, then restore {path} from a copy made with "
    "`centroidal store backup`, or run `centroidal store check --data-dir {dir}` for details; "
    "to start empty instead, move {path} (and any -wal/-shm files) aside"
)


class StoreLocked(OSError):
    """Another process holds the data directory."""


@dataclass(frozen=True)
class StoreCondition:
    """Why writes are refused right now, as health and metrics report it."""

    reason: str  # STORE_FULL, STORE_READ_ONLY, STORE_IO_ERROR, ...
    message: str


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
        self._lock_file = _lock_directory(self.dir, self.read_only)
        try:
            self._db = _open_read_only(self.path) if self.read_only else _open(self.path)
            if self.read_only:
                self._condition = StoreCondition(
                    "STORE_READ_ONLY",
                    f"the data directory {self.dir} is read-only: the server answers reads, and "
                    "refuses every write; make it writable and restart to take writes",
                )
                log.warning("%s", self._condition.message)
            elif max_bytes:
                page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
                self._db.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")
            if not self.read_only:
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
                snapshots.append(_snapshot(*row))
            except StoreDamaged:
                damaged.append(str(row[0]))
        if damaged:
            shown = ", ".join(repr(name) for name in sorted(damaged)[:20])
            more = f" and {len(damaged) - 20} more" if len(damaged) > 20 else ""
            raise StoreDamaged(
                f"{len(damaged)} stored models fail their checksum or are missing: {shown}{more}; "
                + _RECOVERY.format(path=self.path, dir=self.dir),
                metadata={"models": ",".join(sorted(damaged)[:20])},
            )
        return StoredModels(snapshots, {name: int(version) for name, version in names})

    def load_version(self, name: str, version: int) -> ModelSnapshot | None:
        with self._lock, self._reading():
            row = self._db.execute(
                "SELECT name, version, CAST(meta AS BLOB), centers, state, checksum FROM versions "
                "WHERE name = ? AND version = ?",
                (name, version),
            ).fetchone()
        return _snapshot(*row) if row else None

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
        meta = json.dumps(
            {
                "kind": _KIND_ON_DISK.get(snapshot.kind, snapshot.kind),
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
        checksum = _checksum(snapshot.name, snapshot.version, meta, centers, snapshot.state)
        self.check_writable()
        with self._lock, self._transaction():
            self._check_newer(snapshot.name, snapshot.version)
            self._db.execute(
                "INSERT INTO versions (name, version, meta, centers, state, checksum) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (snapshot.name, snapshot.version, meta, centers, snapshot.state, checksum),
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
        if self._closed:
            raise _shutting_down()
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
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            failure = _classify(exc, self.path)
            self._set_condition(failure)
            raise _refusal(failure) from exc
        self._set_condition(None)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        if self._closed:
            raise _shutting_down()
        try:
            yield
        except sqlite3.Error as exc:
            failure = _classify(exc, self.path)
            if failure.reason == "STORE_DAMAGED":
                raise StoreDamaged(failure.message) from exc
            raise StoreUnavailable(failure.message, reason=failure.reason, retry_after=RETRY_AFTER_S) from exc

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
            if self._lock_file is not None:
                self._lock_file.close()


# ---- Opening --------------------------------------------------------------------------


def _lock_directory(data_dir: Path, read_only: bool) -> TextIO | None:
    """Take the data directory's exclusive lock, or raise StoreLocked naming the holder.

    In a read-only directory the lock file is only read (flock needs no write access);
    without one, nothing can write there anyway.
    """
    try:
        handle = open(data_dir / LOCK_FILE, "r" if read_only else "a+")
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StoreLocked(
            f"the data directory {data_dir} is in use by another centroidal server (pid {holder}); "
            "two servers on one directory would overwrite each other's versions. Stop it, or "
            "give this one its own --data-dir"
        ) from None
    if not read_only:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle


def _open(path: Path) -> sqlite3.Connection:
    """Open (or create) the store and check it: WAL frames, quick_check, schema."""
    if not path.exists():
        _create(path)
    elif path.stat().st_size == 0:
        raise StoreDamaged(
            f"{path} is empty (0 bytes), though a store is only ever created whole: it was "
            "truncated. " + _RECOVERY.format(path=path, dir=path.parent)
        )
    lost = wal.lost_frames(path.with_name(path.name + "-wal"))
    if lost:
        raise StoreDamaged(
            f"the write-ahead log {path}-wal is damaged: {lost}; opening it would silently drop "
            "writes that were acknowledged. " + _RECOVERY.format(path=path, dir=path.parent)
        )
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        verdict = db.execute("PRAGMA quick_check").fetchall()
        if verdict != [("ok",)]:
            problems = "; ".join(str(row[0]) for row in verdict[:5])
            raise StoreDamaged(
                f"{path} failed SQLite's quick_check ({problems}). "
                + _RECOVERY.format(path=path, dir=path.parent)
            )
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
        if "state" not in columns:  # a store written before streamed models existed
            db.execute("ALTER TABLE versions ADD COLUMN state BLOB")
        if "checksum" not in columns:  # a store written before checksums
            db.execute("ALTER TABLE versions ADD COLUMN checksum TEXT")
        _adopt_unchecked(db)
    except sqlite3.Error as exc:
        db.close()
        failure = _classify(exc, path)
        if failure.reason == "STORE_DAMAGED":
            raise StoreDamaged(failure.message + ". " + _RECOVERY.format(path=path, dir=path.parent)) from exc
        raise StoreUnavailable(failure.message, reason=failure.reason) from exc
    except BaseException:
        db.close()
        raise
    return db


def _open_read_only(path: Path) -> sqlite3.Connection:
    """Open a store in a read-only directory: its main file only, which must hold everything."""
    if not path.exists() or path.stat().st_size == 0:
        raise StoreUnavailable(
            f"the data directory {path.parent} is read-only and holds no store: make it writable",
            reason="STORE_READ_ONLY",
        )
    log_file = path.with_name(path.name + "-wal")
    if log_file.exists() and log_file.stat().st_size > 32:
        raise StoreUnavailable(
            f"the data directory {path.parent} is read-only, and its write-ahead log holds writes "
            "not yet folded into the main file; make it writable for one start so they can be",
            reason="STORE_READ_ONLY",
        )
    # immutable: nothing else can change a file in a read-only directory, and SQLite then
    # needs no -shm file beside it.
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False,
                         isolation_level=None)
    try:
        verdict = db.execute("PRAGMA quick_check").fetchall()
        if verdict != [("ok",)]:
            raise StoreDamaged(
                f"{path} failed SQLite's quick_check ({verdict[0][0]}). "
                + _RECOVERY.format(path=path, dir=path.parent)
            )
        columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
        if "checksum" not in columns:
            raise StoreUnavailable(
                f"the store in the read-only directory {path.parent} predates checksums; make it "
                "writable for one start so every version gets one",
                reason="STORE_READ_ONLY",
            )
    except sqlite3.Error as exc:
        db.close()
        raise StoreDamaged(f"{path} cannot be read ({exc}). " + _RECOVERY.format(path=path, dir=path.parent)) from exc
    except BaseException:
        db.close()
        raise
    return db


def _create(path: Path) -> None:
    """A new, empty store, built beside its final name and renamed into place whole."""
    building = path.with_name(path.name + ".new")
    building.unlink(missing_ok=True)
    db = sqlite3.connect(building, isolation_level=None)
    try:
        db.executescript(_SCHEMA)
    finally:
        db.close()
    with open(building, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(building, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _adopt_unchecked(db: sqlite3.Connection) -> None:
    """Give rows written before checksums existed their checksum (after quick_check passed)."""
    rows = db.execute(
        "SELECT name, version, CAST(meta AS BLOB), centers, state FROM versions WHERE checksum IS NULL"
    ).fetchall()
    if not rows:
        return
    db.execute("BEGIN IMMEDIATE")
    for name, version, meta, centers, state in rows:
        db.execute(
            "UPDATE versions SET checksum = ? WHERE name = ? AND version = ?",
            (_checksum(name, int(version), meta, centers, state), name, version),
        )
    db.execute("COMMIT")
    log.info("gave %d stored versions written before checksums their checksum", len(rows))


# ---- Operators' checks, on a store that may be serving -------------------------------


@dataclass(frozen=True)
class StoreReport:
    """What ``centroidal store check`` found."""

    path: Path
    models: int
    versions: int
    problems: list[str]
    damaged_models: list[str]
    held_by: str | None  # the pid holding the data directory's lock, if any


def inspect(data_dir: str | Path) -> StoreReport:
    """Check a store without changing it, while a server may be using it: the lock, the
    write-ahead log, SQLite's quick_check, and every stored version's checksum."""
    directory = Path(data_dir)
    path = directory / STORE_FILE
    if not path.exists():
        raise FileNotFoundError(f"there is no store at {path}")
    problems: list[str] = []
    damaged: set[str] = set()
    held_by = _lock_holder(directory)
    if path.stat().st_size == 0:
        return StoreReport(path, 0, 0, [f"{path} is empty (0 bytes): it was truncated"], [], held_by)
    lost = wal.lost_frames(path.with_name(path.name + "-wal"))
    if lost:
        problems.append(f"the write-ahead log is damaged: {lost}")
    models = versions = 0
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        verdict = db.execute("PRAGMA quick_check").fetchall()
        if verdict != [("ok",)]:
            problems.extend(f"quick_check: {row[0]}" for row in verdict[:20])
        models = int(db.execute("SELECT COUNT(*) FROM names WHERE current_version IS NOT NULL").fetchone()[0])
        for row in db.execute("SELECT name, version, CAST(meta AS BLOB), centers, state, checksum FROM versions"):
            versions += 1
            if row[5] is None:
                continue  # written before checksums; the server gives it one when it opens
            try:
                _snapshot(*row)
            except StoreDamaged:
                damaged.add(str(row[0]))
                problems.append(f"model {row[0]!r} version {row[1]} fails its checksum")
    except sqlite3.Error as exc:
        problems.append(f"SQLite could not read the store: {exc}")
    finally:
        db.close()
    return StoreReport(path, models, versions, problems, sorted(damaged), held_by)


def backup(data_dir: str | Path, target: str | Path) -> int:
    """Copy the store at ``data_dir`` to ``target`` with SQLite's online backup API; safe
    while a server writes to it. The copy is checked before it is kept. Returns the models."""
    source_path = Path(data_dir) / STORE_FILE
    if not source_path.exists():
        raise FileNotFoundError(f"there is no store at {source_path}")
    target = Path(target)
    if target.exists() and target.is_dir():
        target = target / STORE_FILE
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    source = sqlite3.connect(f"{source_path.as_uri()}?mode=ro", uri=True)
    copy = sqlite3.connect(partial)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")
        verdict = copy.execute("PRAGMA quick_check").fetchall()
        models = int(copy.execute("SELECT COUNT(*) FROM names WHERE current_version IS NOT NULL").fetchone()[0])
        bad = [
            f"{row[0]!r} v{row[1]}"
            for row in copy.execute("SELECT name, version, CAST(meta AS BLOB), centers, state, checksum FROM versions")
            if row[5] is not None and row[5] != _checksum(str(row[0]), int(row[1]), row[2], row[3], row[4])
        ]
    finally:
        copy.close()
        source.close()
    if verdict != [("ok",)] or bad:
        partial.unlink(missing_ok=True)
        raise StoreDamaged(
            f"the copy of {source_path} is damaged, so it was not kept: quick_check {verdict[:3]}, "
            f"checksum failures {bad[:5]}"
        )
    os.replace(partial, target)
    return models


def _lock_holder(directory: Path) -> str | None:
    try:
        handle = open(directory / LOCK_FILE)
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return None


# ---- Rows -----------------------------------------------------------------------------


def _checksum(name: str, version: int, meta: str | bytes, centers: bytes, state: bytes | None) -> str:
    """SHA-256 over every part of a stored version, each prefixed by its length."""
    digest = hashlib.sha256()
    meta_bytes = meta.encode() if isinstance(meta, str) else meta
    for part in (name.encode(), str(int(version)).encode(), meta_bytes, centers, state or b""):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return "sha256:" + digest.hexdigest()


def _snapshot(
    name: str, version: int, meta_json: bytes, centers_blob: bytes, state: bytes | None, checksum: str | None
) -> ModelSnapshot:
    if checksum != _checksum(name, int(version), meta_json, centers_blob, state):
        raise StoreDamaged(
            f"stored model {name!r} version {version} fails its checksum: it is refused, not "
            "served; delete it, or restore the store from a backup"
        )
    meta = json.loads(meta_json)
    centers = np.frombuffer(centers_blob, dtype=np.dtype(meta["dtype"])).reshape(meta["shape"])
    return ModelSnapshot(
        name=name,
        version=int(version),
        centers=centers.astype(centers.dtype.newbyteorder("="), copy=True),
        config=meta["config"],
        inertia=float(meta["inertia"]),
        n_iter=int(meta["n_iter"]),
        n_samples_seen=int(meta["n_samples_seen"]),
        created_at=float(meta["created_at"]),
        updated_at=float(meta["updated_at"]),
        kind=_KIND_FROM_DISK.get(meta["kind"], meta["kind"]),
        extra=meta.get("extra", {}),
        state=state,
    )


# ---- Failures -------------------------------------------------------------------------


def _classify(exc: sqlite3.Error, path: Path) -> StoreCondition:
    """What a SQLite error means for the service."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL"):
        return StoreCondition(
            "STORE_FULL",
            f"the model store {path} is full (its disk, or --max-store-bytes): nothing was "
            "written. Delete models (deletes still work) or free disk space",
        )
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_CANTOPEN", "SQLITE_AUTH")):
        return StoreCondition(
            "STORE_READ_ONLY",
            f"the model store {path} cannot be written ({name}: {exc}); nothing was written. "
            "Make the data directory writable by the server",
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "decode to UTF-8" in str(exc):
        return StoreCondition("STORE_DAMAGED", f"the model store {path} is damaged ({name or 'SQLite'}: {exc})")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreCondition("STORE_BUSY", f"the model store {path} is locked by another process ({exc})")
    if name.startswith("SQLITE_IOERR"):
        return StoreCondition(
            "STORE_IO_ERROR", f"the model store {path} hit an I/O error ({name}: {exc}); nothing was written"
        )
    return StoreCondition("STORE_ERROR", f"the model store {path} failed ({name or type(exc).__name__}: {exc})")


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
