"""Spectral clustering as a fitted model, through a real server: two moons, new points
labelled by their training neighbours, and the limits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.datasets import make_moons
from sklearn.metrics import adjusted_rand_score

from centroidal.client import (
    Client,
    FailedPrecondition,
    InvalidArgument,
    RemoteSpectralClustering,
    ResourceExhausted,
)
from centroidal.engine import spectral
from centroidal.server import CentroidalServer
from tests.conftest import ServerFactory

MOONS, TRUTH = make_moons(200, noise=0.05, random_state=0)


def test_two_moons_are_separated_where_kmeans_fails(client: Client) -> None:
    fitted = client.fit("moons", MOONS, 2, algorithm="spectral", seed=0, return_labels=True)
    assert adjusted_rand_score(fitted.labels, TRUTH) == 1.0
    reference = SpectralClustering(2, affinity="nearest_neighbors", random_state=0).fit(MOONS)
    assert adjusted_rand_score(fitted.labels, reference.labels_) == 1.0
    plain = client.fit("moons-kmeans", MOONS, 2, seed=0, return_labels=True)
    assert adjusted_rand_score(plain.labels, TRUTH) == pytest.approx(
        adjusted_rand_score(KMeans(2, random_state=0).fit(MOONS).labels_, TRUTH), abs=0.05
    )
    assert adjusted_rand_score(plain.labels, TRUTH) < 0.5
    model = client.get_model("moons", include_centers=True)
    assert model.kind == "spectral" and model.settings()["algorithm"] == "spectral"
    assert model.settings()["n_neighbors"] == 10 and model.settings()["n_init"] == 10
    for cluster in range(2):  # the centers are the clusters' means
        np.testing.assert_allclose(model.centers[cluster], MOONS[fitted.labels == cluster].mean(axis=0))


def test_new_points_are_labelled_by_their_training_neighbours(start_server: ServerFactory) -> None:
    server = start_server()
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:
        fitted = client.fit("moons", MOONS, 2, algorithm="spectral", seed=0, return_labels=True)
        np.testing.assert_array_equal(client.predict("moons", MOONS), fitted.labels)
        fresh, fresh_truth = make_moons(500, noise=0.05, random_state=1)
        labels = client.predict("moons", fresh)
        assert adjusted_rand_score(labels, fresh_truth) == 1.0
        with pytest.raises(FailedPrecondition) as raised:
            client.predict("moons", fresh, return_distance=True)
        assert raised.value.reason == "SPECTRAL_MODEL"
        scores = client.evaluate("moons", fresh).scores
        assert scores.n_clusters_present == 2
    server.stop(5)
    server = start_server()
    with Client(f"127.0.0.1:{server.port}", timeout=30) as client:  # the rows survive a restart
        np.testing.assert_array_equal(client.predict("moons", fresh), labels)


def test_the_naive_vote_matches_the_engines(client: Client) -> None:
    fitted = client.fit("moons", MOONS, 2, algorithm="spectral", seed=0, return_labels=True)
    fresh, _ = make_moons(300, noise=0.2, random_state=2)
    gaps = ((fresh[:, None, :] - MOONS[None, :, :]) ** 2).sum(axis=2)
    nearest = np.argsort(gaps, axis=1, kind="stable")[:, :10]
    votes = np.stack([(fitted.labels[nearest] == c).sum(axis=1) for c in range(2)], axis=1)
    expected = np.where(votes[:, 0] == votes[:, 1], fitted.labels[nearest[:, 0]], votes.argmax(axis=1))
    np.testing.assert_array_equal(client.predict("moons", fresh), expected)


def test_spectral_limits_and_refusals(client: Client) -> None:
    too_many = np.random.default_rng(0).normal(size=(spectral.MAX_POINTS + 1, 2))
    with pytest.raises(ResourceExhausted) as raised:
        client.fit("big", too_many, 2, algorithm="spectral")
    assert raised.value.field == "spec.n_samples"
    cases = [
        (dict(n_clusters=200), "spec.config.n_clusters"),
        (dict(n_clusters=2, metric="cosine"), "spec.config.metric"),
        (dict(n_clusters=2, init="random"), "spec.config.init"),
        (dict(n_clusters=2, sample_weight=np.ones(len(MOONS))), "sample_weight"),
        (dict(n_clusters=2, n_neighbors=1), "spec.config.n_neighbors"),
        (dict(n_clusters=2, n_neighbors=500), "spec.config.n_neighbors"),
    ]
    for arguments, field in cases:
        k = arguments.pop("n_clusters")
        with pytest.raises(InvalidArgument) as raised:
            client.fit("bad", MOONS, k, algorithm="spectral", **arguments)
        assert raised.value.field == field, arguments
    with pytest.raises(ValueError, match="algorithm must be one of"):
        client.fit("bad", MOONS, 2, algorithm="dbscan")


def test_remote_spectral_clustering_estimator(server: CentroidalServer) -> None:
    estimator = RemoteSpectralClustering(n_clusters=2, random_state=0, target=f"127.0.0.1:{server.port}")
    labels = estimator.fit_predict(MOONS)
    assert adjusted_rand_score(labels, TRUTH) == 1.0
    np.testing.assert_array_equal(estimator.predict(MOONS), labels)
    assert estimator.get_params()["n_neighbors"] == 10
    estimator.close()
