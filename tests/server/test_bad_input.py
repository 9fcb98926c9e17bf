"""Every client mistake gets its canonical code, names the field, and loses nothing stored.
Values a call cannot take (NaN, Inf, too large to square, negative weights) are in
test_bad_values.py."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from centroidal.client import (
    Aborted,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from centroidal.client.errors import error_from_rpc
from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc
from tests.conftest import ServerFactory
from tests.server.refusals import X, assert_kept, raw_error


def test_wrong_dimension_for_the_model(fitted: Client) -> None:
    with pytest.raises(FailedPrecondition) as raised:
        fitted.predict("kept", X[:, :2])
    assert raised.value.field == "points.cols"
    assert "points.cols=2" in raised.value.message and "3 features" in raised.value.message


def test_more_clusters_than_points(fitted: Client) -> None:
    with pytest.raises(InvalidArgument) as raised:
        fitted.fit("kept", X[:5], 6)
    assert raised.value.field == "spec.config.n_clusters"
    assert "n_clusters=6" in raised.value.message and "5" in raised.value.message
    assert_kept(fitted)


def test_zero_clusters(fitted: Client) -> None:
    with pytest.raises(InvalidArgument) as raised:
        fitted.fit("kept", X, 0)
    assert raised.value.field == "spec.config.n_clusters"
    assert "got 0" in raised.value.message
    assert_kept(fitted)


def test_empty_data(fitted: Client) -> None:
    with pytest.raises(InvalidArgument) as raised:
        fitted.fit("kept", np.empty((0, 3)), 2)
    assert raised.value.field == "points"
    assert "no points" in raised.value.message
    assert_kept(fitted)


def test_unknown_model(client: Client) -> None:
    with pytest.raises(NotFound) as raised:
        client.predict("missing", X)
    assert raised.value.field == "model"
    assert "'missing'" in raised.value.message
    with pytest.raises(NotFound):
        client.get_model("missing")
    with pytest.raises(NotFound):
        client.delete_model("missing")


def test_unspecified_dtype(stub: pb_grpc.ClusteringServiceStub, fitted: Client) -> None:
    points = pb.Matrix(rows=1, cols=3, data=bytes(12))
    error = raw_error(lambda: stub.Predict(pb.PredictRequest(model="kept", points=points)))
    assert isinstance(error, InvalidArgument)
    assert error.field == "points.dtype"
    assert "DTYPE_UNSPECIFIED" in error.message


def test_byte_count_that_does_not_match_the_shape(stub, fitted: Client) -> None:
    points = pb.Matrix(dtype=pb.DTYPE_FLOAT32, rows=2, cols=3, data=bytes(20))
    error = raw_error(lambda: stub.Predict(pb.PredictRequest(model="kept", points=points)))
    assert isinstance(error, InvalidArgument)
    assert error.field == "points.data"
    assert "20 bytes" in error.message and "24" in error.message


def test_dtype_changing_mid_stream(stub, fitted: Client) -> None:
    spec = pb.FitSpec(model="kept", config=pb.KMeansConfig(n_clusters=2))
    chunks = [
        pb.FitRequest(spec=spec, points=pb.Matrix(dtype=pb.DTYPE_FLOAT64, rows=2, cols=3, data=bytes(48))),
        pb.FitRequest(points=pb.Matrix(dtype=pb.DTYPE_FLOAT32, rows=2, cols=3, data=bytes(24))),
    ]
    error = raw_error(lambda: stub.Fit(iter(chunks)))
    assert isinstance(error, InvalidArgument)
    assert error.field == "points" and "float32" in error.message
    assert_kept(fitted)


def test_first_fit_message_without_spec(stub) -> None:
    chunk = pb.FitRequest(points=pb.Matrix(dtype=pb.DTYPE_FLOAT64, rows=1, cols=1, data=bytes(8)))
    error = raw_error(lambda: stub.Fit(iter([chunk])))
    assert isinstance(error, InvalidArgument) and error.field == "spec"


def test_oversized_request(stub, fitted: Client) -> None:
    rows = 17 * 1024 * 1024 // 24 + 1  # just over the default 16 MiB message limit
    points = pb.Matrix(dtype=pb.DTYPE_FLOAT64, rows=rows, cols=3, data=bytes(rows * 24))
    error = raw_error(lambda: stub.Predict(pb.PredictRequest(model="kept", points=points)))
    assert isinstance(error, ResourceExhausted)
    assert "larger than max" in error.message
    assert_kept(fitted)


def test_point_limit(start_server: ServerFactory) -> None:
    server = start_server(max_points=100)
    with Client(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(ResourceExhausted) as raised:
            client.fit("big", X, 2)
    assert raised.value.field == "spec.n_samples"
    assert "200" in raised.value.message and "100" in raised.value.message


def test_cluster_and_feature_limits(start_server: ServerFactory) -> None:
    server = start_server(max_clusters=4, max_features=2)
    with Client(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(ResourceExhausted) as raised:
            client.fit("big", X, 5)
        assert raised.value.field == "spec.config.n_clusters"
        with pytest.raises(ResourceExhausted) as raised:
            client.fit("wide", X, 2)
        assert raised.value.field == "points.cols"


def test_model_limit(start_server: ServerFactory) -> None:
    server = start_server(max_models=1)
    with Client(f"127.0.0.1:{server.port}") as client:
        client.fit("first", X, 2, seed=0)
        with pytest.raises(ResourceExhausted) as raised:
            client.fit("second", X, 2)
        assert "limit" in raised.value.message
        client.fit("first", X, 3, seed=0)  # refitting an existing model is still allowed


def test_transform_too_large_for_one_message_points_to_streaming(stub, fitted: Client) -> None:
    rows = 1_200_000  # 14.4 MB of points in, 19.2 MB of labels and distances out
    points = pb.Matrix(dtype=pb.DTYPE_FLOAT32, rows=rows, cols=3, data=bytes(rows * 12))
    request = pb.PredictRequest(
        model="kept", points=points, options=pb.PredictOptions(return_transform=True)
    )
    error = raw_error(lambda: stub.Predict(request))
    assert isinstance(error, ResourceExhausted)
    assert error.field == "points.rows" and "PredictStream" in error.message


def test_expected_version_mismatch(fitted: Client) -> None:
    with pytest.raises(Aborted) as raised:
        fitted.fit("kept", X, 2, expected_version=7)
    assert raised.value.field == "expected_version"
    assert raised.value.metadata["current_version"] == "1"
    with pytest.raises(Aborted):
        fitted.delete_model("kept", expected_version=3)
    assert_kept(fitted)


@pytest.mark.parametrize("name", ["", "-leading-dash", "has space", "x" * 129, "slash/name"])
def test_invalid_model_name(client: Client, name: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        client.fit(name, X, 2)
    assert raised.value.field == "spec.model"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n_init": 101}, "spec.config.n_init"),
        ({"max_iter": 100_001}, "spec.config.max_iter"),
        ({"tol": -1.0}, "spec.config.tol"),
        ({"tol": float("nan")}, "spec.config.tol"),
        ({"init": np.zeros((2, 3)), "n_init": 2}, "spec.config.n_init"),
        ({"init": np.zeros((3, 3))}, "spec.config.init_centers.rows"),
        ({"init": np.zeros((2, 4))}, "spec.config.init_centers.cols"),
        ({"sample_weight": -np.ones(200)}, "sample_weight.data"),
        ({"sample_weight": np.zeros(200)}, "sample_weight"),
    ],
)
def test_bad_fit_configuration(fitted: Client, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        fitted.fit("kept", X, 2, **kwargs)
    assert raised.value.field == field
    assert_kept(fitted)


def test_bad_page_requests(client: Client) -> None:
    with pytest.raises(InvalidArgument) as raised:
        client.list_models_page(page_token="not-a-token!")
    assert raised.value.field == "page_token"
    with pytest.raises(InvalidArgument) as raised:
        client.list_models_page(page_size=5000)
    assert raised.value.field == "page_size"


def test_unknown_version(fitted: Client) -> None:
    with pytest.raises(NotFound) as raised:
        fitted.predict("kept", X, version=9)
    assert raised.value.field == "version"


def test_later_stream_messages_cannot_change_the_model(stub, fitted: Client) -> None:
    points = pb.Matrix(dtype=pb.DTYPE_FLOAT64, rows=1, cols=3, data=bytes(24))
    messages = [pb.PredictRequest(model="kept", points=points),
                pb.PredictRequest(model="other", points=points)]
    error = raw_error(lambda: stub.PredictStream(iter(messages)))
    assert isinstance(error, InvalidArgument) and error.field == "model"
    assert "message 1" in error.message


# ---- Patterns the fuzzing of issue 10 found answered as INTERNAL -----------------------


def test_a_version_past_int64_is_not_found(fitted: Client, stub: pb_grpc.ClusteringServiceStub) -> None:
    points = pb.Matrix(dtype=pb.DTYPE_FLOAT64, rows=1, cols=3, data=np.zeros(3).tobytes())
    for call in (
        lambda: stub.Predict(pb.PredictRequest(model="kept", version=2**63, points=points)),
        lambda: stub.PredictStream(iter([pb.PredictRequest(model="kept", version=2**64 - 1, points=points)])),
        lambda: stub.GetModel(pb.GetModelRequest(name="kept", version=2**63)),
    ):
        error = raw_error(call)
        assert isinstance(error, NotFound) and error.field == "version", error
    assert_kept(fitted)


def test_weights_whose_sum_overflows_are_refused(fitted: Client) -> None:
    for weights in (np.full(200, 1e308), np.full(200, 1e200)):
        with pytest.raises(InvalidArgument, match="sample_weight sums to") as refused:
            fitted.fit("kept", X, 3, sample_weight=weights)
        assert refused.value.field == "sample_weight"
    stream = fitted.stream("s", n_clusters=3, init_size=10)
    stream.send(X[:50])
    stream.send(X[:50], sample_weight=np.full(50, 1e308))
    stream.send(X[50:100])
    with pytest.raises(InvalidArgument, match="sample_weight") as refused:
        stream.flush(timeout=30)
    assert refused.value.sequence == 2  # type: ignore[attr-defined]
    stream.close(timeout=30)  # one batch refused; the stream went on
    assert fitted.get_model("s").n_samples_seen == 100
    assert_kept(fitted)


def test_a_palette_model_without_centers_is_refused(fitted: Client) -> None:
    import io

    from PIL import Image

    with fitted.stream("buffering", n_clusters=4, init_size=1000) as stream:
        stream.send(np.zeros((5, 3)))  # buffered: the model exists, without centers
    encoded = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(encoded, format="PNG")
    for dither in (True, False):
        with pytest.raises(FailedPrecondition, match="no centers yet") as refused:
            fitted.quantize_image(encoded.getvalue(), n_colors=4, palette_model="buffering", dither=dither)
        assert refused.value.field == "spec.palette_model"


@pytest.mark.parametrize("method", ["Predict", "GetModel", "ListModels", "DeleteModel"])
def test_bytes_that_are_not_the_request_are_invalid_argument(server, method: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary(f"/centroidal.v1.ClusteringService/{method}")
        with pytest.raises(grpc.RpcError) as raised:
            call(b"\xff\xff\xff\xff\x0f", timeout=10)
    error = error_from_rpc(raised.value)
    assert isinstance(error, InvalidArgument) and error.reason == "UNPARSEABLE_REQUEST"
    assert "is not a valid centroidal.v1." in error.message


@pytest.mark.parametrize("method", ["Fit", "PredictStream", "StreamMiniBatch", "QuantizeImage", "Evaluate", "SuggestK"])
def test_a_stream_message_that_does_not_parse_is_invalid_argument(server, method: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.stream_stream(f"/centroidal.v1.ClusteringService/{method}")
        with pytest.raises(grpc.RpcError) as raised:
            list(call(iter([b"\x0a\x80\x80"]), timeout=10))
    error = error_from_rpc(raised.value)
    assert isinstance(error, InvalidArgument) and "message 0 of the stream" in error.message
