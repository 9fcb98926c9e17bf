"""QuantizeImage on the wire: the spec, the image's bytes, and the summary of the answer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from centroidal.v1 import clustering_pb2 as pb

from .arrays import decode_palette
from .enums import COLOR_SPACES, DITHERS, IMAGE_FORMATS
from .wire import optional, set_optional


@dataclass(frozen=True)
class QuantizeSpec:
    n_colors: int
    seed: int | None = None
    max_samples: int = 0  # 0: the server's default
    color_space: str = "rgb"
    dither: str = "none"
    output_format: str = "PNG"
    palette_model: str = ""
    save_palette_as: str = ""


def decode_quantize_spec(message: pb.QuantizeSpec) -> QuantizeSpec:
    return QuantizeSpec(
        n_colors=int(message.n_colors),
        seed=optional(message, "seed"),
        max_samples=int(message.max_samples),
        color_space=COLOR_SPACES.name(message.color_space, "spec.color_space"),
        dither=DITHERS.name(message.dither, "spec.dither"),
        output_format=IMAGE_FORMATS.name(message.output_format, "spec.output_format"),
        palette_model=message.palette_model,
        save_palette_as=message.save_palette_as,
    )


def encode_quantize_spec(spec: QuantizeSpec) -> pb.QuantizeSpec:
    message = pb.QuantizeSpec(
        n_colors=spec.n_colors,
        max_samples=spec.max_samples,
        color_space=COLOR_SPACES.number(spec.color_space),
        dither=DITHERS.number(spec.dither),
        output_format=IMAGE_FORMATS.number(spec.output_format),
        palette_model=spec.palette_model,
        save_palette_as=spec.save_palette_as,
    )
    set_optional(message, seed=spec.seed)
    return message


@dataclass(frozen=True)
class QuantizeImageRequest:
    spec: QuantizeSpec | None = None
    image: bytes = b""


def decode_quantize_request(message: pb.QuantizeImageRequest) -> QuantizeImageRequest:
    return QuantizeImageRequest(
        spec=decode_quantize_spec(message.spec) if message.HasField("spec") else None,
        image=message.image,
    )


def encode_quantize_request(request: QuantizeImageRequest) -> pb.QuantizeImageRequest:
    message = pb.QuantizeImageRequest(image=request.image)
    if request.spec is not None:
        message.spec.CopyFrom(encode_quantize_spec(request.spec))
    return message


@dataclass(frozen=True)
class QuantizeSummary:
    """palette (n_colors, 3) uint8 RGB; pixel_counts (n_colors,) int64."""

    palette: np.ndarray
    pixel_counts: np.ndarray
    mse: float
    psnr: float
    width: int
    height: int
    format: str
    notes: tuple[str, ...] = ()
    saved_version: int = 0


def decode_quantize_summary(message: pb.QuantizeSummary) -> QuantizeSummary:
    return QuantizeSummary(
        palette=decode_palette(message.palette, "summary.palette"),
        pixel_counts=np.array(message.pixel_counts, dtype=np.int64),
        mse=float(message.mse),
        psnr=float(message.psnr),
        width=int(message.width),
        height=int(message.height),
        format=IMAGE_FORMATS.name(message.format, "summary.format", lenient=True),
        notes=tuple(message.notes),
        saved_version=int(message.saved_version),
    )


def encode_quantize_summary(summary: QuantizeSummary) -> pb.QuantizeSummary:
    return pb.QuantizeSummary(
        palette=np.ascontiguousarray(summary.palette, dtype=np.uint8).tobytes(),
        pixel_counts=[int(count) for count in summary.pixel_counts],
        mse=summary.mse,
        psnr=summary.psnr,
        width=summary.width,
        height=summary.height,
        format=IMAGE_FORMATS.number(summary.format),
        notes=list(summary.notes),
        saved_version=summary.saved_version,
    )


@dataclass(frozen=True)
class QuantizeImageResponse:
    image: bytes
    summary: QuantizeSummary | None = None


def decode_quantize_response(message: pb.QuantizeImageResponse) -> QuantizeImageResponse:
    return QuantizeImageResponse(
        image=message.image,
        summary=decode_quantize_summary(message.summary) if message.HasField("summary") else None,
    )


def encode_quantize_response(response: QuantizeImageResponse) -> pb.QuantizeImageResponse:
    message = pb.QuantizeImageResponse(image=response.image)
    if response.summary is not None:
        message.summary.CopyFrom(encode_quantize_summary(response.summary))
    return message

