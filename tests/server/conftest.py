"""Fixtures the server's tests share: a throwaway CA and the certificates it signs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme


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
