"""Predict's rows through POSIX shared memory: the SDK's opt-in path against a real server,
and every object the server must refuse, each with its status, reason and field."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from centroidal import codec
from centroidal.client import Client
from centroidal.client.errors import CentroidalError, error_from_rpc
from centroidal.server import CentroidalServer
from centroidal.server.shared_rows import is_local_peer
from tests.conftest import ServerFactory

SHM = Path("/dev/shm")
_PREDICT = "/centroidal.v1.ClusteringService/Predict"


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(20_000, 8)).astype(np.float32)


@pytest.fixture
def fitted(server: CentroidalServer, rows: np.ndarray) -> str:
    with Client(f"127.0.0.1:{server.port}") as client:
        client.fit("m", rows, 16, seed=0, max_iter=5)
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def shm_object() -> Iterator[Path]:
    """A path for a shared-memory object of the test's own, removed afterwards."""
    path = SHM / f"centroidal-test-{os.getpid()}-{os.urandom(4).hex()}"
    yield path
    path.unlink(missing_ok=True)


def _write(path: Path, points: np.ndarray, mode: int = 0o600) -> None:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(points.tobytes())
    os.chmod(path, mode)  # past the umask


def _refusal(target: str, request: codec.PredictRequest) -> CentroidalError:
    with grpc.insecure_channel(target) as channel:
        predict = channel.unary_unary(_PREDICT)
        with pytest.raises(grpc.RpcError) as refused:
            predict(codec.serialize_predict_request(request), timeout=30)
    return error_from_rpc(refused.value)


def _shared(path: Path, points: np.ndarray, offset: int = 0) -> codec.SharedRows:
    return codec.SharedRows(path.name, offset, points.dtype, points.shape[0], points.shape[1])


def _refused_by(target: str, rows: np.ndarray, shm_object: Path) -> CentroidalError:
    """The refusal of a Predict of ``rows`` in ``shm_object`` by the server at ``target``,
    once it has a model to predict with."""
    with Client(target) as client:
        client.fit("m", rows, 4, seed=0, max_iter=2)
    _write(shm_object, rows)
    return _refusal(target, codec.PredictRequest("m", shared=_shared(shm_object, rows)))


def test_sdk_predict_through_shared_memory_equals_sending_the_rows(fitted: str, rows: np.ndarray) -> None:
    with Client(fitted) as plain, Client(fitted, shared_memory=True) as shared:
        assert np.array_equal(shared.predict("m", rows), plain.predict("m", rows))
        labels, distances = shared.predict("m", rows[5:900], return_distance=True)
        expected_labels, expected = plain.predict("m", rows[5:900], return_distance=True)
        assert np.array_equal(labels, expected_labels)
        np.testing.assert_allclose(distances, expected, rtol=1e-6)
        # A transform too large for one answer goes as a stream of slices of one object.
        many = np.tile(rows, (8, 1))
        transformed = shared.transform("m", many, timeout=120)
        np.testing.assert_allclose(transformed, plain.transform("m", many, timeout=120), rtol=1e-6)
        assert np.array_equal(shared.predict("m", rows[:0]), np.empty(0, dtype=np.int32))


def test_the_sdk_reuses_its_objects_and_removes_them_when_closed(fitted: str, rows: np.ndarray) -> None:
    before = set(os.listdir(SHM))
    client = Client(fitted, shared_memory=True)
    client.predict("m", rows)
    made = set(os.listdir(SHM)) - before
    assert len(made) == 1 and next(iter(made)).startswith(f"centroidal-{os.getpid()}-")
    assert (os.stat(SHM / next(iter(made))).st_mode & 0o777) == 0o600
    client.predict("m", rows[:100])
    assert set(os.listdir(SHM)) - before == made
    client.close()
    assert set(os.listdir(SHM)) - before == set()


def test_rows_at_an_offset_are_read_from_there(fitted: str, rows: np.ndarray, shm_object: Path) -> None:
    _write(shm_object, rows)
    part = rows[1000:3000]
    request = codec.PredictRequest("m", points=None, shared=_shared(shm_object, part, offset=1000 * 8 * 4))
    with grpc.insecure_channel(fitted) as channel:
        answer = channel.unary_unary(_PREDICT)(codec.serialize_predict_request(request), timeout=30)
    with Client(fitted) as plain:
        expected = plain.predict("m", part)
    from centroidal.v1 import clustering_pb2 as pb
    assert np.array_equal(codec.decode_predict_response(pb.PredictResponse.FromString(answer)).labels, expected)


def test_a_missing_object_is_not_found(fitted: str, rows: np.ndarray, shm_object: Path) -> None:
    error = _refusal(fitted, codec.PredictRequest("m", shared=_shared(shm_object, rows)))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "SHARED_MEMORY_NOT_FOUND" and error.field == "points_shared.name"
    assert shm_object.name in error.message


@pytest.mark.parametrize("name", ["../etc/passwd", "centroidal-a/b", "other-object", "centroidal-", ""])
def test_a_name_outside_the_servers_pattern_is_invalid(fitted: str, rows: np.ndarray, name: str) -> None:
    shared = codec.SharedRows(name, 0, rows.dtype, 10, 8)
    error = _refusal(fitted, codec.PredictRequest("m", shared=shared))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.field == "points_shared.name"


def test_an_object_others_may_write_is_refused(fitted: str, rows: np.ndarray, shm_object: Path) -> None:
    _write(shm_object, rows, mode=0o622)
    error = _refusal(fitted, codec.PredictRequest("m", shared=_shared(shm_object, rows)))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "SHARED_MEMORY_NOT_ALLOWED" and "622" in error.message


@pytest.mark.skipif(os.geteuid() != 0, reason="giving an object to another user needs root (CI runs as root)")
def test_another_users_object_is_refused(fitted: str, rows: np.ndarray, shm_object: Path) -> None:
    _write(shm_object, rows)
    os.chown(shm_object, 65534, 65534)
    error = _refusal(fitted, codec.PredictRequest("m", shared=_shared(shm_object, rows)))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "SHARED_MEMORY_NOT_ALLOWED" and "65534" in error.message


def test_an_object_smaller_than_its_rows_is_invalid(fitted: str, rows: np.ndarray, shm_object: Path) -> None:
    _write(shm_object, rows[:100])
    error = _refusal(fitted, codec.PredictRequest("m", shared=_shared(shm_object, rows[:101])))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.field == "points.rows"
    offset = _refusal(fitted, codec.PredictRequest("m", shared=_shared(shm_object, rows[:10], offset=3)))
    assert offset.code == grpc.StatusCode.INVALID_ARGUMENT and offset.field == "points_shared.offset"


def test_rows_in_both_places_are_invalid(fitted: str, rows: np.ndarray, shm_object: Path) -> None:
    from centroidal.v1 import clustering_pb2 as pb

    _write(shm_object, rows)
    message = pb.PredictRequest(model="m", points=codec.encode_matrix(rows[:10]),
                                points_shared=pb.SharedRows(name=shm_object.name))
    with grpc.insecure_channel(fitted) as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(_PREDICT)(message.SerializeToString(), timeout=30)
    error = error_from_rpc(refused.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.field == "points.data"


def test_a_server_without_shared_memory_refuses_it(
    start_server: ServerFactory, rows: np.ndarray, shm_object: Path
) -> None:
    server = start_server(shared_memory=False)
    error = _refused_by(f"127.0.0.1:{server.port}", rows, shm_object)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED and error.field == "points_shared"
    assert "--no-shared-memory" in error.message


def _outward_address() -> str | None:
    """An address of this host that is not loopback, if it has one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: picks the outward interface
            host = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if host.startswith("127.") else host


def test_a_call_from_another_address_than_loopback_is_refused(
    start_server: ServerFactory, rows: np.ndarray, shm_object: Path
) -> None:
    host = _outward_address()
    if host is None:
        pytest.skip("this machine has no address but loopback")
    server = start_server(host="0.0.0.0")
    error = _refused_by(f"{host}:{server.port}", rows, shm_object)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED and error.field == "points_shared.name"
    assert host in error.message


@pytest.mark.parametrize(("peer", "local"), [
    ("ipv4:127.0.0.1:5000", True), ("ipv4:127.8.9.1:5000", True), ("ipv6:[::1]:5000", True),
    ("ipv6:%5B::1%5D:5000", True), ("ipv6:[::ffff:127.0.0.1]:5000", True), ("unix:/tmp/socket", True),
    ("ipv4:10.1.2.3:5000", False), ("ipv6:%5Bfd00::2%5D:5000", False), ("", False), ("ipv4:nonsense", False),
])
def test_local_peers_are_loopback_and_unix_sockets(peer: str, local: bool) -> None:
    assert is_local_peer(peer) is local
