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


def test_the_grpcurl_example_is_valid_json_for_the_contract(server: CentroidalServer) -> None:
    import grpc
    import numpy as np
    from google.protobuf import json_format

    from centroidal.v1 import clustering_pb2 as pb

    section = README[README.index("## Calling it from another language"):README.index("## Compatibility")]
    fit_lines = section.split("<<'JSON'\n", 1)[1].split("\nJSON", 1)[0].splitlines()
    predict_json = re.search(r"-d '(\{.*?\})'", section).group(1)  # type: ignore[union-attr]
    requests = [json_format.Parse(line, pb.FitRequest()) for line in fit_lines]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        fit = channel.stream_stream("/centroidal.v1.ClusteringService/Fit",
                                    request_serializer=pb.FitRequest.SerializeToString,
                                    response_deserializer=pb.FitResponse.FromString)
        answers = list(fit(iter(requests), timeout=30))
        assert answers[-1].HasField("result") and answers[-1].result.model.name == "tiny"
        predict = channel.unary_unary("/centroidal.v1.ClusteringService/Predict",
                                      request_serializer=pb.PredictRequest.SerializeToString,
                                      response_deserializer=pb.PredictResponse.FromString)
        answer = predict(json_format.Parse(predict_json, pb.PredictRequest()), timeout=30)
    labels = np.frombuffer(answer.labels, dtype="<i4")
    assert labels.shape == (2,) and labels[0] != labels[1]


def test_every_image_the_readme_shows_is_in_the_repository() -> None:
    root = Path(__file__).resolve().parent.parent
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert images
    for image in images:
        assert (root / image).is_file(), f"{image} is missing"
        # A file git ignores exists here but not in a clone: the README would show a broken link.
        ignored = subprocess.run(["git", "check-ignore", "--quiet", image], cwd=root)
        assert ignored.returncode == 1, f"{image} is ignored by .gitignore"


def test_the_container_examples_give_the_drain_time_to_finish() -> None:
    """Docker and Compose kill a container 10 s after SIGTERM by default: as long as the
    server's own grace period, so the last checkpoint could be cut short."""
    section = README[README.index("## Container"):]
    grace = ServerConfig().grace_period
    stop_timeout = re.search(r"docker run .*?--stop-timeout (\d+)", section, flags=re.DOTALL)
    assert stop_timeout is not None and int(stop_timeout.group(1)) > grace
    compose = re.search(r"stop_grace_period: (\d+)s", section)
    assert compose is not None and int(compose.group(1)) > grace
    assert "--tls-cert /run/secrets/health.pem" in section  # mutual TLS: the check's own certificate


def test_the_module_map_names_every_module() -> None:
    root = Path(__file__).resolve().parent.parent
    layout = README[README.index("## Layout"):README.index("## Container")]
    for folder in ("codec", "engine", "server", "client", "sources", "partitioned"):
        for module in sorted((root / folder).glob("*.py")):
            if module.name != "__init__.py":
                assert f"  {module.name} " in layout, f"{folder}/{module.name} is missing from the README's map"
