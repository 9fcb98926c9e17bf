"""QuantizeImage on a real server with Pillow images: formats, alpha, grey, orientation,
palette reuse, and every bad input."""

from __future__ import annotations

import io
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from centroidal.client import Client
from centroidal.client.errors import error_from_rpc
from centroidal.v1 import clustering_pb2 as pb
from centroidal.v1 import clustering_pb2_grpc as pb_grpc
from tests.conftest import ServerFactory


def photo(width: int = 96, height: int = 64, mode: str = "RGB") -> Image.Image:
    """Smooth gradients with noise: many distinct colours."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=2)
    rgb = np.clip(rgb + rng.normal(scale=8, size=rgb.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    if mode == "RGBA":
        alpha = (x * 255 // width).astype(np.uint8)
        image = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif mode == "L":
        image = image.convert("L")
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def quantize(stub, data: bytes, chunk: int = 1 << 20, **spec: object) -> tuple[bytes, pb.QuantizeSummary]:
    spec.setdefault("n_colors", 8)
    requests = [pb.QuantizeImageRequest(spec=pb.QuantizeSpec(**spec), image=data[:chunk])]
    requests += [pb.QuantizeImageRequest(image=data[i : i + chunk]) for i in range(chunk, len(data), chunk)]
    responses = list(stub.QuantizeImage(iter(requests)))
    return b"".join(r.image for r in responses), responses[-1].summary


def failure(stub, data: bytes, **spec: object):
    with pytest.raises(grpc.RpcError) as raised:
        quantize(stub, data, **spec)
    return error_from_rpc(raised.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_common_format_in_a_palette_png_out(stub, fmt: str) -> None:
    original = photo()
    data = encode(original, fmt)
    out, summary = quantize(stub, data, chunk=4096)  # several chunks in
    result = Image.open(io.BytesIO(out))
    assert result.format == "PNG" and result.mode == "P" and result.size == (96, 64)
    colors = np.frombuffer(summary.palette, dtype=np.uint8).reshape(-1, 3)
    assert colors.shape == (8, 3) and sum(summary.pixel_counts) == 96 * 64
    # The summary's MSE is that of the returned image against the decoded input.
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    returned = np.asarray(result.convert("RGB"), dtype=np.float64)
    assert summary.mse == pytest.approx(((returned - decoded) ** 2).mean(), rel=1e-9)
    assert summary.psnr == pytest.approx(10 * np.log10(255**2 / summary.mse))
    assert len(np.unique(returned.reshape(-1, 3), axis=0)) <= 8


def test_output_formats_and_same_as_input(stub) -> None:
    data = encode(photo(), "BMP")
    for wire, name, reported in ((pb.IMAGE_FORMAT_JPEG, "JPEG", pb.IMAGE_FORMAT_JPEG),
                                 (pb.IMAGE_FORMAT_WEBP, "WEBP", pb.IMAGE_FORMAT_WEBP),
                                 (pb.IMAGE_FORMAT_SAME_AS_INPUT, "BMP", pb.IMAGE_FORMAT_BMP)):
        out, summary = quantize(stub, data, output_format=wire)
        assert Image.open(io.BytesIO(out)).format == name and summary.format == reported


def test_alpha_is_kept_and_colours_quantised(stub) -> None:
    original = photo(mode="RGBA")
    out, summary = quantize(stub, encode(original, "PNG"))
    result = Image.open(io.BytesIO(out))
    assert result.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(result)[:, :, 3], np.asarray(original)[:, :, 3])
    assert len(np.unique(np.asarray(result)[:, :, :3].reshape(-1, 3), axis=0)) <= 8
    out, summary = quantize(stub, encode(original, "PNG"), output_format=pb.IMAGE_FORMAT_JPEG)
    assert any("without transparency" in note for note in summary.notes)


def test_grey_images_get_a_grey_palette(stub) -> None:
    out, summary = quantize(stub, encode(photo(mode="L"), "PNG"))
    colors = np.frombuffer(summary.palette, dtype=np.uint8).reshape(-1, 3)
    assert (colors[:, 0] == colors[:, 1]).all() and (colors[:, 1] == colors[:, 2]).all()


def test_exif_orientation_is_respected(stub) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(photo(96, 64), "JPEG", exif=exif.tobytes())
    out, summary = quantize(stub, data)
    assert (summary.width, summary.height) == (64, 96)
    assert Image.open(io.BytesIO(out)).size == (64, 96)


def test_dithering_and_lab(stub) -> None:
    data = encode(photo(), "PNG")
    _, plain = quantize(stub, data, seed=1)
    out, dithered = quantize(stub, data, seed=1, dither=pb.DITHER_FLOYD_STEINBERG)
    assert dithered.palette == plain.palette  # the same palette, mapped differently
    assert dithered.pixel_counts != plain.pixel_counts
    _, lab = quantize(stub, data, seed=1, color_space=pb.COLOR_SPACE_LAB)
    assert lab.palette != plain.palette and lab.mse > 0


def test_a_saved_palette_is_reused(stub, client: Client) -> None:
    data = encode(photo(), "PNG")
    _, first = quantize(stub, data, save_palette_as="frames")
    assert first.saved_version == 1
    model = client.get_model("frames")
    assert model.kind == "palette" and model.centers.shape == (8, 3)
    other = encode(photo(80, 40), "PNG")
    _, second = quantize(stub, other, palette_model="frames")
    assert second.palette == first.palette


def test_fewer_distinct_colours_than_asked(stub) -> None:
    blocks = np.zeros((10, 10, 3), dtype=np.uint8)
    blocks[:5] = (255, 0, 0)
    blocks[5:, :5] = (0, 0, 255)
    out, summary = quantize(stub, encode(Image.fromarray(blocks), "PNG"), n_colors=16)
    colors = np.frombuffer(summary.palette, dtype=np.uint8).reshape(-1, 3)
    assert colors.shape == (3, 3) and summary.mse == 0
    assert any("only 3 distinct colours" in note for note in summary.notes)


def test_an_animated_gif_keeps_its_first_frame_and_says_so(stub) -> None:
    frames = [photo(), photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    out, summary = quantize(stub, buffer.getvalue())
    assert any("2 frames" in note for note in summary.notes)
    assert Image.open(io.BytesIO(out)).size == (96, 64)


@pytest.mark.parametrize(
    "data, spec, code, field",
    [
        (b"", {}, grpc.StatusCode.INVALID_ARGUMENT, "image"),
        (b"this is not an image at all", {}, grpc.StatusCode.INVALID_ARGUMENT, "image"),
        (encode(photo(), "PNG")[:400], {}, grpc.StatusCode.INVALID_ARGUMENT, "image"),
        (encode(photo(1, 1), "PNG"), {}, grpc.StatusCode.INVALID_ARGUMENT, "image"),
        (encode(photo(), "PNG"), {"n_colors": 1}, grpc.StatusCode.INVALID_ARGUMENT, "spec.n_colors"),
        (encode(photo(), "PNG"), {"n_colors": 257}, grpc.StatusCode.INVALID_ARGUMENT, "spec.n_colors"),
        (encode(photo(), "PNG"), {"max_samples": 3}, grpc.StatusCode.INVALID_ARGUMENT, "spec.max_samples"),
        (encode(photo(), "PNG"), {"palette_model": "absent"}, grpc.StatusCode.NOT_FOUND, "spec.palette_model"),
        (encode(photo(), "PNG"), {"save_palette_as": "bad name!"}, grpc.StatusCode.INVALID_ARGUMENT,
         "spec.save_palette_as"),
    ],
)
def test_bad_input_is_refused_with_its_field(stub, data, spec, code, field) -> None:
    error = failure(stub, data, **spec)
    assert error.code == code and error.field == field, error


def test_a_spec_is_required_first(stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.QuantizeImage(iter([pb.QuantizeImageRequest(image=b"x")])))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_model_that_is_not_a_palette_is_refused(stub, client: Client) -> None:
    client.fit("two-d", np.random.default_rng(0).normal(size=(50, 2)), 3, seed=0)
    error = failure(stub, encode(photo(), "PNG"), palette_model="two-d")
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION and error.field == "spec.palette_model"


def test_images_past_the_pixel_limit_are_refused_before_decoding(start_server: ServerFactory) -> None:
    server = start_server(max_image_pixels=1000)
    # A PNG whose header claims 100,000 x 100,000 pixels over 8 x 8 pixels of data:
    # decoding would fail, so a refusal for size shows nothing was decoded.
    small = encode(photo(8, 8), "PNG")
    bomb = bytearray(small)  # signature, then the IHDR chunk with its width and height
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.ClusteringServiceStub(channel)
        error = failure(stub, bytes(bomb))
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.field == "image"
        assert "nothing was decoded" in error.message
        error = failure(stub, encode(photo(), "PNG"))  # 96 x 64 is over 1000 too
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: encode(photo(), "JPEG")[:300], "image"),  # cut inside the header segments
        (lambda: encode(photo(), "PNG")[:20], "image"),  # cut inside IHDR
        (lambda: encode(photo(), "GIF")[:13], "image"),  # the logical screen and nothing else
        (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "image"),  # not ours
    ],
)
def test_broken_headers_are_invalid_arguments_not_internal(stub, make, field) -> None:
    error = failure(stub, make())
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.field == field, error


def test_unknown_enum_values_and_sample_limits_are_refused(stub) -> None:
    data = encode(photo(), "PNG")
    for spec, field in (({"color_space": 9}, "spec.color_space"), ({"dither": 7}, "spec.dither"),
                        ({"output_format": 42}, "spec.output_format"),
                        ({"max_samples": 10**9}, "spec.max_samples")):
        error = failure(stub, data, **spec)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.field == field, error


def test_sixteen_bit_grey_is_scaled_not_clipped(stub) -> None:
    ramp = (np.arange(64 * 96, dtype=np.uint32).reshape(64, 96) * 10).astype(np.uint16)
    data = encode(Image.fromarray(ramp), "PNG")  # Pillow keeps uint16 as mode I;16
    _, summary = quantize(stub, data)
    colors = np.frombuffer(summary.palette, dtype=np.uint8).reshape(-1, 3)
    assert colors.max() - colors.min() > 100  # spread over the range, not all white


def test_an_empty_stream_is_refused(stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.QuantizeImage(iter([])))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
