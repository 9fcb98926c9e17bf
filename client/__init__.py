"""The centroidal SDK: a gRPC client that takes and returns numpy arrays.

    from centroidal.client import Client
    with Client("127.0.0.1:50051") as client:
        client.fit("shops", X, n_clusters=4)
        labels = client.predict("shops", X_new)
"""

from typing import TYPE_CHECKING

from . import errors
from .aio import AsyncClient
from .aio_stream import AsyncMiniBatchStream
from .client import Client
from .errors import *  # noqa: F403 - one class per status code, listed once in errors.py
from .results import (
    BatchAck,
    ClusterScores,
    Evaluation,
    FitProgress,
    FitResult,
    KScore,
    LabellingProgress,
    LabellingResult,
    ModelInfo,
    QuantizedImage,
    Suggestion,
)
from .stream import MiniBatchStream
from .transport import default_target

if TYPE_CHECKING:
    from .estimator import RemoteKMeans, RemoteMiniBatchKMeans, RemoteSpectralClustering

_ESTIMATORS = ("RemoteKMeans", "RemoteMiniBatchKMeans", "RemoteSpectralClustering")


def __getattr__(name: str) -> object:
    """The scikit-learn estimators, imported on first use: they need the sklearn extra."""
    if name not in _ESTIMATORS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import estimator
    except ImportError as missing:
        raise ImportError(
            f"{name} is a scikit-learn estimator: install the extra, "
            f"pip install 'centroidal[sklearn]' ({missing})"
        ) from missing
    return getattr(estimator, name)

__all__ = [
    "AsyncClient",
    "AsyncMiniBatchStream",
    "BatchAck",
    "Client",
    "ClusterScores",
    "Evaluation",
    "FitProgress",
    "FitResult",
    "KScore",
    "LabellingProgress",
    "LabellingResult",
    "MiniBatchStream",
    "ModelInfo",
    "QuantizedImage",
    "RemoteKMeans",
    "RemoteMiniBatchKMeans",
    "RemoteSpectralClustering",
    "Suggestion",
    "default_target",
    *errors.__all__,
]
