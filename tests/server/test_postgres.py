"""What only the PostgreSQL store does, against real PostgreSQL servers the tests start: the
schema and its version, NOTIFY, a database that goes away and comes back, passwords and
TLS. (What both stores do alike is test_store.py's.)"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import psycopg
import pytest

from centroidal.server.exceptions import StoreUnavailable
from centroidal.server.pgconnect import redacted
from centroidal.server.postgres import SCHEMA_VERSION, PostgresStore
from centroidal.server.snapshots import ModelSnapshot
from tests.conftest import throwaway_postgres
from tests.server.conftest import Pki


def snapshot(name: str, value: float = 1.0) -> ModelSnapshot:
    return ModelSnapshot(name, 0, np.full((2, 2), value), {"seed": 0}, 0.0, 1, 10, 0.0, 0.0)


def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_throwaway_server_takes_a_committed_write(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        version = int(db.execute("SELECT current_setting('server_version_num')").fetchone()[0])
        db.execute("CREATE TABLE IF NOT EXISTS probe (id int PRIMARY KEY, note text)")
        db.execute("INSERT INTO probe VALUES (1, 'stored') ON CONFLICT (id) DO UPDATE SET note = 'stored'")
    with psycopg.connect(postgres_url) as again:  # a new session sees it: it was committed
        assert again.execute("SELECT note FROM probe WHERE id = 1").fetchone() == ("stored",)
    assert version >= 130000


# ---- The schema ---------------------------------------------------------------------------------


def test_replicas_starting_together_create_the_schema_once(postgres_database: str) -> None:
    stores: list[PostgresStore] = []
    start = threading.Barrier(4)

    def open_store() -> None:
        start.wait()
        stores.append(PostgresStore(postgres_database, listen=False))

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(stores) == 4
        with psycopg.connect(postgres_database) as db:
            assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert stores[0].put(snapshot("m"), keep_versions=5).version == 1
    finally:
        for store in stores:
            store.close()


def test_a_schema_newer_than_the_server_knows_is_refused(postgres_database: str) -> None:
    PostgresStore(postgres_database, listen=False).close()
    with psycopg.connect(postgres_database, autocommit=True) as db:
        db.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreUnavailable, match=f"schema version {SCHEMA_VERSION + 1}, newer than") as refused:
        PostgresStore(postgres_database, listen=False)
    assert refused.value.reason == "STORE_SCHEMA_NEWER"


# ---- The change feed's hint ---------------------------------------------------------------------


def test_a_write_on_one_replica_wakes_the_others_at_once(postgres_database: str) -> None:
    writer, reader = PostgresStore(postgres_database), PostgresStore(postgres_database)
    try:
        position = reader.load_catalog().position
        wait_for(reader.changed.is_set)  # the listener's first hint, on connecting
        reader.changed.clear()
        writer.put(snapshot("hinted"), keep_versions=5)
        assert reader.changed.wait(10.0)
        changes = reader.changes(position, force=True)
        assert changes is not None and [state.name for state in changes.names] == ["hinted"]
    finally:
        writer.close()
        reader.close()


# ---- A database that goes away and comes back ---------------------------------------------------


def test_an_unreachable_database_is_unavailable_and_the_store_recovers_by_itself() -> None:
    with throwaway_postgres() as server:
        conditions: list[str | None] = []
        store = PostgresStore(server.url, on_condition=lambda c: conditions.append(c and c.reason))
        try:
            kept = store.put(snapshot("kept", 3.0), keep_versions=5)
            server.stop()
            with pytest.raises(StoreUnavailable) as refused:
                store.put(snapshot("lost"), keep_versions=5)
            assert refused.value.reason == "STORE_UNREACHABLE" and "cannot be reached" in refused.value.message
            wait_for(lambda: store.condition is not None)
            with pytest.raises(StoreUnavailable):
                store.load_version("kept", kept.version)
            server.start()
            wait_for(lambda: store.condition is None)  # the listener reached it again
            assert conditions[0] == "STORE_UNREACHABLE" and conditions[-1] is None
            loaded = store.load_version("kept", kept.version)  # nothing acknowledged was lost
            assert loaded is not None and loaded.centers[0, 0] == 3.0
            assert store.put(snapshot("kept"), keep_versions=5).version == kept.version + 1
        finally:
            store.close()


def test_a_restarted_database_costs_no_write_its_pool_held_connections_to() -> None:
    with throwaway_postgres() as server:
        store = PostgresStore(server.url, listen=False)
        try:
            store.put(snapshot("m"), keep_versions=5)
            server.stop()
            server.start()
            # The pooled connection broke with the restart; the write goes on a fresh one.
            assert store.put(snapshot("m"), keep_versions=5).version == 2
        finally:
            store.close()


# ---- Passwords and TLS ---------------------------------------------------------------------------


def test_the_password_comes_from_a_file_or_pgpassfile_and_is_never_shown(
    tmp_path: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-Pa55"
    with throwaway_postgres(password=secret) as server, caplog.at_level(logging.DEBUG):
        with pytest.raises(StoreUnavailable) as refused:  # no password given anywhere
            PostgresStore(server.url, listen=False)
        assert "password" in refused.value.message
        password_file = tmp_path / "password"  # type: ignore[operator]
        password_file.write_text(secret + "\n")
        store = PostgresStore(server.url, password_file=str(password_file), listen=False)
        assert store.put(snapshot("m"), keep_versions=5).version == 1
        store.close()
        passfile = tmp_path / "pgpass"  # type: ignore[operator]
        passfile.write_text(f"127.0.0.1:{server.port}:*:centroidal:{secret}\n")
        passfile.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(passfile))
        store = PostgresStore(server.url, listen=False)
        assert store.load_catalog().names[0].name == "m"
        store.close()
        with_password = server.url.replace("centroidal@", f"centroidal:{secret}@")
        assert redacted(with_password) == f"postgresql://centroidal@127.0.0.1:{server.port}/postgres"
        monkeypatch.delenv("PGPASSFILE")
        with pytest.raises(StoreUnavailable) as wrong:
            PostgresStore(server.url.replace("centroidal@", "centroidal:wrong@"), listen=False)
        assert "wrong" not in wrong.value.message
    assert secret not in caplog.text


def test_tls_to_the_database_is_verified_against_its_ca(pki: Pki) -> None:
    with throwaway_postgres(tls=(pki.cert, pki.key)) as server:
        url = f"{server.url}?sslmode=verify-full&sslrootcert={pki.ca}"
        store = PostgresStore(url.replace("127.0.0.1", "localhost"), listen=False)
        try:
            assert store.put(snapshot("m"), keep_versions=5).version == 1
        finally:
            store.close()
        with psycopg.connect(url.replace("127.0.0.1", "localhost")) as db:
            assert db.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        with pytest.raises(StoreUnavailable, match="could not be reached"):  # a CA that did not sign it
            PostgresStore(f"{server.url}?sslmode=verify-full&sslrootcert={pki.stranger_cert}", listen=False)


def test_store_check_verifies_every_version_in_the_database(postgres_database: str) -> None:
    import subprocess
    import sys

    store = PostgresStore(postgres_database, listen=False)
    store.put(snapshot("good"), keep_versions=5)
    store.put(snapshot("bad"), keep_versions=5)
    store.close()

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "centroidal.client.cli", "store", "check", "--store",
                               postgres_database], capture_output=True, text=True, timeout=120)

    healthy = check()
    assert healthy.returncode == 0 and "2 models, 2 stored versions" in healthy.stdout
    with psycopg.connect(postgres_database, autocommit=True) as db:
        db.execute("UPDATE versions SET centers = %s WHERE name = 'bad'", (b"\0" * 32,))
    damaged = check()
    assert damaged.returncode == 1 and "DAMAGED: model 'bad' version 1" in damaged.stdout


def test_the_notify_payload_names_the_model_and_its_version(postgres_database: str) -> None:
    store = PostgresStore(postgres_database, listen=False)
    try:
        with psycopg.connect(postgres_database, autocommit=True) as listener:
            listener.execute("LISTEN centroidal_models")
            store.put(snapshot("m"), keep_versions=5)
            store.delete("m")
            heard = [note.payload for note in listener.notifies(timeout=5.0, stop_after=2)]
    finally:
        store.close()
    assert heard == ["m 1", "m 2 deleted"]
