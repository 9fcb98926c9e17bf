"""Mini-batch k-means against scikit-learn's MiniBatchKMeans, and its own guarantees."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans
from sklearn.datasets import make_blobs

from centroidal.engine import InvalidInputError, _sums, ministep
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState
from centroidal.engine.validation import UNIT_WEIGHTS, read_only
from tests import naive


def batches_of(X: np.ndarray, size: int) -> list[np.ndarray]:
    return [X[start : start + size] for start in range(0, len(X), size)]


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    X, _ = make_blobs(6000, n_features=5, centers=10, cluster_std=1.2, random_state=11)
    return X[np.random.default_rng(0).permutation(len(X))]


def inertia(X: np.ndarray, centers: np.ndarray) -> float:
    return float(naive.sq_distances(X, centers).min(axis=1).sum())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_updates_match_sklearn_from_the_same_centers(stream: np.ndarray, dtype: type) -> None:
    X = stream.astype(dtype)
    init = X[:10].copy()
    ours = MiniBatchState(MiniBatchParams(10, reassignment_ratio=0.0), 5, np.dtype(dtype))
    ours.start_from(init)
    ref = MiniBatchKMeans(10, init=init, n_init=1, reassignment_ratio=0.0)
    for batch in batches_of(X, 500):
        outcome = ours.partial_fit(*ours.check_batch(batch))
        ref.partial_fit(batch)
        assert outcome.batch_inertia > 0
    tolerance = 1e-4 if dtype is np.float32 else 1e-9
    np.testing.assert_allclose(ours.centers, ref.cluster_centers_, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(ours.counts, ref._counts, rtol=tolerance)
    assert ours.n_samples_seen == len(X) and ours.n_batches == 12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_inertia_is_against_the_centers_before_the_batch(stream: np.ndarray, dtype: type) -> None:
    """Read off the scan's values, it agrees with the exact inertia to the dtype's rounding."""
    X = (stream + 100.0).astype(dtype)  # far from the origin, as float32 rounding dislikes
    weights = np.random.default_rng(4).uniform(0.5, 2.0, len(X))
    state = MiniBatchState(MiniBatchParams(10, reassignment_ratio=0.0), 5, np.dtype(dtype))
    state.start_from(X[:10].copy())
    tolerance = 1e-5 if dtype is np.float32 else 1e-12
    for batch, batch_weights in zip(batches_of(X, 500), batches_of(weights, 500)):
        nearest = naive.sq_distances(batch.astype(np.float64), state.centers.astype(np.float64)).min(axis=1)
        expected = float((nearest * batch_weights).sum())
        outcome = state.partial_fit(*state.check_batch(batch, batch_weights))
        assert outcome.batch_inertia == pytest.approx(expected, rel=tolerance)


def test_default_learning_is_as_good_as_sklearn(stream: np.ndarray) -> None:
    ours = MiniBatchState(MiniBatchParams(10, seed=3), 5, np.dtype(np.float64))
    ref = MiniBatchKMeans(10, random_state=3, n_init=1)
    for batch in batches_of(stream, 256):
        ours.partial_fit(*ours.check_batch(batch))
        ref.partial_fit(batch)
    assert inertia(stream, ours.centers) <= 1.02 * inertia(stream, ref.cluster_centers_)


def test_starved_centers_are_reassigned() -> None:
    X, _ = make_blobs(4000, n_features=2, centers=4, cluster_std=0.3, random_state=2)
    state = MiniBatchState(MiniBatchParams(4, reassignment_ratio=0.05, seed=1), 2, X.dtype)
    # Three centers far from the data: only one absorbs points until the others move.
    state.start_from(np.array([[0.0, 0.0], [1e3, 1e3], [1e3, -1e3], [-1e3, 1e3]]) + X.mean(axis=0))
    moved = sum(state.partial_fit(*state.check_batch(b)).n_reassigned for b in batches_of(X, 200))
    assert moved >= 3
    assert np.abs(state.centers).max() < 100
    disabled = MiniBatchState(MiniBatchParams(4, reassignment_ratio=0.0), 2, X.dtype)
    disabled.start_from(np.array([[0.0, 0.0], [1e3, 1e3], [1e3, -1e3], [-1e3, 1e3]]) + X.mean(axis=0))
    for batch in batches_of(X, 200):
        assert disabled.partial_fit(*disabled.check_batch(batch)).n_reassigned == 0


@pytest.mark.parametrize("unit, half_life", [("batches", 2.0), ("points", 400.0)])
def test_half_life_follows_drift(unit: str, half_life: float) -> None:
    rng = np.random.default_rng(4)
    before = rng.normal(size=(4000, 2))
    after = rng.normal(size=(4000, 2)) + 20.0
    plain = MiniBatchState(MiniBatchParams(1, reassignment_ratio=0.0), 2, np.dtype(np.float64))
    forgetful = MiniBatchState(
        MiniBatchParams(1, reassignment_ratio=0.0, half_life=half_life, half_life_unit=unit),
        2, np.dtype(np.float64),
    )
    for state in (plain, forgetful):
        state.start_from(np.zeros((1, 2)))
        for batch in batches_of(before, 200) + batches_of(after, 200)[:5]:
            state.partial_fit(*state.check_batch(batch))
    # Five batches after the jump: the plain mean has moved a fifth of the way (1000 of
    # 5000 points), the forgetful one most of the way.
    assert plain.centers[0, 0] < 5.0
    assert forgetful.centers[0, 0] > 15.0


def test_new_model_waits_for_init_size_points(stream: np.ndarray) -> None:
    state = MiniBatchState(MiniBatchParams(10, init_size=1000, seed=0), 5, stream.dtype)
    first = state.partial_fit(*state.check_batch(stream[:400]))
    second = state.partial_fit(*state.check_batch(stream[400:800]))
    assert math.isnan(first.batch_inertia) and math.isnan(second.batch_inertia)
    assert not state.initialized and state.pending_points == 800
    third = state.partial_fit(*state.check_batch(stream[800:1200]))
    assert third.initialized_now and state.initialized
    assert state.n_samples_seen == 1200 and state.n_batches == 3 and state.pending_points == 0
    assert state.counts.sum() == pytest.approx(1200)


def test_default_init_size_is_the_first_batch_or_three_per_center(stream: np.ndarray) -> None:
    state = MiniBatchState(MiniBatchParams(10), 5, stream.dtype)
    assert state.partial_fit(*state.check_batch(stream[:500])).initialized_now
    small = MiniBatchState(MiniBatchParams(10), 5, stream.dtype)
    assert not small.partial_fit(*small.check_batch(stream[:20])).initialized_now
    assert small.partial_fit(*small.check_batch(stream[20:30])).initialized_now  # 30 = 3 * 10


def test_a_checkpoint_continues_exactly_like_the_original(stream: np.ndarray) -> None:
    params = MiniBatchParams(10, init_size=700, half_life=5.0, seed=9)
    whole = MiniBatchState(params, 5, stream.dtype)
    resumed = MiniBatchState(params, 5, stream.dtype)
    batches = batches_of(stream, 300)
    for index, batch in enumerate(batches):
        whole.partial_fit(*whole.check_batch(batch))
        if index in (1, 7):  # once mid-initialisation, once after
            resumed = MiniBatchState.from_bytes(resumed.to_bytes())
        resumed.partial_fit(*resumed.check_batch(batch))
    np.testing.assert_array_equal(resumed.centers, whole.centers)
    np.testing.assert_array_equal(resumed.counts, whole.counts)
    assert (resumed.n_batches, resumed.n_samples_seen) == (whole.n_batches, whole.n_samples_seen)


def test_weights_count_like_repeated_points() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 3))
    init = X[:4].copy()
    weighted = MiniBatchState(MiniBatchParams(4, reassignment_ratio=0.0), 3, X.dtype)
    repeated = MiniBatchState(MiniBatchParams(4, reassignment_ratio=0.0), 3, X.dtype)
    weighted.start_from(init)
    repeated.start_from(init)
    weighted.partial_fit(*weighted.check_batch(X, np.full(300, 2.0)))
    repeated.partial_fit(*repeated.check_batch(np.repeat(X, 2, axis=0)))
    np.testing.assert_allclose(weighted.centers, repeated.centers, rtol=1e-12)
    np.testing.assert_allclose(weighted.counts, repeated.counts)


@pytest.mark.parametrize(
    "params, field",
    [
        (dict(n_clusters=0), "n_clusters"),
        (dict(n_clusters=5, init_size=3), "init_size"),
        (dict(n_clusters=5, reassignment_ratio=1.5), "reassignment_ratio"),
        (dict(n_clusters=5, reassignment_ratio=float("nan")), "reassignment_ratio"),
        (dict(n_clusters=5, half_life=0.0), "half_life"),
        (dict(n_clusters=5, half_life=float("inf")), "half_life"),
        (dict(n_clusters=5, half_life_unit="days"), "half_life_unit"),
    ],
)
def test_bad_params_name_their_field(params: dict, field: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        MiniBatchParams(**params).check()
    assert raised.value.field == field


def test_bad_batches_name_their_field_and_change_nothing() -> None:
    state = MiniBatchState(MiniBatchParams(2), 3, np.dtype(np.float32))
    good = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    state.partial_fit(*state.check_batch(good))
    before = state.centers.copy()
    nan = good.copy()
    nan[4, 1] = np.nan
    cases = [
        (good[:, :2], "points.cols"),
        (good.astype(np.float64), "points.dtype"),
        (good[:0], "points"),
    ]
    for batch, field in cases:
        with pytest.raises(InvalidInputError) as raised:
            state.check_batch(batch)
        assert raised.value.field == field
    huge = good.copy()
    huge[2, 0] = 1e30  # finite, but its square overflows float32
    for batch, words in ((nan, "NaN"), (huge, "1e+30")):
        with pytest.raises(InvalidInputError) as raised:
            state.partial_fit(*state.check_batch(batch))
        assert raised.value.field == "points" and words in str(raised.value)
    waiting = MiniBatchState(MiniBatchParams(2, init_size=100), 3, np.dtype(np.float32))
    with pytest.raises(InvalidInputError):
        waiting.partial_fit(*waiting.check_batch(nan))
    assert waiting.pending_points == 0
    for weights in (np.ones(3), np.full(10, -1.0), np.zeros(10), np.full(10, np.inf)):
        with pytest.raises(InvalidInputError) as raised:
            state.check_batch(good, weights)
        assert raised.value.field == "sample_weight"
    np.testing.assert_array_equal(state.centers, before)
    assert state.n_batches == 1


def test_values_too_large_to_square_leave_the_model_unchanged() -> None:
    state = MiniBatchState(MiniBatchParams(2, seed=0), 2, np.dtype(np.float64))
    good = np.random.default_rng(1).normal(size=(20, 2))
    state.partial_fit(*state.check_batch(good))
    before = (state.centers.copy(), state.counts.copy(), state.n_batches, state.since_reassign)
    huge = good.copy()
    huge[3] = 1e200  # finite, but its square is not
    with pytest.raises(InvalidInputError) as raised:
        state.partial_fit(*state.check_batch(huge))
    assert raised.value.field == "points"
    np.testing.assert_array_equal(state.centers, before[0])
    np.testing.assert_array_equal(state.counts, before[1])
    assert (state.n_batches, state.since_reassign) == before[2:]
    # The same during initialisation: the buffered points stay as they were.
    waiting = MiniBatchState(MiniBatchParams(2, init_size=30), 2, np.dtype(np.float64))
    waiting.partial_fit(*waiting.check_batch(good))
    with pytest.raises(InvalidInputError):
        waiting.partial_fit(*waiting.check_batch(huge))
    assert waiting.pending_points == 20 and not waiting.initialized


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_moved_centers_are_numpys_update_to_the_bit(dtype: type) -> None:
    """The compiled update adds the chunks in their order and does numpy's arithmetic: the
    centers and counts it gives are those of the update written with numpy, bit for bit;
    a center no row reached keeps its center and count."""
    rng = np.random.default_rng(9)
    n_chunks, k, d = 5, 12, 7
    partial_sums = rng.normal(scale=50.0, size=(n_chunks, k, d))
    partial_weights = rng.uniform(0.0, 30.0, size=(n_chunks, k))
    partial_weights[:, [2, 7]] = 0.0  # two centers no row reached
    partial_inertia = rng.uniform(0.0, 1e3, size=n_chunks)
    centers = rng.normal(size=(k, d)).astype(dtype)
    counts = rng.uniform(1.0, 500.0, size=k) * 0.97
    moved, new_centers = np.empty((k, d)), np.empty_like(centers)
    new_counts, touched = np.empty(k), np.empty(k, dtype=np.bool_)
    inertia, finite = _sums.moved_centers(partial_sums, partial_weights, partial_inertia, centers, counts,
                                          moved, new_centers, new_counts, touched)
    sums, weights = partial_sums.sum(axis=0), partial_weights.sum(axis=0)
    reached = weights > 0
    expected_counts = counts.copy()
    expected_counts[reached] = counts[reached] + weights[reached]
    expected = centers.copy()
    expected[reached] = (centers[reached] * counts[reached, None] + sums[reached]) / expected_counts[reached, None]
    assert finite and inertia == pytest.approx(partial_inertia.sum(), rel=1e-15)
    np.testing.assert_array_equal(touched, reached)
    np.testing.assert_array_equal(new_centers, expected)
    np.testing.assert_array_equal(new_counts, expected_counts)
    np.testing.assert_array_equal(moved[~reached], centers[~reached].astype(np.float64))


def test_moved_centers_tell_a_center_past_its_dtype() -> None:
    """A float32 center moved past float32's range is infinite once stored: not finite."""
    centers = np.ones((2, 3), dtype=np.float32)
    sums = np.zeros((1, 2, 3))
    sums[0, 1, 0] = 1e300  # finite in float64, past float32
    out = (np.empty((2, 3)), np.empty_like(centers), np.empty(2), np.empty(2, dtype=np.bool_))
    _, finite = _sums.moved_centers(sums, np.ones((1, 2)), np.zeros(1), centers, np.ones(2), *out)
    assert not finite and np.isfinite(out[0]).all()
    sums[0, 1, 0] = 0.0
    _, finite = _sums.moved_centers(sums, np.ones((1, 2)), np.zeros(1), centers, np.ones(2), *out)
    assert finite


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_rows", [50, 3000, 20_000])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_step_in_one_call_is_the_step_dealt_out_to_the_bit(dtype: type, n_rows: int, weighted: bool) -> None:
    """The whole step in one compiled call and the step dealt out in chunks give the same
    centers, counts, inertia and finite flag, at one thread and at two."""
    rng = np.random.default_rng(4)
    k, d = 24, 6
    X = read_only(rng.normal(scale=3.0, size=(n_rows, d)).astype(dtype))
    weights = rng.uniform(0.0, 2.0, size=n_rows) if weighted else UNIT_WEIGHTS
    centers = X[rng.choice(n_rows, size=k, replace=False)].copy() + dtype(0.5)
    counts = rng.uniform(0.0, 40.0, size=k)
    outcomes = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        try:
            for in_one_call in (True, False):
                out = (np.empty((k, d)), np.empty_like(centers), np.empty(k), np.empty(k, dtype=np.bool_))
                inertia, finite = ministep.moved_centers(X, weights, centers, counts, *out, in_one_call=in_one_call)
                outcomes.append((inertia, finite, *out))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    first = outcomes[0]
    assert first[1] and first[4].any()
    for other in outcomes[1:]:
        assert other[0] == first[0] and other[1] == first[1]
        for got, expected in zip(other[2:], first[2:]):
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("in_one_call", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30])
def test_either_step_refuses_bad_values_before_it_computes(in_one_call: bool, bad: float) -> None:
    """Both ways of a step raise check_finite's error, naming the points, and write nothing."""
    X = np.random.default_rng(5).normal(size=(400, 4)).astype(np.float32)
    X[399, 3] = bad
    centers = X[:5].copy()
    out = (np.full((5, 4), 7.0), np.full_like(centers, 7.0), np.full(5, 7.0), np.zeros(5, dtype=np.bool_))
    with pytest.raises(InvalidInputError) as raised:
        ministep.moved_centers(read_only(X), UNIT_WEIGHTS, centers, np.ones(5), *out, in_one_call=in_one_call)
    assert raised.value.field == "points"
    assert ("NaN or Inf" in str(raised.value)) == (not np.isfinite(bad))
    for array in out[:3]:
        assert (array == 7.0).all()
    assert not out[3].any()
