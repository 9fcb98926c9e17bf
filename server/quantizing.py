"""One QuantizeImage call: admitted under a fit slot, its image received within the limits
and the memory budget, quantised off the event loop (``imaging``), its palette saved when
asked for, and the image sent back in chunks with the summary last."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from centroidal import codec

from . import imaging
from .admission import CallWork, Incoming
from .exceptions import InvalidRequest, LimitExceeded
from .memory import Reservation
from .runtime import Runtime
from .snapshots import PALETTE, ModelSnapshot

IMAGE_CHUNK_BYTES = 2 * 1024 * 1024


class Quantizing:
    """Runs QuantizeImage calls."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def quantize(self, requests: Incoming[codec.QuantizeImageRequest]) -> AsyncIterator[codec.QuantizeImageResponse]:
        """An empty answer once admitted, then the quantised image in chunks, the last one with
        the summary."""
        runtime = self._runtime
        first = await requests.next()
        if first is None or first.spec is None:
            raise InvalidRequest("the first message of a QuantizeImage stream must carry spec", field="spec")
        palette_model = first.spec.palette_model
        if not palette_model or runtime.registry.is_loaded(palette_model):
            options, save_as = imaging.plan(first.spec, runtime.registry)
        else:  # a palette model not in memory is loaded off the event loop
            options, save_as = await runtime.workers.run(
                runtime.workers.storage, imaging.plan, first.spec, runtime.registry
            )
        if save_as:
            runtime.registry.check_writable()
        # It holds the image and fits a palette: it takes a fit slot, before the image arrives.
        slot, work = runtime.fit_slots.take(), CallWork()
        memory = runtime.memory.reservation("this image", field="image")
        try:
            yield codec.QuantizeImageResponse(b"")  # admitted: the client may send the image now
            async with requests.drained_on_refusal():
                image = await self._receive(first.image, requests, memory)
            result = await work.run(runtime.workers.fits, imaging.quantize, image, options,
                                    runtime.config.max_image_pixels, memory.grow)
        finally:
            work.after(slot.release)
            work.after(memory.release)
        saved_version = 0
        if save_as:
            palette = ModelSnapshot(
                name=save_as, version=0, centers=result.colors.astype(np.float32),
                config={"color_space": options.color_space, "seed": options.seed},
                inertia=result.mse * 3 * result.width * result.height, n_iter=0,
                n_samples_seen=result.width * result.height, created_at=0.0, updated_at=0.0,
                kind=PALETTE,
            )
            saved_version = (await runtime.commit(palette)).version
        summary = codec.QuantizeSummary(
            result.colors, result.counts, result.mse, result.psnr, result.width, result.height,
            result.image_format, tuple(result.notes), saved_version,
        )
        data = result.image
        for start in range(0, max(len(data), 1), IMAGE_CHUNK_BYTES):
            last = start + IMAGE_CHUNK_BYTES >= len(data)
            yield codec.QuantizeImageResponse(data[start : start + IMAGE_CHUNK_BYTES], summary if last else None)

    async def _receive(
        self, first: bytes, requests: Incoming[codec.QuantizeImageRequest], memory: Reservation
    ) -> bytearray:
        limit = self._runtime.config.max_image_bytes
        memory.grow(len(first))
        buffer = bytearray(first)
        async for request in requests:
            if request.spec is not None:
                raise InvalidRequest("only the first message of the stream may carry spec", field="spec")
            if len(buffer) + len(request.image) > limit:
                raise LimitExceeded(f"the image is over the server's limit of {limit} bytes", field="image")
            memory.grow(len(request.image))
            buffer += request.image
        return buffer
