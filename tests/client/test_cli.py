"""The `centroidal` command against a real server."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
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


def test_csv_headers_typos_and_empty_files(
    target: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([*target, "fit", str(_npy(tmp_path)), "--model", "m", "-k", "4", "--seed", "0", "-q"])
    capsys.readouterr()
    rows = "\n".join(f"{a:.6f},{b:.6f}" for a, b in X[:3])
    typo = tmp_path / "typo.csv"
    typo.write_text(f"1.0,2.o\n{rows}\n")  # the first line is data with a typo: not a header
    assert main([*target, "predict", str(typo), "--model", "m"]) == 1
    assert "line 1: '2.o' is not a number" in capsys.readouterr().err
    assert main([*target, "predict", str(typo), "--model", "m", "--header"]) == 0  # declared
    assert len(capsys.readouterr().out.split()) == 3
    header = tmp_path / "header.csv"
    header.write_text(f"x,y\n# a comment\n\n{rows}\n")
    assert main([*target, "predict", str(header), "--model", "m"]) == 0
    assert len(capsys.readouterr().out.split()) == 3
    assert main([*target, "predict", str(header), "--model", "m", "--no-header"]) == 1
    assert "line 1, column 1: 'x' is not a number" in capsys.readouterr().err
    for content in ("", "x,y\n"):
        empty = tmp_path / "empty.csv"
        empty.write_text(content)
        with _no_warnings():
            assert main([*target, "predict", str(empty), "--model", "m"]) == 1
        assert f"{empty} holds no rows of data" in capsys.readouterr().err


def test_a_refused_row_is_named_by_its_line_in_the_file(
    target: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = X.copy()
    data[4] = 0.0  # no direction: a cosine fit refuses it by its row
    csv = tmp_path / "points.csv"
    csv.write_text("x,y\n# kept out\n" + "\n".join(f"{a},{b}" for a, b in data) + "\n")
    assert main([*target, "fit", str(csv), "--model", "angles", "-k", "4", "--metric", "cosine", "-q"]) == 1
    # Row 4 counted from 0 is line 7 of the file, after the header and the comment.
    assert f"row 4 is line 7 of {csv}" in capsys.readouterr().err


def test_a_reader_that_goes_away_is_not_an_error(target: list[str], tmp_path: Path) -> None:
    import subprocess
    import sys

    main([*target, "fit", str(_npy(tmp_path)), "--model", "m", "-k", "4", "--seed", "0", "-q"])
    big = tmp_path / "big.npy"
    np.save(big, np.repeat(X, 40, axis=0))
    predict = subprocess.Popen([sys.executable, "-m", "centroidal", *target, "predict", str(big), "--model", "m"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert predict.stdout is not None and predict.stderr is not None
    predict.stdout.close()  # as `| head` does once it has read enough (pipes can hold megabytes)
    errors = predict.stderr.read().decode()
    assert predict.wait(60) == 141 and "Broken pipe" not in errors and "Traceback" not in errors


def test_python_dash_m_centroidal_and_the_token_file_help(capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "centroidal", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("centroidal ")
    with pytest.raises(SystemExit):
        main(["health", "--help"])
    assert "one token per line" in capsys.readouterr().out


def test_demo_serve_without_the_server_extra_names_it(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "centroidal.server" or name.startswith("centroidal.server."):
                    raise ImportError(f"{name} is not part of the SDK install")
        sys.meta_path.insert(0, Block())
        from centroidal.client.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script, "demo", "--serve", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "centroidal[server]" in done.stderr and "Traceback" not in done.stderr


def test_progress_bars_end_full_and_draw_rarely_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from centroidal.client.bars import FitBar
    from centroidal.client.results import FitProgress

    written = io.StringIO()  # not a terminal
    monkeypatch.setattr("sys.stderr", written)
    bar = FitBar("fit m", max_iter=300)
    for iteration in range(1, 200):
        bar(FitProgress("iteration", n_init=1, iteration=iteration, inertia=1000.0 - iteration))
    bar(FitProgress("restart_done", n_init=1, iteration=199, inertia=123.5))
    bar.close()
    drawn = [line for line in written.getvalue().replace("\r", "\n").splitlines() if line.strip()]
    assert len(drawn) <= 3, drawn  # its first draw, perhaps one more, and its last at the close
    # Converged at 199 of max_iter 300: the bar ends full, with the restart's final inertia.
    assert "199/199" in drawn[-1] and "inertia=123.5" in drawn[-1]


def test_suggest_k_bar_counts_values_of_k_without_a_rate(
    target: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main([*target, "suggest-k", str(_npy(tmp_path)), "--k", "2..5", "--seed", "0"]) == 0
    err = capsys.readouterr().err
    assert "4/4 values of k" in err and "k/s" not in err


def _npy(tmp_path: Path) -> Path:
    path = tmp_path / "blobs.npy"
    np.save(path, X)
    return path


@contextlib.contextmanager
def _no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "input contained no data" warning came out raw
        yield
