"""The store's change feed: which names other replicas wrote since a position.

Every write transaction counts itself in the ``commits`` table and stamps the names it
writes with that count (``names.seq``), so the names written since position p are those
with ``seq > p``. Whether anything changed at all is SQLite's ``PRAGMA data_version``,
which changes when another connection commits: asking costs no table read while nothing
did. The feed reads through a connection of its own, which a write in progress never
blocks (a reader of a WAL database does not wait for the writer), so a replica can ask
before every read of a model.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from .snapshots import Catalog, NameState


class ChangeFeed:
    """Reads the names written since a position, over its own connection to the store."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None  # opened on first use
        self._lock = threading.Lock()
        self._seen: int | None = None  # data_version at the last read

    def catalog(self, db: sqlite3.Connection) -> Catalog:
        """Every name, read through ``db``, and the position it is as of."""
        return _read(db, "SELECT name, last_version, current_version FROM names", ())

    def changes(self, since: int) -> Catalog | None:
        """Names written since ``since``; None when the store did not change at all."""
        with self._lock:
            db = self._db
            if db is None:
                db = self._db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA query_only = 1")
            seen = int(db.execute("PRAGMA data_version").fetchone()[0])
            if seen == self._seen:
                return None
            found = _read(db, "SELECT name, last_version, current_version FROM names WHERE seq > ?", (since,))
            self._seen = seen
            return found

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _read(db: sqlite3.Connection, query: str, parameters: tuple[int, ...]) -> Catalog:
    """Names and the feed's position, as of one snapshot of the store."""
    db.execute("BEGIN")
    try:
        row = db.execute("SELECT count FROM commits WHERE id = 1").fetchone()
        rows = db.execute(query, parameters).fetchall()
    finally:
        db.execute("COMMIT")
    return Catalog(int(row[0]) if row is not None else 0,
                   [NameState(str(n), int(last), None if cur is None else int(cur)) for n, last, cur in rows])
