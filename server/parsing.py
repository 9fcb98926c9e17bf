"""Request bytes into messages: deserializers that never raise, so that bytes which do not
parse reach the handler and are refused with INVALID_ARGUMENT (grpcio itself would answer
UNKNOWN or INTERNAL, as if the server had failed), and request streams decoded by the codec."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from .exceptions import InvalidRequest
from .limits import echo

T = TypeVar("T")


class Unparseable:
    """What the server's deserializer gives for bytes that are not the request message:
    the handler refuses it with INVALID_ARGUMENT (grpcio itself would answer UNKNOWN or
    INTERNAL, as if the server had failed)."""

    __slots__ = ("type_name", "error")

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name = type_name
        self.error = error

    def refusal(self, position: str) -> InvalidRequest:
        return InvalidRequest(
            f"{position} is not a valid {self.type_name} message: {echo(self.error)}",
            reason="UNPARSEABLE_REQUEST",
        )


def _unparseable(type_name: str, error: DecodeError) -> Unparseable:
    return Unparseable(type_name, str(error) or "malformed")


def parser(message_class: Any) -> Callable[[bytes], Any]:
    """A request deserializer that never raises: bytes that do not parse become Unparseable."""
    type_name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return _unparseable(type_name, error)

    return parse


async def parsed_stream(messages: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream whose unparseable message raises InvalidRequest naming its position."""
    index = 0
    async for message in messages:
        if isinstance(message, Unparseable):
            raise message.refusal(f"message {index} of the stream")
        index += 1
        yield message


async def decoded(messages: AsyncIterator[Any], decode: Callable[[Any], T]) -> AsyncIterator[T]:
    """A request stream, each message decoded by the codec's ``decode`` as it arrives; an
    unparseable message is refused naming its position."""
    async for message in parsed_stream(messages):
        yield decode(message)


def read_one(data: bytes, read: Callable[[bytes], T], type_name: str) -> T:
    """A unary request's bytes (``RAW_REQUESTS``) read by the codec's ``read``; bytes that are
    not the message are refused as the deserializer's Unparseable would be."""
    try:
        return read(data)
    except DecodeError as error:
        raise _unparseable(type_name, error).refusal("the request") from None


async def read_stream(messages: AsyncIterator[bytes], read: Callable[[bytes], T], type_name: str) -> AsyncIterator[T]:
    """A request stream whose deserializer passes the bytes through (``RAW_REQUESTS``), each
    read by the codec's ``read``, which leaves bulk bytes in place; bytes that are not the
    message are refused naming their position, as ``decoded`` does."""
    index = 0
    async for data in messages:
        try:
            item = read(data)
        except DecodeError as error:
            raise _unparseable(type_name, error).refusal(f"message {index} of the stream") from None
        index += 1
        yield item
