"""A stored model as plain files (npz, json), as a fitted scikit-learn KMeans, or as ONNX.

The centers are all a k-means model needs to predict; the files carry its description
too. ONNX goes through skl2onnx (the ``onnx`` extra): a Euclidean model becomes
scikit-learn's KMeans graph, whose outputs are the labels and the distances to every
center. A cosine model has no such graph and is refused. A spectral model is refused in
every format: it labels a point by the vote of its training rows, which it keeps on the
server, and its cluster means would label other points than its Predict does.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from .results import ModelInfo

FORMATS = ("npz", "json", "onnx")


def description(model: ModelInfo) -> dict[str, Any]:
    """Everything about a model but its centers, as JSON-ready values."""
    return {
        "name": model.name,
        "version": model.version,
        "kind": model.kind,
        "metric": model.metric,
        "n_clusters": model.n_clusters,
        "n_features": model.n_features,
        "dtype": model.dtype.name,
        "inertia": model.inertia,
        "n_iter": model.n_iter,
        "n_samples_seen": model.n_samples_seen,
        "created_at": model.created_at.isoformat(),
        "updated_at": model.updated_at.isoformat(),
        "config": model.settings(),
    }


def _centers(model: ModelInfo) -> np.ndarray:
    if model.kind == "spectral":
        raise ValueError(
            f"model {model.name!r} is a spectral model: it labels a point by the vote of its "
            "nearest training rows, which stay on the server, and a KMeans of its cluster means "
            "would label many points otherwise; predict on the server"
        )
    if model.centers is None or model.centers.shape[0] == 0:
        raise ValueError(f"model {model.name!r} has no centers yet (it is still buffering its first points)")
    return model.centers


def to_bytes(model: ModelInfo, export_format: str) -> bytes:
    """The model in ``export_format``; ``model`` must have been read with its centers."""
    if export_format == "npz":
        buffer = io.BytesIO()
        np.savez(buffer, centers=_centers(model),
                 description=np.frombuffer(json.dumps(description(model)).encode(), dtype=np.uint8))
        return buffer.getvalue()
    if export_format == "json":
        document = {**description(model), "centers": _centers(model).tolist()}
        return (json.dumps(document, indent=2) + "\n").encode()
    if export_format == "onnx":
        return to_onnx(model)
    raise ValueError(f"format must be one of {FORMATS}, got {export_format!r}")


def read_npz(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """The centers and description of an npz export."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return np.array(arrays["centers"]), json.loads(arrays["description"].tobytes().decode())


def to_sklearn(model: ModelInfo) -> Any:
    """A fitted sklearn.cluster.KMeans holding the model's centers: its predict and
    transform give what the server's do (for a Euclidean k-means model)."""
    centers = _centers(model)
    if model.metric != "euclidean":
        raise ValueError(
            f"model {model.name!r} uses the {model.metric} metric; scikit-learn's KMeans is "
            "Euclidean only (scale the rows to unit length yourself, or predict on the server)"
        )
    from sklearn.cluster import KMeans
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    estimator = KMeans(n_clusters=centers.shape[0], n_init=1, init=centers)
    estimator.cluster_centers_ = centers.copy()
    estimator.n_features_in_ = centers.shape[1]
    estimator.inertia_ = model.inertia
    estimator.n_iter_ = model.n_iter
    estimator._n_threads = _openmp_effective_n_threads()
    seed = model.settings().get("seed")
    if seed is not None:
        estimator.random_state = int(seed)
    return estimator


def to_onnx(model: ModelInfo) -> bytes:
    """The model as an ONNX graph (skl2onnx): input "X" (n, n_features) in the model's
    dtype; outputs "label" (n,) int64 and "scores" (n, n_clusters), the Euclidean
    distances to every center."""
    try:
        from skl2onnx import to_onnx as convert
    except ImportError as missing:
        raise ValueError(f"ONNX export needs the onnx extra: pip install 'centroidal[onnx]' ({missing})") from None
    estimator = to_sklearn(model)
    sample = np.zeros((1, model.n_features), dtype=model.dtype)
    graph = convert(estimator, sample, target_opset={"": 17, "ai.onnx.ml": 3})
    data: bytes = graph.SerializeToString()
    return data
