"""Values a call cannot take: NaN, Inf, values too large to square, negative weights.
Each is refused as INVALID_ARGUMENT naming the field (and the row where it can), and the
model stored before it is kept."""

from __future__ import annotations

import numpy as np
import pytest

from centroidal.client import Client, InvalidArgument, NotFound
from centroidal.engine import kmeans
from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc
from tests.server.refusals import X, assert_kept, raw_error


def test_nan_in_fit_data(fitted: Client) -> None:
    bad = X.copy()
    bad[17, 2] = np.nan
    with pytest.raises(InvalidArgument) as raised:
        fitted.fit("kept", bad, 3)
    assert raised.value.field == "points.data"
    assert "row 17" in raised.value.message
    assert_kept(fitted)


@pytest.mark.parametrize("value, said", [(np.nan, "1 NaN or Inf values (first at row 11234)"),
                                         (-np.inf, "1 NaN or Inf values (first at row 11234)"),
                                         (1e200, "as large as 1e+200")])
def test_bad_value_in_a_middle_chunk_of_an_upload(server, value: float, said: str) -> None:
    """A fit that declares its rows has each chunk's values checked as it arrives: a bad
    value in a chunk neither first nor last is still refused, named by its row in the whole
    upload; without it, the same chunks fit the model the engine fits in process."""
    rows = np.random.default_rng(3).normal(size=(20_000, 4))  # float64: 20 chunks of 32 KiB
    with Client(f"127.0.0.1:{server.port}", chunk_bytes=32 * 1024, timeout=30) as chunked:
        bad = rows.copy()
        bad[11_234, 1] = value
        with pytest.raises(InvalidArgument) as raised:
            chunked.fit("middle-chunk", bad, 3, seed=0)
        assert raised.value.field == "points.data"
        assert said in raised.value.message
        with pytest.raises(NotFound):
            chunked.get_model("middle-chunk")
        fitted = chunked.fit("middle-chunk", rows, 3, seed=0)
    expected = kmeans.fit(rows, 3, seed=0)
    np.testing.assert_array_equal(fitted.centers, expected.centers)


def test_inf_in_predict_points(fitted: Client) -> None:
    bad = X[:10].copy()
    bad[4, 0] = np.inf
    with pytest.raises(InvalidArgument) as raised:
        fitted.predict("kept", bad)
    assert raised.value.field == "points.data"
    assert "row 4" in raised.value.message


def test_float32_values_too_large_to_square(fitted: Client) -> None:
    huge = np.array([[3e19, 0.0, 0.0]], dtype=np.float32)
    with pytest.raises(InvalidArgument) as raised:
        fitted.predict("kept", huge.astype(np.float32))
    assert raised.value.field == "points.data" and "3e+19" in raised.value.message
    labels = fitted.predict("kept", huge.astype(np.float64))  # float64 copes
    assert labels.shape == (1,)


def test_float64_values_whose_squares_overflow(fitted: Client, stub: pb_grpc.ClusteringServiceStub) -> None:
    """Points near 1e200 are finite, but their squared distances are not: every call that
    takes points refuses them, naming the field, rather than answer inertia=inf or INTERNAL."""
    huge = X.copy()
    huge[5, 1] = 1e200
    spectral_model = fitted.fit("moons", X, 2, algorithm="spectral", seed=0)
    calls = {
        "Fit": lambda: fitted.fit("kept", huge, 3),
        "Evaluate": lambda: fitted.evaluate("kept", huge),
        "SuggestK": lambda: fitted.suggest_k(huge, [2, 3]),
        "Predict": lambda: fitted.predict("kept", huge),
        "Predict spectral": lambda: fitted.predict("moons", huge),
        "Evaluate spectral": lambda: fitted.evaluate("moons", huge),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidArgument) as raised:
            call()
        assert raised.value.field == "points.data", name
        assert "1e+200" in raised.value.message and "float64" in raised.value.message, name
    for model in ("kept", "moons"):
        request = pb.PredictRequest(model=model, points=pb.Matrix(
            rows=200, cols=3, dtype=pb.DTYPE_FLOAT64, data=huge.tobytes()))
        error = raw_error(lambda: stub.PredictStream(iter([request])))
        assert isinstance(error, InvalidArgument) and error.field == "points.data", error
    with fitted.stream("streamed", n_clusters=3, init_size=10) as stream:
        stream.send(huge)
        with pytest.raises(InvalidArgument) as raised:
            stream.flush(timeout=30)
        assert raised.value.field == "batch.points.data"
    assert fitted.get_model("moons").version == spectral_model.version
    assert_kept(fitted)


def test_negative_weight_is_located(fitted: Client) -> None:
    weights = np.ones(200)
    weights[42] = -3.0
    with pytest.raises(InvalidArgument) as raised:
        fitted.fit("kept", X, 2, sample_weight=weights)
    assert "value 42" in raised.value.message and "-3.0" in raised.value.message
    assert_kept(fitted)
