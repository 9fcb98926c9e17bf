"""TLS, mutual TLS and token files, with real certificates made by a throwaway CA."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from centroidal.client import Client, Unauthenticated, Unavailable
from centroidal.server import auth
from tests.conftest import ServerFactory
from tests.server.conftest import Pki
from tests.server.test_metrics import free_port

X = np.random.default_rng(0).normal(size=(60, 2))


def test_a_tls_server_talks_only_to_clients_that_trust_it(start_server: ServerFactory, pki: Pki) -> None:
    server = start_server(tls_cert=str(pki.cert), tls_key=str(pki.key))
    target = f"127.0.0.1:{server.port}"
    with Client(target, root_certificates=pki.ca, timeout=10) as client:
        assert client.fit("m", X, 2, seed=1).model.version == 1
    with Client(target, root_certificates=pki.ca.read_bytes(), timeout=10) as client:
        assert client.health() == "SERVING"
    with Client(target, timeout=3) as plaintext, pytest.raises(Unavailable):
        plaintext.list_models()
    with Client(target, tls=True, timeout=3) as system_roots, pytest.raises(Unavailable):
        system_roots.list_models()  # the throwaway CA is not among the system's roots


def test_mutual_tls_requires_a_certificate_from_the_client_ca(start_server: ServerFactory, pki: Pki) -> None:
    server = start_server(tls_cert=str(pki.cert), tls_key=str(pki.key), tls_client_ca=str(pki.ca))
    target = f"127.0.0.1:{server.port}"
    with Client(target, root_certificates=pki.ca, client_certificate=(pki.client_cert, pki.client_key),
                timeout=10) as client:
        assert client.fit("m", X, 2, seed=1).model.version == 1
    with Client(target, root_certificates=pki.ca, timeout=3) as anonymous, pytest.raises(Unavailable):
        anonymous.list_models()
    with Client(target, root_certificates=pki.ca, client_certificate=(pki.stranger_cert, pki.stranger_key),
                timeout=3) as stranger, pytest.raises(Unavailable):
        stranger.list_models()


def test_a_failed_handshake_says_what_is_wrong(start_server: ServerFactory, pki: Pki) -> None:
    """gRPC itself says only "Socket closed" or an OpenSSL code."""
    tls = start_server(tls_cert=str(pki.cert), tls_key=str(pki.key))
    mutual = start_server(tls_cert=str(pki.cert), tls_key=str(pki.key), tls_client_ca=str(pki.ca),
                          data_dir=str(pki.ca.parent / "mutual-data"))
    plain = start_server(data_dir=str(pki.ca.parent / "plain-data"))
    cases = [
        (tls, {}, "it may expect TLS"),
        (mutual, {"root_certificates": pki.ca}, "require a client certificate"),
        (mutual, {"root_certificates": pki.ca, "client_certificate": (pki.stranger_cert, pki.stranger_key)},
         "may not accept this client certificate"),
        (plain, {"root_certificates": pki.ca}, "does not speak TLS"),
        (tls, {"root_certificates": pki.stranger_cert}, "not signed by the roots given"),
    ]
    for server, settings, hint in cases:
        with Client(f"127.0.0.1:{server.port}", timeout=3, **settings) as client, pytest.raises(Unavailable) as raised:
            client.list_models()
        assert hint in str(raised.value), (settings, str(raised.value))


def test_health_under_mutual_tls_with_the_readmes_arguments(start_server: ServerFactory, pki: Pki) -> None:
    """The container's health check takes CENTROIDAL_HEALTH_ARGS: under mutual TLS, a client
    certificate of its own, as the README shows."""
    import subprocess
    import sys

    server = start_server(tls_cert=str(pki.cert), tls_key=str(pki.key), tls_client_ca=str(pki.ca))
    health = [sys.executable, "-m", "centroidal", "health", "--target", f"127.0.0.1:{server.port}",
              "--timeout", "5", "--tls-ca", str(pki.ca)]
    without = subprocess.run(health, capture_output=True, text=True, timeout=60)
    assert without.returncode == 1 and "client certificate" in without.stderr
    with_certificate = subprocess.run([*health, "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)],
                                      capture_output=True, text=True, timeout=60)
    assert with_certificate.returncode == 0 and "SERVING" in with_certificate.stdout


def test_tokens_come_from_a_file_and_rotate_without_a_restart(
    start_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "RECHECK_S", 0.0)
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotation: new first, old until every client has moved\nold-token\n")
    server = start_server(token_file=str(tokens))
    target = f"127.0.0.1:{server.port}"
    with Client(target, token="old-token", timeout=10) as client:
        client.fit("m", X, 2, seed=1)
    tokens.write_text("new-token\nold-token\n")
    with Client(target, token_file=tokens, timeout=10) as client:  # the file's first line
        assert [info.name for info in client.list_models()] == ["m"]
    tokens.write_text("new-token\n")
    time.sleep(0.05)  # a new modification time
    with Client(target, token="old-token", timeout=10) as client, pytest.raises(Unauthenticated):
        client.list_models()


def test_an_emptied_or_missing_token_file_revokes_its_tokens(
    start_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Emptying the file once kept the old tokens: the operator meant to revoke them."""
    monkeypatch.setattr(auth, "RECHECK_S", 0.0)
    caplog.set_level(logging.WARNING, "centroidal.server")
    tokens = tmp_path / "tokens"
    tokens.write_text("only-token\n")
    server = start_server(token_file=str(tokens))
    with Client(f"127.0.0.1:{server.port}", token="only-token", timeout=10) as client:
        assert client.list_models() == []
        tokens.write_text("# every token revoked\n")
        time.sleep(0.05)
        with pytest.raises(Unauthenticated):
            client.list_models()
        assert any("is now empty: its 1 tokens are revoked" in r.getMessage() for r in caplog.records)
        tokens.write_text("only-token\n")
        time.sleep(0.05)
        assert client.list_models() == []  # written back: accepted again
        tokens.unlink()  # fail closed
        with pytest.raises(Unauthenticated):
            client.list_models()
        assert any("cannot be read" in r.getMessage() for r in caplog.records)


def test_the_sdk_and_the_server_read_the_same_variable(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(tokens=("shared-secret",))
    monkeypatch.setenv("CENTROIDAL_TOKEN", "shared-secret")
    with Client(f"127.0.0.1:{server.port}", timeout=10) as client:
        assert client.list_models() == []
    monkeypatch.delenv("CENTROIDAL_TOKEN")
    with Client(f"127.0.0.1:{server.port}", timeout=10) as client, pytest.raises(Unauthenticated):
        client.list_models()


def test_unknown_methods_need_a_token_too(start_server: ServerFactory) -> None:
    server = start_server(tokens=("t",))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        probe = channel.unary_unary("/centroidal.v1.ClusteringService/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as anonymous:
            probe(b"", timeout=10)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as known:
            probe(b"", timeout=10, metadata=(("authorization", "Bearer t"),))
        assert known.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_refused_calls_are_counted_and_logged_sparingly(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(tokens=("t",), metrics_port=free_port())
    caplog.set_level(logging.WARNING, "centroidal.server")
    with Client(f"127.0.0.1:{server.port}", token="wrong", timeout=10) as client:
        for _ in range(20):
            with pytest.raises(Unauthenticated):
                client.list_models()
    lines = [record for record in caplog.records if "refused a call without a valid token" in record.message]
    assert len(lines) == 1 and "reason=wrong_token" in lines[0].message
    request = urllib.request.Request(f"http://127.0.0.1:{server.metrics_port}/metrics")
    with urllib.request.urlopen(request, timeout=10) as page:
        body = page.read().decode()
    assert 'centroidal_auth_refused_total{reason="wrong_token"} 20.0' in body


def test_the_metrics_endpoint_is_loopback_only_and_can_require_the_token(start_server: ServerFactory) -> None:
    server = start_server(tokens=("t",), metrics_port=free_port(), metrics_auth=True)
    base = f"http://127.0.0.1:{server.metrics_port}"
    assert server.metrics._http is not None and server.metrics._http.server_address[0] == "127.0.0.1"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{base}/metrics", timeout=10)
    assert anonymous.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as elsewhere:
        urllib.request.urlopen(urllib.request.Request(f"{base}/other", headers={"Authorization": "Bearer t"}),
                               timeout=10)
    assert elsewhere.value.code == 404
    scrape = urllib.request.Request(f"{base}/metrics", headers={"Authorization": "Bearer t"})
    with urllib.request.urlopen(scrape, timeout=10) as page:
        assert b"centroidal_models" in page.read()


def test_unusable_tls_files_are_named_at_start(start_server: ServerFactory, pki: Pki, tmp_path: Path) -> None:
    """gRPC says only that it could not bind; the server names the flag, the file and the fault."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    cases = [
        ({"tls_key": str(pki.client_key)}, f"--tls-key {pki.client_key}: not the private key of --tls-cert"),
        ({"tls_cert": str(garbage)}, f"--tls-cert {garbage}: not a PEM certificate"),
        ({"tls_key": str(garbage)}, f"--tls-key {garbage}: not an unencrypted PEM private key"),
        ({"tls_key": str(pki.cert)}, f"--tls-key {pki.cert}: not an unencrypted PEM private key"),
        ({"tls_client_ca": str(garbage)}, f"--tls-client-ca {garbage}: not a PEM bundle of CA certificates"),
    ]
    for overrides, expected in cases:
        settings = {"tls_cert": str(pki.cert), "tls_key": str(pki.key), **overrides}
        with pytest.raises(OSError) as raised:
            start_server(**settings)
        assert str(raised.value).startswith(expected), raised.value
        assert "could not bind" not in str(raised.value)
    # The data directory's lock went with each failed start: a good start follows.
    server = start_server(tls_cert=str(pki.cert), tls_key=str(pki.key), tls_client_ca=str(pki.ca))
    assert server.port
