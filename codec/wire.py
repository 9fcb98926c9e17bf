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
