"""Which store a server keeps its models in: SQLite in ``--data-dir`` (the embedded
default, one host), or the PostgreSQL database at ``--store`` (replicas on many hosts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import ServerConfig
from .exceptions import StoreUnavailable
from .integrity import StoreCondition
from .store import SQLiteStore

if TYPE_CHECKING:
    from .postgres import PostgresStore


def on_postgres(config: ServerConfig) -> bool:
    return bool(config.store)


def open_store(
    config: ServerConfig, *, on_condition: Callable[[StoreCondition | None], None] | None = None,
    shared_lock: int | None = None, listen: bool = True,
) -> SQLiteStore | PostgresStore:
    """The configured store, opened. ``shared_lock``: a SQLite worker's inherited directory
    lock; ``listen``: a PostgreSQL store follows other replicas' writes (a supervisor's,
    which only migrates and ends dead workers' leases, does not)."""
    if not on_postgres(config):
        store: SQLiteStore | PostgresStore = SQLiteStore(
            config.data_dir, min_free_bytes=config.min_free_disk, max_bytes=config.max_store_bytes,
            on_condition=on_condition, shared_lock=shared_lock,
        )
    else:
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise StoreUnavailable(
                f"--store postgresql://… needs psycopg, which is not installed ({exc}): "
                "pip install 'centroidal[postgres]'",
                reason="STORE_DRIVER_MISSING",
            ) from None
        store = PostgresStore(
            config.store, password_file=config.store_password_file, max_bytes=config.max_store_bytes,
            on_condition=on_condition, listen=listen, notify=config.store_notify,
        )
    store.lease_ttl = config.lease_ttl
    return store
