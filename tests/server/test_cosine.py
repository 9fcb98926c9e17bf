"""The cosine metric through a real server: Fit, Predict, StreamMiniBatch, and the model
recording it across a restart."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from centroidal.client import Client, InvalidArgument
from tests.conftest import ServerFactory
from tests.engine.test_cosine import embeddings, unit


def test_a_cosine_fit_is_recorded_and_predicts_by_direction(start_server: ServerFactory) -> None:
    X, truth = embeddings()
    server = start_server()
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        result = client.fit("emb", X.astype(np.float32), 6, metric="cosine", seed=0, return_labels=True)
        reference = KMeans(6, n_init=1, random_state=0).fit(unit(X))
        assert adjusted_rand_score(result.labels, reference.labels_) == 1.0
        assert adjusted_rand_score(result.labels, truth) == 1.0
        assert result.model.metric == "cosine"
        labels, distances = client.predict("emb", 1e3 * X[:50], return_distance=True)
        np.testing.assert_array_equal(labels, result.labels[:50])
        cosine = 1.0 - unit(X[:50]) @ unit(result.centers.astype(np.float64)).T
        np.testing.assert_allclose(distances, cosine.min(axis=1), atol=1e-6)
        np.testing.assert_allclose(client.transform("emb", X[:50]), cosine, atol=1e-6)
    server.stop(5)
    server = start_server()
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        model = client.get_model("emb")
        assert model.metric == "cosine" and model.settings()["metric"] == "cosine"
        np.testing.assert_array_equal(client.predict("emb", X[:50]), result.labels[:50])


def test_zero_length_rows_are_refused_naming_the_row(client: Client) -> None:
    X, _ = embeddings(n=400)
    bad = X.copy()
    bad[123] = 0.0
    with pytest.raises(InvalidArgument, match="points row 123 has zero length") as raised:
        client.fit("emb", bad, 3, metric="cosine")
    assert raised.value.field == "points.data"
    client.fit("emb", X, 3, metric="cosine", seed=0)
    with pytest.raises(InvalidArgument, match="points row 123") as raised:
        client.predict("emb", bad)
    assert raised.value.field == "points.data"
    # Euclidean models take zero rows as any other point.
    client.fit("plain", bad, 3, seed=0)
    assert client.get_model("plain").metric == "euclidean"


def test_a_streamed_cosine_model_keeps_unit_centers(client: Client) -> None:
    X, truth = embeddings(n=6000, seed=5)
    with client.stream("live", n_clusters=6, metric="cosine", seed=0) as stream:
        for start in range(0, X.shape[0], 500):
            stream.send(X[start : start + 500])
    model = client.get_model("live", include_centers=True)
    assert model.metric == "cosine" and model.settings()["metric"] == "cosine"
    assert model.centers is not None
    np.testing.assert_allclose(np.linalg.norm(model.centers, axis=1), 1.0, rtol=1e-12)
    assert adjusted_rand_score(client.predict("live", X), truth) == 1.0
    bad = X[:20].copy()
    bad[7] = 0.0
    with pytest.raises(InvalidArgument, match="points row 7 has zero length") as raised:
        with client.stream("live") as stream:
            stream.send(bad)
    assert raised.value.field == "batch.points.data"
