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
    """A PostgreSQL server of its own, under ``root``, until ``stop``."""

    def __init__(self, root: Path, binaries: Path) -> None:
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
        self._run("initdb", "-D", str(self.data), "-U", "centroidal", "--auth=trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(root / "server.log"), "-w", "-t", str(START_WAIT_S),
                  "-o", f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1", "start")
        self.url = f"postgresql://centroidal@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._binaries / program), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_WAIT_S * 2, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True
