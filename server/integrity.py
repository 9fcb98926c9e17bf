"""The store's files and their trust: one server per directory, checked at open, every row
checksummed, and the operators' check and backup.

- ``lock_directory`` takes an exclusive ``flock`` on ``<data-dir>/lock``; a second server
  on the directory is refused with StoreLocked naming the first one's pid.
- ``open_checked`` builds a new store under a temporary name and renames it into place
  whole, so a ``models.sqlite3`` that is empty or not SQLite is damage, not a fresh
  start. It checks the write-ahead log frame by frame (``wal.py``), then runs SQLite's
  ``quick_check``; the caller verifies every current version's checksum as it loads.
- ``checksums.py`` checks every row read against its checksum; ``checks.py`` holds the
  operators' check and backup of a store a server may be using.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


from . import commits, leases, wal
from .exceptions import StoreDamaged, StoreUnavailable
from .checksums import row_checksum

log = logging.getLogger("centroidal.server")

STORE_FILE = "models.sqlite3"
LOCK_FILE = "lock"

SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL,
    current_version INTEGER,
    seq INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE IF NOT EXISTS commits (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL
);
INSERT OR IGNORE INTO commits (id, count) VALUES (1, 0);
""" + leases.SCHEMA
# After SCHEMA, and after older stores gained the column it indexes.
FEED_INDEX = "CREATE INDEX IF NOT EXISTS names_by_seq ON names (seq)"

RECOVERY = (
    "stop every server on this directory, then restore {path} from a copy made with "
    "`centroidal store backup`, or run `centroidal store check --data-dir {dir}` for details; "
    "to start empty instead, move {path} (and any -wal/-shm files) aside"
)


def recovery_advice(path: Path) -> str:
    return RECOVERY.format(path=path, dir=path.parent)


# Every stored version's row, as the checksum covers it (meta read as bytes: damage to it
# must fail the checksum, not the decoding).
VERSION_ROWS = "SELECT name, version, CAST(meta AS BLOB), centers, state, checksum FROM versions"


class StoreLocked(OSError):
    """Another process holds the data directory."""


@dataclass(frozen=True)
class StoreCondition:
    """Why writes are refused right now, as health and metrics report it."""

    reason: str  # STORE_FULL, STORE_READ_ONLY, STORE_IO_ERROR, ...
    message: str


# ---- Opening --------------------------------------------------------------------------


def lock_directory(data_dir: Path, read_only: bool, shared: int | None = None) -> TextIO | None:
    """Take the data directory's exclusive lock, or raise StoreLocked naming the holder.

    In a read-only directory the lock file is only read (flock needs no write access);
    without one, nothing can write there anyway. ``shared`` is the descriptor of the lock
    a supervisor took and handed to its workers: a worker checks that it is this
    directory's lock, and that it is held, and keeps it (a lock taken by ``flock`` belongs
    to the open file, shared by every process the descriptor was passed to; anyone else
    opening the file is still refused).
    """
    if shared is not None:
        return _inherited_lock(data_dir, shared)
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


def _inherited_lock(data_dir: Path, fd: int) -> TextIO:
    try:
        held, here = os.fstat(fd), os.stat(data_dir / LOCK_FILE)
    except OSError as exc:
        raise StoreLocked(f"the lock descriptor {fd} handed to this worker is unusable: {exc}") from None
    if (held.st_dev, held.st_ino) != (here.st_dev, here.st_ino):
        raise StoreLocked(f"the lock descriptor {fd} handed to this worker is not {data_dir / LOCK_FILE}")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the supervisor's own lock: granted at once
    # A copy of the descriptor (the same open file, so the same lock), closed with the store.
    return open(os.dup(fd), "r")  # noqa: SIM115 - kept open for the store's life


@dataclass(frozen=True)
class Discarded:
    """What SQLite discarded from the end of the log at open: a write never acknowledged."""

    frames: int  # whole frames, plus one for a frame cut short
    message: str


def open_checked(path: Path) -> tuple[sqlite3.Connection, Discarded | None]:
    """Open (or create) the store and check it: WAL frames, quick_check, schema. Returns the
    connection, and what SQLite discarded from the end of the log when it was a write never
    acknowledged (one that was acknowledged is damage, and refused)."""
    if not path.exists():
        _create(path)
    elif path.stat().st_size == 0:
        raise StoreDamaged(
            f"{path} is empty (0 bytes), though a store is only ever created whole: it was "
            "truncated. " + recovery_advice(path)
        )
    log_found = wal.scan(wal.log_path(path))
    if log_found and log_found.lost:
        raise StoreDamaged(
            f"the write-ahead log {path}-wal is damaged: {log_found.lost}; opening it would silently "
            "drop writes that were acknowledged. " + recovery_advice(path)
        )
    # Checked through a read-only connection first: closing a writable one folds the log
    # into the file and deletes it, which would take the evidence with it.
    try:
        reader = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            _refuse_damage(reader, path)
            discarded, lost = commits.log_end(reader, path, log_found)
        finally:
            reader.close()
    except sqlite3.Error as exc:
        raise _open_failure(exc, path) from exc
    if lost:
        raise StoreDamaged(f"the write-ahead log {path}-wal is damaged: {lost}. " + recovery_advice(path))
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
        if "state" not in columns:  # a store written before streamed models existed
            db.execute("ALTER TABLE versions ADD COLUMN state BLOB")
        if "checksum" not in columns:  # a store written before checksums
            db.execute("ALTER TABLE versions ADD COLUMN checksum TEXT")
        if "seq" not in {row[1] for row in db.execute("PRAGMA table_info(names)")}:
            db.execute("ALTER TABLE names ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")  # before replicas
        db.execute(FEED_INDEX)
        _adopt_unchecked(db)
    except sqlite3.Error as exc:
        db.close()
        raise _open_failure(exc, path) from exc
    except BaseException:
        db.close()
        raise
    if discarded is None or log_found is None:
        return db, None
    return db, Discarded(log_found.discarded + bool(log_found.partial_bytes), discarded)


# How long a replica's write waits for another replica's transaction to end.
BUSY_TIMEOUT_S = 10.0


def open_shared(path: Path) -> sqlite3.Connection:
    """Open a store that a supervisor opened with ``open_checked`` and shares among its
    workers: no checks again (each replica would race the others' writes reading the log)."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as exc:
        raise _open_failure(exc, path) from exc
    return db


def _open_failure(exc: sqlite3.Error, path: Path) -> StoreDamaged | StoreUnavailable:
    failure = classify(exc, path)
    if failure.reason == "STORE_DAMAGED":
        return StoreDamaged(failure.message + ". " + recovery_advice(path))
    return StoreUnavailable(failure.message, reason=failure.reason)


def open_read_only(path: Path) -> sqlite3.Connection:
    """Open a store in a read-only directory: its main file only, which must hold everything."""
    if not path.exists() or path.stat().st_size == 0:
        raise StoreUnavailable(
            f"the data directory {path.parent} is read-only and holds no store: make it writable",
            reason="STORE_READ_ONLY",
        )
    log_file = wal.log_path(path)
    if log_file.exists() and log_file.stat().st_size > 32:
        raise StoreUnavailable(
            f"the data directory {path.parent} is read-only, and its write-ahead log holds writes "
            "not yet folded into the main file; make it writable for one start so they can be",
            reason="STORE_READ_ONLY",
        )
    # immutable: nothing else can change a file in a read-only directory, and SQLite then
    # needs no -shm file beside it.
    db = sqlite3.connect(read_only_uri(path, immutable=True), uri=True, check_same_thread=False,
                         isolation_level=None)
    try:
        _refuse_damage(db, path)
        columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
        if "checksum" not in columns:
            raise StoreUnavailable(
                f"the store in the read-only directory {path.parent} predates checksums; make it "
                "writable for one start so every version gets one",
                reason="STORE_READ_ONLY",
            )
    except sqlite3.Error as exc:
        db.close()
        raise StoreDamaged(f"{path} cannot be read ({exc}). " + recovery_advice(path)) from exc
    except BaseException:
        db.close()
        raise
    return db


def quick_check(db: sqlite3.Connection) -> list[str]:
    """SQLite's quick_check: the problems it reports, none for a sound file."""
    verdict = [str(row[0]) for row in db.execute("PRAGMA quick_check").fetchall()]
    return [] if verdict == ["ok"] else verdict


def _refuse_damage(db: sqlite3.Connection, path: Path) -> None:
    problems = quick_check(db)
    if problems:
        raise StoreDamaged(f"{path} failed SQLite's quick_check ({'; '.join(problems[:5])}). " + recovery_advice(path))


def _create(path: Path) -> None:
    """A new, empty store, built beside its final name and renamed into place whole."""
    building = path.with_name(path.name + ".new")
    building.unlink(missing_ok=True)
    db = sqlite3.connect(building, isolation_level=None)
    try:
        db.executescript(SCHEMA)
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
            (row_checksum(name, int(version), meta, centers, state), name, version),
        )
    db.execute("COMMIT")
    log.info("gave %d stored versions written before checksums their checksum", len(rows))


def read_only_uri(path: Path, *, immutable: bool = False) -> str:
    """SQLite's URI for opening ``path`` read-only; a URI needs an absolute path, and
    operators give relative ones (the default data directory is ./centroidal-data)."""
    return f"{path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")


# ---- Failures -------------------------------------------------------------------------


def classify(exc: sqlite3.Error, path: Path) -> StoreCondition:
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
