"""Floors with our kernels at work: the least a server of our design does on top of
bench.floors' trivial handlers, served by the same process.

- Learning streams: the acking handler, with each batch's rows read in place and applied by
  our engine's partial_fit on one worker thread (CPU work off the event loop, DESIGN.md
  section 4), the next batches received meanwhile, and the acks sent in order. It measures
  what running the transport and the kernel at once costs on this machine, which floor +
  kernel, timed apart, leave out (bench.streaming).
- Predicting streams: the same for Predict (bench.system): the rows' 2 MiB chunks, each
  labelled by our engine's NearestCenters on one worker thread as the next arrive, the
  labels answered per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

LEARN = "/floor.Floor/Learn"
LEARN_FROM = "/floor.Floor/LearnFrom"
PREDICT_WITH = "/floor.Floor/PredictWith"
PREDICTING = "/floor.Floor/Predicting"
PREDICTED_CHUNK = 2 << 20


def handlers(ack: bytes) -> dict[str, grpc.RpcMethodHandler]:
    """The floor server's handlers of these floors, by method name; ``ack`` is the acking
    handler's answer to each batch."""
    learn_from, learn = _learning(ack)
    predict_with, predicting = _predicting()
    return {
        "LearnFrom": grpc.unary_unary_rpc_method_handler(learn_from),
        "Learn": grpc.stream_stream_rpc_method_handler(learn),
        "PredictWith": grpc.unary_unary_rpc_method_handler(predict_with),
        "Predicting": grpc.stream_stream_rpc_method_handler(predicting),
    }


def _learning(ack: bytes) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The learning floor's handlers: LearnFrom starts a mini-batch model (seed 0) from the
    request ``learning_from`` makes, untimed as the SDK's setup stream is; Learn applies each
    batch of its stream to that model on the one worker thread and acks it."""
    from concurrent.futures import ThreadPoolExecutor

    from centroidal import codec
    from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState

    model: dict[str, MiniBatchState] = {}
    worker = ThreadPoolExecutor(1, thread_name_prefix="floor-learn")

    def points(data: bytes) -> Any:
        batch = codec.read_minibatch_request(data)
        assert isinstance(batch, codec.MiniBatch) and batch.points is not None
        return batch.points

    async def learn_from(request: bytes, context: object) -> bytes:
        n_clusters, first = int.from_bytes(request[:4], "little"), points(request[4:])
        state = MiniBatchState(MiniBatchParams(n_clusters=n_clusters, seed=0).check(), first.shape[1], first.dtype)
        await asyncio.get_running_loop().run_in_executor(worker, state.partial_fit, first)
        model["state"] = state
        return bytes(8)

    async def learn(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        state = model["state"]
        async for _ in _in_order(requests, lambda data: state.partial_fit(points(data)), worker):
            yield ack

    return learn_from, learn


def learning_from(first: Any, n_clusters: int) -> bytes:
    """LearnFrom's request: the model's n_clusters as 4 bytes, then the batch request of the
    rows ``first`` that start it."""
    from centroidal import codec

    return n_clusters.to_bytes(4, "little") + codec.serialize_minibatch_request(
        codec.MiniBatch("setup", 1, first, None))


def _in_order(
    requests: AsyncIterator[bytes], work: Callable[[bytes], Any], worker: Any
) -> AsyncIterator[Any]:
    """``work`` of each request on ``worker`` (one thread), the next requests received while
    it runs, its outcomes in order: what a handler of our design does with CPU work."""
    loop = asyncio.get_running_loop()
    outcomes: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue()

    async def receive() -> None:
        async for data in requests:
            outcomes.put_nowait(loop.run_in_executor(worker, work, data))
        outcomes.put_nowait(None)

    async def each() -> AsyncIterator[Any]:
        receiving = loop.create_task(receive())
        while (outcome := await outcomes.get()) is not None:
            yield await outcome
        await receiving

    return each()


def _predicting() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The predicting floor's handlers: PredictWith takes the centers (float32, after their
    width as 4 bytes); Predicting labels each chunk of float32 rows of that width on the one
    worker thread, answering its int32 labels."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from centroidal.engine.nearest import NearestCenters

    model: dict[str, Any] = {}
    worker = ThreadPoolExecutor(1, thread_name_prefix="floor-predict")

    async def predict_with(request: bytes, context: object) -> bytes:
        width = int.from_bytes(request[:4], "little")
        model["centers"] = NearestCenters(np.frombuffer(request, np.float32, offset=4).reshape(-1, width))
        return bytes(8)

    async def predicting(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        centers = model["centers"]
        width = centers.centers.shape[1]

        def labels(data: bytes) -> bytes:
            return bytes(centers.predict(np.frombuffer(data, np.float32).reshape(-1, width)).data)

        async for answer in _in_order(requests, labels, worker):
            yield answer

    return predict_with, predicting


@contextmanager
def predicting_floor(address: str, X: Any, centers: Any) -> Iterator[Callable[[], object]]:
    """The predicting floor for the rows X (float32) and these centers, as a call to time: X
    in PREDICTED_CHUNK chunks to the Predicting handler, every chunk's labels back."""
    import numpy as np

    width = X.shape[1]
    rows = PREDICTED_CHUNK // (4 * width)
    chunks = [np.ascontiguousarray(X[start:start + rows]).tobytes() for start in range(0, X.shape[0], rows)]
    with grpc.insecure_channel(address) as channel:  # 2 MiB chunks: within gRPC's default limits
        channel.unary_unary(PREDICT_WITH)(width.to_bytes(4, "little") + np.asarray(centers, np.float32).tobytes())
        method = channel.stream_stream(PREDICTING)

        def predict() -> int:
            answered = sum(len(answer) for answer in method(iter(chunks)))
            if answered != 4 * X.shape[0]:
                raise RuntimeError(f"the predicting floor answered {answered // 4} labels of {X.shape[0]}")
            return answered

        yield predict


