"""Connecting to the PostgreSQL store: the connection's settings and the password, the
first connection (which tells a mistake at once), and what a database error means for
the service (``classify``). A URL as logs show it carries no password (``redacted``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
from psycopg import conninfo as libpq

from .exceptions import StoreUnavailable
from .integrity import StoreCondition

CONNECT_TIMEOUT_S = 5
# How long a call waits for a connection from the pool before the database counts as unreachable.
POOL_WAIT_S = 5.0
# How long the server waits for the database at start before it gives up.
START_WAIT_S = 30.0


# A database host that goes silent (no reset, a network partition) is given up on in
# seconds rather than the kernel's hours: TCP keepalives, and a limit on unacknowledged data.
LIVENESS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
            "tcp_user_timeout": 15_000}


def settings_of(url: str, password_file: str) -> dict[str, Any]:
    """libpq settings beside the URL, each unless the URL sets it: the application's name, a
    connect timeout, TCP liveness (LIVENESS); and the password from ``password_file`` (else
    the URL's, or PGPASSFILE)."""
    given = libpq.conninfo_to_dict(url)
    defaults = {"application_name": "centroidal", "connect_timeout": CONNECT_TIMEOUT_S, **LIVENESS}
    settings: dict[str, Any] = {key: value for key, value in defaults.items() if key not in given}
    if password_file:
        settings["password"] = read_password(password_file)
    return settings


def redacted(url: str) -> str:
    """The store's URL as logs and errors show it: no password, no other settings."""
    try:
        parts = libpq.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(a URL that does not parse)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def first_connection(url: str, settings: dict[str, Any], location: str) -> None:
    """Connect once before the pool does, so that a mistake is told at once and plainly: a
    wrong password, a database that does not exist, a certificate that does not verify. A
    database still starting (refused, or "starting up") is waited for, up to START_WAIT_S."""
    deadline = time.monotonic() + START_WAIT_S
    while True:
        try:
            psycopg.connect(url, **settings).close()
            return
        except psycopg.OperationalError as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            state = exc.sqlstate or ""
            settled = state[:2] in ("28", "3D") or "certificate" in detail or "SSL" in detail or "password" in detail
            if settled or time.monotonic() > deadline:
                waited = "" if settled else f" in {START_WAIT_S:.0f} s"
                raise StoreUnavailable(
                    f"the PostgreSQL store {location} could not be reached{waited}: {detail}. Check the URL, "
                    "the password (the URL, PGPASSFILE or --store-password-file) and sslmode",
                    reason="STORE_UNREACHABLE",
                ) from None
            time.sleep(0.5)


def read_password(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StoreUnavailable(
            f"--store-password-file {path!r} cannot be read: {exc.strerror or exc}", reason="STORE_PASSWORD"
        ) from None
    password = text.splitlines()[0].strip() if text.strip() else ""
    if not password:
        raise StoreUnavailable(f"--store-password-file {path!r} is empty", reason="STORE_PASSWORD")
    return password


# ---- What a database error means for the service -------------------------------------------

# SQLSTATE classes and codes (PostgreSQL's appendix A).
_FULL = ("53100", "54000")  # disk_full; program_limit_exceeded (a row or a quota too large)
_DAMAGED = ("XX001", "XX002")  # data_corrupted, index_corrupted
_UNREACHABLE_CLASSES = ("08", "57")  # connection exceptions; operator intervention (shutdown)
_READ_ONLY = ("25006", "42501")  # a read-only standby; a user without the privilege


def classify(exc: Exception, location: str) -> StoreCondition:
    """The store condition a database error is."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return StoreCondition(
            "STORE_UNREACHABLE",
            f"the PostgreSQL store {location} cannot be reached (no connection within {POOL_WAIT_S:.0f} s); "
            "nothing was written",
        )
    state = getattr(exc, "sqlstate", None) or ""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if state in _FULL:
        return StoreCondition(
            "STORE_FULL",
            f"the PostgreSQL store {location} is full or at a limit ({state}: {detail}); nothing was "
            "written. Delete models (deletes still work) or give the database room",
        )
    if state in _DAMAGED:
        return StoreCondition("STORE_DAMAGED", f"the PostgreSQL store {location} is damaged ({state}: {detail})")
    if state in _READ_ONLY:
        return StoreCondition(
            "STORE_READ_ONLY", f"the PostgreSQL store {location} cannot be written ({state}: {detail}); nothing was written"
        )
    if state[:2] in _UNREACHABLE_CLASSES or isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StoreCondition(
            "STORE_UNREACHABLE", f"the PostgreSQL store {location} cannot be reached ({detail}); nothing was written"
        )
    return StoreCondition("STORE_ERROR", f"the PostgreSQL store {location} failed ({state}: {detail})")
