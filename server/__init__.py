"""gRPC server: servicer, model registry, SQLite store, configuration and `centroidal serve`."""

from .app import CentroidalServer, create_server
from .config import ServerConfig

__all__ = ["CentroidalServer", "ServerConfig", "create_server"]
