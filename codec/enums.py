"""Every enum of the contract as a table from wire numbers to the names both sides use
("k-means++", "minibatch-kmeans", "lab", ...). An unset (0) enum reads as its default."""

from __future__ import annotations

from collections.abc import Mapping

from centroidal.v1 import clustering_pb2 as pb

from .wire import WireError


class EnumTable:
    """Wire numbers to names and back; 0 (unset) reads as ``default``."""

    def __init__(self, enum_name: str, names: Mapping[int, str], default: str) -> None:
        self.enum_name = enum_name
        self.names = dict(names)
        self.numbers = {name: number for number, name in self.names.items()}
        self.default = default

    def name(self, number: int, field: str, *, lenient: bool = False) -> str:
        """The name of a wire number. An unknown number is refused, or, when ``lenient`` (for
        answers from a newer server), read as "unknown"."""
        if number == 0:
            return self.default
        try:
            return self.names[number]
        except KeyError:
            if lenient:
                return "unknown"
            raise WireError(field, f"{field}={number} is not a known {self.enum_name}") from None

    def number(self, name: str) -> int:
        try:
            return self.numbers[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self.numbers)
            raise ValueError(f"{name!r} is not a {self.enum_name}; use one of {known}") from None

    def choice(self, value: str, argument: str) -> str:
        """``value`` if the table knows it; a ValueError naming ``argument`` and the choices if not."""
        if value not in self.numbers:
            known = ", ".join(repr(choice.lower()) for choice in self.numbers)
            raise ValueError(f"{argument} must be one of {known}, got {value.lower()!r}")
        return value


ALGORITHMS = EnumTable(
    "Algorithm", {pb.ALGORITHM_KMEANS: "kmeans", pb.ALGORITHM_SPECTRAL: "spectral"}, "kmeans"
)
INIT_METHODS = EnumTable(
    "InitMethod",
    {
        pb.INIT_METHOD_KMEANS_PLUS_PLUS: "k-means++",
        pb.INIT_METHOD_RANDOM: "random",
        pb.INIT_METHOD_GIVEN: "given",
    },
    "k-means++",
)
METRICS = EnumTable(
    "Metric", {pb.METRIC_EUCLIDEAN: "euclidean", pb.METRIC_COSINE: "cosine"}, "euclidean"
)
MODEL_KINDS = EnumTable(
    "ModelKind",
    {
        pb.MODEL_KIND_KMEANS: "kmeans",
        pb.MODEL_KIND_MINIBATCH_KMEANS: "minibatch-kmeans",
        pb.MODEL_KIND_PALETTE: "palette",
        pb.MODEL_KIND_SPECTRAL: "spectral",
    },
    "unknown",
)
DATASET_FORMATS = EnumTable(
    "DatasetFormat", {pb.DATASET_FORMAT_PARQUET: "parquet", pb.DATASET_FORMAT_NPY: "npy"}, ""
)
STAGES = EnumTable(
    "FitProgress.Stage",
    {
        pb.FitProgress.STAGE_DATA_RECEIVED: "data_received",
        pb.FitProgress.STAGE_INITIALIZED: "initialized",
        pb.FitProgress.STAGE_ITERATION: "iteration",
        pb.FitProgress.STAGE_RESTART_DONE: "restart_done",
        pb.FitProgress.STAGE_SEEDING: "seeding",
        pb.FitProgress.STAGE_ADMITTED: "admitted",
        pb.FitProgress.STAGE_SCORING: "scoring",
        pb.FitProgress.STAGE_COMPILING: "compiling",
    },
    "unknown",
)
HALF_LIFE_UNITS = EnumTable(
    "MiniBatchConfig.HalfLifeUnit",
    {
        pb.MiniBatchConfig.HALF_LIFE_UNIT_BATCHES: "batches",
        pb.MiniBatchConfig.HALF_LIFE_UNIT_POINTS: "points",
    },
    "batches",
)
COLOR_SPACES = EnumTable(
    "ColorSpace", {pb.COLOR_SPACE_RGB: "rgb", pb.COLOR_SPACE_LAB: "lab"}, "rgb"
)
DITHERS = EnumTable(
    "Dither", {pb.DITHER_NONE: "none", pb.DITHER_FLOYD_STEINBERG: "floyd-steinberg"}, "none"
)
# Names are Pillow's format names; "same" is the input's format.
IMAGE_FORMATS = EnumTable(
    "ImageFormat",
    {
        pb.IMAGE_FORMAT_PNG: "PNG",
        pb.IMAGE_FORMAT_JPEG: "JPEG",
        pb.IMAGE_FORMAT_WEBP: "WEBP",
        pb.IMAGE_FORMAT_SAME_AS_INPUT: "same",
        pb.IMAGE_FORMAT_BMP: "BMP",
        pb.IMAGE_FORMAT_TIFF: "TIFF",
        pb.IMAGE_FORMAT_GIF: "GIF",
    },
    "PNG",
)
ENUM_TABLES: dict[str, EnumTable] = {
    table.enum_name: table
    for table in (
        ALGORITHMS, INIT_METHODS, MODEL_KINDS, STAGES, HALF_LIFE_UNITS, COLOR_SPACES, DITHERS,
        IMAGE_FORMATS, METRICS, DATASET_FORMATS,
    )
}
