"""Random requests for every RPC, from the .proto's own descriptors.

Three kinds, mixed: bytes that are not a message at all, valid messages with bytes
flipped, cut or spliced, and messages built field by field from pools of extreme
values (0, the type's limits, NaN, infinities, 1e308, huge strings, unknown enum
numbers), with matrices that are sometimes consistent so that the values get past
the shape checks to the numerics.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from centroidal.v1 import clustering_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["ClusteringService"]

_UINT = [0, 1, 2, 3, 7, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1]
_UINT64 = [*_UINT, 2**53, 2**63 - 1, 2**63, 2**64 - 1]
_INT32 = [0, 1, -1, -(2**31), 2**31 - 1]
_DOUBLE = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 5e-324, 1e308, -1e308, float("inf"), float("-inf"),
           float("nan"), 3.4e38, 1e10]
_STRINGS = ["", "m", "km", "mb", "pal", "x" * 200, "\u00e9\u4e2d", "a/b", " ", "\x7f", "model\n",
            "\U0001f600" * 3, "9" * 64]
_FLOAT_VALUES = [0.0, 1.0, -1.0, 1e308, -1e308, 3.4e38, -3.4e38, 1e-45, 1e30, float("nan"),
                 float("inf"), float("-inf")]


@dataclass(frozen=True)
class Method:
    name: str
    path: str
    request: type
    client_streaming: bool
    server_streaming: bool


METHODS = [
    Method(
        m.name, f"/{SERVICE.full_name}/{m.name}", getattr(pb, m.input_type.name),
        m.client_streaming, m.server_streaming,
    )
    for m in SERVICE.methods
]


class Fuzzer:
    def __init__(self, seed: int, names: list[str]) -> None:
        self.rng = random.Random(seed)
        self.names = names  # models that exist, so that requests reach the deep paths

    def requests(self, method: Method) -> list[bytes]:
        """One call's request messages, serialised (possibly not valid messages at all)."""
        count = self.rng.choice([1, 1, 2, 3]) if method.client_streaming else 1
        return [self.one(method.request) for _ in range(count)]

    def one(self, cls: type) -> bytes:
        kind = self.rng.random()
        if kind < 0.15:
            return self.rng.randbytes(self.rng.choice([0, 1, 5, 40, 300]))
        message = self.message(cls.DESCRIPTOR, depth=0)
        data: bytes = message.SerializeToString()
        if kind < 0.4 and data:
            return self.mutate(data)
        return data

    def mutate(self, data: bytes) -> bytes:
        buffer = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            action = self.rng.random()
            if action < 0.5 and buffer:
                position = self.rng.randrange(len(buffer))
                buffer[position] = self.rng.randrange(256)
            elif action < 0.7 and buffer:
                del buffer[self.rng.randrange(len(buffer)) :]
            else:
                position = self.rng.randrange(len(buffer) + 1)
                buffer[position:position] = self.rng.randbytes(self.rng.randint(1, 8))
        return bytes(buffer)

    def message(self, descriptor: Descriptor, depth: int) -> Any:
        cls = _class(descriptor)
        message = cls()
        if descriptor.name == "Matrix" and self.rng.random() < 0.7:
            return self.matrix()
        if descriptor.name == "Vector" and self.rng.random() < 0.7:
            return self.vector()
        for field in descriptor.fields:
            if self.rng.random() < 0.45:
                continue
            if field.containing_oneof is not None and self.rng.random() < 0.5:
                continue
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if depth > 3 or field.message_type.name == "Timestamp":
                    continue
                getattr(message, field.name).CopyFrom(self.message(field.message_type, depth + 1))
            elif field.is_repeated:
                getattr(message, field.name).extend(self.scalar(field) for _ in range(self.rng.randint(0, 3)))
            else:
                setattr(message, field.name, self.scalar(field))
        return message

    def scalar(self, field: FieldDescriptor) -> Any:
        rng = self.rng
        kind = field.type
        if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return rng.choice(_UINT)
        if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return rng.choice(_UINT64)
        if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
            return rng.choice(_INT32)
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return rng.choice(_DOUBLE)
        if kind == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if kind == FieldDescriptor.TYPE_STRING:
            if field.name in ("model", "name", "palette_model", "save_palette_as") and rng.random() < 0.6:
                return rng.choice(self.names)
            return rng.choice(_STRINGS)
        if kind == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.choice([0, 1, 8, 64, 1000]))
        if kind == FieldDescriptor.TYPE_ENUM:
            numbers = [value.number for value in field.enum_type.values]
            return rng.choice([*numbers, *numbers, 99, -1])
        raise AssertionError(f"no pool for field {field.full_name}")

    def matrix(self) -> pb.Matrix:
        rng = self.rng
        dtype = rng.choice([1, 1, 2, 0, 7])
        rows = rng.choice([0, 1, 2, 3, 5, 17, 100])
        cols = rng.choice([0, 1, 2, 3, 16, 64])
        itemsize = 8 if dtype == 2 else 4
        values = [rng.choice(_FLOAT_VALUES) if rng.random() < 0.3 else rng.uniform(-5, 5)
                  for _ in range(rows * cols)]
        data = struct.pack(f"<{len(values)}{'d' if dtype == 2 else 'f'}", *_fit(values, dtype))
        if rng.random() < 0.15:  # inconsistent on purpose
            data = data[: max(0, len(data) - rng.choice([1, itemsize]))]
        return pb.Matrix(dtype=dtype, rows=rows, cols=cols, data=data)

    def vector(self) -> pb.Vector:
        rng = self.rng
        dtype = rng.choice([1, 2, 2, 0])
        count = rng.choice([0, 1, 3, 5, 17, 100])
        values = [rng.choice([1.0, 0.0, -1.0, 1e308, 1e-320, float("nan"), float("inf"), 3.4e38, 1e30])
                  if rng.random() < 0.4 else rng.uniform(0, 3) for _ in range(count)]
        data = struct.pack(f"<{count}{'d' if dtype == 2 else 'f'}", *_fit(values, dtype))
        return pb.Vector(dtype=dtype, data=data)


def _fit(values: list[float], dtype: int) -> Iterator[float]:
    """Values a float32 can hold (struct refuses the rest), unchanged for float64."""
    for value in values:
        if dtype != 2 and abs(value) > 3.4e38 and value == value and abs(value) != float("inf"):
            yield float("inf") if value > 0 else float("-inf")
        else:
            yield value


def _class(descriptor: Descriptor) -> type:
    if descriptor.full_name.startswith("centroidal.v1."):
        return getattr(pb, descriptor.name)  # type: ignore[no-any-return]
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)  # type: ignore[no-any-return]


# ---- Near-valid requests: a valid call with one or two values made extreme -----------


def _points(rng: random.Random, rows: int, cols: int, dtype: int = 1) -> pb.Matrix:
    values = [rng.uniform(-3, 3) for _ in range(rows * cols)]
    data = struct.pack(f"<{len(values)}{'d' if dtype == 2 else 'f'}", *values)
    return pb.Matrix(dtype=dtype, rows=rows, cols=cols, data=data)


def _weights(rng: random.Random, count: int) -> pb.Vector:
    return pb.Vector(dtype=2, data=struct.pack(f"<{count}d", *[rng.uniform(0.5, 2) for _ in range(count)]))


def valid_calls(rng: random.Random, image: bytes) -> dict[str, list[Any]]:
    """One valid call's messages per RPC, against the models ``seed_models`` makes."""
    n = rng.choice([20, 60])
    fit_spec = pb.FitSpec(model=rng.choice(["km", "fz", "mb-empty"]), config=pb.KMeansConfig(
        n_clusters=3, init=rng.choice([1, 2]), n_init=1, max_iter=5, seed=1), n_samples=n)
    open_ = pb.MiniBatchOpen(model=rng.choice(["mb", "fz-mb"]),
                             create_if_missing=pb.MiniBatchConfig(n_clusters=3, init_size=10))
    return {
        "Fit": [pb.FitRequest(spec=fit_spec, points=_points(rng, n, 3), sample_weight=_weights(rng, n))],
        "Predict": [pb.PredictRequest(model="km", points=_points(rng, 5, 3),
                                      options=pb.PredictOptions(return_distances=True))],
        "PredictStream": [pb.PredictRequest(model="km", points=_points(rng, 5, 3)),
                          pb.PredictRequest(model="km", points=_points(rng, 4, 3))],
        "StreamMiniBatch": [
            pb.MiniBatchRequest(open=open_),
            pb.MiniBatchRequest(batch=pb.MiniBatch(producer_id="p", sequence=rng.randint(1, 9),
                                                   points=_points(rng, 12, 3, 2), sample_weight=_weights(rng, 12))),
        ],
        "QuantizeImage": [pb.QuantizeImageRequest(spec=pb.QuantizeSpec(
            n_colors=4, dither=rng.choice([1, 2]), palette_model=rng.choice(["", "pal", "mb-empty"]),
            save_palette_as=rng.choice(["", "fz-pal"])), image=image)],
        "PredictDataset": [pb.PredictDatasetRequest(
            model=rng.choice(["km", "mb"]), input=pb.DatasetSource(uri=rng.choice(["/data/x.npy", "s3://b/x"])),
            output_uri=rng.choice(["/data/out", "", "memory://o"]), return_distances=True)],
        "GetModel": [pb.GetModelRequest(name=rng.choice(["km", "mb", "pal"]), include_centers=True, version=1)],
        "ListModels": [pb.ListModelsRequest(page_size=2)],
        "DeleteModel": [pb.DeleteModelRequest(name=rng.choice(["fz", "fz-mb", "fz-pal"]))],
        "Evaluate": [
            pb.EvaluateRequest(spec=pb.EvaluateSpec(
                model=rng.choice(["km", "mb", "pal", "mb-empty"]),
                silhouette=pb.SilhouetteOptions(sample_size=rng.choice([0, 2, 10]), seed=3), n_samples=n,
            ), points=_points(rng, n // 2, 3)),
            pb.EvaluateRequest(points=_points(rng, n - n // 2, 3)),
        ],
        "SuggestK": [
            pb.SuggestKRequest(spec=pb.SuggestKSpec(
                k_min=2, k_max=rng.choice([3, 5]), config=pb.KMeansConfig(max_iter=5, seed=1, metric=rng.choice([1, 2])),
                silhouette=pb.SilhouetteOptions(sample_size=rng.choice([0, 10])),
                save_best_as=rng.choice(["", "fz-best"]),
            ), points=_points(rng, n, 3)),
        ],
    }


class NearValid:
    """Valid calls with one or two leaf values replaced by extreme ones."""

    def __init__(self, seed: int, image: bytes) -> None:
        self.rng = random.Random(seed)
        self._values = Fuzzer(seed, ["km"])
        self._values.rng = self.rng
        self.image = image

    def requests(self, method: Method) -> list[bytes]:
        messages = valid_calls(self.rng, self.image)[method.name]
        for _ in range(self.rng.choice([0, 1, 1, 2])):
            self._mutate(self.rng.choice(messages))
        return [message.SerializeToString() for message in messages]

    def _mutate(self, message: Any) -> None:
        leaves = list(_leaves(message))
        if not leaves:
            return
        owner, field = self.rng.choice(leaves)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.name == "Matrix":
                getattr(owner, field.name).CopyFrom(self._values.matrix())
            elif field.message_type.name == "Vector":
                getattr(owner, field.name).CopyFrom(self._values.vector())
            else:
                owner.ClearField(field.name)
            return
        setattr(owner, field.name, self._values.scalar(field))


def _leaves(message: Any) -> Iterator[tuple[Any, FieldDescriptor]]:
    """Every field a mutation may change: set or not, nested ones included."""
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.name in ("Matrix", "Vector"):
                yield message, field
            elif message.HasField(field.name):
                yield message, field
                yield from _leaves(getattr(message, field.name))
        else:
            yield message, field
