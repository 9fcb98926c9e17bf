"""Evaluate and SuggestK for the SDK: the requests of one call, and its result."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from centroidal import codec
from centroidal.v1 import clustering_pb2 as pb

from ._calls import as_points, rows_per_chunk
from .errors import CentroidalError
from .results import Evaluation, FitProgress, KScore, Suggestion


def _silhouette(sample_size: int | None, seed: int | None) -> codec.SilhouetteOptions:
    """None scores every row; 0 takes the server's default sample."""
    if sample_size is not None and (int(sample_size) < 0 or int(sample_size) == 1):
        raise ValueError(f"silhouette_sample_size must be None, 0 or at least 2, got {sample_size}")
    return codec.SilhouetteOptions(
        sample_size=int(sample_size or 0), all_rows=sample_size is None,
        seed=None if seed is None else int(seed),
    )


class EvaluatePlan:
    """The EvaluateRequest stream of one call, and its answer."""

    def __init__(
        self, name: str, X: Any, *, version: int | None, silhouette_sample_size: int | None,
        seed: int | None, chunk_bytes: int,
    ) -> None:
        self.points = as_points(X)
        self.spec = codec.EvaluateSpec(
            model=name, version=None if version is None else int(version),
            silhouette=_silhouette(silhouette_sample_size, seed), n_samples=self.points.shape[0],
        )
        self.chunk_bytes = chunk_bytes

    def requests(self) -> Iterator[bytes]:
        """The spec alone, then the rows in chunks of about chunk_bytes."""
        yield codec.serialize_evaluate_request(codec.EvaluateChunk(spec=self.spec))
        rows = rows_per_chunk(self.chunk_bytes, self.points)
        for start in range(0, max(self.points.shape[0], 1), rows):
            yield codec.serialize_evaluate_request(codec.EvaluateChunk(points=self.points[start : start + rows]))

    @staticmethod
    def result(message: pb.EvaluateResponse) -> Evaluation:
        return codec.decode_evaluate_response(message)


class SuggestPlan:
    """The SuggestKRequest stream of one call, and the result gathered from its answers."""

    def __init__(
        self, X: Any, k_range: Sequence[int], *, metric: str, init: str = "k-means++",
        n_init: int | None, max_iter: int | None, tol: float | None, seed: int | None,
        silhouette_sample_size: int | None, save_best_as: str, chunk_bytes: int,
    ) -> None:
        ks = [int(k) for k in k_range]
        if not ks or ks != list(range(ks[0], ks[-1] + 1)):
            raise ValueError(f"k_range must be consecutive values of k, such as range(2, 13); got {k_range!r}")
        if init == "given":
            raise ValueError("init must be 'k-means++' or 'random': each k needs its own centers")
        self.points = as_points(X)
        config = codec.KMeansConfig(
            init=codec.INIT_METHODS.choice(init, "init"),
            n_init=int(n_init or 0), max_iter=int(max_iter or 0),
            tol=None if tol is None else float(tol), seed=None if seed is None else int(seed),
            metric=codec.METRICS.choice(metric, "metric"),
        )
        self.spec = codec.SuggestKSpec(
            k_min=ks[0], k_max=ks[-1], config=config,
            silhouette=_silhouette(silhouette_sample_size, seed), n_samples=self.points.shape[0],
            save_best_as=save_best_as,
        )
        self.chunk_bytes = chunk_bytes
        self._result: codec.SuggestKResult | None = None

    def requests(self) -> Iterator[bytes]:
        """The spec alone, then the rows in chunks of about chunk_bytes."""
        yield codec.serialize_suggest_k_request(codec.SuggestKChunk(spec=self.spec))
        rows = rows_per_chunk(self.chunk_bytes, self.points)
        for start in range(0, max(self.points.shape[0], 1), rows):
            yield codec.serialize_suggest_k_request(codec.SuggestKChunk(points=self.points[start : start + rows]))

    def take(self, response: pb.SuggestKResponse) -> FitProgress | KScore | None:
        """Absorb one answer; returns the progress or per-k score it carries, if any."""
        event = codec.decode_suggest_k_response(response)
        if isinstance(event, codec.FitProgress):
            return None if event.stage == "admitted" else FitProgress.of(event, self.points.shape[0])
        if isinstance(event, codec.KScore):
            return event
        if isinstance(event, codec.SuggestKResult):
            self._result = event
        return None

    def result(self) -> Suggestion:
        if self._result is None:
            raise CentroidalError("the server ended the SuggestK stream without a result")
        return Suggestion.of(self._result)
