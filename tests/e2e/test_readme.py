"""The README's Python examples run as written against a real server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from centroidal.server import CentroidalServer

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_examples_run(server: CentroidalServer, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{server.port}"
    monkeypatch.setenv("CENTROIDAL_TARGET", address)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block.replace("127.0.0.1:50051", address), str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "version 1, inertia" in printed
    assert namespace["kmeans"].inertia_ == pytest.approx(namespace["fitted"].inertia)  # type: ignore[attr-defined]
