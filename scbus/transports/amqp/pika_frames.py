"""
A publish as the bytes pika would write for it, built in one go and written once.

Why: pika builds a publish from three frame objects (method, content header, body),
marshals each through generic per-field code and writes them one by one; per message
that is the largest single cost of the bus's client. Here the method frame of an
(exchange, routing key) pair is built once and kept, the properties scbus sets are
encoded directly, and the three frames go out in one write. The bytes are pika's own:
tests/unit/test_pika_frames.py holds them against pika's marshalling for generated
properties and bodies, and against its refusals (a short string over 255 bytes, a
delivery mode over 255). One refusal is added: a content header larger than a frame,
which pika writes and the broker answers by closing the connection.
"""

from __future__ import annotations

import struct
from typing import Any

from pika import data as pika_data
from pika import exceptions as pika_errors

__all__ = ["encode_properties", "publish_frames", "HeaderTooLarge"]


class HeaderTooLarge(ValueError):
    """
    A content header bigger than one frame: the broker would close the connection
    (C{frame_too_large}) and the same publish would do it again after the reconnect.
    Content headers, unlike bodies, cannot be split across frames.
    """

    @classmethod
    def of(cls, size: int, max_payload: int) -> HeaderTooLarge:
        return cls(
            f"the content header (properties and headers) is {size} bytes, over the "
            f"{max_payload} one frame carries (the broker's frame_max less 8)"
        )

_FRAME_METHOD = 1
_FRAME_HEADER = 2
_FRAME_BODY = 3
_FRAME_END = b"\xce"
_BASIC_PUBLISH = 0x003C0028  # class 60 (basic), method 40 (publish)
_BASIC_CLASS = 0x003C

# Property flags, in the order AMQP 0-9-1 encodes the properties.
_CONTENT_TYPE = 1 << 15
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_CORRELATION_ID = 1 << 10
_REPLY_TO = 1 << 9
_MESSAGE_ID = 1 << 7
_TIMESTAMP = 1 << 6
_TYPE = 1 << 5
_APP_ID = 1 << 3

_DELIVERY_MODES = (b"\x00", b"\x01", b"\x02")
_pack_frame_head = struct.Struct(">BHI").pack
_pack_header_head = struct.Struct(">HxxQ").pack
_pack_flags = struct.Struct(">H").pack
_pack_timestamp = struct.Struct(">Q").pack

#: Method frames by (channel, exchange, routing key, mandatory): a bus publishes to one
#: exchange per message type, so this stays small; past the bound it is not added to.
_METHOD_FRAMES: dict[tuple[int, str, str, bool], bytes] = {}
_METHOD_FRAMES_LIMIT = 4096


def _short(value: Any) -> bytes:
    encoded = value if isinstance(value, bytes) else value.encode("utf-8")
    if len(encoded) > 255:
        raise pika_errors.ShortStringTooLong(encoded)
    return bytes((len(encoded),)) + encoded


#: Short strings that repeat (content types, type names), encoded once.
_SHORTS: dict[str, bytes] = {}
_SHORTS_LIMIT = 4096


def _short_repeated(value: Any) -> bytes:
    encoded = _SHORTS.get(value) if isinstance(value, str) else None
    if encoded is None:
        encoded = _short(value)
        if isinstance(value, str) and len(_SHORTS) < _SHORTS_LIMIT:
            _SHORTS[value] = encoded
    return encoded


def _method_frame(channel_number: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
    key = (channel_number, exchange, routing_key, mandatory)
    frame = _METHOD_FRAMES.get(key)
    if frame is None:
        payload = b"".join((
            struct.pack(">IH", _BASIC_PUBLISH, 0),
            _short(exchange),
            _short(routing_key),
            b"\x01" if mandatory else b"\x00",
        ))
        frame = _pack_frame_head(_FRAME_METHOD, channel_number, len(payload)) + payload + _FRAME_END
        if len(_METHOD_FRAMES) < _METHOD_FRAMES_LIMIT:
            _METHOD_FRAMES[key] = frame
    return frame


def encode_properties(p: Any) -> bytes:
    """
    The content header's property flags and list for the attributes of
    L{scbus.transports.amqp.client.Properties}, as pika's C{BasicProperties.encode}
    writes them. @raise ShortStringTooLong, struct.error: as pika raises.
    """
    flags = 0
    pieces: list[bytes] = []
    if p.content_type is not None:
        flags |= _CONTENT_TYPE
        pieces.append(_short_repeated(p.content_type))
    if p.headers is not None:
        flags |= _HEADERS
        pika_data.encode_table(pieces, p.headers)
    if p.delivery_mode is not None:
        flags |= _DELIVERY_MODE
        pieces.append(_DELIVERY_MODES[p.delivery_mode] if 0 <= p.delivery_mode <= 2 else struct.pack("B", p.delivery_mode))
    if p.correlation_id is not None:
        flags |= _CORRELATION_ID
        pieces.append(_short(p.correlation_id))
    if p.reply_to is not None:
        flags |= _REPLY_TO
        pieces.append(_short(p.reply_to))
    if p.message_id is not None:
        flags |= _MESSAGE_ID
        pieces.append(_short(p.message_id))
    if p.timestamp is not None:
        flags |= _TIMESTAMP
        pieces.append(_pack_timestamp(p.timestamp))
    if p.type is not None:
        flags |= _TYPE
        pieces.append(_short_repeated(p.type))
    if p.app_id is not None:
        flags |= _APP_ID
        pieces.append(_short(p.app_id))
    return _pack_flags(flags) + b"".join(pieces)


def publish_frames(
    channel_number: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    properties: Any,
    body: bytes,
    body_max_length: int,
) -> bytes:
    """
    basic.publish, its content header and its body frames (split at C{body_max_length},
    the payload one frame carries). @raise HeaderTooLarge: the content header does not
    fit one frame.
    """
    header_payload = _pack_header_head(_BASIC_CLASS, len(body)) + encode_properties(properties)
    if len(header_payload) > body_max_length:
        raise HeaderTooLarge.of(len(header_payload), body_max_length)
    parts = [
        _method_frame(channel_number, exchange, routing_key, mandatory),
        _pack_frame_head(_FRAME_HEADER, channel_number, len(header_payload)),
        header_payload,
        _FRAME_END,
    ]
    for start in range(0, len(body), body_max_length):
        chunk = body[start:start + body_max_length]
        parts += (_pack_frame_head(_FRAME_BODY, channel_number, len(chunk)), chunk, _FRAME_END)
    return b"".join(parts)
