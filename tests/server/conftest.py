"""Fixtures the server's tests share: a throwaway CA and the certificates it signs, a stub
of the running server, a server holding one fitted model, and the store's two backends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme

from centroidal.client import Client
from centroidal.v1 import clustering_pb2_grpc as pb_grpc
from tests.server.refusals import KEPT_CENTERS, X


@dataclass(frozen=True)
class Pki:
    ca: Path  # the roots clients and the server trust
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from another CA
    stranger_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("producer@example.test")
    stranger = other.issue_cert("stranger@example.test")
    paths = {}
    for name, blob in {
        "ca": ca.cert_pem, "cert": server.cert_chain_pems[0], "key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0], "client_key": client.private_key_pem,
        "stranger_cert": stranger.cert_chain_pems[0], "stranger_key": stranger.private_key_pem,
    }.items():
        path = folder / f"{name}.pem"
        blob.write_to_path(str(path))
        paths[name] = path
    return Pki(**paths)


@pytest.fixture
def stub(server: Any) -> Iterator[pb_grpc.ClusteringServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.ClusteringServiceStub(channel)


@pytest.fixture
def fitted(client: Client) -> Client:
    """The test server's client, with model "kept" fitted (tests.server.refusals)."""
    KEPT_CENTERS["kept"] = client.fit("kept", X, 3, seed=0).centers
    return client


# ---- The store suite's two backends ---------------------------------------------------------


class Backend:
    """One backend's storage, which ``open`` opens stores on, as many as replicas would: the
    first on a SQLite directory checks and locks it, the others share its lock (as the
    workers of `serve --workers` do); on PostgreSQL each is a replica of its own. ``sql``
    runs a statement on the storage directly, as an operator (or damage) would."""

    def __init__(self, name: str, tmp_path: Path, url: str = "") -> None:
        self.name = name
        self._dir = tmp_path / "data"
        self._url = url
        self._open: list[Any] = []

    def open(self, **settings: Any) -> Any:
        if self.name == "postgresql":
            from centroidal.server.postgres import PostgresStore

            store: Any = PostgresStore(self._url, **settings)
        else:
            from centroidal.server.store import SQLiteStore

            alive = [opened for opened in self._open if not opened._closed]
            lock = alive[0].lock_descriptor if alive else None
            store = SQLiteStore(self._dir, shared_lock=lock, **settings)
        self._open.append(store)
        return store

    def sql(self, statement: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        if self.name == "postgresql":
            import psycopg

            with psycopg.connect(self._url, autocommit=True) as db:
                cursor = db.execute(statement.replace("?", "%s"), parameters)
                return cursor.fetchall() if cursor.description else []
        import sqlite3

        with contextlib.closing(sqlite3.connect(self._dir / "models.sqlite3")) as db, db:
            return db.execute(statement, parameters).fetchall()

    def close(self) -> None:
        for store in reversed(self._open):
            store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = request.getfixturevalue("postgres_database") if request.param == "postgresql" else ""
    opened = Backend(request.param, tmp_path, url)
    yield opened
    opened.close()
