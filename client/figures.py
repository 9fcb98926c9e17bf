"""Figures the CLI draws with matplotlib (the ``plot`` extra), written to PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .results import Suggestion


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or a ValueError naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ValueError(f"plotting needs the plot extra: pip install 'centroidal[plot]' ({error})") from None
    return plt


def suggest_k_figure(suggestion: Suggestion, path: Path) -> None:
    """Inertia (with the elbow) and silhouette (with the recommended k) against k, and the
    two dispersion indices, saved to path."""
    plt = pyplot()
    ks = [entry.n_clusters for entry in suggestion.per_k]

    def series(name: str) -> list[float]:
        values = [getattr(entry.scores, name) for entry in suggestion.per_k]
        return [float("nan") if value is None else value for value in values]

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    inertia = [entry.inertia for entry in suggestion.per_k]
    axes[0].plot(ks, inertia, marker="o")
    axes[0].plot([ks[0], ks[-1]], [inertia[0], inertia[-1]], linestyle=":", color="grey")
    axes[0].axvline(suggestion.elbow_k, color="tab:orange", linestyle="--", label=f"elbow k={suggestion.elbow_k}")
    axes[0].set(xlabel="k", ylabel="inertia", title="inertia (elbow)")
    silhouette = series("silhouette")
    axes[1].plot(ks, silhouette, marker="o", color="tab:green")
    axes[1].axvline(suggestion.recommended_k, color="tab:red", linestyle="--",
                    label=f"recommended k={suggestion.recommended_k}")
    axes[1].set(xlabel="k", ylabel="mean silhouette", title="silhouette (higher is better)")
    axes[2].plot(ks, series("davies_bouldin"), marker="o", color="tab:purple", label="Davies-Bouldin (lower is better)")
    axes[2].set(xlabel="k", ylabel="Davies-Bouldin", title="dispersion indices")
    twin = axes[2].twinx()
    twin.plot(ks, series("calinski_harabasz"), marker="s", color="tab:brown", label="Calinski-Harabasz (higher is better)")
    twin.set_ylabel("Calinski-Harabasz")
    for axis in axes[:2]:
        axis.legend()
        axis.set_xticks(ks)
    axes[2].set_xticks(ks)
    handles = axes[2].get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    axes[2].legend(handles=handles, fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def palette_axis(axis: Any, palette: np.ndarray, pixel_counts: np.ndarray) -> None:
    """A swatch of the palette, each colour as wide as its share of the pixels, most used
    first, labelled with its share and hex code."""
    order = np.argsort(-pixel_counts, kind="stable")
    shares = pixel_counts[order] / max(1, int(pixel_counts.sum()))
    left = 0.0
    for colour, share in zip(palette[order], shares):
        axis.barh(0, share, left=left, color=colour / 255.0, edgecolor="white", linewidth=0.5)
        if share >= 0.03:
            text = "black" if colour.astype(float) @ [0.299, 0.587, 0.114] > 140 else "white"
            axis.text(left + share / 2, 0, f"{share:.0%}\n#{colour[0]:02x}{colour[1]:02x}{colour[2]:02x}",
                      ha="center", va="center", fontsize=7, color=text)
        left += share
    axis.set(xlim=(0, 1), yticks=[], xticks=[], title="palette, by share of pixels")
    for side in axis.spines.values():
        side.set_visible(False)


def quantize_figure(
    original: bytes, quantised: bytes, palette: np.ndarray, pixel_counts: np.ndarray,
    color_space: str, path: Path, seed: int,
) -> None:
    """The palette in the colour space the fit used: 10,000 of the image's pixels (red-green
    and red-blue for RGB; a*-b* and L*-a* for CIE Lab), each palette colour drawn over them
    at a size by its pixel count; the two images; and the palette swatch with pixel shares.
    Saved to path."""
    import io

    from PIL import Image, ImageOps

    plt = pyplot()
    before_image = ImageOps.exif_transpose(Image.open(io.BytesIO(original))).convert("RGB")
    pixels = np.asarray(before_image).reshape(-1, 3)
    rows = np.random.default_rng(seed).choice(pixels.shape[0], min(10_000, pixels.shape[0]), replace=False)
    sample = pixels[rows]
    sizes = 40 + 1500 * pixel_counts / max(1, int(pixel_counts.max()))
    figure = plt.figure(figsize=(13, 9))
    grid = figure.add_gridspec(3, 2, height_ratios=[5, 5, 1])
    if color_space == "lab":
        (sample_at, fitted_in), (palette_at, _) = _to_lab(sample), _to_lab(palette)
        planes = (((1, "a*", (-128, 127)), (2, "b*", (-128, 127))), ((0, "L*", (0, 100)), (1, "a*", (-128, 127))))
    else:
        sample_at, palette_at = sample.astype(float), palette.astype(float)
        planes = (((0, "red", (0, 255)), (1, "green", (0, 255))), ((0, "red", (0, 255)), (2, "blue", (0, 255))))
        fitted_in = "RGB"
    for column, ((x, x_name, x_range), (y, y_name, y_range)) in enumerate(planes):
        axis = figure.add_subplot(grid[0, column])
        axis.scatter(sample_at[:, x], sample_at[:, y], c=sample / 255.0, s=3, marker=".", alpha=0.5)
        axis.scatter(palette_at[:, x], palette_at[:, y], c=palette / 255.0, s=sizes, edgecolors="black",
                     linewidths=0.8)
        axis.set(xlabel=x_name, ylabel=y_name, xlim=x_range, ylim=y_range,
                 title=f"{x_name}-{y_name} in {fitted_in}: pixels, palette sized by pixel count")
    for column, (data, title) in enumerate(((original, "original"), (quantised, f"{palette.shape[0]} colours"))):
        axis = figure.add_subplot(grid[1, column])
        axis.imshow(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        axis.set(xticks=[], yticks=[], title=title)
    palette_axis(figure.add_subplot(grid[2, :]), palette, pixel_counts)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _to_lab(rgb: np.ndarray) -> tuple[np.ndarray, str]:
    """sRGB colours (n, 3) uint8 as CIE L*a*b* (n, 3) float, and the name of the space:
    the engine's own conversion (D65, the one the palette was fitted in) where the engine
    is installed, else LittleCMS's through Pillow (D50), which shifts a* by up to ~12."""
    try:
        from centroidal.engine.palette import rgb_to_lab
    except ImportError:  # the SDK alone: no engine
        pass
    else:
        return rgb_to_lab(rgb.astype(np.float32)).astype(float), "CIE Lab (D65)"
    from PIL import Image, ImageCms

    transform = ImageCms.buildTransformFromOpenProfiles(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8).reshape(1, -1, 3), "RGB")
    encoded = np.asarray(ImageCms.applyTransform(image, transform)).reshape(-1, 3)
    lab = np.empty(encoded.shape, dtype=float)
    lab[:, 0] = encoded[:, 0] * (100.0 / 255.0)  # Pillow stores L* scaled to 0-255
    lab[:, 1:] = encoded[:, 1:].view(np.int8)  # and a*, b* as signed bytes
    return lab, "CIE Lab (D50, LittleCMS)"
