"""ModelStore in SQLite (WAL mode, synchronous=FULL).

Each write is one transaction: the check that its version is above the name's
last one, the new version's row, the name's version counter, and the pruning of
versions past ``keep_versions``. A name's counter survives a delete, so versions
never go backwards for a name.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from .exceptions import ShuttingDown, VersionConflict
from .snapshots import MINIBATCH_KMEANS, ModelSnapshot, StoredModels

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
    PRIMARY KEY (name, version)
);
"""


class SQLiteStore:
    """ModelStore in one SQLite file under the data directory."""

    def __init__(self, data_dir: str | Path) -> None:
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "models.sqlite3"
        self._lock = threading.Lock()
        self._closed = False
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(versions)")}
        if "state" not in columns:  # a store written before streamed models existed
            self._db.execute("ALTER TABLE versions ADD COLUMN state BLOB")

    def load_all(self) -> StoredModels:
        with self._lock:
            rows = self._db.execute(
                "SELECT v.name, v.version, v.meta, v.centers, v.state FROM versions v "
                "JOIN names n ON n.name = v.name AND n.current_version = v.version"
            ).fetchall()
            names = self._db.execute("SELECT name, last_version FROM names").fetchall()
        return StoredModels(
            [_snapshot(*row) for row in rows], {name: int(version) for name, version in names}
        )

    def load_version(self, name: str, version: int) -> ModelSnapshot | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, version, meta, centers, state FROM versions "
                "WHERE name = ? AND version = ?",
                (name, version),
            ).fetchone()
        return _snapshot(*row) if row else None

    def put(self, snapshot: ModelSnapshot, *, keep_versions: int) -> None:
        self._write(snapshot, keep_versions)

    def checkpoint(
        self, snapshot: ModelSnapshot, producers: Mapping[str, int], *, keep_versions: int
    ) -> None:
        """Store a streamed model with each producer's last sequence, in the same row."""
        extra = {**snapshot.extra, "producers": dict(producers)}
        self._write(replace(snapshot, extra=extra), keep_versions)

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
        with self._lock, self._writable():
            self._db.execute("BEGIN IMMEDIATE")
            self._check_newer(snapshot.name, snapshot.version)
            self._db.execute(
                "INSERT INTO versions (name, version, meta, centers, state) VALUES (?, ?, ?, ?, ?)",
                (snapshot.name, snapshot.version, meta, centers, snapshot.state),
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
        with self._lock, self._writable():
            self._db.execute("BEGIN IMMEDIATE")
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

    def _writable(self) -> sqlite3.Connection:
        """The connection as a transaction context; refuses once the store is closed."""
        if self._closed:
            raise ShuttingDown(
                "the server is shutting down; nothing was written, retry on another replica or later"
            )
        return self._db

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()


def _snapshot(
    name: str, version: int, meta_json: str, centers_blob: bytes, state: bytes | None
) -> ModelSnapshot:
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
