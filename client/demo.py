"""`centroidal demo`: the k-means walkthrough, run through the SDK against a server.

Six steps, each writing one PNG to the output directory and printing what it found:
1. four blobs, fitted with k=4;
2. a bad seed: random initialisation with one restart settles in a worse optimum,
   and n_init=10 recovers the best one;
3. k by silhouette: suggest_k over k = 2..10;
4. two moons: k-means against spectral clustering;
5. the digits: k=10 on 8x8 images, the centers drawn as images, accuracy after
   matching clusters to digits, and the confusion matrix;
6. colour compression: a photograph reduced to 16 colours, with its palette.

It needs scikit-learn (its bundled datasets), matplotlib and Pillow: the ``sklearn`` and
``plot`` extras. ``--serve`` starts a private server for the run (the ``server`` extra).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .client import Client
from .figures import palette_axis, pyplot

STEPS = ("blobs", "seeds", "choose-k", "moons", "digits", "colours")


@contextmanager
def private_server() -> Iterator[str]:
    """A server on a free local port with a throwaway store, for the demo's run."""
    try:
        from centroidal.server import ServerConfig, create_server
    except ImportError as missing:
        raise ValueError(
            f"`centroidal demo --serve` starts a server of its own, which needs the server extra: "
            f"pip install 'centroidal[server]', or pass --target to use a running server ({missing})"
        ) from None

    with tempfile.TemporaryDirectory(prefix="centroidal-demo-") as data_dir:
        server, _ = create_server(ServerConfig(host="127.0.0.1", port=0, data_dir=data_dir))
        server.start()
        try:
            yield f"127.0.0.1:{server.port}"
        finally:
            server.stop(5)


def run(client: Client, out: Path, say: Callable[[str], None] = print, steps: tuple[str, ...] = STEPS) -> list[Path]:
    """Run the walkthrough's steps; returns the figures written."""
    plt = pyplot()
    try:
        from sklearn import datasets
    except ImportError as missing:
        raise ValueError(f"the demo needs the sklearn extra: pip install 'centroidal[sklearn]' ({missing})") from None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for step in steps:
        path = out / f"{STEPS.index(step) + 1}-{step}.png"
        _STEP_FUNCTIONS[step](client, datasets, plt, path, say)
        written.append(path)
        say(f"  wrote {path}")
    return written


def _scatter(axis: Any, X: np.ndarray, labels: np.ndarray | None, centers: np.ndarray | None, title: str) -> None:
    axis.scatter(X[:, 0], X[:, 1], c=labels, s=14, cmap="viridis")
    if centers is not None:
        axis.scatter(centers[:, 0], centers[:, 1], c="black", s=180, alpha=0.5, marker="o")
    axis.set_title(title)


def _blobs(client: Client, datasets: Any, plt: Any, path: Path, say: Callable[[str], None]) -> None:
    X, _ = datasets.make_blobs(n_samples=300, centers=4, cluster_std=0.60, random_state=0)
    fitted = client.fit("demo-blobs", X, 4, seed=0, return_labels=True)
    say(f"1. four blobs: k=4, inertia {fitted.inertia:.2f} after {fitted.model.n_iter} iterations")
    figure, axis = plt.subplots(figsize=(6, 5))
    _scatter(axis, X, fitted.labels, fitted.centers, f"k-means, k=4 (inertia {fitted.inertia:.1f})")
    _save(plt, figure, path)


def _seeds(client: Client, datasets: Any, plt: Any, path: Path, say: Callable[[str], None]) -> None:
    X, _ = datasets.make_blobs(n_samples=300, centers=4, cluster_std=0.60, random_state=0)
    best = client.fit("demo-seeds", X, 4, init="random", n_init=10, seed=0, return_labels=True)
    bad = None
    for seed in range(200):  # the first seed whose single random start ends in a worse optimum
        single = client.fit("demo-seeds", X, 4, init="random", n_init=1, seed=seed, return_labels=True)
        if single.inertia > best.inertia * 1.05:
            bad = single
            break
    figure, axes = plt.subplots(1, 2, figsize=(11, 5))
    if bad is None:
        say("2. bad seed: none of 200 single random starts ended in a worse optimum")
        _scatter(axes[0], X, best.labels, best.centers, "no bad seed found")
    else:
        seed = bad.model.settings()["seed"]
        say(f"2. bad seed: random init, n_init=1, seed {seed}: inertia {bad.inertia:.1f}; "
            f"n_init=10 finds {best.inertia:.1f}")
        _scatter(axes[0], X, bad.labels, bad.centers, f"n_init=1, seed {seed}: inertia {bad.inertia:.1f}")
    _scatter(axes[1], X, best.labels, best.centers, f"n_init=10: inertia {best.inertia:.1f}")
    _save(plt, figure, path)


def _choose_k(client: Client, datasets: Any, plt: Any, path: Path, say: Callable[[str], None]) -> None:
    from .figures import suggest_k_figure

    X, _ = datasets.make_blobs(n_samples=300, centers=4, cluster_std=0.60, random_state=0)
    suggestion = client.suggest_k(X, range(2, 11), seed=0)
    best = next(entry for entry in suggestion.per_k if entry.n_clusters == suggestion.recommended_k)
    say(f"3. choosing k: silhouette peaks at k={suggestion.recommended_k} "
        f"({best.scores.silhouette:.3f}); the elbow is at k={suggestion.elbow_k}")
    suggest_k_figure(suggestion, path)


def _moons(client: Client, datasets: Any, plt: Any, path: Path, say: Callable[[str], None]) -> None:
    from sklearn.metrics import adjusted_rand_score

    X, truth = datasets.make_moons(200, noise=0.05, random_state=0)
    plain = client.fit("demo-moons-kmeans", X, 2, seed=0, return_labels=True)
    spectral = client.fit("demo-moons", X, 2, algorithm="spectral", seed=0, return_labels=True)
    plain_ari, spectral_ari = adjusted_rand_score(truth, plain.labels), adjusted_rand_score(truth, spectral.labels)
    say(f"4. two moons: k-means ARI {plain_ari:.2f}, spectral ARI {spectral_ari:.2f}")
    figure, axes = plt.subplots(1, 2, figsize=(11, 5))
    _scatter(axes[0], X, plain.labels, plain.centers, f"k-means: ARI {plain_ari:.2f}")
    _scatter(axes[1], X, spectral.labels, None, f"spectral (10 neighbours): ARI {spectral_ari:.2f}")
    _save(plt, figure, path)


def _digits(client: Client, datasets: Any, plt: Any, path: Path, say: Callable[[str], None]) -> None:
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import confusion_matrix

    digits = datasets.load_digits()
    fitted = client.fit("demo-digits", digits.data, 10, n_init=10, seed=0, return_labels=True)
    # Each cluster is named by the digit it shares most images with, one digit per cluster.
    overlap = confusion_matrix(digits.target, fitted.labels, labels=range(10))
    digit_rows, cluster_columns = linear_sum_assignment(-overlap)
    digit_of = np.empty(10, dtype=int)
    digit_of[cluster_columns] = digit_rows
    predicted = digit_of[fitted.labels]
    accuracy = float((predicted == digits.target).mean())
    say(f"5. digits: k=10 on {digits.data.shape[0]} 8x8 images, accuracy {accuracy:.3f} after matching "
        "each cluster to one digit")
    figure = plt.figure(figsize=(13, 5.5))
    grid = figure.add_gridspec(2, 10, width_ratios=[1] * 5 + [1.3] * 5)
    order = np.argsort(digit_of)
    for slot, cluster in enumerate(order):
        axis = figure.add_subplot(grid[slot // 5, slot % 5])
        axis.imshow(fitted.centers[cluster].reshape(8, 8), cmap="binary", interpolation="nearest")
        axis.set(xticks=[], yticks=[], title=f"cluster -> {digit_of[cluster]}")
    matrix = figure.add_subplot(grid[:, 5:])
    confusion = confusion_matrix(digits.target, predicted)
    matrix.imshow(confusion, cmap="Blues")
    for (row, column), count in np.ndenumerate(confusion):
        if count:
            matrix.text(column, row, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > confusion.max() / 2 else "black")
    matrix.set(xticks=range(10), yticks=range(10), xlabel="predicted digit", ylabel="true digit",
               title=f"confusion matrix (accuracy {accuracy:.3f})")
    _save(plt, figure, path)


def _colours(client: Client, datasets: Any, plt: Any, path: Path, say: Callable[[str], None]) -> None:
    from PIL import Image

    photo = datasets.load_sample_image("china.jpg")
    encoded = io.BytesIO()
    Image.fromarray(photo).save(encoded, format="PNG")
    result = client.quantize_image(encoded.getvalue(), 16, seed=0)
    quantised = np.asarray(Image.open(io.BytesIO(result.image)).convert("RGB"))
    original_colours = len(np.unique(photo.reshape(-1, 3), axis=0))
    say(f"6. colours: {original_colours} colours down to 16, PSNR {result.psnr:.1f} dB")
    figure = plt.figure(figsize=(13, 5.2))
    grid = figure.add_gridspec(2, 2, height_ratios=[6, 1])
    for column, (image, title) in enumerate(((photo, f"original: {original_colours} colours"),
                                             (quantised, f"16 colours, PSNR {result.psnr:.1f} dB"))):
        axis = figure.add_subplot(grid[0, column])
        axis.imshow(image)
        axis.set(xticks=[], yticks=[], title=title)
    palette_axis(figure.add_subplot(grid[1, :]), result.palette, result.pixel_counts)
    _save(plt, figure, path)


def _save(plt: Any, figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


_STEP_FUNCTIONS: dict[str, Callable[[Client, Any, Any, Path, Callable[[str], None]], None]] = {
    "blobs": _blobs, "seeds": _seeds, "choose-k": _choose_k, "moons": _moons, "digits": _digits,
    "colours": _colours,
}
