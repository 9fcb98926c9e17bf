"""Exports of a stored model: npz and json files, a scikit-learn KMeans, and ONNX checked
with onnxruntime against the server's Predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from centroidal.client import Client, RemoteKMeans
from centroidal.client.cli import main
from centroidal.client.export import read_npz, to_onnx, to_sklearn
from centroidal.server import CentroidalServer

X, _ = make_blobs(4000, centers=6, n_features=5, cluster_std=1.5, random_state=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_onnx_labels_and_distances_match_predict(client: Client, dtype) -> None:
    points = X.astype(dtype)
    client.fit("six", points, 6, seed=0)
    model = client.get_model("six", include_centers=True)
    session = onnxruntime.InferenceSession(to_onnx(model))
    labels, distances = session.run(None, {"X": points})
    np.testing.assert_array_equal(labels, client.predict("six", points))
    np.testing.assert_allclose(distances, client.transform("six", points), rtol=1e-4, atol=1e-4)


def test_to_sklearn_predicts_as_the_server_does(client: Client) -> None:
    client.fit("six", X, 6, seed=0)
    estimator = to_sklearn(client.get_model("six", include_centers=True))
    assert isinstance(estimator, KMeans)
    np.testing.assert_array_equal(estimator.predict(X), client.predict("six", X))
    np.testing.assert_allclose(estimator.transform(X), client.transform("six", X), rtol=1e-9)
    assert estimator.score(X) == pytest.approx(-client.get_model("six").inertia, rel=1e-9)


def test_remote_kmeans_to_sklearn(server: CentroidalServer) -> None:
    remote = RemoteKMeans(n_clusters=6, random_state=0, target=f"127.0.0.1:{server.port}").fit(X)
    local = remote.to_sklearn()
    np.testing.assert_array_equal(local.predict(X), remote.labels_)
    np.testing.assert_array_equal(local.cluster_centers_, remote.cluster_centers_)
    remote.close()


def test_a_cosine_model_is_not_passed_off_as_euclidean(client: Client) -> None:
    client.fit("angles", X, 6, metric="cosine", seed=0)
    model = client.get_model("angles", include_centers=True)
    with pytest.raises(ValueError, match="cosine metric"):
        to_sklearn(model)
    with pytest.raises(ValueError, match="cosine metric"):
        to_onnx(model)


def test_a_spectral_model_is_refused_in_every_format(server: CentroidalServer, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Its cluster means are not what it predicts with: exported as a KMeans they labelled
    a fifth of fresh points otherwise than Predict."""
    from sklearn.datasets import make_moons

    moons, _ = make_moons(300, noise=0.05, random_state=0)
    with Client(f"127.0.0.1:{server.port}") as client:
        client.fit("moons", moons, 2, algorithm="spectral", seed=0)
        model = client.get_model("moons", include_centers=True)
    for export in (to_sklearn, to_onnx):
        with pytest.raises(ValueError, match="spectral model"):
            export(model)
    for suffix in ("npz", "json", "onnx"):
        out = tmp_path / f"moons.{suffix}"
        assert main(["--target", f"127.0.0.1:{server.port}", "export", "moons", "--out", str(out)]) == 1
        assert not out.exists()
        assert "spectral model" in capsys.readouterr().err


def test_export_command_writes_each_format(server: CentroidalServer, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    target = ["--target", f"127.0.0.1:{server.port}"]
    with Client(f"127.0.0.1:{server.port}") as client:
        client.fit("six", X, 6, seed=0)
        centers = client.get_model("six", include_centers=True).centers
    npz, document, graph = tmp_path / "six.npz", tmp_path / "six.json", tmp_path / "six.onnx"
    for path in (npz, document, graph):
        assert main([*target, "export", "six", "--out", str(path)]) == 0
    stored, description = read_npz(npz.read_bytes())
    np.testing.assert_array_equal(stored, centers)
    assert description["name"] == "six" and description["metric"] == "euclidean"
    loaded = json.loads(document.read_text())
    np.testing.assert_array_equal(np.array(loaded["centers"]), centers)
    assert loaded["version"] == 1 and loaded["n_clusters"] == 6
    session = onnxruntime.InferenceSession(graph.read_bytes())
    labels, _ = session.run(None, {"X": X})
    with Client(f"127.0.0.1:{server.port}") as client:
        np.testing.assert_array_equal(labels, client.predict("six", X))
    assert main([*target, "export", "six", "--out", str(tmp_path / "six.txt")]) == 1
    assert "pass --format" in capsys.readouterr().err
    assert main([*target, "export", "missing", "--format", "json", "--out", str(tmp_path / "m.json")]) != 0
