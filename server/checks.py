"""The operators' tools on a store a server may be using: ``inspect`` (``centroidal store
check``) and ``backup`` (SQLite's online backup API, the copy checked before it is kept)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from . import commits, wal
from .exceptions import StoreDamaged
from .checksums import checksum_failures
from .integrity import LOCK_FILE, STORE_FILE, VERSION_ROWS, quick_check, read_only_uri

@dataclass(frozen=True)
class StoreReport:
    """What ``centroidal store check`` found."""

    path: Path
    models: int
    versions: int
    problems: list[str]
    damaged_models: list[str]
    held_by: str | None  # the pid holding the data directory's lock, if any
    notes: list[str] = field(default_factory=list)  # not damage, but worth an operator's eye


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
    log_found = wal.scan(wal.log_path(path))
    if log_found and log_found.lost:
        problems.append(f"the write-ahead log is damaged: {log_found.lost}")
    notes: list[str] = []
    models = versions = 0
    db = sqlite3.connect(read_only_uri(path), uri=True)
    try:
        problems.extend(f"quick_check: {problem}" for problem in quick_check(db)[:20])
        if held_by is None:  # a serving store's log may end in a write under way
            discarded, lost = commits.log_end(db, path, log_found)
            problems.extend([f"the write-ahead log is damaged: {lost}"] if lost else [])
            notes.extend([discarded] if discarded else [])
        models = _model_count(db)
        versions, failures = checksum_failures(db.execute(VERSION_ROWS))
        for name, version in failures:
            damaged.add(name)
            problems.append(f"model {name!r} version {version} fails its checksum")
    except sqlite3.Error as exc:
        problems.append(f"SQLite could not read the store: {exc}")
    finally:
        db.close()
    return StoreReport(path, models, versions, problems, sorted(damaged), held_by, notes)


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
    source = sqlite3.connect(read_only_uri(source_path), uri=True)
    copy = sqlite3.connect(partial)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")
        problems = quick_check(copy)
        models = _model_count(copy)
        _, failures = checksum_failures(copy.execute(VERSION_ROWS))
    finally:
        copy.close()
        source.close()
    if problems or failures:
        partial.unlink(missing_ok=True)
        raise StoreDamaged(
            f"the copy of {source_path} is damaged, so it was not kept: quick_check {problems[:3]}, "
            f"checksum failures {[f'{name!r} v{version}' for name, version in failures[:5]]}"
        )
    os.replace(partial, target)
    return models


def _model_count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT COUNT(*) FROM names WHERE current_version IS NOT NULL").fetchone()[0])


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
