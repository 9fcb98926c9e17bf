"""The centroidal SDK: a gRPC client that takes and returns numpy arrays.

    from centroidal.client import Client
    with Client("127.0.0.1:50051") as client:
        client.fit("shops", X, n_clusters=4)
        labels = client.predict("shops", X_new)
"""

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
from .estimator import RemoteKMeans, RemoteMiniBatchKMeans
from .stream import BatchAck, MiniBatchStream

__all__ = [
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "AsyncMiniBatchStream",
    "BatchAck",
    "Cancelled",
    "CentroidalError",
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
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "default_target",
]
