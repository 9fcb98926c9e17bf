"""Invariants of Lloyd's algorithm, checked on generated data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from centroidal.engine import kmeans
from tests import naive


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    n_features = draw(st.integers(1, 4))
    n_samples = draw(st.integers(2, 60))
    n_clusters = draw(st.integers(1, min(5, n_samples)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    X = draw(
        hnp.arrays(
            dtype,
            (n_samples, n_features),
            elements=st.floats(-100, 100, allow_nan=False, width=32),
        )
    )
    return X, n_clusters


SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(problems(), st.integers(0, 2**32 - 1))
def test_every_point_is_assigned_its_nearest_center(problem: tuple, seed: int) -> None:
    X, k = problem
    result = kmeans.fit(X, k, seed=seed)
    distances = naive.sq_distances(X, result.centers)
    chosen = distances[np.arange(len(X)), result.labels]
    scale = 1e-4 if X.dtype == np.float32 else 1e-9
    assert np.all(chosen <= distances.min(axis=1) * (1 + scale) + scale)


@SETTINGS
@given(problems(), st.integers(0, 2**32 - 1))
def test_converged_centers_are_the_means_of_their_points(problem: tuple, seed: int) -> None:
    X, k = problem
    result = kmeans.fit(X, k, seed=seed, tol=0, max_iter=1000)
    means = naive.cluster_means(X, result.labels, k)
    # Distances are taken as |x|^2 - 2x.c + |c|^2: points closer than about sqrt(eps) times
    # the data's scale are told apart only up to rounding, and may share a center, which is
    # then off their mean by up to that much (sqrt(eps) is 3.5e-4 in float32, 1.5e-8 in
    # float64). Found by hypothesis: float32 rows 0, 0, 0.0039, 0.0039 and 36, k=5.
    scale = float(np.abs(X).max()) if X.size else 0.0
    atol = max(1e-3, 4e-4 * scale) if X.dtype == np.float32 else max(1e-9, 1e-7 * scale)
    for center, mean in zip(result.centers, means):
        if mean is not None:
            np.testing.assert_allclose(center, mean, rtol=1e-5, atol=atol)


@SETTINGS
@given(problems(), st.integers(0, 2**32 - 1))
def test_inertia_never_rises_across_iterations(problem: tuple, seed: int) -> None:
    X, k = problem
    inertias: list[float] = []

    def record(event: kmeans.Progress) -> None:
        if event.stage is kmeans.Stage.ITERATION:
            inertias.append(event.inertia)

    result = kmeans.fit(X, k, seed=seed, tol=0, max_iter=200, on_progress=record)
    inertias.append(result.inertia)
    # An iteration's inertia is read off the values that chose each row's center: good to
    # the dtype's rounding of |x - s|^2 + |c - s|^2, where s is the centers' mean, so at most
    # about eps * n * (the data's diameter)^2 off, or the dtype's smallest normal number per
    # row where squares underflow. The final inertia is exact.
    diameter_sq = float((np.ptp(X.astype(np.float64), axis=0) ** 2).sum())
    eps = 1e-6 if X.dtype == np.float32 else 1e-14
    slack = len(X) * (eps * diameter_sq + float(np.finfo(X.dtype).tiny))
    for before, after in zip(inertias, inertias[1:]):
        assert after <= before * (1 + eps) + slack
    exact = naive.sq_distances(X, result.centers)[np.arange(len(X)), result.labels].sum()
    assert result.inertia == pytest.approx(exact, rel=1e-9, abs=1e-12)
