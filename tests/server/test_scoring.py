"""Evaluate and SuggestK through a real server, against scikit-learn's metrics."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import make_blobs

from centroidal.client import (
    Client,
    FailedPrecondition,
    InvalidArgument,
    KScore,
    NotFound,
    ResourceExhausted,
)
from centroidal.server import CentroidalServer
from tests.client.test_sdk import wait_until

BLOBS, _ = make_blobs(n_samples=300, centers=4, cluster_std=0.60, random_state=0)


def test_evaluate_matches_scikit_learn_on_the_models_labels(client: Client) -> None:
    X, _ = make_blobs(3000, centers=6, n_features=5, cluster_std=2.0, random_state=1)
    fitted = client.fit("six", X.astype(np.float32), 6, seed=0)
    held_out = X[1000:].astype(np.float32)
    evaluation = client.evaluate("six", held_out)
    labels = client.predict("six", held_out)
    scores = evaluation.scores
    assert evaluation.version == fitted.version and evaluation.n_samples == 2000
    assert scores.silhouette == pytest.approx(metrics.silhouette_score(held_out, labels), abs=1e-6)
    assert scores.calinski_harabasz == pytest.approx(metrics.calinski_harabasz_score(held_out, labels), rel=1e-6)
    assert scores.davies_bouldin == pytest.approx(metrics.davies_bouldin_score(held_out, labels), abs=1e-6)
    assert scores.silhouette_rows == 2000 and scores.n_clusters_present == 6
    _, distances = client.predict("six", held_out, return_distance=True)
    assert evaluation.inertia == pytest.approx(float((distances.astype(np.float64) ** 2).sum()), rel=1e-6)


def test_evaluate_samples_as_scikit_learn_does_and_can_score_every_row(client: Client) -> None:
    X, _ = make_blobs(2500, centers=3, n_features=4, random_state=2)
    client.fit("three", X, 3, seed=0)
    labels = client.predict("three", X)
    sampled = client.evaluate("three", X, silhouette_sample_size=500, seed=11)
    assert sampled.scores.silhouette_rows == 500
    assert sampled.scores.silhouette == pytest.approx(
        metrics.silhouette_score(X, labels, sample_size=500, random_state=11), abs=1e-9
    )
    every = client.evaluate("three", X, silhouette_sample_size=None)
    assert every.scores.silhouette_rows == 2500
    assert every.scores.silhouette == pytest.approx(metrics.silhouette_score(X, labels), abs=1e-9)


def test_evaluate_a_cosine_model_uses_cosine_distance(client: Client) -> None:
    X = BLOBS - BLOBS.mean(axis=0)
    client.fit("angles", X, 4, metric="cosine", seed=0)
    labels = client.predict("angles", X)
    scores = client.evaluate("angles", X).scores
    assert scores.silhouette == pytest.approx(metrics.silhouette_score(X, labels, metric="cosine"), abs=1e-9)


def test_scores_are_absent_where_undefined(client: Client) -> None:
    client.fit("blobs", BLOBS, 4, seed=0)
    one_cluster = BLOBS[client.predict("blobs", BLOBS) == 0]
    evaluation = client.evaluate("blobs", one_cluster)
    assert evaluation.scores.n_clusters_present == 1
    assert evaluation.scores.silhouette is None
    assert evaluation.scores.calinski_harabasz is None and evaluation.scores.davies_bouldin is None
    assert evaluation.inertia > 0


def test_evaluate_refuses_bad_input_by_field(client: Client) -> None:
    client.fit("blobs", BLOBS, 4, seed=0)
    with pytest.raises(NotFound) as raised:
        client.evaluate("missing", BLOBS)
    assert raised.value.field == "spec.model"
    with pytest.raises(FailedPrecondition) as raised:
        client.evaluate("blobs", np.ones((10, 3)))
    assert raised.value.field == "points.cols" and raised.value.reason == "FEATURE_MISMATCH"
    bad = BLOBS.copy()
    bad[5, 1] = np.nan
    with pytest.raises(InvalidArgument) as raised:
        client.evaluate("blobs", bad)
    assert raised.value.field == "points.data"
    assert client.get_model("blobs").version == 1


def test_rows_read_in_place_give_the_same_evaluation_and_suggestion(server: CentroidalServer, client: Client) -> None:
    # The SDK sends the spec, then the rows: by default these 384 KB in one message, which
    # the server reads in place (codec.read_evaluate_request, read_suggest_k_request); in
    # chunks of 32 KB, under codec.wire.READ_IN_PLACE_BYTES, protobuf parses each.
    X, _ = make_blobs(3000, centers=4, n_features=16, random_state=3)
    client.fit("chunked", X, 4, seed=0)
    with Client(f"127.0.0.1:{server.port}", chunk_bytes=32 * 1024) as chunked:
        evaluation = chunked.evaluate("chunked", X, silhouette_sample_size=None)
        whole = client.evaluate("chunked", X, silhouette_sample_size=None)
        assert (evaluation.version, evaluation.n_samples) == (whole.version, 3000)
        assert (evaluation.inertia, evaluation.scores) == (whole.inertia, whole.scores)
        suggestion = chunked.suggest_k(X, [2, 3, 4, 5], seed=0)
    assert suggestion.per_k == client.suggest_k(X, [2, 3, 4, 5], seed=0).per_k
    assert suggestion.recommended_k == 4


def test_suggest_k_picks_four_on_the_walkthroughs_blobs_and_can_keep_the_fit(client: Client) -> None:
    events: list[object] = []
    suggestion = client.suggest_k(BLOBS, range(2, 13), seed=0, save_best_as="best", on_progress=events.append)
    assert suggestion.recommended_k == 4 and suggestion.elbow_k == 4
    assert [entry.n_clusters for entry in suggestion.per_k] == list(range(2, 13))
    streamed = [event for event in events if isinstance(event, KScore)]
    assert [entry.n_clusters for entry in streamed] == list(range(2, 13))
    assert {event.n_clusters for event in events if not isinstance(event, KScore)} >= set(range(2, 13))
    assert "highest silhouette" in suggestion.rule
    saved = suggestion.saved
    assert saved is not None and saved.name == "best" and saved.n_clusters == 4
    labels = client.predict("best", BLOBS)
    four = suggestion.per_k[2]
    assert four.scores.silhouette == pytest.approx(metrics.silhouette_score(BLOBS, labels), abs=1e-9)
    assert four.inertia == pytest.approx(client.get_model("best").inertia)


def test_suggest_k_takes_random_init_as_the_contract_allows(client: Client) -> None:
    suggestion = client.suggest_k(BLOBS, range(3, 6), init="random", seed=0, save_best_as="random-best")
    assert suggestion.recommended_k == 4
    saved = client.get_model("random-best")
    # The stored config says how the kept fit ran: random starts, 10 of them by default.
    assert saved.config is not None and (saved.config.init, saved.config.n_init) == ("random", 10)
    with pytest.raises(ValueError, match="each k needs its own centers"):
        client.suggest_k(BLOBS, range(3, 6), init="given")


def test_suggest_k_refuses_bad_specs_by_field(client: Client) -> None:
    cases = [
        (dict(k_range=range(1, 4)), InvalidArgument, "spec.k_min"),
        (dict(k_range=range(2, 80)), ResourceExhausted, "spec.k_max"),
        (dict(k_range=range(2, 6), n_init=101), InvalidArgument, "spec.config.n_init"),
        (dict(k_range=range(2, 6), save_best_as="bad name"), InvalidArgument, "spec.save_best_as"),
    ]
    for arguments, error, field in cases:
        with pytest.raises(error) as raised:
            client.suggest_k(BLOBS, **arguments)
        assert raised.value.field == field, arguments
    with pytest.raises(InvalidArgument) as raised:
        client.suggest_k(BLOBS[:6], range(2, 7))
    assert raised.value.field == "spec.k_max"
    with pytest.raises(ValueError, match="consecutive"):
        client.suggest_k(BLOBS, [2, 4, 8])


def test_a_cancelled_suggest_k_stops_and_frees_its_slot(server: CentroidalServer, client: Client) -> None:
    X, _ = make_blobs(60_000, centers=20, n_features=8, random_state=3)
    started = threading.Event()

    def stop_on_first_score(event: object) -> None:
        if isinstance(event, KScore):
            started.set()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        client.suggest_k(X, range(2, 40), seed=0, on_progress=stop_on_first_score)
    assert started.is_set()
    # The engine stops within a step of the cancel (this waits, it does not time it).
    wait_until(lambda: server.servicer.fits_in_flight == 0)
    assert server.servicer.last_stopped_fit_iteration is not None
    assert client.suggest_k(BLOBS, range(3, 5), seed=0).recommended_k == 4


def test_a_64_bit_seed_is_a_seed_not_a_server_fault(client: Client) -> None:
    client.fit("blobs", BLOBS, 4, seed=0)
    big = 2**64 - 1
    assert client.evaluate("blobs", BLOBS, silhouette_sample_size=50, seed=big).scores.silhouette_rows == 50
    assert client.suggest_k(BLOBS, range(3, 5), seed=big, silhouette_sample_size=50).recommended_k == 4
