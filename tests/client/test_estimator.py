"""RemoteKMeans behaves like sklearn.cluster.KMeans with one changed line."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError

from centroidal.client import RemoteKMeans
from centroidal.server import CentroidalServer

X, _ = make_blobs(300, centers=4, cluster_std=0.6, random_state=0)


@pytest.fixture
def target(server: CentroidalServer, monkeypatch: pytest.MonkeyPatch) -> str:
    address = f"127.0.0.1:{server.port}"
    monkeypatch.setenv("CENTROIDAL_TARGET", address)
    return address


def test_drop_in_for_sklearn_kmeans(target: str) -> None:
    ours = RemoteKMeans(n_clusters=4, random_state=0).fit(X)
    ref = KMeans(n_clusters=4, random_state=0).fit(X)
    assert ours.cluster_centers_.shape == ref.cluster_centers_.shape
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)
    assert ours.n_features_in_ == 2 and ours.n_iter_ >= 1
    np.testing.assert_array_equal(ours.predict(X), ours.labels_)
    assert ours.transform(X[:3]).shape == (3, 4)
    assert ours.score(X) == pytest.approx(-ours.inertia_, rel=1e-9)
    np.testing.assert_array_equal(ours.fit_predict(X), ours.labels_)
    assert ours.model_name_.startswith("remote-kmeans-")


def test_named_model_is_stored_under_that_name(target: str) -> None:
    estimator = RemoteKMeans(3, model_name="named", random_state=1).fit(X)
    assert estimator.model_name_ == "named" and estimator.version_ == 1


def test_params_round_trip_and_clone(target: str) -> None:
    estimator = RemoteKMeans(5, max_iter=50, random_state=3)
    params = estimator.get_params()
    assert params["n_clusters"] == 5 and params["max_iter"] == 50 and params["target"] is None
    copy = clone(estimator)
    assert copy.get_params() == params
    assert estimator.set_params(n_clusters=6) is estimator and estimator.n_clusters == 6
    with pytest.raises(ValueError, match="Invalid parameter"):
        estimator.set_params(colour="red")
    assert repr(estimator) == "RemoteKMeans(max_iter=50, n_clusters=6, random_state=3)"


def test_unfitted_estimator_refuses_to_predict(target: str) -> None:
    with pytest.raises(NotFittedError):
        RemoteKMeans(3).predict(X)


def test_fitted_estimator_pickles_without_its_channel(target: str) -> None:
    estimator = RemoteKMeans(3, random_state=0).fit(X)
    restored = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(restored.predict(X), estimator.labels_)


def test_refit_replaces_its_own_model(target: str) -> None:
    estimator = RemoteKMeans(3, random_state=0).fit(X)
    name = estimator.model_name_
    estimator.set_params(n_clusters=4).fit(X)
    assert estimator.model_name_ == name and estimator.version_ == 2
    assert estimator.cluster_centers_.shape == (4, 2)
    estimator.delete_model()
    with pytest.raises(NotFittedError):
        estimator.predict(X)


def test_remote_minibatch_kmeans_learns_like_sklearn(target: str) -> None:
    from sklearn.cluster import MiniBatchKMeans

    from centroidal.client import RemoteMiniBatchKMeans

    data, _ = make_blobs(6000, centers=5, n_features=3, cluster_std=0.8, random_state=4)
    batches = [data[i : i + 500] for i in range(0, len(data), 500)]
    ours = RemoteMiniBatchKMeans(5, random_state=2, ephemeral=False)  # kept across its closes
    ref = MiniBatchKMeans(5, random_state=2, n_init=1)
    for batch in batches:
        assert ours.partial_fit(batch) is ours
        ref.partial_fit(batch)
    assert ours.n_steps_ == 12 and ours.n_samples_seen_ == 6000 and ours.n_features_in_ == 3
    assert ours.cluster_centers_.shape == (5, 3)
    assert -ours.score(data) <= 1.02 * -ref.score(data)
    assert ours.predict(data[:10]).shape == (10,) and ours.transform(data[:4]).shape == (4, 5)
    with pytest.raises(ValueError, match="X has 2 features, but RemoteMiniBatchKMeans is expecting 3"):
        ours.partial_fit(data[:10, :2])
    # clone keeps the parameters; pickling drops the connection and the stream.
    assert clone(ours).get_params() == ours.get_params()
    restored = pickle.loads(pickle.dumps(ours))
    np.testing.assert_array_equal(restored.cluster_centers_, ours.cluster_centers_)
    # The restored copy is a producer of its own; the original keeps its identity and
    # sequence across a new stream.
    restored.partial_fit(data[:500])
    assert restored.n_samples_seen_ == 6500 and restored.producer_id_ != ours.producer_id_
    restored.close()
    ours.close()
    ours.partial_fit(data[:500])  # a new stream, the same producer: sequence 15, not 1
    assert ours.n_samples_seen_ == 7000
    ours.close()
    name = ours.model_name_
    refit = ours.fit(data)  # a new model under the same name, from batches drawn at random
    # Seeded from 3 * batch_size rows, then batch_size rows a step.
    assert refit.model_name_ == name and refit.n_samples_seen_ == 3072 + 1024 * refit.n_steps_
    ours.close()
    ours.delete_model()
    with pytest.raises(NotFittedError):
        ours.predict(data)


def test_minibatch_fit_draws_at_random_so_row_order_does_not_matter(target: str) -> None:
    """An image's pixels, row by row, or rows sorted by group: one pass in order seeded the
    model from the first rows alone (the China photo: MSE 715 against scikit-learn's 119)."""
    from sklearn.cluster import MiniBatchKMeans

    from centroidal.client import RemoteMiniBatchKMeans

    data, groups = make_blobs(20_000, centers=6, n_features=3, cluster_std=0.5, random_state=7)
    ordered = data[np.argsort(groups, kind="stable")]
    for seed in range(3):
        ours = RemoteMiniBatchKMeans(6, batch_size=512, random_state=seed).fit(ordered)
        ref = MiniBatchKMeans(6, batch_size=512, random_state=seed, n_init=1).fit(ordered)
        assert ours.inertia_ <= 1.05 * ref.inertia_, (seed, ours.inertia_, ref.inertia_)
        assert 0 < ours.n_steps_ <= 100 * 20_000 // 512  # max_iter passes at most, stopped early
        assert ours.inertia_ == pytest.approx(-ours.score(ordered), rel=1e-9)
        ours.close()


def test_cosine_estimators_score_by_cosine_distance(target: str) -> None:
    from centroidal.client import RemoteMiniBatchKMeans

    directions = X - X.mean(axis=0)
    ours = RemoteKMeans(n_clusters=4, metric="cosine", random_state=0).fit(directions)
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    centers = ours.cluster_centers_ / np.linalg.norm(ours.cluster_centers_, axis=1, keepdims=True)
    cosine = 1.0 - unit @ centers.T
    np.testing.assert_allclose(ours.transform(directions), cosine, atol=1e-9)
    np.testing.assert_array_equal(ours.labels_, cosine.argmin(axis=1))
    assert ours.score(directions) == pytest.approx(-ours.inertia_, rel=1e-9)
    assert ours.get_params()["metric"] == "cosine"
    streamed = RemoteMiniBatchKMeans(n_clusters=4, metric="cosine", batch_size=50, random_state=0)
    try:
        streamed.fit(directions)
        assert streamed.client.get_model(streamed.model_name_).metric == "cosine"
        np.testing.assert_allclose(np.linalg.norm(streamed.cluster_centers_, axis=1), 1.0)
    finally:
        streamed.close()


def test_dataframes_name_features_in_and_out(target: str) -> None:
    import pandas as pd

    frame = pd.DataFrame(X, columns=["width", "height"])
    ours = RemoteKMeans(n_clusters=4, random_state=0).fit(frame)
    assert list(ours.feature_names_in_) == ["width", "height"]
    assert list(ours.get_feature_names_out()) == [f"remotekmeans{i}" for i in range(4)]
    ours.set_output(transform="pandas")
    distances = ours.transform(frame)
    assert isinstance(distances, pd.DataFrame)
    assert list(distances.columns) == [f"remotekmeans{i}" for i in range(4)]
    np.testing.assert_allclose(distances.to_numpy(), KMeans(4, init=ours.cluster_centers_, n_init=1).fit(X).transform(X),
                               rtol=1e-6)
    with pytest.warns(UserWarning, match="feature names"):
        ours.predict(X)  # fitted with names, given none: scikit-learn's warning
    with pytest.raises(ValueError, match="feature names"):
        ours.predict(frame.rename(columns={"width": "w"}))
