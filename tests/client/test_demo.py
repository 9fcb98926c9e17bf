"""`centroidal demo` runs the walkthrough through the SDK and writes every figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from centroidal.client import Client
from centroidal.client.cli import main
from centroidal.client.demo import STEPS, run
from centroidal.server import CentroidalServer

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_walkthrough_writes_its_figures_and_findings(client: Client, tmp_path: Path) -> None:
    said: list[str] = []
    written = run(client, tmp_path / "figures", say=said.append)
    assert [path.name for path in written] == [f"{i + 1}-{step}.png" for i, step in enumerate(STEPS)]
    for path in written:
        assert path.read_bytes()[:8] == PNG
    findings = "\n".join(said)
    assert "silhouette peaks at k=4" in findings
    assert "spectral ARI 1.00" in findings and "k-means ARI 0.26" in findings
    assert "n_init=10 finds 212.0" in findings
    digits = next(line for line in said if line.startswith("5. digits"))
    assert float(digits.split("accuracy ")[1].split()[0]) > 0.7


def test_demo_command_runs_chosen_steps_on_a_private_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--serve", "--out", str(out), "--steps", "moons"]) == 0
    assert [path.name for path in out.iterdir()] == ["4-moons.png"]
    assert "a private server on 127.0.0.1:" in capsys.readouterr().out
    assert main(["demo", "--serve", "--out", str(out), "--steps", "moons,unknown"]) == 1
    assert "unknown demo steps ['unknown']" in capsys.readouterr().err


def test_demo_command_uses_the_target_server(server: CentroidalServer, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--target", f"127.0.0.1:{server.port}", "--out", str(out), "--steps", "blobs"]) == 0
    with Client(f"127.0.0.1:{server.port}") as client:
        assert client.get_model("demo-blobs").n_clusters == 4
