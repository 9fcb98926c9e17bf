"""A throwaway PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` on a temporary
directory and a free port, run as an unprivileged user (PostgreSQL refuses to run as
root, and CI runs as root). ``CENTROIDAL_TEST_POSTGRES`` (a URL) names a server to use
instead; with neither, the PostgreSQL tests skip with one line saying why."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import urllib.parse
from pathlib import Path

URL_ENV = "CENTROIDAL_TEST_POSTGRES"
START_WAIT_S = 60
# Who runs the server when the tests run as root: Debian's package makes `postgres`.
UNPRIVILEGED = ("postgres", "nobody")


def server_binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on the PATH, or Debian's newest install."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True):
        return Path(candidate).parent
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ThrowawayPostgres:
    """A PostgreSQL server of its own, under ``root``, until ``stop``.

    password : the superuser's, required of every connection over TCP (else no password)
    tls : (certificate, key) PEM files: the server also speaks TLS
    """

    def __init__(self, root: Path, binaries: Path, *, password: str = "",
                 tls: tuple[Path, Path] | None = None) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.port = _free_port()
        self._binaries = binaries
        self._user = None if os.geteuid() != 0 else next(
            (name for name in UNPRIVILEGED if _exists(name)), None
        )
        if os.geteuid() == 0 and self._user is None:
            raise RuntimeError(f"PostgreSQL cannot run as root and none of {UNPRIVILEGED} exists")
        if self._user is not None:  # the server's user owns its folder
            account = pwd.getpwnam(self._user)
            os.chown(root, account.pw_uid, account.pw_gid)
        auth = ["--auth-local=trust", "--auth-host=trust"]
        if password:
            (root / "pwfile").write_text(password + "\n")
            self._own(root / "pwfile")
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={root / 'pwfile'}"]
        self._run("initdb", "-D", str(self.data), "-U", "centroidal", *auth, "-E", "UTF8", "--no-locale", "--no-sync")
        self._options = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1"
        if tls is not None:
            for name, source in zip(("server.crt", "server.key"), tls, strict=True):
                (root / name).write_bytes(source.read_bytes())
                (root / name).chmod(0o600)
                self._own(root / name)
            self._options += f" -c ssl=on -c ssl_cert_file={root / 'server.crt'} -c ssl_key_file={root / 'server.key'}"
        self.start()
        self.url = f"postgresql://centroidal@127.0.0.1:{self.port}/postgres"

    def _own(self, path: Path) -> None:
        if self._user is not None:
            account = pwd.getpwnam(self._user)
            os.chown(path, account.pw_uid, account.pw_gid)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", str(START_WAIT_S),
                  "-o", self._options, "start")

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._binaries / program), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_WAIT_S * 2, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session and shuts down cleanly; ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead of its own."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True
