"""Colour palettes: k-means on a sample of an image's pixels, and the colour spaces it runs in.

Pixels are (n, 3) arrays of sRGB values in 0-255. The palette is fitted in RGB
or in CIELAB (D65), where Euclidean distance is closer to perceived
difference, on at most ``max_samples`` pixels drawn with the seed; every pixel
is then mapped to its nearest palette colour in that space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kmeans

COLOR_SPACES = ("rgb", "lab")

# sRGB (D65) to CIE XYZ, and the D65 white point.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_EPSILON = 216 / 24389
_KAPPA = 24389 / 27


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) sRGB in 0-255 to CIELAB (L in 0-100), float32."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = (linear @ _RGB_TO_XYZ.T) / _WHITE
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    lab = np.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1
    )
    return lab.astype(np.float32)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(n, 3) CIELAB to sRGB in 0-255 (clipped), float64."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[:, 0] + 16) / 116
    fx = fy + lab[:, 1] / 500
    fz = fy - lab[:, 2] / 200
    f = np.stack([fx, fy, fz], axis=1)
    xyz = np.where(f**3 > _EPSILON, f**3, (116 * f - 16) / _KAPPA) * _WHITE
    linear = np.clip(xyz @ _XYZ_TO_RGB.T, 0.0, 1.0)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(c * 255.0, 0.0, 255.0)


@dataclass(frozen=True)
class Palette:
    """A fitted palette: colours (k, 3) uint8 sRGB, and how the pixels map to it.

    labels : (n,) int32, the palette index of each pixel
    """

    colors: np.ndarray
    labels: np.ndarray


def to_space(rgb: np.ndarray, color_space: str) -> np.ndarray:
    """Pixels in the working space, float32."""
    if color_space == "lab":
        return rgb_to_lab(rgb)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def fit_palette(
    rgb: np.ndarray, n_colors: int, *, seed: int, max_samples: int, color_space: str = "rgb"
) -> np.ndarray:
    """k-means palette of (n, 3) sRGB pixels: (n_colors, 3) uint8, fitted on a sample."""
    if color_space not in COLOR_SPACES:
        raise kmeans.InvalidInputError(
            "color_space", f"color_space must be one of {COLOR_SPACES}, got {color_space!r}"
        )
    rng = np.random.default_rng(seed)
    sample = rgb if rgb.shape[0] <= max_samples else rgb[rng.choice(rgb.shape[0], max_samples, replace=False)]
    points = to_space(sample, color_space)
    result = kmeans.fit(points, n_colors, seed=seed)
    centers = result.centers.astype(np.float64)
    colors = lab_to_rgb(centers) if color_space == "lab" else np.clip(centers, 0.0, 255.0)
    rounded: np.ndarray = np.rint(colors).astype(np.uint8)
    return rounded


# Pixels converted at a time: CIELAB conversion holds several float64 copies.
_MAP_CHUNK = 1 << 20


def map_pixels(rgb: np.ndarray, colors: np.ndarray, color_space: str = "rgb") -> np.ndarray:
    """Index of the nearest palette colour for each pixel, (n,) int32, in the working space."""
    centers = to_space(colors.astype(np.float32), color_space)
    labels = np.empty(rgb.shape[0], dtype=np.int32)
    for start in range(0, rgb.shape[0], _MAP_CHUNK):
        part = kmeans.predict(to_space(rgb[start : start + _MAP_CHUNK], color_space), centers)
        assert isinstance(part, np.ndarray)
        labels[start : start + part.shape[0]] = part
    return labels
