"""
The wire encoding: a message is one UTF-8 JSON object (see docs/wire.md).

Decoding never raises anything but a L{DecodeError} subclass, whatever the bytes, so a
transport can set a bad body aside with C{error.reason} and carry on.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import DecodeError, EncodeError, MalformedMessage, MessageTooLarge
from .message import Message

__all__ = ["CONTENT_TYPE", "encode", "decode", "peek_type"]

#: The AMQP content type (and the only one accepted) of an scbus body.
CONTENT_TYPE = "application/json"

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def encode(message: Message) -> bytes:
    """The message as UTF-8 JSON bytes; L{EncodeError} if a value cannot travel."""
    try:
        return _encoder.encode(message.to_dict()).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as e:
        raise EncodeError(f"{message.wire_name}: cannot encode as JSON: {e}") from None


def _load(body: bytes, max_size: int | None) -> Any:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"a body must be bytes, got {type(body).__name__}")
    if max_size is not None and len(body) > max_size:
        raise MessageTooLarge(f"body of {len(body)} bytes exceeds the limit of {max_size}")
    try:
        text = (body if isinstance(body, bytes) else bytes(body)).decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedMessage(f"body is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        return _decoder.decode(text)
    except json.JSONDecodeError as e:
        raise MalformedMessage(
            f"body is not JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except (ValueError, RecursionError) as e:
        raise MalformedMessage(f"body is not acceptable JSON: {e}") from None


def decode(body: bytes, max_size: int | None = None) -> Message:
    """
    The message in C{body}.

    @raise MalformedMessage: not UTF-8, not JSON, or not an envelope.
    @raise MessageTooLarge: longer than C{max_size} bytes.
    @raise UnknownMessageType: no class is registered for its type.
    @raise MissingField: a required field is absent.
    @raise FieldTypeError: a field has the wrong type.
    """
    envelope = _load(body, max_size)
    try:
        return Message.from_dict(envelope)
    except DecodeError:
        raise
    except (RecursionError, ValueError, TypeError) as e:
        raise MalformedMessage(f"unusable message: {e}") from None


def peek_type(body: bytes) -> str | None:
    """The wire type name in C{body}, if one can be read, for logs and routing of raw bodies."""
    try:
        envelope = _load(body, None)
    except DecodeError:
        return None
    name = envelope.get("type") if isinstance(envelope, dict) else None
    return name if isinstance(name, str) else None
