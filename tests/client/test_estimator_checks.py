"""scikit-learn's own estimator checks, run against a real server.

The only expected failures are the ones scikit-learn declares for its KMeans
(sklearn.utils._test_common.instance_generator.PER_ESTIMATOR_XFAIL_CHECKS).
"""

from __future__ import annotations

from collections import Counter

from sklearn.utils.estimator_checks import check_estimator

import numpy as np
import pytest

from centroidal.client import RemoteKMeans, RemoteMiniBatchKMeans, RemoteSpectralClustering
from centroidal.server import CentroidalServer

KMEANS_EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": "sample_weight is not equivalent to removing/repeating samples.",
    "check_sample_weight_equivalence_on_sparse_data": "sample_weight is not equivalent to removing/repeating samples.",
}


@pytest.mark.parametrize("kind", [RemoteKMeans, RemoteMiniBatchKMeans])
def test_passes_check_estimator(server: CentroidalServer, kind: type) -> None:
    estimator = kind(n_clusters=3, target=f"127.0.0.1:{server.port}")
    results = check_estimator(estimator, on_fail=None, expected_failed_checks=KMEANS_EXPECTED_FAILURES)
    failed = [f"{r['check_name']}: {str(r['exception'])[:300]}" for r in results if r["status"] == "failed"]
    assert not failed, "\n".join(failed)
    statuses = Counter(r["status"] for r in results)
    assert statuses["passed"] >= 50, statuses


@pytest.mark.parametrize("n_neighbors", [5, 10])
def test_spectral_clustering_passes_check_estimator(server: CentroidalServer, n_neighbors: int) -> None:
    # scikit-learn declares no expected failures for its SpectralClustering. With its default
    # of 10 neighbours, some checks fit 10 rows: each row's graph then holds every other row.
    estimator = RemoteSpectralClustering(n_clusters=3, n_neighbors=n_neighbors, target=f"127.0.0.1:{server.port}")
    results = check_estimator(estimator, on_fail=None)
    failed = [f"{r['check_name']}: {str(r['exception'])[:300]}" for r in results if r["status"] == "failed"]
    assert not failed, "\n".join(failed)
    assert Counter(r["status"] for r in results)["passed"] >= 40


def test_a_minibatch_fit_is_complete_when_it_returns(server: CentroidalServer) -> None:
    target = f"127.0.0.1:{server.port}"
    X = np.random.default_rng(0).normal(size=(40, 2))
    estimator = RemoteMiniBatchKMeans(n_clusters=4, init_size=1000, target=target)
    with pytest.raises(ValueError, match="sample_weight"):
        estimator.fit(X, sample_weight=np.ones(3))  # a failed first fit ...
    estimator.fit(X)  # ... does not break the next one
    assert estimator.cluster_centers_.shape == (4, 2)  # fewer points than init_size: seeded anyway
    assert estimator.labels_.shape == (40,)
    estimator.close()
