"""The ClusteringService servicer: convert, delegate to the engine and registry, map errors."""

from __future__ import annotations

import base64
import bisect
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np

from centroidal.engine import kmeans
from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc

from .config import ServerConfig
from .errors import ServiceError, exhausted, from_engine, handle_errors, invalid
from .metrics import Metrics
from .registry import ModelSnapshot, Registry
from . import imaging
from .streaming import LiveModel, StreamHub
from .wire import (
    INIT_NAMES,
    check_finite,
    decode_matrix,
    decode_vector,
    encode_labels,
    encode_matrix,
    model_message,
)

log = logging.getLogger("centroidal.server")

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_MAX_ITER = 300
DEFAULT_TOL = 1e-4
MAX_N_INIT = 100
MAX_MAX_ITER = 100_000
PROGRESS_INTERVAL_S = 0.1
LABELS_PER_MESSAGE = 1 << 19
IMAGE_CHUNK_BYTES = 2 * 1024 * 1024
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Room left in a message for everything but the bulk payload.
ENVELOPE_BYTES = 64 * 1024

# Batch errors that end the stream instead of being reported in an ack: the model is gone.
_STREAM_ENDING = (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE)

_STAGES = {
    kmeans.Stage.SEEDING: pb.FitProgress.STAGE_SEEDING,
    kmeans.Stage.INITIALIZED: pb.FitProgress.STAGE_INITIALIZED,
    kmeans.Stage.ITERATION: pb.FitProgress.STAGE_ITERATION,
    kmeans.Stage.RESTART_DONE: pb.FitProgress.STAGE_RESTART_DONE,
}


def check_model_name(name: str, field: str = "model") -> str:
    if not MODEL_NAME.fullmatch(name):
        raise invalid(
            field,
            f"{field}={name!r} is not a valid model name: use 1-128 characters from "
            "[A-Za-z0-9._-], starting with a letter or digit",
        )
    return name


@dataclass(frozen=True)
class FitParams:
    """A validated FitSpec, with defaults filled in."""

    model: str
    n_clusters: int
    init: str
    init_centers: np.ndarray | None
    n_init: int
    max_iter: int
    tol: float
    seed: int | None  # None: the engine draws one, and the model records it
    n_samples: int
    expected_version: int | None
    return_labels: bool

    def config(self, seed: int) -> dict[str, object]:
        return {
            "init": self.init,
            "n_init": self.n_init,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "seed": seed,
        }


@dataclass
class FitData:
    """The rows of a Fit stream, gathered into one C-contiguous array."""

    points: np.ndarray
    sample_weight: np.ndarray | None


class ClusteringServicer(pb_grpc.ClusteringServiceServicer):
    """Implements centroidal.v1.ClusteringService over a Registry."""

    def __init__(self, config: ServerConfig, registry: Registry, metrics: Metrics) -> None:
        self._config = config
        self._registry = registry
        self.metrics = metrics
        self.hub = StreamHub(config, registry, metrics)
        metrics.models.set(len(registry))
        self._fit_slots = threading.BoundedSemaphore(config.max_concurrent_fits)
        self._fits_lock = threading.Lock()
        self.fits_in_flight = 0
        self.last_stopped_fit_iteration: int | None = None

    # ---- Fit -------------------------------------------------------------

    @handle_errors
    def Fit(self, request_iterator: Iterator[pb.FitRequest], context: grpc.ServicerContext):
        started = time.monotonic()
        first = next(request_iterator, None)
        if first is None or not first.HasField("spec"):
            raise invalid("spec", "the first FitRequest must carry a spec")
        params = self._fit_params(first.spec)
        self._registry.check_expected(params.model, params.expected_version)
        with self._fits_lock:
            self.fits_in_flight += 1
        try:
            data = self._receive_fit_data(first, request_iterator, params)
            n_samples = data.points.shape[0]
            self.metrics.points.inc(n_samples)
            # The slot is taken once the data is here, so a slow upload holds no compute slot.
            self._take_fit_slot("model")
            try:
                yield from self._fit_and_commit(params, data, context, started)
            finally:
                self._fit_slots.release()
        finally:
            with self._fits_lock:
                self.fits_in_flight -= 1

    def _take_fit_slot(self, field: str) -> None:
        """One of --max-concurrent-fits, shared by fits and quantisations; the caller releases."""
        if not self._fit_slots.acquire(blocking=False):
            raise exhausted(
                field,
                f"{self._config.max_concurrent_fits} fits or quantisations are already running, "
                "the server's limit; retry later",
                reason="TOO_MANY_FITS",
            )

    def _fit_and_commit(
        self, params: FitParams, data: FitData, context: grpc.ServicerContext, started: float
    ):
        n_samples = data.points.shape[0]
        yield _progress(pb.FitProgress.STAGE_DATA_RECEIVED, n_samples=n_samples, started=started)
        result = yield from self._run_fit(params, data, context, started)
        if result is None:
            return
        # Labels go out before the commit, so a call that fails while sending them stores nothing.
        if params.return_labels:
            for offset in range(0, n_samples, LABELS_PER_MESSAGE):
                chunk = result.labels[offset : offset + LABELS_PER_MESSAGE]
                yield pb.FitResponse(labels=pb.LabelsChunk(offset=offset, labels=encode_labels(chunk)))
        if not context.is_active():
            log.info("fit of %s finished after its call ended; not stored", params.model)
            return
        snapshot = self._registry.commit(
            ModelSnapshot(
                name=params.model,
                version=0,
                centers=result.centers,
                config=params.config(result.seed),
                inertia=result.inertia,
                n_iter=result.n_iter,
                n_samples_seen=n_samples,
                created_at=0.0,
                updated_at=0.0,
            ),
            params.expected_version,
        )
        self.metrics.models.set(len(self._registry))
        log.info(
            "fit committed model=%s version=%d n=%d k=%d n_iter=%d inertia=%.6g",
            snapshot.name, snapshot.version, n_samples, snapshot.n_clusters,
            snapshot.n_iter, snapshot.inertia,
        )
        yield pb.FitResponse(
            result=pb.FitResult(
                model=model_message(snapshot, include_centers=True),
                n_samples=n_samples,
                best_restart=result.best_restart,
                elapsed_seconds=time.monotonic() - started,
            )
        )

    def _run_fit(
        self, params: FitParams, data: FitData, context: grpc.ServicerContext, started: float
    ):
        """Drive the engine, forwarding progress; returns None when the call went away."""
        steps = kmeans.fit_steps(
            data.points,
            params.n_clusters,
            init=params.init_centers if params.init_centers is not None else params.init,
            n_init=params.n_init,
            max_iter=params.max_iter,
            tol=params.tol,
            seed=params.seed,
            sample_weight=data.sample_weight,
        )
        last_sent = 0.0
        iteration = 0
        finished = False
        try:
            while context.is_active():
                try:
                    event = next(steps)
                except StopIteration as done:
                    finished = True
                    return done.value
                iteration = event.iteration
                if event.stage is kmeans.Stage.ITERATION:
                    self.metrics.iterations.inc()
                now = time.monotonic()
                throttled = event.stage in (kmeans.Stage.ITERATION, kmeans.Stage.SEEDING)
                if throttled and event.iteration > 1 and now - last_sent < PROGRESS_INTERVAL_S:
                    continue
                last_sent = now
                yield pb.FitResponse(
                    progress=pb.FitProgress(
                        stage=_STAGES[event.stage],
                        restart=event.restart,
                        n_init=event.n_init,
                        iteration=event.iteration,
                        inertia=0.0 if math.isnan(event.inertia) else event.inertia,
                        center_shift=0.0 if math.isnan(event.center_shift) else event.center_shift,
                        points_received=data.points.shape[0],
                        elapsed_seconds=now - started,
                    )
                )
            return None
        finally:
            # Reached on cancel or deadline, whether seen by is_active() or by a failed send.
            if not finished:
                steps.close()
                self.last_stopped_fit_iteration = iteration
                log.info("fit of %s stopped at iteration %d: call ended", params.model, iteration)

    def _fit_params(self, spec: pb.FitSpec) -> FitParams:
        limits = self._config
        config = spec.config
        model = check_model_name(spec.model, "spec.model")
        if config.algorithm not in (pb.ALGORITHM_UNSPECIFIED, pb.ALGORITHM_KMEANS):
            raise invalid(
                "spec.config.algorithm", f"spec.config.algorithm={config.algorithm} is not a known algorithm"
            )
        n_clusters = int(config.n_clusters)
        if n_clusters < 1:
            raise invalid(
                "spec.config.n_clusters", f"spec.config.n_clusters must be at least 1, got {n_clusters}"
            )
        if n_clusters > limits.max_clusters:
            raise exhausted(
                "spec.config.n_clusters",
                f"spec.config.n_clusters={n_clusters} exceeds the server's limit of "
                f"{limits.max_clusters}",
            )
        if config.init not in INIT_NAMES:
            raise invalid("spec.config.init", f"spec.config.init={config.init} is not a known init method")
        init = INIT_NAMES[config.init]
        init_centers = None
        if init == "given":
            if not config.HasField("init_centers"):
                raise invalid(
                    "spec.config.init_centers",
                    "spec.config.init_centers is required when init is INIT_METHOD_GIVEN",
                )
            init_centers = decode_matrix(
                config.init_centers, "spec.config.init_centers",
                max_rows=limits.max_clusters, max_cols=limits.max_features,
            )
            check_finite(init_centers, "spec.config.init_centers")
            if init_centers.shape[0] != n_clusters:
                raise invalid(
                    "spec.config.init_centers.rows",
                    f"spec.config.init_centers has {init_centers.shape[0]} rows but "
                    f"n_clusters is {n_clusters}",
                )
        n_init = int(config.n_init) or (10 if init == "random" else 1)
        if n_init > MAX_N_INIT:
            raise invalid("spec.config.n_init", f"spec.config.n_init must be at most {MAX_N_INIT}, got {n_init}")
        if init == "given" and n_init != 1:
            raise invalid(
                "spec.config.n_init", f"spec.config.n_init must be 1 with given centers, got {n_init}"
            )
        max_iter = int(config.max_iter) or DEFAULT_MAX_ITER
        if max_iter > MAX_MAX_ITER:
            raise invalid(
                "spec.config.max_iter",
                f"spec.config.max_iter must be at most {MAX_MAX_ITER}, got {max_iter}",
            )
        tol = config.tol if config.HasField("tol") else DEFAULT_TOL
        if not (math.isfinite(tol) and tol >= 0):
            raise invalid("spec.config.tol", f"spec.config.tol must be finite and >= 0, got {tol}")
        seed = int(config.seed) if config.HasField("seed") else None
        n_samples = int(spec.n_samples)
        if n_samples > limits.max_points:
            raise exhausted(
                "spec.n_samples",
                f"spec.n_samples={n_samples} exceeds the server's limit of {limits.max_points} points",
            )
        return FitParams(
            model=model,
            n_clusters=n_clusters,
            init=init,
            init_centers=init_centers,
            n_init=n_init,
            max_iter=max_iter,
            tol=float(tol),
            seed=seed,
            n_samples=n_samples,
            expected_version=spec.expected_version if spec.HasField("expected_version") else None,
            return_labels=spec.return_labels,
        )

    def _receive_fit_data(
        self, first: pb.FitRequest, rest: Iterator[pb.FitRequest], params: FitParams
    ) -> FitData:
        gatherer = _FitGatherer(self._config, params)
        gatherer.add(first, 0)
        for index, message in enumerate(rest, start=1):
            gatherer.add(message, index)
        return gatherer.finish()

    # ---- Predict ---------------------------------------------------------

    @handle_errors
    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        snapshot = self._snapshot_for(request)
        if not request.HasField("points"):
            raise invalid("points", "points is required")
        return self._predict(snapshot, request.points, request.options, offset=0)

    @handle_errors
    def PredictStream(self, request_iterator: Iterator[pb.PredictRequest], context: grpc.ServicerContext):
        first = next(request_iterator, None)
        if first is None:
            return
        snapshot = self._snapshot_for(first)
        options = first.options
        offset = 0
        for index, message in enumerate(_chain(first, _read_ahead(request_iterator))):
            if index and (message.model or message.HasField("version") or message.HasField("options")):
                raise invalid(
                    "model",
                    f"message {index} of the stream sets model, version or options; only the "
                    "first message may",
                )
            if not message.HasField("points"):
                continue
            response = self._predict(snapshot, message.points, options, offset)
            offset += message.points.rows
            yield response

    def _snapshot_for(self, request: pb.PredictRequest) -> ModelSnapshot:
        name = check_model_name(request.model, "model")
        version = request.version if request.HasField("version") else None
        snapshot = self._registry.get_version(name, version)
        if snapshot.n_clusters == 0:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"model {name!r} has no centers yet: it holds "
                f"{snapshot.extra.get('init_points_buffered', 0)} points and initialises "
                f"once it has {snapshot.config.get('init_size') or 'its first batch or 3 * n_clusters'} "
                "of them",
                field="model",
                reason="NOT_INITIALIZED",
            )
        return snapshot

    def _predict(
        self, snapshot: ModelSnapshot, message: pb.Matrix, options: pb.PredictOptions, offset: int
    ) -> pb.PredictResponse:
        limits = self._config
        points = decode_matrix(
            message, "points", max_rows=limits.max_points, max_cols=limits.max_features,
            allow_empty=True,
        )
        if points.shape[1] != snapshot.n_features:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"points.cols={points.shape[1]} but model {snapshot.name!r} version "
                f"{snapshot.version} has {snapshot.n_features} features",
                field="points.cols",
                reason="FEATURE_MISMATCH",
            )
        response = pb.PredictResponse(version=snapshot.version, offset=offset)
        if points.shape[0] == 0:
            return response
        check_finite(points, "points")
        itemsize = points.dtype.itemsize
        row_bytes = 4 + itemsize * (options.return_distances + options.return_transform * snapshot.n_clusters)
        budget = limits.max_message_bytes - ENVELOPE_BYTES
        if points.shape[0] * row_bytes > budget:
            raise exhausted(
                "points.rows",
                f"the answer for points.rows={points.shape[0]} would be "
                f"{points.shape[0] * row_bytes} bytes, over the server's message limit of "
                f"{limits.max_message_bytes}; send at most {max(1, budget // row_bytes)} rows "
                "per message with PredictStream",
            )
        self.metrics.predicted.inc(points.shape[0])
        if options.return_distances:
            labels, distances = kmeans.predict(points, snapshot.centers, return_distance=True)
        else:
            labels = kmeans.predict(points, snapshot.centers)
        response.labels = encode_labels(labels)
        if options.return_distances:
            response.distances.CopyFrom(encode_matrix(distances.reshape(-1, 1)))
        if options.return_transform:
            response.transform.CopyFrom(encode_matrix(kmeans.transform(points, snapshot.centers)))
        return response

    # ---- Model management ------------------------------------------------

    @handle_errors
    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.Model:
        name = check_model_name(request.name, "name")
        version = request.version if request.HasField("version") else None
        snapshot = self._registry.get_version(name, version, field="name")
        return model_message(
            snapshot,
            include_centers=request.include_centers,
            durable_version=self.hub.durable_version(name, snapshot.version),
        )

    @handle_errors
    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        page_size = int(request.page_size) or DEFAULT_PAGE_SIZE
        if page_size > MAX_PAGE_SIZE:
            raise invalid("page_size", f"page_size must be at most {MAX_PAGE_SIZE}, got {page_size}")
        after = _decode_page_token(request.page_token)
        names = self._registry.names()
        start = bisect.bisect_right(names, after) if after is not None else 0
        page = names[start : start + page_size]
        models = []
        for name in page:
            try:
                snapshot = self._registry.get(name)
                models.append(
                    model_message(
                        snapshot,
                        include_centers=False,
                        durable_version=self.hub.durable_version(name, snapshot.version),
                    )
                )
            except ServiceError:
                continue  # deleted since the listing was taken
        more = start + page_size < len(names)
        token = _encode_page_token(page[-1]) if more and page else ""
        return pb.ListModelsResponse(models=models, next_page_token=token)

    @handle_errors
    def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.ServicerContext
    ) -> pb.DeleteModelResponse:
        name = check_model_name(request.name, "name")
        expected = request.expected_version if request.HasField("expected_version") else None
        version = self._registry.delete(name, expected)
        self.metrics.models.set(len(self._registry))
        log.info("model deleted model=%s version=%d", name, version)
        return pb.DeleteModelResponse(name=name, version=version)

    # ---- Later capabilities ----------------------------------------------

    # ---- StreamMiniBatch ---------------------------------------------------

    @handle_errors
    def StreamMiniBatch(
        self, request_iterator: Iterator[pb.MiniBatchRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.MiniBatchAck]:
        first = next(request_iterator, None)
        if first is None:
            return
        if first.WhichOneof("item") != "open":
            raise invalid("open", "the first message of a StreamMiniBatch stream must be open")
        name = check_model_name(first.open.model, "open.model")
        create = first.open.create_if_missing if first.open.HasField("create_if_missing") else None
        live = self.hub.open(name, create)
        try:
            for index, message in enumerate(_read_ahead(request_iterator), start=1):
                if message.WhichOneof("item") != "batch":
                    raise invalid("open", f"message {index} is not a batch; only the first may be open")
                yield self._ack(live, message.batch)
        finally:
            self.hub.close(live)

    def _ack(self, live: LiveModel, batch: pb.MiniBatch) -> pb.MiniBatchAck:
        ack = pb.MiniBatchAck(producer_id=batch.producer_id, sequence=batch.sequence)
        try:
            result = self.hub.apply(live, batch)
        except (ServiceError, kmeans.InvalidInputError) as exc:
            error = exc if isinstance(exc, ServiceError) else from_engine(exc)
            if error.code in _STREAM_ENDING:
                raise error from None
            ack.error.CopyFrom(
                pb.BatchError(code=error.code.value[0], message=error.message, field=error.field or "")
            )
            self.metrics.batches.labels(error.code.name).inc()
            return ack
        ack.version = result.version
        ack.batch_inertia = result.batch_inertia
        ack.n_samples_seen = result.n_samples_seen
        ack.durable_version = result.durable_version
        ack.duplicate = result.duplicate
        self.metrics.batches.labels("DUPLICATE" if result.duplicate else "OK").inc()
        return ack

    # ---- QuantizeImage ------------------------------------------------------

    @handle_errors
    def QuantizeImage(
        self, request_iterator: Iterator[pb.QuantizeImageRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.QuantizeImageResponse]:
        first = next(request_iterator, None)
        if first is None or not first.HasField("spec"):
            raise invalid("spec", "the first message of a QuantizeImage stream must carry spec")
        options, save_as = self._quantize_options(first.spec)
        # A quantisation holds the image and fits a palette: it counts against the fit limit,
        # taken before the image is received so that waiting requests hold no image.
        self._take_fit_slot("image")
        try:
            result = imaging.quantize(
                self._receive_image(first, request_iterator), options, self._config.max_image_pixels
            )
        finally:
            self._fit_slots.release()
        summary = pb.QuantizeSummary(
            palette=result.colors.astype(np.uint8).tobytes(),
            pixel_counts=result.counts.tolist(),
            mse=result.mse,
            psnr=result.psnr,
            width=result.width,
            height=result.height,
            format=imaging.FORMAT_ENUMS[result.image_format],
            notes=result.notes,
        )
        if save_as:
            saved = self._registry.commit(
                ModelSnapshot(
                    name=save_as, version=0, centers=result.colors.astype(np.float32),
                    config={"color_space": options.color_space, "seed": options.seed},
                    inertia=result.mse * 3 * result.width * result.height, n_iter=0,
                    n_samples_seen=result.width * result.height, created_at=0.0, updated_at=0.0,
                    kind="palette",
                )
            )
            self.metrics.models.set(len(self._registry))
            summary.saved_version = saved.version
        image = result.image
        for start in range(0, max(len(image), 1), IMAGE_CHUNK_BYTES):
            response = pb.QuantizeImageResponse(image=image[start : start + IMAGE_CHUNK_BYTES])
            if start + IMAGE_CHUNK_BYTES >= len(image):
                response.summary.CopyFrom(summary)
            yield response

    def _receive_image(
        self, first: pb.QuantizeImageRequest, rest: Iterator[pb.QuantizeImageRequest]
    ) -> bytes:
        limit = self._config.max_image_bytes
        buffer = bytearray(first.image)
        for message in rest:
            if message.HasField("spec"):
                raise invalid("spec", "only the first message of the stream may carry spec")
            if len(buffer) + len(message.image) > limit:
                raise exhausted("image", f"the image is over the server's limit of {limit} bytes")
            buffer += message.image
        return bytes(buffer)

    def _quantize_options(self, spec: pb.QuantizeSpec) -> tuple[imaging.QuantizeOptions, str]:
        imaging.check_options(int(spec.n_colors), int(spec.max_samples))
        colors = None
        if spec.palette_model:
            name = check_model_name(spec.palette_model, "spec.palette_model")
            snapshot = self._registry.get(name, "spec.palette_model")
            if snapshot.n_features != 3 or snapshot.n_clusters > 256:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"model {name!r} has {snapshot.n_clusters} centers of {snapshot.n_features} "
                    "features; a palette needs at most 256 colours of 3 (RGB) values",
                    field="spec.palette_model",
                    reason="NOT_A_PALETTE",
                )
            if not np.isfinite(snapshot.centers).all():
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"model {name!r} has centers that are not finite numbers",
                    field="spec.palette_model",
                    reason="NOT_A_PALETTE",
                )
            colors = np.rint(np.clip(snapshot.centers, 0, 255)).astype(np.uint8)
        save_as = check_model_name(spec.save_palette_as, "spec.save_palette_as") if spec.save_palette_as else ""
        for field, value, known in (
            ("spec.color_space", spec.color_space, (pb.COLOR_SPACE_UNSPECIFIED, pb.COLOR_SPACE_RGB, pb.COLOR_SPACE_LAB)),
            ("spec.dither", spec.dither, (pb.DITHER_UNSPECIFIED, pb.DITHER_NONE, pb.DITHER_FLOYD_STEINBERG)),
            ("spec.output_format", spec.output_format, tuple(imaging.FORMAT_NAMES)),
        ):
            if value not in known:
                raise invalid(field, f"{field}={value} is not a known value")
        options = imaging.QuantizeOptions(
            n_colors=int(spec.n_colors),
            seed=int(spec.seed) if spec.HasField("seed") else 0,
            max_samples=int(spec.max_samples) or imaging.DEFAULT_MAX_SAMPLES,
            color_space="lab" if spec.color_space == pb.COLOR_SPACE_LAB else "rgb",
            dither=spec.dither == pb.DITHER_FLOYD_STEINBERG,
            output_format=imaging.FORMAT_NAMES.get(spec.output_format, "PNG"),
            colors=colors,
        )
        return options, save_as


class _FitGatherer:
    """Collects the chunks of a Fit stream, checking every one against the first."""

    def __init__(self, limits: ServerConfig, params: FitParams) -> None:
        self._limits = limits
        self._params = params
        self._declared = params.n_samples
        self._buffer: np.ndarray | None = None
        self._chunks: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._rows = 0
        self._dtype: np.dtype | None = None
        self._cols = 0
        self._weighted: bool | None = None

    def add(self, message: pb.FitRequest, index: int) -> None:
        if not message.HasField("points"):
            if message.HasField("sample_weight"):
                raise invalid("sample_weight", f"message {index} has sample_weight but no points")
            return
        limits = self._limits
        chunk = decode_matrix(
            message.points, "points", max_rows=limits.max_points, max_cols=limits.max_features,
            allow_empty=True,
        )
        if self._dtype is None:
            self._start(chunk)
        elif chunk.dtype != self._dtype or chunk.shape[1] != self._cols:
            raise invalid(
                "points",
                f"message {index} has {chunk.shape[1]} columns of {chunk.dtype.name} but the "
                f"stream started with {self._cols} columns of {self._dtype.name}",
            )
        weighted = message.HasField("sample_weight")
        if chunk.shape[0] and self._weighted is None:
            self._weighted = weighted
        if chunk.shape[0] and weighted != self._weighted:
            raise invalid(
                "sample_weight",
                f"message {index}: sample_weight must be given for every chunk or for none",
            )
        rows = chunk.shape[0]
        if self._rows + rows > limits.max_points:
            raise exhausted(
                "points.rows",
                f"the stream carries more than the server's limit of {limits.max_points} points",
            )
        data_bytes = (self._rows + rows) * self._cols * chunk.dtype.itemsize
        if data_bytes > limits.max_fit_bytes:
            raise exhausted(
                "points",
                f"the stream's data reached {data_bytes} bytes, over the server's limit of "
                f"{limits.max_fit_bytes} bytes per fit",
            )
        if weighted:
            self._weights.append(decode_vector(message.sample_weight, "sample_weight", rows))
        if self._buffer is not None:
            if self._rows + rows > self._declared:
                raise invalid(
                    "spec.n_samples",
                    f"the stream carries more rows than spec.n_samples={self._declared}",
                )
            self._buffer[self._rows : self._rows + rows] = chunk
        else:
            self._chunks.append(chunk)
        self._rows += rows

    def _start(self, chunk: np.ndarray) -> None:
        self._dtype = chunk.dtype
        self._cols = chunk.shape[1]
        itemsize = chunk.dtype.itemsize
        params, limits = self._params, self._limits
        center_bytes = params.n_clusters * self._cols * itemsize
        if center_bytes > limits.max_message_bytes - ENVELOPE_BYTES:
            raise exhausted(
                "spec.config.n_clusters",
                f"{params.n_clusters} centers of {self._cols} features would not fit in one "
                f"message under the server's limit of {limits.max_message_bytes} bytes",
            )
        if params.init_centers is not None and params.init_centers.shape[1] != self._cols:
            raise invalid(
                "spec.config.init_centers.cols",
                f"spec.config.init_centers has {params.init_centers.shape[1]} columns but "
                f"points have {self._cols}",
            )
        if self._declared:
            if self._declared * self._cols * itemsize > limits.max_fit_bytes:
                raise exhausted(
                    "spec.n_samples",
                    f"spec.n_samples={self._declared} rows of {self._cols} {chunk.dtype.name} "
                    f"exceed the server's limit of {limits.max_fit_bytes} bytes per fit",
                )
            self._buffer = np.empty((self._declared, self._cols), dtype=chunk.dtype)

    def finish(self) -> FitData:
        if self._rows == 0:
            raise invalid("points", "the Fit stream carried no points")
        if self._buffer is not None:
            if self._rows != self._declared:
                raise invalid(
                    "spec.n_samples",
                    f"spec.n_samples={self._declared} but the stream carried {self._rows} rows",
                )
            points = self._buffer
        else:
            points = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0].copy()
        self._chunks.clear()
        check_finite(points, "points")
        n_clusters = self._params.n_clusters
        if n_clusters > self._rows:
            raise invalid(
                "spec.config.n_clusters",
                f"spec.config.n_clusters={n_clusters} is larger than the number of points, {self._rows}",
            )
        weights = None
        if self._weighted:
            weights = np.concatenate(self._weights).astype(np.float64)
            if weights.sum() <= 0:
                raise invalid("sample_weight", "sample_weight must have a positive sum")
        return FitData(points, weights)


def _progress(stage: int, *, n_samples: int, started: float) -> pb.FitResponse:
    return pb.FitResponse(
        progress=pb.FitProgress(
            stage=stage, points_received=n_samples, elapsed_seconds=time.monotonic() - started
        )
    )


# Messages a stream receives ahead of the one being worked on (each up to
# --max-message-bytes, so this bounds the memory a stream holds).
READ_AHEAD = 2
T = TypeVar("T")
_END = object()


def _read_ahead(messages: Iterator[T]) -> Iterator[T]:
    """The same messages, received by a second thread while the caller works on earlier ones.

    Receiving and parsing the next message then overlaps the work on this one, whose
    kernels run without the GIL.
    """
    received: queue.Queue[object] = queue.Queue(maxsize=READ_AHEAD)
    stopped = threading.Event()

    def hand_over(item: object) -> bool:
        while not stopped.is_set():
            try:
                received.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer left early (an error ended the call)

    def receive() -> None:
        try:
            for message in messages:
                if not hand_over(message):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            hand_over(exc)
        else:
            hand_over(_END)

    threading.Thread(target=receive, name="centroidal-read-ahead", daemon=True).start()
    try:
        while True:
            item = received.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stopped.set()


def _chain(first: pb.PredictRequest, rest: Iterator[pb.PredictRequest]) -> Iterator[pb.PredictRequest]:
    yield first
    yield from rest


def _encode_page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode_page_token(token: str) -> str | None:
    if not token:
        return None
    try:
        return check_model_name(base64.urlsafe_b64decode(token.encode()).decode(), "page_token")
    except (ValueError, UnicodeDecodeError, ServiceError):
        raise invalid("page_token", f"page_token {token!r} was not issued by this server") from None
