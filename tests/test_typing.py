"""The SDK and the codec are strictly typed; the server and engine type-check too.

mypy cannot follow the editable install's import hook, so each package is checked where it
is imported from: a tree of links laid out as the installed ``centroidal`` package, in which
the packages see each other's real types. The generated stubs stay untyped there (only their
``.py`` files are linked, and pyproject's mypy section skips them): the codec is the typed
door to the wire.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The installed package's layout (pyproject's package-dir): import name -> folder.
PACKAGES = {"client": "client", "codec": "codec", "engine": "engine", "server": "server", "sources": "sources",
            "partitioned": "partitioned"}


def _installed_tree(tmp_path: Path) -> Path:
    package = tmp_path / "centroidal"
    (package / "v1").mkdir(parents=True)
    for item in (ROOT / "protos" / "centroidal").iterdir():
        if item.is_file():
            (package / item.name).symlink_to(item)
    for generated in (ROOT / "protos" / "centroidal" / "v1").glob("*.py"):
        (package / "v1" / generated.name).symlink_to(generated)
    for name, folder in PACKAGES.items():
        (package / name).symlink_to(ROOT / folder)
    return tmp_path


def mypy(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *args],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(tree)},
    )


def test_sdk_and_codec_pass_mypy_strict(tmp_path: Path) -> None:
    done = mypy(_installed_tree(tmp_path), "--strict", "-p", "centroidal.client", "-p", "centroidal.codec")
    assert done.returncode == 0, done.stdout + done.stderr


def test_server_and_engine_pass_mypy(tmp_path: Path) -> None:
    done = mypy(_installed_tree(tmp_path), "-p", "centroidal.server", "-p", "centroidal.engine",
                "-p", "centroidal.sources", "-p", "centroidal.partitioned")
    assert done.returncode == 0, done.stdout + done.stderr
