"""The wire format's primitives: the error a malformed message raises, optional fields, and
hand-written field headers for messages whose bulk bytes are appended without a copy."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message


class WireError(ValueError):
    """A message that does not describe a valid array or value; ``field`` is its path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def optional(message: Message, name: str) -> Any:
    """A proto3 ``optional`` field's value, or None when it is not set."""
    return getattr(message, name) if message.HasField(name) else None


def set_optional(message: Message, **values: Any) -> None:
    """Set each ``optional`` field whose value is not None; None leaves it unset."""
    for name, value in values.items():
        if value is not None:
            setattr(message, name, value)


_ONE_BYTE = [bytes((value,)) for value in range(128)]


def varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _ONE_BYTE[value]
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def field_header(number: int, length: int) -> bytes:
    """Tag and length of a length-delimited (wire type 2) field."""
    return varint(number << 3 | 2) + varint(length)


def field_number(message_type: type[Message], name: str) -> int:
    number: int = message_type.DESCRIPTOR.fields_by_name[name].number
    return number


# ---- reading a message's fields without protobuf ---------------------------------------------

VARINT, LEN = 0, 2
# Below this size protobuf's parse (in C) costs less than reading the fields here.
READ_IN_PLACE_BYTES = 64 * 1024


def read_fields(data: memoryview, kinds: dict[int, int]) -> dict[int, Any] | None:
    """The fields of one message by number: an int for a varint, a view of ``data`` for a
    length-delimited field (bulk bytes are not copied).

    None when the bytes hold anything else: a field not in ``kinds`` or of another wire type,
    one that repeats, a varint past 64 bits, or bytes cut short. The caller then has protobuf
    parse them, which knows every such case (and says what is wrong with bytes that are not
    the message)."""
    found: dict[int, Any] = {}
    at, end = 0, len(data)
    while at < end:
        key, at = _varint_at(data, at)
        if key < 0:
            return None
        number, kind = key >> 3, key & 7
        if kinds.get(number) != kind or number in found:
            return None
        value, at = _varint_at(data, at)
        if value < 0:
            return None
        if kind == LEN:
            if value > end - at:
                return None
            found[number] = data[at : at + value]
            at += value
        else:
            found[number] = value
    return found


def _varint_at(data: memoryview, at: int) -> tuple[int, int]:
    """The varint at ``at`` and where the next value starts; -1 for one cut short or too long."""
    value = shift = 0
    end = len(data)
    while at < end and shift < 64:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value, at) if value < 1 << 64 else (-1, at)
        shift += 7
    return -1, at


def text_of(data: bytes | memoryview) -> str | None:
    """A string field's bytes as text; None when they are not UTF-8 (protobuf refuses them)."""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return None
