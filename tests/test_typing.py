"""The SDK's public API is strictly typed; the server and engine type-check too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *args],
        cwd=ROOT, capture_output=True, text=True,
    )


def test_sdk_passes_mypy_strict() -> None:
    done = mypy("--strict", *sorted(str(p) for p in (ROOT / "client").glob("*.py")))
    assert done.returncode == 0, done.stdout + done.stderr


def test_server_and_engine_pass_mypy() -> None:
    sources = sorted(str(p) for folder in ("server", "engine") for p in (ROOT / folder).glob("*.py"))
    done = mypy(*sources)
    assert done.returncode == 0, done.stdout + done.stderr
