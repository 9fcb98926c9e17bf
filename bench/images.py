"""QuantizeImage end to end over gRPC against scikit-learn and Pillow on the same photos.

The photos are scikit-learn's bundled china.jpg and flower.jpg. Ours: the JPEG
bytes in, a 16-colour palette PNG out, through the SDK to `centroidal serve` in
its own process. The references run in this process on the decoded pixels:
MiniBatchKMeans fit plus predict (as in scikit-learn's colour quantisation
walkthrough), KMeans, and Pillow's median cut, max coverage and fast octree.
MSE is per channel in 0-255 units against the decoded original.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import sklearn
from PIL import Image
from sklearn.cluster import KMeans, MiniBatchKMeans

from centroidal.client import Client

from .common import Row, median_time, served

N_COLORS = 16
PHOTOS = ("china.jpg", "flower.jpg")


def _photo(name: str) -> bytes:
    return (Path(sklearn.__file__).parent / "datasets" / "images" / name).read_bytes()


def _mse(original: np.ndarray, quantised: np.ndarray) -> float:
    return float(np.mean((quantised.astype(np.float64) - original.astype(np.float64)) ** 2))


def _sklearn(model: object, pixels: np.ndarray) -> tuple[float, float]:
    """Seconds for fit plus predict on every pixel (scaled to 0-1), and the MSE."""
    scaled = pixels / 255.0
    result: dict[str, np.ndarray] = {}

    def run() -> None:
        model.fit(scaled)  # type: ignore[attr-defined]
        labels = model.predict(scaled)  # type: ignore[attr-defined]
        result["image"] = model.cluster_centers_[labels] * 255.0  # type: ignore[attr-defined]

    seconds = median_time(run, repeats=3, warmup=0)
    return seconds, _mse(pixels, result["image"])


def _pillow(image: Image.Image, method: Image.Quantize, pixels: np.ndarray) -> tuple[float, float]:
    out: dict[str, Image.Image] = {}

    def run() -> None:
        out["image"] = image.quantize(N_COLORS, method=method)

    seconds = median_time(run, repeats=5)
    return seconds, _mse(pixels, np.asarray(out["image"].convert("RGB")).reshape(-1, 3))


def run() -> list[Row]:
    rows: list[Row] = []
    with served() as address, Client(address) as client:
        for name in PHOTOS:
            data = _photo(name)
            image = Image.open(io.BytesIO(data)).convert("RGB")
            pixels = np.asarray(image).reshape(-1, 3)
            answer: dict[str, float] = {}

            def ours() -> None:
                result = client.quantize_image(data, N_COLORS, seed=0)
                answer["mse"] = result.mse

            ours_s = median_time(ours, repeats=5)
            references = {
                "Pillow median cut": _pillow(image, Image.Quantize.MEDIANCUT, pixels),
                "Pillow max coverage": _pillow(image, Image.Quantize.MAXCOVERAGE, pixels),
                "Pillow fast octree": _pillow(image, Image.Quantize.FASTOCTREE, pixels),
                "sklearn MiniBatchKMeans(16)": _sklearn(
                    MiniBatchKMeans(N_COLORS, random_state=0, n_init=3), pixels
                ),
                "sklearn KMeans(16)": _sklearn(KMeans(N_COLORS, random_state=0), pixels),
            }
            for reference, (seconds, mse) in references.items():
                rows.append(
                    Row(
                        f"quantize {name} to {N_COLORS} colours over gRPC",
                        ours_s, reference, seconds,
                        extra={"mse": answer["mse"], "reference_mse": mse},
                    )
                )
    return rows


if __name__ == "__main__":
    for row in run():
        print(
            f"{row.name:<44} ours {row.ours_s * 1e3:7.1f} ms MSE {row.extra['mse']:6.1f} | "
            f"{row.reference:<28} {row.reference_s * 1e3:8.1f} ms MSE {row.extra['reference_mse']:6.1f}"
            f"  ratio {row.ratio:.2f}"
        )
