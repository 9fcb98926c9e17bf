"""What the tests of refused requests share: the rows of the model fitted before each bad
request (conftest's ``fitted``), and the checks that the refusal kept it."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from centroidal.client import CentroidalError, Client
from centroidal.client.errors import error_from_rpc
from centroidal.v1 import clustering_pb2 as pb

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 3))


KEPT_CENTERS: dict[str, np.ndarray] = {}


def raw_error(call) -> CentroidalError:
    with pytest.raises(grpc.RpcError) as raised:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, pb.PredictResponse):
            list(result)
    return error_from_rpc(raised.value)


def assert_kept(client: Client) -> None:
    """The model fitted before the bad request is still there, unchanged."""
    model = client.get_model("kept")
    assert model.version == 1
    np.testing.assert_array_equal(model.centers, KEPT_CENTERS["kept"])
