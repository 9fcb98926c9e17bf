"""centroidal: a k-means clustering service over gRPC."""

__version__ = "0.1.0"
