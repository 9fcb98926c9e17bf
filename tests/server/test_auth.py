"""Bearer tokens: required for the service, not for health probes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from centroidal.client import CentroidalError, Client, Unauthenticated
from centroidal.client.aio import AsyncClient
from tests.conftest import ServerFactory


def test_calls_need_a_valid_token_but_health_does_not(start_server: ServerFactory) -> None:
    server = start_server(tokens=("s3cret", "other"))
    target = f"127.0.0.1:{server.port}"
    X = np.random.default_rng(0).normal(size=(50, 2))
    with Client(target) as anonymous:
        assert anonymous.health() == "SERVING"
        with pytest.raises(Unauthenticated):
            anonymous.list_models()
        with pytest.raises(Unauthenticated):
            anonymous.fit("m", X, 2)
    with Client(target, token="wrong") as intruder, pytest.raises(Unauthenticated):
        intruder.predict("m", X)
    with Client(target, token="other") as member:
        member.fit("m", X, 2, seed=0)
        assert member.predict("m", X).shape == (50,)


def test_every_kind_of_call_carries_the_token_from_both_clients(start_server: ServerFactory) -> None:
    server = start_server(tokens=("s3cret",))
    target = f"127.0.0.1:{server.port}"
    X = np.random.default_rng(1).normal(size=(3000, 4)).astype(np.float32)
    with Client(target, token="s3cret", chunk_bytes=4096) as client:
        client.fit("sync", X, 3, seed=0)  # a request stream
        assert client.predict("sync", X).shape == (3000,)  # many chunks: PredictStream
        with client.stream("sync-stream", n_clusters=3, seed=0) as stream:
            stream.send(X[:500])

    async def scenario() -> tuple[int, int]:
        async with AsyncClient(target, token="s3cret", chunk_bytes=4096) as client:
            await client.fit("async", X, 3, seed=0)
            labels = await client.predict("async", X)
            async with client.stream("async-stream", n_clusters=3, seed=0) as stream:
                await stream.send(X[:500])
            model = await client.get_model("async-stream")
            return int(labels.shape[0]), model.n_samples_seen

    assert asyncio.run(scenario()) == (3000, 500)

    async def refused() -> list[str]:
        # Refused on its headers, a stream's first write races the refusal (grpc/grpc#36066):
        # about half of these lose the status without the transport's second look.
        async with AsyncClient(target, token="wrong") as client:
            outcomes = []
            for _ in range(10):
                try:
                    await client.fit("nope", X, 3)
                except CentroidalError as error:
                    outcomes.append(type(error).__name__)
            return outcomes

    assert asyncio.run(refused()) == ["Unauthenticated"] * 10
