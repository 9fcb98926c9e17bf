"""Shared fixtures: a real server on a free port, and an SDK client talking to it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from centroidal.client import Client
from centroidal.engine import configure_threads
from centroidal.server import CentroidalServer, ServerConfig, create_server

if TYPE_CHECKING:
    from tests.postgres import ThrowawayPostgres

# Kernels run as in the server: threads configured once, before the first one.
configure_threads()

ServerFactory = Callable[..., CentroidalServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers on port 0; each keeps tmp_path/data unless data_dir is given."""
    running: list[CentroidalServer] = []

    def start(**overrides: object) -> CentroidalServer:
        config = replace(ServerConfig(port=0, data_dir=str(tmp_path / "data")), **overrides)
        server, _ = create_server(config)
        server.start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop(0)


@pytest.fixture
def server(start_server: ServerFactory) -> CentroidalServer:
    return start_server()


@pytest.fixture
def client(server: CentroidalServer) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}", timeout=30) as sdk:
        yield sdk


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server's URL: ``CENTROIDAL_TEST_POSTGRES``, or a throwaway server the
    tests start themselves (tests/postgres.py); skips when neither can be had."""
    import os

    from tests.postgres import URL_ENV

    given = os.environ.get(URL_ENV)
    if given:
        yield given
        return
    with throwaway_postgres() as server:
        yield server.url


@contextlib.contextmanager
def throwaway_postgres(**settings: Any) -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL server of the test's own (to stop, restart, or start with a password or
    TLS); skips when no server binaries are installed."""
    import shutil
    import tempfile

    from tests.postgres import URL_ENV, ThrowawayPostgres, server_binaries

    binaries = server_binaries()
    if binaries is None:
        pytest.skip(f"PostgreSQL tests skipped: no initdb/pg_ctl found (apt-get install postgresql) and "
                    f"{URL_ENV} is unset")
    # Not under pytest's own temporary folder: that is root's alone, and the server runs as
    # another user.
    root = Path(tempfile.mkdtemp(prefix="centroidal-postgres-"))
    try:
        server = ThrowawayPostgres(root, binaries, **settings)
        try:
            yield server
        finally:
            if server.running():
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A database of its own for one test, on the session's PostgreSQL; dropped after it."""
    import uuid

    import psycopg

    from tests.postgres import with_database

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
