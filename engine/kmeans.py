"""k-means: the public, validated API around the compiled kernels in ``_lloyd``.

``fit`` runs Lloyd's algorithm from k-means++, random or given centers and keeps
the best of ``n_init`` restarts. ``fit_steps`` is the same computation as a
generator of progress events, so a caller (the server) can report progress and
stop between iterations. ``predict`` and ``transform``, which use a fitted
model's centers, are ``nearest``'s, offered here beside ``fit``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .cosine import check_metric, unit_centers, unit_rows
from .lloyd import Workspace, mean_variance, run_lloyd, working_bytes
from .nearest import predict, transform
from .progress import Progress, Stage, run_to_end
from .seeding import kmeans_plusplus, plusplus_steps
from .threads import configure_threads
from .validation import (
    UNIT_WEIGHTS,
    Init,
    InvalidInputError,
    as_float_matrix,
    check_finite,
    check_n_clusters,
    check_sample_weight,
    read_only,
)

__all__ = [
    "InvalidInputError", "KMeansParams", "KMeansResult", "Progress", "Stage",
    "UNIT_WEIGHTS", "check_finite", "fit", "fit_prepared_steps", "fit_steps", "fit_steps_with", "fresh_seed",
    "kmeans_plusplus", "mean_variance", "predict", "transform",
    "working_bytes",
]


INIT_METHODS = ("k-means++", "random", "given")
ALGORITHMS = ("kmeans", "spectral")
DEFAULT_MAX_ITER = 300
DEFAULT_TOL = 1e-4
DEFAULT_NEIGHBORS = 10


@dataclass(frozen=True)
class KMeansParams:
    """How a clustering fit runs, each parameter's rule written once, in ``check``.

    The Python API, the server's Fit and SuggestK, and spectral fits all build one and check
    it. None means the default, which ``check`` fills in; the seed stays None until a fit
    draws one (``fresh_seed``) and records it.

    init : "k-means++", "random", or "given" with init_centers of shape (n_clusters, n_features)
    n_init : restarts, the best kept; default 1, or 10 for random init and spectral fits
    max_iter : Lloyd iterations per restart; default 300
    tol : a restart stops once the squared center shift is at most tol times the mean
        per-feature variance of X; default 1e-4
    metric : "euclidean", or "cosine" (spherical k-means)
    algorithm : "kmeans", or "spectral" (k-means++ on the spectral embedding of the rows'
        n_neighbors graph, Euclidean only)
    n_neighbors : a spectral fit's neighbours per row; default 10
    """

    n_clusters: int
    init: str = "k-means++"
    init_centers: np.ndarray | None = None
    n_init: int | None = None
    max_iter: int | None = None
    tol: float | None = None
    seed: int | None = None
    metric: str = "euclidean"
    algorithm: str = "kmeans"
    n_neighbors: int | None = None

    def check(self) -> KMeansParams:
        """Raise InvalidInputError naming the first bad parameter; returns the parameters
        with every default filled in. Rules that need the data (n_clusters at most the
        rows, the centers' width) are checked when a fit has it."""
        n_clusters = self.n_clusters
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
            raise InvalidInputError("n_clusters", f"n_clusters must be an integer, got {n_clusters!r}")
        if n_clusters < 1:
            raise InvalidInputError("n_clusters", f"n_clusters must be at least 1, got {n_clusters}")
        if self.init not in INIT_METHODS:
            raise InvalidInputError(
                "init", f"init must be 'k-means++', 'random' or given centers, got {self.init!r}"
            )
        if (self.init == "given") != (self.init_centers is not None):
            raise InvalidInputError(
                "init_centers", "init_centers are required with init='given', and only then"
            )
        if self.init_centers is not None:
            if self.init_centers.ndim != 2 or self.init_centers.shape[0] != n_clusters:
                raise InvalidInputError(
                    "init_centers.rows",
                    f"init_centers have shape {self.init_centers.shape}; they need n_clusters="
                    f"{n_clusters} rows",
                )
            check_finite(self.init_centers, "init_centers")
        check_metric(self.metric)
        if self.algorithm not in ALGORITHMS:
            raise InvalidInputError("algorithm", f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        spectral = self.algorithm == "spectral"
        n_init = self.n_init
        if n_init is None:
            n_init = 10 if self.init == "random" or spectral else 1
        if n_init < 1:
            raise InvalidInputError("n_init", f"n_init must be at least 1, got {n_init}")
        if self.init == "given" and n_init != 1:
            raise InvalidInputError("n_init", f"n_init must be 1 when init centers are given, got {n_init}")
        max_iter = DEFAULT_MAX_ITER if self.max_iter is None else self.max_iter
        if max_iter < 1:
            raise InvalidInputError("max_iter", f"max_iter must be at least 1, got {max_iter}")
        tol = DEFAULT_TOL if self.tol is None else float(self.tol)
        if not (math.isfinite(tol) and tol >= 0):
            raise InvalidInputError("tol", f"tol must be a finite number >= 0, got {tol}")
        n_neighbors = None
        if spectral:
            if self.init != "k-means++":
                raise InvalidInputError("init", "a spectral fit seeds with k-means++ on its embedding: "
                                                f"init must be 'k-means++', got {self.init!r}")
            if self.metric != "euclidean":
                raise InvalidInputError("metric", f"a spectral fit is Euclidean, got metric={self.metric!r}")
            n_neighbors = DEFAULT_NEIGHBORS if self.n_neighbors is None else self.n_neighbors
            if n_neighbors < 2:
                raise InvalidInputError("n_neighbors", f"n_neighbors must be at least 2, got {n_neighbors}")
        return replace(
            self, n_clusters=int(n_clusters), n_init=int(n_init), max_iter=int(max_iter), tol=tol,
            n_neighbors=n_neighbors,
        )

    def as_config(self, seed: int) -> dict[str, Any]:
        """The checked parameters as a model records them, with the seed its fit used."""
        config: dict[str, Any] = {
            "init": self.init, "n_init": self.n_init, "max_iter": self.max_iter, "tol": self.tol,
            "seed": seed, "metric": self.metric,
        }
        if self.algorithm == "spectral":
            config.update(algorithm="spectral", n_neighbors=self.n_neighbors)
        return config


@dataclass(frozen=True)
class KMeansResult:
    """A finished fit.

    centers : ndarray of shape (n_clusters, n_features), the input's dtype
    labels : ndarray of shape (n_samples,), int32
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    best_restart: int
    seed: int


def fit(
    X: Any,
    n_clusters: int,
    *,
    init: Init = "k-means++",
    n_init: int | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    seed: int | None = None,
    sample_weight: Any = None,
    metric: str = "euclidean",
    copy_x: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
) -> KMeansResult:
    """Cluster X into n_clusters groups (the parameters are KMeansParams', with its defaults).

    X : array-like of shape (n_samples, n_features), float32 or float64
        (other numeric types are converted to float64).
    init : "k-means++", "random", or an ndarray of shape (n_clusters, n_features).
    n_init : restarts; None means 1 for k-means++ and given centers, 10 for random.
    tol : convergence tolerance relative to the mean per-feature variance of X (1e-4).
    sample_weight : array-like of shape (n_samples,), or None for unit weights.
    metric : "euclidean", or "cosine" for spherical k-means (see ``cosine``): the result's
        centers have unit length and its inertia sums weighted cosine distances.
    copy_x : with the cosine metric, False scales X's rows in place (when X is a writable
        float array) instead of in a copy.
    on_progress : called with every Progress event; an exception it raises stops
        the fit between iterations and propagates.
    """
    steps = fit_steps(
        X,
        n_clusters,
        init=init,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        seed=seed,
        sample_weight=sample_weight,
        metric=metric,
        copy_x=copy_x,
    )
    result: KMeansResult = run_to_end(steps, on_progress)
    return result


def fit_steps(
    X: Any,
    n_clusters: int,
    *,
    init: Init = "k-means++",
    n_init: int | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    seed: int | None = None,
    sample_weight: Any = None,
    metric: str = "euclidean",
    copy_x: bool = True,
) -> Generator[Progress, None, KMeansResult]:
    """``fit`` as a generator: yields Progress after every iteration, returns the result.

    All arguments are validated before the first event, so a caller that closes
    the generator early leaves nothing half done.
    """
    if isinstance(init, str):
        params = KMeansParams(n_clusters, init, None, n_init, max_iter, tol, seed, metric)
    else:
        params = KMeansParams(n_clusters, "given", as_float_matrix(init, "init_centers"), n_init,
                              max_iter, tol, seed, metric)
    return (yield from fit_steps_with(X, params, sample_weight=sample_weight, copy_x=copy_x))


def fit_steps_with(
    X: Any, params: KMeansParams, *, sample_weight: Any = None, copy_x: bool = True, values_checked: bool = False,
) -> Generator[Progress, None, KMeansResult]:
    """``fit_steps`` for parameters gathered in a KMeansParams (checked here).

    values_checked : X's values already passed ``validation.values_fine`` (the server checks
        an upload's chunks as they arrive), so they are not read again for it here
    """
    params = params.check()
    configure_threads()  # once per process; the server and warm-up have done it already
    X = as_float_matrix(X, "X")
    if not values_checked:
        check_finite(X, "X")
    if params.metric == "cosine":
        X = unit_rows(X, "X", in_place=not copy_x)
    X = read_only(X)
    weights = check_sample_weight(sample_weight, X.shape[0])
    return (yield from fit_prepared_steps(X, params, weights))


def fit_prepared_steps(
    X: np.ndarray, params: KMeansParams, weights: np.ndarray = UNIT_WEIGHTS
) -> Generator[Progress, None, KMeansResult]:
    """``fit_steps_with`` on data already made ready: X checked for finite values, its rows of
    unit length for the cosine metric, read-only; params and weights checked. For callers
    that fit the same rows many times (suggest-k), so they are scanned once."""
    assert params.n_init is not None and params.max_iter is not None and params.tol is not None
    n_samples, n_features = X.shape
    n_clusters = check_n_clusters(params.n_clusters, n_samples)
    spherical = params.metric == "cosine"
    given_centers = None
    if params.init_centers is not None:
        if params.init_centers.shape[1] != n_features:
            raise InvalidInputError(
                "init_centers.cols",
                f"init_centers have {params.init_centers.shape[1]} features but X has {n_features}",
            )
        given_centers = np.ascontiguousarray(params.init_centers, dtype=X.dtype)
        if spherical:
            given_centers = unit_centers(given_centers)
    if params.init == "random" and weights.size and np.count_nonzero(weights) < n_clusters:
        raise InvalidInputError(
            "sample_weight",
            f"init='random' needs at least n_clusters={n_clusters} points with positive "
            f"weight, got {np.count_nonzero(weights)}",
        )
    seed = params.seed if params.seed is not None else fresh_seed()
    rng = np.random.default_rng(seed)
    return (
        yield from _fit_restarts(
            X, weights, n_clusters, params.init, given_centers, params.n_init, params.max_iter,
            params.tol, rng, seed, spherical,
        )
    )


def fresh_seed() -> int:
    """A seed for a fit that was given none; the result records it, so the fit can be repeated."""
    return int(np.random.default_rng().integers(2**63))


def _fit_restarts(
    X: np.ndarray,
    weights: np.ndarray,
    n_clusters: int,
    init_method: str,
    given_centers: np.ndarray | None,
    n_init: int,
    max_iter: int,
    tol: float,
    rng: np.random.Generator,
    seed: int,
    spherical: bool,
) -> Generator[Progress, None, KMeansResult]:
    # The variance is a pass over X of its own (4 ms at 1e6x16): not for tol=0.
    abs_tol = tol * mean_variance(X) if tol > 0 else 0.0
    best: KMeansResult | None = None
    for restart in range(n_init):
        if given_centers is not None:
            centers = given_centers.copy()
        elif init_method == "random":
            p = weights / weights.sum() if weights.size else None
            chosen = rng.choice(X.shape[0], size=n_clusters, replace=False, p=p)
            centers = X[chosen].copy()
        else:
            centers = yield from plusplus_steps(X, n_clusters, rng, weights, restart, n_init)
        yield Progress(Stage.INITIALIZED, restart, n_init, 0, math.nan, math.nan)
        # Made after seeding has freed its buffers and dropped after the run, so no two O(n)
        # buffers coexist; the best restart's labels are recomputed at the end instead of kept.
        workspace = Workspace(X.shape[0], n_clusters, X.shape[1], X.dtype)
        run = yield from run_lloyd(
            X, weights, centers, max_iter, abs_tol, workspace, restart, n_init, spherical
        )
        del workspace
        yield Progress(Stage.RESTART_DONE, restart, n_init, run.n_iter, run.inertia, 0.0)
        if best is None or run.inertia < best.inertia:
            best = KMeansResult(run.centers, run.labels, run.inertia, run.n_iter, restart, seed)
        if n_init > 1:
            best = replace(best, labels=_NO_LABELS)
            del run
    assert best is not None
    if n_init > 1:
        final = Workspace(X.shape[0], n_clusters, X.shape[1], X.dtype)
        final.step(X, weights, best.centers)
        best = replace(best, labels=final.labels)
    return best


_NO_LABELS = np.empty(0, dtype=np.int32)
