"""The acknowledged-commit record: what tells a torn write from lost data at the end of the log.

SQLite replays its write-ahead log up to the last commit frame whose checksums hold and
drops the rest without a word. After a power cut that is right: the last transaction
was cut short and never acknowledged. But with ``synchronous=FULL`` an acknowledged
commit had reached the disk, so if it is dropped, the disk damaged it.

The store counts its commits in the database (table ``commits``), and after each commit
returns, and before it is acknowledged, writes that count with the log's salts (its
generation) to ``models.sqlite3-acked`` and syncs it. At the next start, if the log
present is that generation and the database holds fewer commits than the record, an
acknowledged commit was lost. When the log is another generation (checkpointed and
restarted, or a store restored from a backup without its log) the record says nothing
about it and is not compared.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from . import wal

_BODY = ">IIQ"  # salt1, salt2, commits
_FORMAT = _BODY + "I"  # and the body's crc32
_SIZE = struct.calcsize(_FORMAT)


@dataclass(frozen=True)
class Acknowledged:
    """The last acknowledged commit: the log's generation then, and the commits counted."""

    salts: tuple[int, int]
    commits: int


def record_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + "-acked")


def read(store_path: Path) -> Acknowledged | None:
    """The record beside ``store_path``; None when there is none, or it does not check out
    (a record torn by a power cut is no evidence of anything)."""
    try:
        blob = record_path(store_path).read_bytes()
    except FileNotFoundError:
        return None
    if len(blob) != _SIZE:
        return None
    salt1, salt2, commits, crc = struct.unpack(_FORMAT, blob)
    if zlib.crc32(blob[:-4]) != crc:
        return None
    return Acknowledged((salt1, salt2), commits)


class CommitRecord:
    """Writes the record after each commit; one open file, rewritten in place."""

    def __init__(self, store_path: Path) -> None:
        self._fd = os.open(record_path(store_path), os.O_RDWR | os.O_CREAT, 0o600)

    def write(self, acknowledged: Acknowledged) -> None:
        body = struct.pack(_BODY, *acknowledged.salts, acknowledged.commits)
        os.pwrite(self._fd, body + struct.pack(">I", zlib.crc32(body)), 0)
        os.fdatasync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def log_end(db: sqlite3.Connection, path: Path, found: wal.WalScan | None) -> tuple[str | None, str | None]:
    """What SQLite dropped from the end of the log (read through ``db``, opened on it):
    (a write never acknowledged, None) or (None, acknowledged commits lost), in words."""
    acknowledged = read(path)
    held = _commit_count(db)
    if found is None or acknowledged is None or held is None or acknowledged.salts != found.salts:
        # No log, or no record of this log's acknowledged commits to hold it to.
        unheld = found.tail if found else None
        return (f"the write-ahead log ends with {unheld}, which SQLite drops (no record of this "
                "log's acknowledged commits to compare them with)" if unheld else None), None
    missing = acknowledged.commits - held
    if missing > 0:
        ending = found.tail or "no frame SQLite can use past them"
        return None, (
            f"the server acknowledged {acknowledged.commits} commits in this log, but only {held} "
            f"survive: the log ends with {ending}, so {missing} acknowledged "
            f"{'commit was' if missing == 1 else 'commits were'} lost to damage"
        )
    if found.tail:
        return (f"the write-ahead log ends with {found.tail}, which SQLite drops: a write cut "
                "short before it was acknowledged (a crash or power cut during a write); every "
                f"acknowledged commit ({held}) is kept"), None
    return None, None


def _commit_count(db: sqlite3.Connection) -> int | None:
    """The commits the store counted; None for a store from before the count."""
    try:
        row = db.execute("SELECT count FROM commits WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row else None
