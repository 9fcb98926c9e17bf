"""The centroidal SDK: a gRPC client that takes and returns numpy arrays.

    from centroidal.client import Client
    with Client("127.0.0.1:50051") as client:
        client.fit("shops", X, n_clusters=4)
        labels = client.predict("shops", X_new)
"""

from typing import TYPE_CHECKING

from ._scoring import ClusterScores, Evaluation, KScore, Suggestion
from ._wire import FitProgress, FitResult, ModelInfo, QuantizedImage
from .aio import AsyncClient, AsyncMiniBatchStream
from .client import Client
from .transport import default_target
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    CentroidalError,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)
from .stream import BatchAck, MiniBatchStream

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
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "AsyncMiniBatchStream",
    "BatchAck",
    "Cancelled",
    "CentroidalError",
    "ClusterScores",
    "Evaluation",
    "KScore",
    "Suggestion",
    "Client",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "FitProgress",
    "FitResult",
    "Internal",
    "InvalidArgument",
    "MiniBatchStream",
    "ModelInfo",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "QuantizedImage",
    "RemoteKMeans",
    "RemoteMiniBatchKMeans",
    "RemoteSpectralClustering",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "default_target",
]
