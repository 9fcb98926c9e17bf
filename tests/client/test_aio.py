"""AsyncClient over grpc.aio against a real server."""

from __future__ import annotations

import asyncio
import socket
import threading

import grpc
import grpc.aio
import numpy as np
import pytest

from centroidal.client import CentroidalError, Client, FailedPrecondition, InvalidArgument, NotFound
from centroidal.client.aio import AsyncClient
from centroidal.engine.minibatch import MiniBatchParams, MiniBatchState
from tests.conftest import ServerFactory

RNG = np.random.default_rng(3)
X = (RNG.normal(size=(3000, 4)) + RNG.integers(0, 3, size=(3000, 1)) * 6).astype(np.float32)


def test_fit_predict_and_manage_models(server) -> None:
    async def main() -> None:
        async with AsyncClient(f"127.0.0.1:{server.port}", chunk_bytes=16 * 1024) as client:
            assert await client.health() == "SERVING"
            stages: list[str] = []
            fitted = await client.fit("a", X, 3, seed=0, return_labels=True, on_progress=lambda p: stages.append(p.stage))
            assert fitted.version == 1 and fitted.labels is not None and "uploading" in stages
            labels = await client.predict("a", X)  # several chunks: the streaming path
            np.testing.assert_array_equal(labels, fitted.labels)
            labels, distances = await client.predict("a", X[:10], return_distance=True)
            assert distances.shape == (10,) and distances.dtype == np.float32
            assert (await client.transform("a", X[:5])).shape == (5, 3)
            assert [m.name for m in await client.list_models(page_size=1)] == ["a"]
            model = await client.get_model("a")
            assert model.centers.shape == (3, 4)
            with pytest.raises(FailedPrecondition) as raised:
                await client.predict("a", X[:, :3])
            assert raised.value.field == "points.cols"
            with pytest.raises(InvalidArgument):
                await client.fit("b", X, 0)
            import io

            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(buffer, "PNG")
            quantised = await client.quantize_image(buffer.getvalue(), 4, seed=0)
            assert quantised.palette.shape == (4, 3) and quantised.pixel_counts.sum() == 600
            assert await client.delete_model("a") == 2
            with pytest.raises(NotFound):
                await client.get_model("a")

    asyncio.run(main())


def expected(batches: list[np.ndarray]) -> np.ndarray:
    state = MiniBatchState(MiniBatchParams(3, seed=5), 4, np.dtype(np.float32))
    for batch in batches:
        state.partial_fit(*state.check_batch(batch))
    return state.centers


def test_async_stream_sends_and_reports_errors(server) -> None:
    batches = [X[i * 200 : (i + 1) * 200] for i in range(10)]

    async def main() -> None:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            async with client.stream("s", n_clusters=3, seed=5, window=2) as stream:
                for batch in batches:
                    await stream.send(batch)
                await stream.send(X[:5, :3])
                with pytest.raises(FailedPrecondition) as raised:
                    await stream.flush()
                assert raised.value.sequence == 11
            assert stream.durable_sequence == 11
            model = await client.get_model("s")
            assert model.n_batches == 10 and model.durable_version == model.version
            np.testing.assert_array_equal(model.centers, expected(batches))

    asyncio.run(main())


def test_async_stream_reconnects_after_a_restart(start_server: ServerFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_server(port=port, checkpoint_interval=3600.0)
    batches = [X[i * 200 : (i + 1) * 200] for i in range(12)]

    async def main() -> int:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            stream = client.stream("r", n_clusters=3, seed=5, producer_id="p")
            async with stream:
                for batch in batches[:6]:
                    await stream.send(batch)
                await stream.flush()
                server.store.close()  # nothing since the start reaches the disk
                server.stop(0)
                threading.Timer(0.5, lambda: start_server(port=port)).start()
                for batch in batches[6:]:
                    await stream.send(batch)
            return stream.reconnects

    assert asyncio.run(main()) >= 1
    with Client(f"127.0.0.1:{port}") as client:
        model = client.get_model("r")
    assert model.n_batches == 12
    np.testing.assert_allclose(model.centers, expected(batches), rtol=1e-6)


def test_async_stream_refuses_unknown_models_and_wrong_kinds(server) -> None:
    async def main() -> None:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await client.fit("batch", X, 3, seed=0)
            for name, kind, field in (("missing", NotFound, "open.model"), ("batch", FailedPrecondition, "open.model")):
                stream = client.stream(name)
                with pytest.raises(kind) as raised:
                    async with stream:
                        await stream.send(X[:10])
                        await stream.flush()
                assert raised.value.field == field

    asyncio.run(main())


def test_async_stream_waits_for_a_server_that_is_starting(start_server: ServerFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> int:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            threading.Timer(0.5, lambda: start_server(port=port)).start()
            async with client.stream("late", n_clusters=2, reconnect_timeout=30) as stream:
                await stream.send(X[:100])
            return stream.last_ack.n_samples_seen

    assert asyncio.run(main()) == 100


def test_a_client_that_waits_for_admission_always_gets_a_refused_specs_status(server) -> None:
    """The contract's answer to grpc/grpc#36066 (a grpc.aio client that is still writing when
    the server ends the call can lose the status to INTERNAL): send the spec alone, and the
    rows only after the server's first answer. A refused spec then ends the call before any
    row is written, and its status arrives as sent, every time. (AsyncClient does this; here
    a client built from the .proto alone, on a raw channel.)"""
    from centroidal.v1 import clustering_pb2 as pb
    from centroidal import codec

    X = np.random.default_rng(0).normal(size=(500_000, 16)).astype(np.float32)
    refused = pb.FitRequest(spec=pb.FitSpec(model="m", config=pb.KMeansConfig(n_clusters=0)))
    admitted = pb.FitRequest(spec=pb.FitSpec(model="m", config=pb.KMeansConfig(n_clusters=2)))

    async def fit(spec: pb.FitRequest) -> tuple[grpc.StatusCode, int]:
        """One Fit by the protocol; its status, and how many row chunks it wrote."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = channel.stream_stream("/centroidal.v1.ClusteringService/Fit", request_serializer=bytes,
                                         response_deserializer=pb.FitResponse.FromString)()
            await call.write(spec.SerializeToString())
            answers, written = call.__aiter__(), 0
            try:
                first = await answers.__anext__()  # admitted, or the refusal
                assert first.progress.stage == pb.FitProgress.STAGE_ADMITTED
                for start in range(0, len(X), 100_000):
                    await call.write(codec.serialize_fit_request(codec.FitChunk(points=X[start : start + 100_000])))
                    written += 1
                await call.done_writing()
                async for _ in answers:
                    pass
            except grpc.aio.AioRpcError:
                pass
            return await call.code(), written

    async def both() -> list[tuple[grpc.StatusCode, int]]:
        return [await fit(refused) for _ in range(8)] + [await fit(admitted)]

    outcomes = asyncio.run(both())
    assert outcomes[:8] == [(grpc.StatusCode.INVALID_ARGUMENT, 0)] * 8
    assert outcomes[8] == (grpc.StatusCode.OK, 5)


def test_async_fit_refused_during_upload_keeps_the_servers_status(server) -> None:
    X = np.random.default_rng(0).normal(size=(500_000, 16)).astype(np.float32)

    async def refusals() -> list[CentroidalError]:
        errors = []
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            for _ in range(8):
                with pytest.raises(CentroidalError) as raised:
                    await client.fit("m", X, 0)
                errors.append(raised.value)
        return errors

    for error in asyncio.run(refusals()):
        assert isinstance(error, InvalidArgument) and error.field == "spec.config.n_clusters", error


def test_async_fit_refused_mid_upload_keeps_the_servers_status(server) -> None:
    """Refused at its first chunk, while the upload is under way: the server reads the rest
    before it answers, so the status is not lost (grpc/grpc#36066)."""
    X = np.random.default_rng(0).normal(size=(300_000, 16)).astype(np.float32)

    async def refusals() -> list[CentroidalError]:
        errors = []
        async with AsyncClient(f"127.0.0.1:{server.port}", chunk_bytes=256 * 1024) as client:
            for _ in range(6):
                with pytest.raises(CentroidalError) as raised:
                    await client.fit("m", X, 3, init=np.zeros((3, 8), dtype=np.float32))
                errors.append(raised.value)
        return errors

    for error in asyncio.run(refusals()):
        assert isinstance(error, InvalidArgument) and error.field == "spec.config.init_centers.cols", error


def test_an_async_on_progress_that_raises_ends_the_fit_with_its_error(server) -> None:
    class Stop(Exception):
        pass

    def on_progress(event) -> None:
        if event.stage == "uploading" and event.points_received:
            raise Stop

    async def fit() -> None:
        async with AsyncClient(f"127.0.0.1:{server.port}", chunk_bytes=64 * 1024) as client:
            await client.fit("m", X, 3, on_progress=on_progress)

    with pytest.raises(Stop):
        asyncio.run(fit())


def test_async_close_raises_when_the_model_cannot_be_stored_and_resends_later(
    start_server: ServerFactory,
) -> None:
    from centroidal.client import ResourceExhausted

    rng = np.random.default_rng(0)
    server = start_server(max_store_bytes=384 * 1024, checkpoint_interval=3600)
    batches = [rng.normal(size=(200, 64)).astype(np.float32) for _ in range(6)]

    async def run() -> tuple[int, int, int]:
        async with AsyncClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            await client.fit("filler", rng.normal(size=(1100, 64)).astype(np.float32), 1024, max_iter=1)
            stream = client.stream("s", n_clusters=256, seed=3, producer_id="p", reconnect_timeout=1.0)
            for batch in batches:
                await stream.send(batch)
            with pytest.raises(ResourceExhausted):
                await stream.close(timeout=60)
            kept = stream.durable_sequence
            await client.delete_model("filler")
            await asyncio.sleep(5.1)
            await stream.close(timeout=60)  # resends what was not stored
            model = await client.get_model("s")
            assert stream.last_ack is not None
            assert stream.last_ack.durable_version == model.version == model.durable_version
            return kept, stream.durable_sequence, model.n_samples_seen

    kept, durable, seen = asyncio.run(run())
    assert kept < len(batches) and durable == len(batches) and seen == len(batches) * 200


def test_async_evaluate_and_suggest_k(server) -> None:
    from sklearn.datasets import make_blobs

    blobs, _ = make_blobs(n_samples=300, centers=4, cluster_std=0.60, random_state=0)
    big = np.random.default_rng(0).normal(size=(400_000, 8)).astype(np.float32)

    async def main() -> None:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            events: list[object] = []
            suggestion = await client.suggest_k(blobs, range(2, 7), seed=0, save_best_as="best",
                                                on_progress=events.append)
            assert suggestion.recommended_k == 4 and len(events) >= 5
            with Client(f"127.0.0.1:{server.port}") as sync:
                expected = sync.evaluate("best", blobs)
            evaluation = await client.evaluate("best", blobs)
            assert evaluation.scores == expected.scores and evaluation.inertia == expected.inertia
            for _ in range(4):  # refused while the upload runs: the status still arrives
                with pytest.raises(NotFound) as raised:
                    await client.evaluate("missing", big)
                assert raised.value.field == "spec.model"
                with pytest.raises(InvalidArgument) as invalid:
                    await client.suggest_k(big, range(1, 3))
                assert invalid.value.field == "spec.k_min"

    asyncio.run(main())
