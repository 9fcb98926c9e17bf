"""The `centroidal` command against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from centroidal.client.cli import main
from centroidal.server import CentroidalServer

X, _ = make_blobs(300, centers=4, cluster_std=0.6, random_state=0)


@pytest.fixture
def target(server: CentroidalServer) -> list[str]:
    return ["--target", f"127.0.0.1:{server.port}"]


def test_fit_predict_and_models_from_files(
    target: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npy = tmp_path / "points.npy"
    np.save(npy, X.astype(np.float32))
    csv = tmp_path / "points.csv"
    np.savetxt(csv, X, delimiter=",", header="x,y", comments="")
    labels_out = tmp_path / "labels.npy"

    assert main([*target, "fit", str(npy), "--model", "blobs", "-k", "4", "--seed", "0",
                 "--labels-out", str(labels_out)]) == 0
    captured = capsys.readouterr()
    assert "model blobs version 1: 300 points, 4 clusters" in captured.out
    assert "fit blobs upload" in captured.err and "fit blobs restart 1/" in captured.err
    assert "inertia=" in captured.err  # the bar of the last restart, as it closed

    assert main([*target, "predict", str(csv), "--model", "blobs"]) == 0
    printed = np.array(capsys.readouterr().out.split(), dtype=np.int32)
    np.testing.assert_array_equal(printed, np.load(labels_out))

    out = tmp_path / "predicted.csv"
    assert main([*target, "predict", str(csv), "--model", "blobs", "--distances", "--out", str(out)]) == 0
    table = np.loadtxt(out, delimiter=",")
    assert table.shape == (300, 2)

    assert main([*target, "models"]) == 0
    assert "blobs" in capsys.readouterr().out
    assert main([*target, "models", "get", "blobs", "--centers"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["version"] == 1 and len(described["centers"]) == 4
    assert main([*target, "models", "delete", "blobs"]) == 0
    assert "deleted blobs (version 2)" in capsys.readouterr().out


def test_errors_exit_nonzero_with_the_reason(
    target: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npy = tmp_path / "points.npy"
    np.save(npy, X)
    assert main([*target, "predict", str(npy), "--model", "absent"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main([*target, "fit", str(npy), "--model", "m", "-k", "0", "-q"]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "spec.config.n_clusters" in err


def test_health_exit_code(target: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*target, "health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert main(["--target", "127.0.0.1:1", "--timeout", "2", "health"]) == 1


def test_stream_a_file_and_resume_it(
    target: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npy = tmp_path / "points.npy"
    np.save(npy, X.astype(np.float32))
    assert main([*target, "stream", str(npy), "--model", "live", "--batch-size", "50", "-k", "4",
                 "--seed", "1", "--producer-id", "loader"]) == 0
    captured = capsys.readouterr()
    assert "model live version 6: 6 batches (300 points)" in captured.out
    assert "6 learnt, 0 already in the model, 0 rejected" in captured.out
    assert "durable through sequence 6" in captured.out
    assert "300/300" in captured.err and "durable=6" in captured.err
    # Running the same file again as the same producer changes nothing: every batch is a
    # duplicate of one the model has.
    assert main([*target, "stream", str(npy), "--model", "live", "--batch-size", "50",
                 "--producer-id", "loader", "-q"]) == 0
    assert "0 learnt, 6 already in the model, 0 rejected" in capsys.readouterr().out
    assert main([*target, "models", "get", "live"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["kind"] == "minibatch-kmeans" and described["n_batches"] == 6
    assert described["n_samples_seen"] == 300 and described["durable_version"] == 6

    bad = tmp_path / "three.npy"
    np.save(bad, np.ones((10, 3), dtype=np.float32))
    assert main([*target, "stream", str(bad), "--model", "live", "-q"]) == 1
    assert "rejected" in capsys.readouterr().err
    assert main([*target, "stream", str(npy), "--model", "nowhere", "-q"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_quantize_an_image_file(target: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    source = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(source, "JPEG")
    out = tmp_path / "small.png"
    assert main([*target, "quantize", str(source), str(out), "--colors", "8", "--seed", "1",
                 "--save-palette-as", "tones"]) == 0
    printed = capsys.readouterr().out
    assert "60x40 PNG, 8 colours" in printed and "palette saved as version 1" in printed
    result = Image.open(out)
    assert result.mode == "P" and result.size == (60, 40)
    webp = tmp_path / "again.webp"
    assert main([*target, "quantize", str(source), str(webp), "--palette-model", "tones",
                 "--dither", "--space", "lab"]) == 0
    assert Image.open(webp).format == "WEBP"
    figure = tmp_path / "colours.png"
    assert main([*target, "quantize", str(source), str(out), "--plot", str(figure)]) == 0
    assert Image.open(figure).size[0] > 500  # a real figure was drawn
    in_lab = tmp_path / "lab.png"
    assert main([*target, "quantize", str(source), str(out), "--space", "lab", "--plot", str(in_lab)]) == 0
    assert Image.open(in_lab).size == Image.open(figure).size
    assert main([*target, "quantize", str(source), str(out), "--colors", "300"]) == 1
    assert "spec.n_colors" in capsys.readouterr().err


def test_version_get_and_delete_as_a_user_would_type_them(
    target: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as shown:
        main(["--version"])
    assert shown.value.code == 0 and capsys.readouterr().out.startswith("centroidal ")
    npy = tmp_path / "points.npy"
    np.save(npy, X)
    assert main([*target, "fit", str(npy), "--model", "m", "-k", "2", "-q"]) == 0
    capsys.readouterr()
    assert main([*target, "get", "m"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "m"
    assert main([*target, "delete", "m"]) == 0
    assert "deleted m" in capsys.readouterr().out
    assert main([*target, "get", "m"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_a_bad_csv_value_is_reported_with_its_line(
    target: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "points.csv"
    csv.write_text("x,y\n1,2\n3,4\n5,oops\n7,8\n")
    assert main([*target, "fit", str(csv), "--model", "m", "-k", "2"]) == 1
    assert "points.csv, line 4, column 2: 'oops' is not a number" in capsys.readouterr().err
    csv.write_text("1,2\n3\n")
    assert main([*target, "fit", str(csv), "--model", "m", "-k", "2"]) == 1
    assert "points.csv, line 2: 1 values, but the rows before have 2" in capsys.readouterr().err


def test_ctrl_c_ends_a_fit_with_one_line(server: CentroidalServer, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    npy = tmp_path / "big.npy"
    np.save(npy, np.random.default_rng(0).normal(size=(300_000, 16)).astype(np.float32))
    process = subprocess.Popen(
        [sys.executable, "-m", "centroidal.client.cli", "--target", f"127.0.0.1:{server.port}", "fit",
         str(npy), "--model", "interrupted", "-k", "256", "--tol", "0", "--max-iter", "300"],
        stderr=subprocess.PIPE, text=True,
        # As from a shell's background job or a CI runner: SIGINT ignored when the CLI starts.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert process.stderr is not None
    seen = ""
    while "restart" not in seen:  # the fit is running on the server
        character = process.stderr.read(1)
        assert character, f"the fit ended early: {seen}"
        seen += character
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(60) == 130
    assert "centroidal: interrupted; the call was cancelled" in rest and "Traceback" not in rest
    from centroidal.client import Client, NotFound

    with Client(f"127.0.0.1:{server.port}") as client, pytest.raises(NotFound):
        client.get_model("interrupted")  # nothing stored


def test_suggest_k_and_evaluate_commands(target: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    npy = tmp_path / "blobs.npy"
    np.save(npy, X)
    plot = tmp_path / "k.png"
    assert main([*target, "suggest-k", str(npy), "--k", "2..8", "--seed", "0", "--save-best-as", "best",
                 "--plot", str(plot), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "recommended k=4" in printed and "saved as best version 1" in printed
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*target, "suggest-k", str(npy), "--k", "2..5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["recommended_k"] == 4 and [row["k"] for row in result["per_k"]] == [2, 3, 4, 5]
    assert main([*target, "evaluate", str(npy), "--model", "best", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["silhouette"] == pytest.approx(result["per_k"][2]["silhouette"], abs=1e-12)
    with pytest.raises(SystemExit):
        main([*target, "suggest-k", str(npy), "--k", "5..2"])
    assert "LAST is below FIRST" in capsys.readouterr().err


def test_fit_command_takes_the_spectral_algorithm(target: list[str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.datasets import make_moons
    from sklearn.metrics import adjusted_rand_score

    moons, truth = make_moons(200, noise=0.05, random_state=0)
    npy, labels = tmp_path / "moons.npy", tmp_path / "labels.txt"
    np.save(npy, moons)
    assert main([*target, "fit", str(npy), "--model", "moons", "-k", "2", "--algorithm", "spectral",
                 "--neighbors", "8", "--seed", "0", "--labels-out", str(labels), "--quiet"]) == 0
    assert adjusted_rand_score(np.loadtxt(labels, dtype=int), truth) == 1.0
    capsys.readouterr()
    assert main([*target, "get", "moons"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["kind"] == "spectral" and described["config"]["n_neighbors"] == 8
