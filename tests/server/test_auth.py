"""Bearer tokens: required for the service, not for health probes."""

from __future__ import annotations

import numpy as np
import pytest

from centroidal.client import Client, Unauthenticated
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
