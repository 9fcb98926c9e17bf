"""StreamMiniBatch's batches through POSIX shared memory, from a raw gRPC client as another
language's would send them: the same model as with the rows sent, a batch refused in its ack
for a client's mistake, and shared memory the server may not or cannot read ending the
stream before any later batch is applied."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from centroidal import codec
from centroidal.client.errors import CentroidalError, error_from_rpc
from centroidal.v1 import clustering_pb2 as pb
from tests.conftest import ServerFactory

SHM = Path("/dev/shm")
_STREAM = "/centroidal.v1.ClusteringService/StreamMiniBatch"
RNG = np.random.default_rng(11)
BATCHES = [(RNG.normal(size=(300, 4)) + offset).astype(np.float32) for offset in (0, 3, 6, 9, 12)]
CONFIG = codec.MiniBatchConfig(n_clusters=3, init_size=300, seed=0)


@pytest.fixture
def objects() -> Iterator[list[Path]]:
    """Paths for the test's own shared-memory objects, removed afterwards."""
    made: list[Path] = []
    yield made
    for path in made:
        path.unlink(missing_ok=True)


def _object(objects: list[Path], points: np.ndarray, mode: int = 0o600, prefix: bytes = b"") -> Path:
    path = SHM / f"centroidal-test-{os.getpid()}-{os.urandom(4).hex()}"
    objects.append(path)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(prefix + points.tobytes())
    os.chmod(path, mode)  # past the umask
    return path


def _shared(path: Path, points: np.ndarray, offset: int = 0) -> codec.SharedRows:
    return codec.SharedRows(path.name, offset, points.dtype, points.shape[0], points.shape[1])


def _stream(target: str, model: str, batches: list[codec.MiniBatch]) -> tuple[list[pb.MiniBatchAck], CentroidalError | None]:
    """The acks of one stream of ``batches`` into ``model`` (created from CONFIG), and the
    error it ended with (None when it ended OK)."""
    requests = [codec.MiniBatchOpen(model, CONFIG), *batches]
    acks: list[pb.MiniBatchAck] = []
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(_STREAM, response_deserializer=pb.MiniBatchAck.FromString)
        try:
            for ack in call(iter([codec.serialize_minibatch_request(item) for item in requests]), timeout=60):
                acks.append(ack)
        except grpc.RpcError as ended:
            return acks, error_from_rpc(ended)
    return acks, None


def _seen(target: str, model: str) -> int:
    from centroidal.client import Client

    with Client(target) as client:
        return client.get_model(model).n_samples_seen


def test_shared_batches_make_the_model_the_rows_sent_make(start_server: ServerFactory, objects: list[Path]) -> None:
    target = f"127.0.0.1:{start_server().port}"
    sent = [codec.MiniBatch("p", index, rows) for index, rows in enumerate(BATCHES, start=1)]
    # The rows at an offset into one object, after 16 bytes of something else, and the weights sent.
    weights = np.linspace(0.5, 2.0, BATCHES[2].shape[0])
    shared = [
        codec.MiniBatch("p", index, None, weights if index == 3 else None,
                        _shared(_object(objects, rows, prefix=b"x" * 16), rows, offset=16))
        for index, rows in enumerate(BATCHES, start=1)
    ]
    sent[2] = codec.MiniBatch("p", 3, BATCHES[2], weights)
    plain_acks, plain_end = _stream(target, "plain", sent)
    shared_acks, shared_end = _stream(target, "shared", shared)
    assert plain_end is None and shared_end is None
    assert [(ack.sequence, ack.version, ack.n_samples_seen, ack.HasField("error")) for ack in shared_acks] == [
        (ack.sequence, ack.version, ack.n_samples_seen, ack.HasField("error")) for ack in plain_acks
    ]
    assert [ack.batch_inertia for ack in shared_acks[1:]] == [ack.batch_inertia for ack in plain_acks[1:]]
    from centroidal.client import Client

    with Client(target) as client:
        centers = client.get_model("shared", include_centers=True).centers
        expected = client.get_model("plain", include_centers=True).centers
    assert centers is not None and expected is not None
    np.testing.assert_array_equal(centers, expected)


def test_a_batch_whose_object_is_too_small_is_refused_in_its_ack(
    start_server: ServerFactory, objects: list[Path],
) -> None:
    target = f"127.0.0.1:{start_server().port}"
    small = _object(objects, BATCHES[1][:100])
    batches = [
        codec.MiniBatch("p", 1, BATCHES[0]),
        codec.MiniBatch("p", 2, None, None, _shared(small, BATCHES[1])),
        codec.MiniBatch("p", 3, BATCHES[2]),
    ]
    acks, ended = _stream(target, "small", batches)
    assert ended is None
    assert [ack.HasField("error") for ack in acks] == [False, True, False]
    assert acks[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert acks[1].error.field == "batch.points.rows"
    assert _seen(target, "small") == BATCHES[0].shape[0] + BATCHES[2].shape[0]


def _ends_the_stream(target: str, model: str, refused: codec.MiniBatch) -> CentroidalError:
    """The error a stream ends with whose second batch is ``refused``, after checking that
    the first was applied and the third was not."""
    batches = [codec.MiniBatch("p", 1, BATCHES[0]), refused, codec.MiniBatch("p", 3, BATCHES[2])]
    acks, ended = _stream(target, model, batches)
    assert ended is not None
    assert [ack.sequence for ack in acks] == [1] and not acks[0].HasField("error")
    assert _seen(target, model) == BATCHES[0].shape[0]
    return ended


def test_a_missing_object_ends_the_stream_before_the_batches_after_it(start_server: ServerFactory) -> None:
    target = f"127.0.0.1:{start_server().port}"
    missing = codec.SharedRows(f"centroidal-test-{os.getpid()}-gone", 0, np.dtype(np.float32), 300, 4)
    ended = _ends_the_stream(target, "missing", codec.MiniBatch("p", 2, None, None, missing))
    assert ended.code == grpc.StatusCode.NOT_FOUND
    assert ended.reason == "SHARED_MEMORY_NOT_FOUND" and ended.field == "batch.points_shared.name"


def test_an_object_others_may_write_ends_the_stream(start_server: ServerFactory, objects: list[Path]) -> None:
    target = f"127.0.0.1:{start_server().port}"
    writable = _object(objects, BATCHES[1], mode=0o622)
    ended = _ends_the_stream(target, "writable", codec.MiniBatch("p", 2, None, None, _shared(writable, BATCHES[1])))
    assert ended.code == grpc.StatusCode.PERMISSION_DENIED
    assert ended.reason == "SHARED_MEMORY_NOT_ALLOWED" and "622" in ended.message


def test_a_server_without_shared_memory_ends_the_stream(start_server: ServerFactory, objects: list[Path]) -> None:
    target = f"127.0.0.1:{start_server(shared_memory=False).port}"
    path = _object(objects, BATCHES[1])
    ended = _ends_the_stream(target, "refused", codec.MiniBatch("p", 2, None, None, _shared(path, BATCHES[1])))
    assert ended.code == grpc.StatusCode.PERMISSION_DENIED and ended.field == "batch.points_shared"
    assert "--no-shared-memory" in ended.message


def test_rows_in_both_places_are_refused_in_the_ack(start_server: ServerFactory, objects: list[Path]) -> None:
    target = f"127.0.0.1:{start_server().port}"
    path = _object(objects, BATCHES[1])
    batches = [codec.MiniBatch("p", 1, BATCHES[0]), codec.MiniBatch("p", 2, BATCHES[1], None, _shared(path, BATCHES[1]))]
    acks, ended = _stream(target, "both", batches)
    assert ended is None and acks[1].HasField("error")
    assert acks[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert acks[1].error.field == "batch.points.data"


def test_an_object_made_anew_under_the_same_name_is_read_anew(
    start_server: ServerFactory, objects: list[Path],
) -> None:
    """The stream keeps its mapping of an object for the next batches; one that names an
    object made anew under the same name reads the new one."""
    import threading

    target = f"127.0.0.1:{start_server().port}"
    path = _object(objects, BATCHES[0])
    first_acked = threading.Event()

    def requests() -> Iterator[bytes]:
        yield codec.serialize_minibatch_request(codec.MiniBatchOpen("anew", CONFIG))
        yield codec.serialize_minibatch_request(codec.MiniBatch("p", 1, None, None, _shared(path, BATCHES[0])))
        assert first_acked.wait(30)
        path.unlink()
        path.write_bytes(BATCHES[1].tobytes())
        path.chmod(0o600)
        yield codec.serialize_minibatch_request(codec.MiniBatch("p", 2, None, None, _shared(path, BATCHES[1])))

    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(_STREAM, response_deserializer=pb.MiniBatchAck.FromString)
        acks = []
        for ack in call(requests(), timeout=60):
            acks.append(ack)
            first_acked.set()
    plain, ended = _stream(target, "plain", [codec.MiniBatch("p", 1, BATCHES[0]), codec.MiniBatch("p", 2, BATCHES[1])])
    assert ended is None and [ack.HasField("error") for ack in acks] == [False, False]
    assert [ack.batch_inertia for ack in acks] == [ack.batch_inertia for ack in plain]
    from centroidal.client import Client

    with Client(target) as client:
        centers = client.get_model("anew", include_centers=True).centers
        expected = client.get_model("plain", include_centers=True).centers
    assert centers is not None and expected is not None
    np.testing.assert_array_equal(centers, expected)
