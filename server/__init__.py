"""The service: grpc.aio handlers over the fitting, predicting, streaming and imaging domain,
a model registry over a store (SQLite), configuration and `centroidal serve`."""

from .app import CentroidalServer, create_server
from .config import ServerConfig

__all__ = ["CentroidalServer", "ServerConfig", "create_server"]
