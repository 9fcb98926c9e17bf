"""Numeric engine: k-means kernels and algorithms (numpy + numba, no gRPC, no I/O)."""

from .kmeans import InvalidInputError, KMeansResult, Progress, Stage, fit, predict, transform

__all__ = ["InvalidInputError", "KMeansResult", "Progress", "Stage", "fit", "predict", "transform"]
