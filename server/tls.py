"""The server's TLS credentials, from the PEM files its flags name: each file is checked by
Python's own TLS library first, so that a bad one is refused naming the flag and the file."""

from __future__ import annotations

import ssl
from typing import NoReturn

import grpc

from .config import ServerConfig


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """Server credentials from the PEM files of the config; None for plaintext.

    gRPC reports a bad file only as a port it could not bind, so each file is first
    loaded by Python's own TLS library, and a failure names the flag, the file and what
    is wrong with it."""
    if not config.tls_cert:
        return None
    check_tls_files(config.tls_cert, config.tls_key, config.tls_client_ca)
    with open(config.tls_key, "rb") as key, open(config.tls_cert, "rb") as chain:
        pair = (key.read(), chain.read())
    client_ca = None
    if config.tls_client_ca:
        with open(config.tls_client_ca, "rb") as handle:
            client_ca = handle.read()
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)


def check_tls_files(cert: str, key: str, client_ca: str) -> None:
    """Raise OSError naming the flag and file when a certificate, key or CA bundle is
    unusable: not PEM, not the certificate's key, or encrypted (the server cannot prompt)."""

    def refuse(flag: str, path: str, problem: str, exc: ssl.SSLError) -> NoReturn:
        code = exc.reason if exc.reason and exc.reason.isupper() else ""  # KEY_VALUES_MISMATCH, say
        raise OSError(f"{flag} {path}: {problem}" + (f" ({code})" if code else "")) from None

    def no_password() -> bytes:
        raise ssl.SSLError("the key is encrypted")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=cert)  # parses the chain's certificates alone
    except ssl.SSLError as exc:
        refuse("--tls-cert", cert, "not a PEM certificate", exc)
    try:
        context.load_cert_chain(cert, key, password=no_password)
    except ssl.SSLError as exc:
        if "MISMATCH" in (exc.reason or ""):
            refuse("--tls-key", key, f"not the private key of --tls-cert {cert}", exc)
        refuse("--tls-key", key, "not an unencrypted PEM private key", exc)
    if client_ca:
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            refuse("--tls-client-ca", client_ca, "not a PEM bundle of CA certificates", exc)
