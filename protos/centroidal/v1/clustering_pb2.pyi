import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]

class Algorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALGORITHM_UNSPECIFIED: _ClassVar[Algorithm]
    ALGORITHM_KMEANS: _ClassVar[Algorithm]
    ALGORITHM_SPECTRAL: _ClassVar[Algorithm]

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_EUCLIDEAN: _ClassVar[Metric]
    METRIC_COSINE: _ClassVar[Metric]

class InitMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INIT_METHOD_UNSPECIFIED: _ClassVar[InitMethod]
    INIT_METHOD_KMEANS_PLUS_PLUS: _ClassVar[InitMethod]
    INIT_METHOD_RANDOM: _ClassVar[InitMethod]
    INIT_METHOD_GIVEN: _ClassVar[InitMethod]

class DatasetFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_FORMAT_UNSPECIFIED: _ClassVar[DatasetFormat]
    DATASET_FORMAT_PARQUET: _ClassVar[DatasetFormat]
    DATASET_FORMAT_NPY: _ClassVar[DatasetFormat]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_KMEANS: _ClassVar[ModelKind]
    MODEL_KIND_MINIBATCH_KMEANS: _ClassVar[ModelKind]
    MODEL_KIND_PALETTE: _ClassVar[ModelKind]
    MODEL_KIND_SPECTRAL: _ClassVar[ModelKind]

class ColorSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLOR_SPACE_UNSPECIFIED: _ClassVar[ColorSpace]
    COLOR_SPACE_RGB: _ClassVar[ColorSpace]
    COLOR_SPACE_LAB: _ClassVar[ColorSpace]

class Dither(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DITHER_UNSPECIFIED: _ClassVar[Dither]
    DITHER_NONE: _ClassVar[Dither]
    DITHER_FLOYD_STEINBERG: _ClassVar[Dither]

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_WEBP: _ClassVar[ImageFormat]
    IMAGE_FORMAT_SAME_AS_INPUT: _ClassVar[ImageFormat]
    IMAGE_FORMAT_BMP: _ClassVar[ImageFormat]
    IMAGE_FORMAT_TIFF: _ClassVar[ImageFormat]
    IMAGE_FORMAT_GIF: _ClassVar[ImageFormat]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT64: DType
ALGORITHM_UNSPECIFIED: Algorithm
ALGORITHM_KMEANS: Algorithm
ALGORITHM_SPECTRAL: Algorithm
METRIC_UNSPECIFIED: Metric
METRIC_EUCLIDEAN: Metric
METRIC_COSINE: Metric
INIT_METHOD_UNSPECIFIED: InitMethod
INIT_METHOD_KMEANS_PLUS_PLUS: InitMethod
INIT_METHOD_RANDOM: InitMethod
INIT_METHOD_GIVEN: InitMethod
DATASET_FORMAT_UNSPECIFIED: DatasetFormat
DATASET_FORMAT_PARQUET: DatasetFormat
DATASET_FORMAT_NPY: DatasetFormat
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_KMEANS: ModelKind
MODEL_KIND_MINIBATCH_KMEANS: ModelKind
MODEL_KIND_PALETTE: ModelKind
MODEL_KIND_SPECTRAL: ModelKind
COLOR_SPACE_UNSPECIFIED: ColorSpace
COLOR_SPACE_RGB: ColorSpace
COLOR_SPACE_LAB: ColorSpace
DITHER_UNSPECIFIED: Dither
DITHER_NONE: Dither
DITHER_FLOYD_STEINBERG: Dither
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
IMAGE_FORMAT_WEBP: ImageFormat
IMAGE_FORMAT_SAME_AS_INPUT: ImageFormat
IMAGE_FORMAT_BMP: ImageFormat
IMAGE_FORMAT_TIFF: ImageFormat
IMAGE_FORMAT_GIF: ImageFormat

class Matrix(_message.Message):
    __slots__ = ("dtype", "rows", "cols", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    rows: int
    cols: int
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("dtype", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class KMeansConfig(_message.Message):
    __slots__ = ("algorithm", "n_clusters", "init", "init_centers", "n_init", "max_iter", "tol", "seed", "metric", "n_neighbors")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    N_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    INIT_CENTERS_FIELD_NUMBER: _ClassVar[int]
    N_INIT_FIELD_NUMBER: _ClassVar[int]
    MAX_ITER_FIELD_NUMBER: _ClassVar[int]
    TOL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    N_NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    algorithm: Algorithm
    n_clusters: int
    init: InitMethod
    init_centers: Matrix
    n_init: int
    max_iter: int
    tol: float
    seed: int
    metric: Metric
    n_neighbors: int
    def __init__(self, algorithm: _Optional[_Union[Algorithm, str]] = ..., n_clusters: _Optional[int] = ..., init: _Optional[_Union[InitMethod, str]] = ..., init_centers: _Optional[_Union[Matrix, _Mapping]] = ..., n_init: _Optional[int] = ..., max_iter: _Optional[int] = ..., tol: _Optional[float] = ..., seed: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., n_neighbors: _Optional[int] = ...) -> None: ...

class DatasetSource(_message.Message):
    __slots__ = ("uri", "format", "columns", "weight_column")
    URI_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_COLUMN_FIELD_NUMBER: _ClassVar[int]
    uri: str
    format: DatasetFormat
    columns: _containers.RepeatedScalarFieldContainer[str]
    weight_column: str
    def __init__(self, uri: _Optional[str] = ..., format: _Optional[_Union[DatasetFormat, str]] = ..., columns: _Optional[_Iterable[str]] = ..., weight_column: _Optional[str] = ...) -> None: ...

class PredictDatasetRequest(_message.Message):
    __slots__ = ("model", "version", "input", "output_uri", "return_distances", "overwrite")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_URI_FIELD_NUMBER: _ClassVar[int]
    RETURN_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    input: DatasetSource
    output_uri: str
    return_distances: bool
    overwrite: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., input: _Optional[_Union[DatasetSource, _Mapping]] = ..., output_uri: _Optional[str] = ..., return_distances: _Optional[bool] = ..., overwrite: _Optional[bool] = ...) -> None: ...

class PredictDatasetProgress(_message.Message):
    __slots__ = ("rows_done", "rows_total", "partitions_done", "partitions_total", "elapsed_seconds")
    ROWS_DONE_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_DONE_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    rows_done: int
    rows_total: int
    partitions_done: int
    partitions_total: int
    elapsed_seconds: float
    def __init__(self, rows_done: _Optional[int] = ..., rows_total: _Optional[int] = ..., partitions_done: _Optional[int] = ..., partitions_total: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class PredictDatasetResult(_message.Message):
    __slots__ = ("model_version", "rows", "files", "output_uri", "elapsed_seconds")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_URI_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_version: int
    rows: int
    files: int
    output_uri: str
    elapsed_seconds: float
    def __init__(self, model_version: _Optional[int] = ..., rows: _Optional[int] = ..., files: _Optional[int] = ..., output_uri: _Optional[str] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class PredictDatasetResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: PredictDatasetProgress
    result: PredictDatasetResult
    def __init__(self, progress: _Optional[_Union[PredictDatasetProgress, _Mapping]] = ..., result: _Optional[_Union[PredictDatasetResult, _Mapping]] = ...) -> None: ...

class FitSpec(_message.Message):
    __slots__ = ("model", "config", "n_samples", "expected_version", "return_labels", "source")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    RETURN_LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    config: KMeansConfig
    n_samples: int
    expected_version: int
    return_labels: bool
    source: DatasetSource
    def __init__(self, model: _Optional[str] = ..., config: _Optional[_Union[KMeansConfig, _Mapping]] = ..., n_samples: _Optional[int] = ..., expected_version: _Optional[int] = ..., return_labels: _Optional[bool] = ..., source: _Optional[_Union[DatasetSource, _Mapping]] = ...) -> None: ...

class FitRequest(_message.Message):
    __slots__ = ("spec", "points", "sample_weight")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    spec: FitSpec
    points: Matrix
    sample_weight: Vector
    def __init__(self, spec: _Optional[_Union[FitSpec, _Mapping]] = ..., points: _Optional[_Union[Matrix, _Mapping]] = ..., sample_weight: _Optional[_Union[Vector, _Mapping]] = ...) -> None: ...

class FitProgress(_message.Message):
    __slots__ = ("stage", "restart", "n_init", "iteration", "inertia", "center_shift", "points_received", "elapsed_seconds", "n_clusters", "distances_skipped")
    class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STAGE_UNSPECIFIED: _ClassVar[FitProgress.Stage]
        STAGE_DATA_RECEIVED: _ClassVar[FitProgress.Stage]
        STAGE_INITIALIZED: _ClassVar[FitProgress.Stage]
        STAGE_ITERATION: _ClassVar[FitProgress.Stage]
        STAGE_RESTART_DONE: _ClassVar[FitProgress.Stage]
        STAGE_SEEDING: _ClassVar[FitProgress.Stage]
        STAGE_ADMITTED: _ClassVar[FitProgress.Stage]
        STAGE_SCORING: _ClassVar[FitProgress.Stage]
        STAGE_COMPILING: _ClassVar[FitProgress.Stage]
    STAGE_UNSPECIFIED: FitProgress.Stage
    STAGE_DATA_RECEIVED: FitProgress.Stage
    STAGE_INITIALIZED: FitProgress.Stage
    STAGE_ITERATION: FitProgress.Stage
    STAGE_RESTART_DONE: FitProgress.Stage
    STAGE_SEEDING: FitProgress.Stage
    STAGE_ADMITTED: FitProgress.Stage
    STAGE_SCORING: FitProgress.Stage
    STAGE_COMPILING: FitProgress.Stage
    STAGE_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    N_INIT_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    INERTIA_FIELD_NUMBER: _ClassVar[int]
    CENTER_SHIFT_FIELD_NUMBER: _ClassVar[int]
    POINTS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    N_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    stage: FitProgress.Stage
    restart: int
    n_init: int
    iteration: int
    inertia: float
    center_shift: float
    points_received: int
    elapsed_seconds: float
    n_clusters: int
    distances_skipped: float
    def __init__(self, stage: _Optional[_Union[FitProgress.Stage, str]] = ..., restart: _Optional[int] = ..., n_init: _Optional[int] = ..., iteration: _Optional[int] = ..., inertia: _Optional[float] = ..., center_shift: _Optional[float] = ..., points_received: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ..., n_clusters: _Optional[int] = ..., distances_skipped: _Optional[float] = ...) -> None: ...

class LabelsChunk(_message.Message):
    __slots__ = ("offset", "labels")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    offset: int
    labels: bytes
    def __init__(self, offset: _Optional[int] = ..., labels: _Optional[bytes] = ...) -> None: ...

class FitResult(_message.Message):
    __slots__ = ("model", "n_samples", "best_restart", "elapsed_seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BEST_RESTART_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: Model
    n_samples: int
    best_restart: int
    elapsed_seconds: float
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., n_samples: _Optional[int] = ..., best_restart: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class FitResponse(_message.Message):
    __slots__ = ("progress", "labels", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: FitProgress
    labels: LabelsChunk
    result: FitResult
    def __init__(self, progress: _Optional[_Union[FitProgress, _Mapping]] = ..., labels: _Optional[_Union[LabelsChunk, _Mapping]] = ..., result: _Optional[_Union[FitResult, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "version", "kind", "config", "n_features", "n_clusters", "dtype", "inertia", "n_iter", "n_samples_seen", "created_at", "updated_at", "centers", "minibatch", "durable_version", "n_batches", "init_points_buffered", "metric")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    N_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    INERTIA_FIELD_NUMBER: _ClassVar[int]
    N_ITER_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_SEEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CENTERS_FIELD_NUMBER: _ClassVar[int]
    MINIBATCH_FIELD_NUMBER: _ClassVar[int]
    DURABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    N_BATCHES_FIELD_NUMBER: _ClassVar[int]
    INIT_POINTS_BUFFERED_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    kind: ModelKind
    config: KMeansConfig
    n_features: int
    n_clusters: int
    dtype: DType
    inertia: float
    n_iter: int
    n_samples_seen: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    centers: Matrix
    minibatch: MiniBatchConfig
    durable_version: int
    n_batches: int
    init_points_buffered: int
    metric: Metric
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., config: _Optional[_Union[KMeansConfig, _Mapping]] = ..., n_features: _Optional[int] = ..., n_clusters: _Optional[int] = ..., dtype: _Optional[_Union[DType, str]] = ..., inertia: _Optional[float] = ..., n_iter: _Optional[int] = ..., n_samples_seen: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., centers: _Optional[_Union[Matrix, _Mapping]] = ..., minibatch: _Optional[_Union[MiniBatchConfig, _Mapping]] = ..., durable_version: _Optional[int] = ..., n_batches: _Optional[int] = ..., init_points_buffered: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ...) -> None: ...

class PredictOptions(_message.Message):
    __slots__ = ("return_distances", "return_transform", "narrow_labels")
    RETURN_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    RETURN_TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    NARROW_LABELS_FIELD_NUMBER: _ClassVar[int]
    return_distances: bool
    return_transform: bool
    narrow_labels: bool
    def __init__(self, return_distances: _Optional[bool] = ..., return_transform: _Optional[bool] = ..., narrow_labels: _Optional[bool] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "version", "points", "options", "points_shared")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    POINTS_SHARED_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    points: Matrix
    options: PredictOptions
    points_shared: SharedRows
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., points: _Optional[_Union[Matrix, _Mapping]] = ..., options: _Optional[_Union[PredictOptions, _Mapping]] = ..., points_shared: _Optional[_Union[SharedRows, _Mapping]] = ...) -> None: ...

class SharedRows(_message.Message):
    __slots__ = ("name", "offset")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    name: str
    offset: int
    def __init__(self, name: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("version", "offset", "labels", "distances", "transform", "label_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    LABEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    offset: int
    labels: bytes
    distances: Matrix
    transform: Matrix
    label_bytes: int
    def __init__(self, version: _Optional[int] = ..., offset: _Optional[int] = ..., labels: _Optional[bytes] = ..., distances: _Optional[_Union[Matrix, _Mapping]] = ..., transform: _Optional[_Union[Matrix, _Mapping]] = ..., label_bytes: _Optional[int] = ...) -> None: ...

class MiniBatchConfig(_message.Message):
    __slots__ = ("n_clusters", "init_size", "reassignment_ratio", "half_life", "half_life_unit", "seed", "metric")
    class HalfLifeUnit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        HALF_LIFE_UNIT_UNSPECIFIED: _ClassVar[MiniBatchConfig.HalfLifeUnit]
        HALF_LIFE_UNIT_BATCHES: _ClassVar[MiniBatchConfig.HalfLifeUnit]
        HALF_LIFE_UNIT_POINTS: _ClassVar[MiniBatchConfig.HalfLifeUnit]
    HALF_LIFE_UNIT_UNSPECIFIED: MiniBatchConfig.HalfLifeUnit
    HALF_LIFE_UNIT_BATCHES: MiniBatchConfig.HalfLifeUnit
    HALF_LIFE_UNIT_POINTS: MiniBatchConfig.HalfLifeUnit
    N_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    INIT_SIZE_FIELD_NUMBER: _ClassVar[int]
    REASSIGNMENT_RATIO_FIELD_NUMBER: _ClassVar[int]
    HALF_LIFE_FIELD_NUMBER: _ClassVar[int]
    HALF_LIFE_UNIT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    n_clusters: int
    init_size: int
    reassignment_ratio: float
    half_life: float
    half_life_unit: MiniBatchConfig.HalfLifeUnit
    seed: int
    metric: Metric
    def __init__(self, n_clusters: _Optional[int] = ..., init_size: _Optional[int] = ..., reassignment_ratio: _Optional[float] = ..., half_life: _Optional[float] = ..., half_life_unit: _Optional[_Union[MiniBatchConfig.HalfLifeUnit, str]] = ..., seed: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ...) -> None: ...

class MiniBatchOpen(_message.Message):
    __slots__ = ("model", "create_if_missing")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATE_IF_MISSING_FIELD_NUMBER: _ClassVar[int]
    model: str
    create_if_missing: MiniBatchConfig
    def __init__(self, model: _Optional[str] = ..., create_if_missing: _Optional[_Union[MiniBatchConfig, _Mapping]] = ...) -> None: ...

class MiniBatch(_message.Message):
    __slots__ = ("producer_id", "sequence", "points", "sample_weight", "points_shared")
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    POINTS_SHARED_FIELD_NUMBER: _ClassVar[int]
    producer_id: str
    sequence: int
    points: Matrix
    sample_weight: Vector
    points_shared: SharedRows
    def __init__(self, producer_id: _Optional[str] = ..., sequence: _Optional[int] = ..., points: _Optional[_Union[Matrix, _Mapping]] = ..., sample_weight: _Optional[_Union[Vector, _Mapping]] = ..., points_shared: _Optional[_Union[SharedRows, _Mapping]] = ...) -> None: ...

class MiniBatchRequest(_message.Message):
    __slots__ = ("open", "batch")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    open: MiniBatchOpen
    batch: MiniBatch
    def __init__(self, open: _Optional[_Union[MiniBatchOpen, _Mapping]] = ..., batch: _Optional[_Union[MiniBatch, _Mapping]] = ...) -> None: ...

class BatchError(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class MiniBatchAck(_message.Message):
    __slots__ = ("producer_id", "sequence", "version", "batch_inertia", "n_samples_seen", "durable_version", "duplicate", "error")
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCH_INERTIA_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_SEEN_FIELD_NUMBER: _ClassVar[int]
    DURABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    producer_id: str
    sequence: int
    version: int
    batch_inertia: float
    n_samples_seen: int
    durable_version: int
    duplicate: bool
    error: BatchError
    def __init__(self, producer_id: _Optional[str] = ..., sequence: _Optional[int] = ..., version: _Optional[int] = ..., batch_inertia: _Optional[float] = ..., n_samples_seen: _Optional[int] = ..., durable_version: _Optional[int] = ..., duplicate: _Optional[bool] = ..., error: _Optional[_Union[BatchError, _Mapping]] = ...) -> None: ...

class QuantizeSpec(_message.Message):
    __slots__ = ("n_colors", "seed", "max_samples", "color_space", "dither", "output_format", "palette_model", "save_palette_as")
    N_COLORS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    COLOR_SPACE_FIELD_NUMBER: _ClassVar[int]
    DITHER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PALETTE_MODEL_FIELD_NUMBER: _ClassVar[int]
    SAVE_PALETTE_AS_FIELD_NUMBER: _ClassVar[int]
    n_colors: int
    seed: int
    max_samples: int
    color_space: ColorSpace
    dither: Dither
    output_format: ImageFormat
    palette_model: str
    save_palette_as: str
    def __init__(self, n_colors: _Optional[int] = ..., seed: _Optional[int] = ..., max_samples: _Optional[int] = ..., color_space: _Optional[_Union[ColorSpace, str]] = ..., dither: _Optional[_Union[Dither, str]] = ..., output_format: _Optional[_Union[ImageFormat, str]] = ..., palette_model: _Optional[str] = ..., save_palette_as: _Optional[str] = ...) -> None: ...

class QuantizeImageRequest(_message.Message):
    __slots__ = ("spec", "image")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    spec: QuantizeSpec
    image: bytes
    def __init__(self, spec: _Optional[_Union[QuantizeSpec, _Mapping]] = ..., image: _Optional[bytes] = ...) -> None: ...

class QuantizeSummary(_message.Message):
    __slots__ = ("palette", "pixel_counts", "mse", "psnr", "width", "height", "format", "notes", "saved_version")
    PALETTE_FIELD_NUMBER: _ClassVar[int]
    PIXEL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    MSE_FIELD_NUMBER: _ClassVar[int]
    PSNR_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    SAVED_VERSION_FIELD_NUMBER: _ClassVar[int]
    palette: bytes
    pixel_counts: _containers.RepeatedScalarFieldContainer[int]
    mse: float
    psnr: float
    width: int
    height: int
    format: ImageFormat
    notes: _containers.RepeatedScalarFieldContainer[str]
    saved_version: int
    def __init__(self, palette: _Optional[bytes] = ..., pixel_counts: _Optional[_Iterable[int]] = ..., mse: _Optional[float] = ..., psnr: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., notes: _Optional[_Iterable[str]] = ..., saved_version: _Optional[int] = ...) -> None: ...

class QuantizeImageResponse(_message.Message):
    __slots__ = ("image", "summary")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    summary: QuantizeSummary
    def __init__(self, image: _Optional[bytes] = ..., summary: _Optional[_Union[QuantizeSummary, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "include_centers", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CENTERS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    include_centers: bool
    version: int
    def __init__(self, name: _Optional[str] = ..., include_centers: _Optional[bool] = ..., version: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name", "expected_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected_version: int
    def __init__(self, name: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class SilhouetteOptions(_message.Message):
    __slots__ = ("sample_size", "all_rows", "seed")
    SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ALL_ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    sample_size: int
    all_rows: bool
    seed: int
    def __init__(self, sample_size: _Optional[int] = ..., all_rows: _Optional[bool] = ..., seed: _Optional[int] = ...) -> None: ...

class EvaluateSpec(_message.Message):
    __slots__ = ("model", "version", "silhouette", "n_samples")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SILHOUETTE_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    silhouette: SilhouetteOptions
    n_samples: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., silhouette: _Optional[_Union[SilhouetteOptions, _Mapping]] = ..., n_samples: _Optional[int] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("spec", "points")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    spec: EvaluateSpec
    points: Matrix
    def __init__(self, spec: _Optional[_Union[EvaluateSpec, _Mapping]] = ..., points: _Optional[_Union[Matrix, _Mapping]] = ...) -> None: ...

class ClusterScores(_message.Message):
    __slots__ = ("silhouette", "silhouette_rows", "calinski_harabasz", "davies_bouldin", "n_clusters_present")
    SILHOUETTE_FIELD_NUMBER: _ClassVar[int]
    SILHOUETTE_ROWS_FIELD_NUMBER: _ClassVar[int]
    CALINSKI_HARABASZ_FIELD_NUMBER: _ClassVar[int]
    DAVIES_BOULDIN_FIELD_NUMBER: _ClassVar[int]
    N_CLUSTERS_PRESENT_FIELD_NUMBER: _ClassVar[int]
    silhouette: float
    silhouette_rows: int
    calinski_harabasz: float
    davies_bouldin: float
    n_clusters_present: int
    def __init__(self, silhouette: _Optional[float] = ..., silhouette_rows: _Optional[int] = ..., calinski_harabasz: _Optional[float] = ..., davies_bouldin: _Optional[float] = ..., n_clusters_present: _Optional[int] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("version", "n_samples", "inertia", "scores", "elapsed_seconds")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    INERTIA_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    version: int
    n_samples: int
    inertia: float
    scores: ClusterScores
    elapsed_seconds: float
    def __init__(self, version: _Optional[int] = ..., n_samples: _Optional[int] = ..., inertia: _Optional[float] = ..., scores: _Optional[_Union[ClusterScores, _Mapping]] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class SuggestKSpec(_message.Message):
    __slots__ = ("k_min", "k_max", "config", "silhouette", "n_samples", "save_best_as")
    K_MIN_FIELD_NUMBER: _ClassVar[int]
    K_MAX_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SILHOUETTE_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAVE_BEST_AS_FIELD_NUMBER: _ClassVar[int]
    k_min: int
    k_max: int
    config: KMeansConfig
    silhouette: SilhouetteOptions
    n_samples: int
    save_best_as: str
    def __init__(self, k_min: _Optional[int] = ..., k_max: _Optional[int] = ..., config: _Optional[_Union[KMeansConfig, _Mapping]] = ..., silhouette: _Optional[_Union[SilhouetteOptions, _Mapping]] = ..., n_samples: _Optional[int] = ..., save_best_as: _Optional[str] = ...) -> None: ...

class SuggestKRequest(_message.Message):
    __slots__ = ("spec", "points")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    spec: SuggestKSpec
    points: Matrix
    def __init__(self, spec: _Optional[_Union[SuggestKSpec, _Mapping]] = ..., points: _Optional[_Union[Matrix, _Mapping]] = ...) -> None: ...

class KScore(_message.Message):
    __slots__ = ("n_clusters", "inertia", "n_iter", "scores")
    N_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    INERTIA_FIELD_NUMBER: _ClassVar[int]
    N_ITER_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    n_clusters: int
    inertia: float
    n_iter: int
    scores: ClusterScores
    def __init__(self, n_clusters: _Optional[int] = ..., inertia: _Optional[float] = ..., n_iter: _Optional[int] = ..., scores: _Optional[_Union[ClusterScores, _Mapping]] = ...) -> None: ...

class SuggestKResult(_message.Message):
    __slots__ = ("recommended_k", "elbow_k", "rule", "per_k", "saved", "elapsed_seconds")
    RECOMMENDED_K_FIELD_NUMBER: _ClassVar[int]
    ELBOW_K_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    PER_K_FIELD_NUMBER: _ClassVar[int]
    SAVED_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    recommended_k: int
    elbow_k: int
    rule: str
    per_k: _containers.RepeatedCompositeFieldContainer[KScore]
    saved: Model
    elapsed_seconds: float
    def __init__(self, recommended_k: _Optional[int] = ..., elbow_k: _Optional[int] = ..., rule: _Optional[str] = ..., per_k: _Optional[_Iterable[_Union[KScore, _Mapping]]] = ..., saved: _Optional[_Union[Model, _Mapping]] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...

class SuggestKResponse(_message.Message):
    __slots__ = ("progress", "k_score", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    K_SCORE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: FitProgress
    k_score: KScore
    result: SuggestKResult
    def __init__(self, progress: _Optional[_Union[FitProgress, _Mapping]] = ..., k_score: _Optional[_Union[KScore, _Mapping]] = ..., result: _Optional[_Union[SuggestKResult, _Mapping]] = ...) -> None: ...
