"""The synchronous SDK: numpy in, numpy out, chunked transfers, a deadline on every call."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import numpy as np

from centroidal import codec

from ._calls import (
    FitPlan,
    PredictPlan,
    QuantizePlan,
    as_points,
    stream_open,
)
from ._datasets import LabellingPlan, dataset_source
from ._scoring import EvaluatePlan, SuggestPlan
from .errors import CentroidalError
from .model_calls import ModelCalls
from .results import (
    BatchAck,
    Evaluation,
    FitProgress,
    FitResult,
    KScore,
    LabellingProgress,
    LabellingResult,
    QuantizedImage,
    Suggestion,
)
from .stream import (
    DEFAULT_MAX_REPLAY_BYTES,
    DEFAULT_RECONNECT_TIMEOUT_S,
    DEFAULT_WINDOW,
    MiniBatchStream,
)
from .transport import RESPONSE_BUDGET


class Client(ModelCalls):
    """A connection to a centroidal server.

    Every call has a deadline (``timeout`` seconds unless the call says otherwise)
    and raises a subclass of ``CentroidalError`` named after the status code.
    Use it as a context manager, or call ``close``.

    target : host:port, else $CENTROIDAL_TARGET, else 127.0.0.1:50051; or any name gRPC
        resolves to several replicas (``ipv4:10.0.0.1:50051,10.0.0.2:50051``,
        ``dns:///centroidal.internal:50051``): calls go round robin over them, a replica
        that dies drops out, and a stream goes to its model's owner
    token : the bearer token; else the first in ``token_file``; else $CENTROIDAL_TOKEN
    tls : speak TLS, checking the server against the system's roots, or against
        ``root_certificates`` (PEM bytes or a file); ``client_certificate`` is
        (certificate chain, private key) for a server that requires mutual TLS
    """

    # ---- lifecycle -------------------------------------------------------

    def close(self) -> None:
        self.close_owner_channels()
        self._channel.close()
        self.close_shared_memory()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- streaming -------------------------------------------------------

    def stream(
        self,
        name: str,
        *,
        n_clusters: int | None = None,
        init_size: int = 0,
        reassignment_ratio: float | None = None,
        half_life: float | None = None,
        half_life_unit: str = "batches",
        seed: int | None = None,
        metric: str = "euclidean",
        producer_id: str | None = None,
        first_sequence: int = 1,
        window: int = DEFAULT_WINDOW,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT_S,
        max_replay_bytes: int = DEFAULT_MAX_REPLAY_BYTES,
        on_ack: Callable[[BatchAck], None] | None = None,
    ) -> MiniBatchStream:
        """Open a stream of mini-batches into model ``name``; use it as a context manager.

        With ``n_clusters`` the model is created if it does not exist (the other
        model parameters apply only then). ``producer_id`` and ``first_sequence``
        identify the batches: a producer that restarts passes its old id and one past
        the ``durable_sequence`` it last saw, and the server skips what it already has.
        With ``Client(shared_memory=True)`` the batches' rows go through shared memory, kept
        there until the server has stored them; a server that cannot read them (on another
        host, or run with --no-shared-memory) gets them sent instead.
        """
        opening = stream_open(
            name, n_clusters=n_clusters, init_size=init_size,
            reassignment_ratio=reassignment_ratio, half_life=half_life,
            half_life_unit=half_life_unit, seed=seed, metric=metric,
        )
        return MiniBatchStream(
            self,
            opening,
            producer_id=producer_id,
            first_sequence=first_sequence,
            window=window,
            reconnect_timeout=reconnect_timeout,
            max_replay_bytes=max_replay_bytes,
            on_ack=on_ack,
            shared_memory=self._regions is not None,
        )

    # ---- images ----------------------------------------------------------

    def quantize_image(
        self,
        image: bytes | str | os.PathLike[str],
        n_colors: int = 16,
        *,
        seed: int | None = None,
        max_samples: int = 0,
        color_space: str = "rgb",
        dither: bool = False,
        output_format: str = "png",
        palette_model: str = "",
        save_palette_as: str = "",
        timeout: float | None = None,
    ) -> QuantizedImage:
        """Reduce an encoded image (bytes, or a file's path) to n_colors.

        color_space "rgb" or "lab"; output_format "png" (a palette PNG), "jpeg", "webp",
        "bmp", "tiff", "gif" or "same" (the input's). palette_model reuses a stored palette;
        save_palette_as stores this one. max_samples 0 lets the server choose how many pixels to fit on.
        """
        plan = QuantizePlan(
            image, n_colors, self.chunk_bytes, seed=seed, max_samples=max_samples,
            color_space=color_space, dither=dither, output_format=output_format,
            palette_model=palette_model, save_palette_as=save_palette_as,
        )
        call = self._methods.quantize_image(iter(plan.requests), timeout=self.deadline(timeout, fit=True))
        self.follow(call, plan.take, None)
        return plan.result()

    # ---- fit -------------------------------------------------------------

    def fit(
        self,
        name: str,
        X: Any = None,
        n_clusters: int | None = None,
        *,
        source: str | None = None,
        columns: Sequence[str] = (),
        format: str = "",
        weight_column: str = "",
        init: str | np.ndarray = "k-means++",
        n_init: int | None = None,
        max_iter: int | None = None,
        tol: float | None = None,
        seed: int | None = None,
        metric: str = "euclidean",
        algorithm: str = "kmeans",
        n_neighbors: int | None = None,
        sample_weight: Any = None,
        expected_version: int | None = None,
        return_labels: bool = False,
        on_progress: Callable[[FitProgress], None] | None = None,
        timeout: float | None = None,
    ) -> FitResult:
        """Fit k-means model ``name`` on X, or on a dataset the server reads, and store it;
        returns the stored model.

        X : array-like of shape (n_samples, n_features), float32 or float64
        source : instead of X, a dataset under one of the server's --dataset-root: a path or
            URL of Parquet or .npy files (one file, a directory, or a glob such as
            "file:///shared/points/*.parquet"), fitted on the server's Dask cluster when it
            has one; ``columns`` picks the features (Parquet names, .npy column numbers;
            empty for all), ``format`` is "parquet" or "npy" (default: the extension), and
            ``weight_column`` names a Parquet column of sample weights
        init : "k-means++", "random", or initial centers of shape (n_clusters, n_features)
        metric : "euclidean", or "cosine" for spherical k-means on embeddings: rows are
            scaled to unit length (a row of zero length is refused), and the model's
            predicts, distances and inertia are cosine (1 - cos)
        algorithm : "kmeans", or "spectral" (at most 20,000 rows, no weights): k-means on
            the spectral embedding of the rows' n_neighbors graph (default 10); the model
            keeps its rows, and labels a new point by the vote of its nearest ones
        sample_weight : array-like of shape (n_samples,), or None
        on_progress : called with each FitProgress event, upload progress included
        """
        plan = FitPlan(
            name, X, n_clusters, init=init, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
            sample_weight=sample_weight, expected_version=expected_version,
            return_labels=return_labels, chunk_bytes=self.chunk_bytes, metric=metric,
            algorithm=algorithm, n_neighbors=n_neighbors,
            source=dataset_source(source, columns, format, weight_column),
        )
        # on_progress runs on gRPC's sending thread for uploads; keep its exception for the caller.
        upload_failure: list[BaseException] = []
        call: list[grpc.Future] = []

        def requests() -> Iterator[bytes]:
            for message, uploaded in plan.requests():
                yield message
                if on_progress is not None:
                    try:
                        on_progress(uploaded)
                    except BaseException as failure:  # noqa: BLE001 - re-raised in the caller
                        upload_failure.append(failure)
                        if call:
                            call[0].cancel()
                        return

        responses = self._methods.fit(requests(), timeout=self.deadline(timeout, fit=True))
        call.append(responses)
        try:
            self.follow(responses, plan.take, on_progress)
        except CentroidalError:
            if upload_failure:
                raise upload_failure[0] from None
            raise
        if upload_failure:
            raise upload_failure[0]
        return plan.result()

    # ---- datasets --------------------------------------------------------

    def predict_dataset(
        self,
        name: str,
        source: str,
        output: str,
        *,
        columns: Sequence[str] = (),
        format: str = "",
        version: int | None = None,
        return_distances: bool = False,
        overwrite: bool = False,
        on_progress: Callable[[LabellingProgress], None] | None = None,
        timeout: float | None = None,
    ) -> LabellingResult:
        """Label every row of a dataset the server reads with model ``name`` and have the
        server write the labels as Parquet under ``output`` (a directory under its
        --dataset-output-root): part-00000.parquet, ... with columns row, label and, with
        return_distances, distance; then _SUCCESS. Runs on the server's Dask cluster when
        it has one. ``source``, ``columns`` and ``format`` are as in ``fit``."""
        plan = LabellingPlan(name, source, output, columns, format, version, return_distances, overwrite)
        call = self._methods.predict_dataset(plan.request, timeout=self.deadline(timeout, fit=True))
        self.follow(call, plan.take, on_progress)
        return plan.result()

    # ---- predict ---------------------------------------------------------

    def predict(
        self,
        name: str,
        X: Any,
        *,
        version: int | None = None,
        return_distance: bool = False,
        timeout: float | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Nearest-center labels, ndarray of shape (n_samples,), int32.

        With return_distance, also the distance to that center (Euclidean, or 1 - cos for
        a cosine model), shape (n_samples,), in X's dtype. version pins a model version.
        """
        options = codec.PredictOptions(return_distances=return_distance)
        labels, distances, _ = self._predict(name, X, version, options, timeout)
        if return_distance:
            assert distances is not None
            return labels, distances
        return labels

    def transform(
        self, name: str, X: Any, *, version: int | None = None, timeout: float | None = None
    ) -> np.ndarray:
        """Distance from each row to each center, in the model's metric: (n_samples,
        n_clusters), X's dtype."""
        options = codec.PredictOptions(return_transform=True)
        _, _, transformed = self._predict(name, X, version, options, timeout)
        assert transformed is not None
        return transformed

    def _predict(
        self,
        name: str,
        X: Any,
        version: int | None,
        options: codec.PredictOptions,
        timeout: float | None,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        points = as_points(X)
        n_clusters = 0
        if options.return_transform:
            model = self.get_model(name, version=version, include_centers=False, timeout=timeout)
            n_clusters = model.n_clusters
        with self.shared_rows(points) as shared:
            plan = PredictPlan(name, points, version, options, n_clusters, self.chunk_bytes, RESPONSE_BUDGET, shared)
            if plan.single:
                plan.store(self.unary(self._methods.predict, plan.request(0), timeout))
            else:
                call = self._methods.predict_stream(plan.requests(), timeout=self.deadline(timeout))
                for response in self.responses(call):
                    plan.store(response)
        return plan.finish()

    # ---- scoring and choosing k --------------------------------------------

    def evaluate(
        self,
        name: str,
        X: Any,
        *,
        version: int | None = None,
        silhouette_sample_size: int | None = 0,
        seed: int | None = None,
        timeout: float | None = None,
    ) -> Evaluation:
        """Score how model ``name`` clusters X: its inertia on X, and the silhouette,
        Calinski-Harabasz and Davies-Bouldin of the labels it gives X.

        X : array-like of shape (n_samples, n_features)
        silhouette_sample_size : rows the silhouette scores, a seeded sample drawn as
            scikit-learn's silhouette_score(sample_size, random_state=seed) draws it;
            0 is the server's default (every row up to 20,000), None every row
            (n^2 work, bounded memory).
        """
        plan = EvaluatePlan(
            name, X, version=version, silhouette_sample_size=silhouette_sample_size, seed=seed,
            chunk_bytes=self.chunk_bytes,
        )
        response = self.unary(self._methods.evaluate, plan.requests(), timeout if timeout is not None
                              else self.fit_timeout)
        return plan.result(response)

    def suggest_k(
        self,
        X: Any,
        k_range: Sequence[int] = range(2, 11),
        *,
        metric: str = "euclidean",
        init: str = "k-means++",
        n_init: int | None = None,
        max_iter: int | None = None,
        tol: float | None = None,
        seed: int | None = None,
        silhouette_sample_size: int | None = 0,
        save_best_as: str = "",
        on_progress: Callable[[FitProgress | KScore], None] | None = None,
        timeout: float | None = None,
    ) -> Suggestion:
        """Fit every k of ``k_range`` (consecutive, from 2) on X and score each; returns
        the k with the highest silhouette, the elbow of the inertia curve, and every
        k's scores. ``save_best_as`` stores the recommended k's fit as a model.

        init : "k-means++" or "random", the start of every k's fit
        on_progress : called with the fits' FitProgress (n_clusters says which k) and
            each KScore as its k is done
        silhouette_sample_size : as for evaluate; every k is scored on the same rows
        """
        plan = SuggestPlan(
            X, k_range, metric=metric, init=init, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed,
            silhouette_sample_size=silhouette_sample_size, save_best_as=save_best_as,
            chunk_bytes=self.chunk_bytes,
        )
        responses = self._methods.suggest_k(plan.requests(), timeout=self.deadline(timeout, fit=True))
        self.follow(responses, plan.take, on_progress)
        return plan.result()
