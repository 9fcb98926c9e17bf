"""Numeric engine: k-means kernels and algorithms (numpy + numba, no gRPC, no I/O).

Modules by job: ``kmeans`` (fitting: the public API over ``lloyd``, the Lloyd driver, and
``bounds``, when it keeps bounds), ``nearest`` (predicting with a model's centers),
``_lloyd`` and ``_bounded`` (their kernels), ``seeding``
and ``_seeding`` (k-means++), ``validation``, ``progress``, ``minibatch`` (the mini-batch
step and its state), ``scoring`` and ``choosing`` (scores, and k chosen by them),
``palette`` (colour fitting), and ``threads`` (``configure_threads``, called once before
kernels run concurrently).
"""

from .kmeans import KMeansResult, fit
from .nearest import predict, transform
from .progress import Progress, Stage
from .threads import configure_threads
from .validation import InvalidInputError

__all__ = [
    "InvalidInputError", "KMeansResult", "Progress", "Stage", "configure_threads", "fit",
    "predict", "transform",
]
