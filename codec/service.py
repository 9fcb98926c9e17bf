"""The service as the SDK and the server both name it: its full name, each method's path,
and the trailing metadata a stream's clean close carries."""

from __future__ import annotations

from centroidal.v1 import clustering_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["ClusteringService"]
SERVICE_NAME: str = SERVICE.full_name
# Trailing metadata of a StreamMiniBatch that ended OK: the model's version on disk.
DURABLE_VERSION_TRAILER = "centroidal-durable-version"
# Sent in the headers of a StreamMiniBatch that reached a replica not owning the model's
# stream, at once, ahead of the FAILED_PRECONDITION status that names the owner too.
STREAM_OWNER_HEADER = "centroidal-stream-owner"


def method_path(name: str) -> str:
    """The path a call to method ``name`` goes to, such as /centroidal.v1.ClusteringService/Fit."""
    if name not in SERVICE.methods_by_name:
        raise KeyError(f"{SERVICE_NAME} has no method {name!r}")
    return f"/{SERVICE_NAME}/{name}"
