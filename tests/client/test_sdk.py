"""The SDK end to end against a real server on port 0."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from centroidal.client import Client, DeadlineExceeded, NotFound
from centroidal.engine import kmeans
from centroidal.server import CentroidalServer
from tests.conftest import ServerFactory

X, _ = make_blobs(300, centers=4, cluster_std=0.6, random_state=0)


def test_fit_then_predict(client: Client) -> None:
    events = []
    result = client.fit("blobs", X, 4, seed=0, return_labels=True, on_progress=events.append)
    assert result.version == 1 and result.n_samples == 300
    assert result.centers.shape == (4, 2)
    assert result.labels is not None
    np.testing.assert_array_equal(client.predict("blobs", X), result.labels)
    local = kmeans.fit(X, 4, seed=0)
    assert result.centers.tobytes() == local.centers.tobytes()
    stages = [event.stage for event in events]
    assert stages[0] == "uploading" and "iteration" in stages and stages[-1] == "restart_done"


def test_float32_stays_float32_end_to_end(client: Client) -> None:
    X32 = X.astype(np.float32)
    result = client.fit("f32", X32, 4, seed=0)
    assert result.centers.dtype == np.float32
    assert client.get_model("f32").dtype == np.float32
    labels, distances = client.predict("f32", X32, return_distance=True)
    assert distances.dtype == np.float32
    assert client.transform("f32", X32).dtype == np.float32


def test_model_survives_a_restart(start_server: ServerFactory, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "kept")
    first = start_server(data_dir=data_dir)
    with Client(f"127.0.0.1:{first.port}") as client:
        result = client.fit("blobs", X, 4, seed=0, return_labels=True)
    first.stop(0)
    second = start_server(data_dir=data_dir)
    with Client(f"127.0.0.1:{second.port}") as client:
        model = client.get_model("blobs")
        assert model.version == 1
        np.testing.assert_array_equal(model.centers, result.centers)
        np.testing.assert_array_equal(client.predict("blobs", X), result.labels)


def test_predicts_run_while_another_model_fits(client: Client, server: CentroidalServer) -> None:
    client.fit("serving", X, 4, seed=0)
    expected = client.predict("serving", X)
    big, _ = make_blobs(100_000, n_features=16, centers=200, random_state=2)
    fitting = threading.Event()
    predicts_done = threading.Event()
    outcome: dict[str, object] = {}

    class Stop(Exception):
        pass

    def watch(event) -> None:
        if event.stage == "iteration":
            fitting.set()
            predicts_done.wait(60)
            raise Stop

    def long_fit() -> None:
        try:
            client.fit("busy", big, 256, seed=0, tol=0, max_iter=100_000, on_progress=watch)
        except Stop:
            outcome["stopped"] = True

    worker = threading.Thread(target=long_fit)
    worker.start()
    assert fitting.wait(120), "the long fit never reached its first iteration"
    answers = [client.predict("serving", X) for _ in range(20)]
    still_fitting = server.servicer.fits_in_flight == 1
    predicts_done.set()
    worker.join(60)
    assert still_fitting
    for labels in answers:
        np.testing.assert_array_equal(labels, expected)
    assert outcome.get("stopped") is True
    # The cancelled fit stops on the server too, long before max_iter, and stores nothing.
    wait_until(lambda: server.servicer.fits_in_flight == 0)
    assert server.servicer.last_stopped_fit_iteration is not None
    assert server.servicer.last_stopped_fit_iteration < 100_000
    with pytest.raises(NotFound):
        client.get_model("busy")


def test_deadline_stops_the_fit_and_keeps_the_previous_version(
    client: Client, server: CentroidalServer
) -> None:
    # Structureless data: with tol=0 the fit runs until no label changes, hundreds of
    # iterations, far past the deadline however fast the machine is.
    big = np.random.default_rng(3).normal(size=(200_000, 16))
    first = client.fit("model", big[:1000], 8, seed=0)
    with pytest.raises(DeadlineExceeded):
        client.fit("model", big, 256, seed=0, tol=0, max_iter=100_000, timeout=1.5)
    wait_until(lambda: server.servicer.fits_in_flight == 0)
    model = client.get_model("model")
    assert model.version == first.version
    np.testing.assert_array_equal(model.centers, first.centers)


def test_fifty_megabyte_dataset_fits_through_chunking(client: Client) -> None:
    rng = np.random.default_rng(11)
    rows = 50 * 1024 * 1024 // (10 * 4)
    points = rng.normal(size=(rows, 10)).astype(np.float32)
    points[: rows // 2] += 4.0
    uploads = []
    result = client.fit(
        "large", points, 5, seed=3, max_iter=10, return_labels=True,
        on_progress=lambda event: uploads.append(event) if event.stage == "uploading" else None,
    )
    assert result.n_samples == rows
    assert len(uploads) >= 25  # 2 MiB chunks
    local = kmeans.fit(points, 5, seed=3, max_iter=10)
    assert result.centers.tobytes() == local.centers.tobytes()
    np.testing.assert_array_equal(result.labels, local.labels)


def test_large_predict_and_transform_stream_in_chunks(server: CentroidalServer) -> None:
    rng = np.random.default_rng(5)
    points = rng.normal(size=(20_000, 3))
    with Client(f"127.0.0.1:{server.port}", chunk_bytes=4096) as client:
        result = client.fit("chunky", points[:500], 6, seed=1)
        labels, distances = client.predict("chunky", points, return_distance=True)
        transformed = client.transform("chunky", points)
    expected_labels, expected_distances = kmeans.predict(points, result.centers, return_distance=True)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12)
    np.testing.assert_allclose(transformed, kmeans.transform(points, result.centers), rtol=1e-12)


def test_versions_count_up_and_can_be_pinned(start_server: ServerFactory) -> None:
    server = start_server(keep_versions=2)
    with Client(f"127.0.0.1:{server.port}") as client:
        v1 = client.fit("m", X, 2, seed=0)
        v2 = client.fit("m", X, 4, seed=0, expected_version=1)
        assert (v1.version, v2.version) == (1, 2)
        np.testing.assert_array_equal(
            client.predict("m", X, version=1), kmeans.predict(X, v1.centers)
        )
        assert client.predict("m", X).max() == 3
        client.fit("m", X, 3, seed=0)
        with pytest.raises(NotFound):
            client.predict("m", X, version=1)
        assert client.delete_model("m") == 4
        again = client.fit("m", X, 2, seed=0, expected_version=0)
        assert again.version == 5


def test_list_models_pages_in_name_order(client: Client) -> None:
    names = [f"model-{i:02d}" for i in (4, 1, 3, 0, 2)]
    for name in names:
        client.fit(name, X, 2, seed=0)
    models, token = client.list_models_page(page_size=2)
    assert [m.name for m in models] == ["model-00", "model-01"] and token
    assert [m.name for m in client.list_models(page_size=2)] == sorted(names)
    assert all(m.centers is None for m in models)


def test_get_model_reports_config_and_stats(client: Client) -> None:
    client.fit("described", X, 4, seed=9, n_init=2, max_iter=50, tol=1e-3)
    model = client.get_model("described")
    assert model.settings() == {
        "n_clusters": 4, "init": "k-means++", "n_init": 2, "max_iter": 50, "tol": 1e-3, "seed": 9,
        "metric": "euclidean",
    }
    assert (model.n_clusters, model.n_features, model.n_samples_seen) == (4, 2, 300)
    assert model.inertia > 0 and model.n_iter >= 1
    assert model.created_at <= model.updated_at


def wait_until(condition, limit_s: float = 60.0) -> None:
    """Poll until condition() holds; fail after limit_s (a bound on waiting, not a timing check)."""
    give_up = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < give_up, "condition never became true"
        time.sleep(0.05)


def test_fit_cancelled_while_labels_stream_stores_nothing(server: CentroidalServer) -> None:
    import grpc

    from centroidal import codec
    from centroidal.v1 import clustering_pb2 as pb
    from centroidal.v1 import clustering_pb2_grpc as pb_grpc

    # 64 MB of labels: far more than HTTP/2 flow control lets the server send unread, so
    # the server is still streaming labels, before its commit, when the call is cancelled.
    points = np.random.default_rng(4).normal(size=(16_000_000, 1)).astype(np.float32)
    spec = pb.FitSpec(model="unlabelled", config=pb.KMeansConfig(n_clusters=3, max_iter=3, seed=0),
                      n_samples=len(points), return_labels=True)
    chunks = (pb.FitRequest(points=codec.encode_matrix(points[i : i + 500_000]))
              for i in range(0, len(points), 500_000))

    def requests():
        for index, chunk in enumerate(chunks):
            if index == 0:
                chunk.spec.CopyFrom(spec)
            yield chunk

    with grpc.insecure_channel(f"127.0.0.1:{server.port}",
                               options=[("grpc.max_receive_message_length", -1)]) as channel:
        call = pb_grpc.ClusteringServiceStub(channel).Fit(requests())
        for response in call:
            if response.WhichOneof("event") == "labels":
                call.cancel()
                break
    wait_until(lambda: server.servicer.fits_in_flight == 0)
    with Client(f"127.0.0.1:{server.port}") as client, pytest.raises(NotFound):
        client.get_model("unlabelled")


def test_transform_of_a_pinned_version_uses_its_own_clusters(client: Client) -> None:
    first = client.fit("pinned", X, 2, seed=0)
    client.fit("pinned", X, 4, seed=0)
    distances = client.transform("pinned", X, version=first.version)
    assert distances.shape == (300, 2)
    np.testing.assert_allclose(distances, kmeans.transform(X, first.centers), rtol=1e-12)
    assert client.get_model("pinned", version=first.version).n_clusters == 2


def test_upload_progress_exception_reaches_the_caller(client: Client) -> None:
    class Interrupted(Exception):
        pass

    def stop_uploading(event) -> None:
        if event.stage == "uploading":
            raise Interrupted

    with pytest.raises(Interrupted):
        client.fit("interrupted", X, 2, on_progress=stop_uploading)


def test_quantize_image_from_bytes_or_a_path(client: Client, tmp_path) -> None:
    import io

    from PIL import Image

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8))
    path = tmp_path / "in.png"
    image.save(path)
    from_path = client.quantize_image(path, 6, seed=3)
    from_bytes = client.quantize_image(path.read_bytes(), 6, seed=3, output_format="jpeg")
    assert from_path.palette.shape == (6, 3) and from_path.palette.dtype == np.uint8
    np.testing.assert_array_equal(from_path.palette, from_bytes.palette)
    assert from_path.pixel_counts.sum() == 1500 and from_path.format == "PNG"
    assert Image.open(io.BytesIO(from_bytes.image)).format == "JPEG"
    with pytest.raises(ValueError):
        client.quantize_image(path, 6, color_space="hsv")


@pytest.mark.parametrize("n_clusters, label_bytes", [(5, 1), (300, 2)])
def test_predict_labels_travel_narrow_on_request(
    server: CentroidalServer, client: Client, n_clusters: int, label_bytes: int
) -> None:
    import grpc

    from centroidal.v1 import clustering_pb2 as pb
    from centroidal.v1 import clustering_pb2_grpc as pb_grpc
    from centroidal import codec

    X = np.random.default_rng(2).normal(size=(2_000, 4)).astype(np.float32)
    fitted = client.fit("narrow", X, n_clusters, seed=1, max_iter=5)
    expected = kmeans.predict(X, fitted.centers)
    np.testing.assert_array_equal(client.predict("narrow", X), expected)  # the SDK asks for narrow
    request = pb.PredictRequest.FromString(
        codec.serialize_predict_request(codec.PredictRequest(model="narrow", points=X))
    )
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.ClusteringServiceStub(channel)
        plain = stub.Predict(request, timeout=60)
        request.options.narrow_labels = True
        narrow = stub.Predict(request, timeout=60)
    # A client that does not ask (any client built from the .proto alone) gets int32.
    assert plain.label_bytes == 4 and len(plain.labels) == 4 * len(X)
    assert narrow.label_bytes == label_bytes and len(narrow.labels) == label_bytes * len(X)
    np.testing.assert_array_equal(codec.decode_labels(plain.labels), expected)
    np.testing.assert_array_equal(codec.decode_labels(narrow.labels, width=narrow.label_bytes), expected)
