"""The README's promises: each Python snippet runs on its own, and the configuration
table names every flag of `centroidal serve`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from centroidal.server import CentroidalServer
from centroidal.server.config import ServerConfig

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_the_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_each_python_snippet_runs_on_its_own(server: CentroidalServer, index: int, tmp_path: Path) -> None:
    env = {**os.environ, "CENTROIDAL_TARGET": f"127.0.0.1:{server.port}"}
    env.pop("CENTROIDAL_TOKEN", None)
    result = subprocess.run([sys.executable, "-c", SNIPPETS[index]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"snippet {index} failed:\n{SNIPPETS[index]}\n{result.stderr}"


def test_the_configuration_table_names_every_flag() -> None:
    table = README[README.index("## Configuration"):README.index("## Compatibility")]
    for spec in fields(ServerConfig):
        if spec.name == "tokens":
            assert "`CENTROIDAL_TOKEN`" in table
            continue
        flag = spec.name.replace("_", "-")
        assert f"--{flag}`" in table or f"--[no-]{flag}`" in table, flag
        assert f"`CENTROIDAL_{spec.name.upper()}`" in table
