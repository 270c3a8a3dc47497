"""
A careless or hostile producer, with plain pika: message properties and header tables
written byte for byte as given, so that what no well-behaved client would send (a
timestamp past year 9999, tables nested thousands deep, unknown field types, extreme
numbers) reaches the broker and the bus exactly so.
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.data


class Raw(bytes):
    """A header value written to the wire unchanged: its field type octet and its bytes."""


@contextlib.contextmanager
def raw_header_values() -> Iterator[None]:
    """pika writes L{Raw} header values as they are (and everything else as usual)."""
    original = pika.data.encode_value

    def encode_value(pieces: list[bytes], value: Any) -> int:
        if isinstance(value, Raw):
            pieces.append(bytes(value))
            return len(value)
        return original(pieces, value)

    pika.data.encode_value = encode_value
    try:
        yield
    finally:
        pika.data.encode_value = original


def shortstr(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack(">B", len(data)) + data


def table_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    """A field table's content (without its length) from raw (key, value) pairs."""
    return b"".join(shortstr(key) + value for key, value in entries)


def table(entries: list[tuple[str, bytes]]) -> Raw:
    content = table_bytes(entries)
    return Raw(b"F" + struct.pack(">I", len(content)) + content)


def array(values: list[bytes]) -> Raw:
    content = b"".join(values)
    return Raw(b"A" + struct.pack(">I", len(content)) + content)


def timestamp(seconds: int) -> Raw:
    return Raw(b"T" + struct.pack(">Q", seconds))


def nested_table(depth: int) -> Raw:
    """A table holding a table holding ... C{depth} deep, built without recursion."""
    value = b"F" + struct.pack(">I", 0)
    for _ in range(depth - 1):
        content = shortstr("k") + value
        value = b"F" + struct.pack(">I", len(content)) + content
    return Raw(value)


#: Every AMQP 0-9-1 field type RabbitMQ passes on, with a packer for one value.
FIELD_TYPES: dict[bytes, Any] = {
    b"t": lambda v: b"t" + struct.pack(">B", 1 if v else 0),
    b"b": lambda v: b"b" + struct.pack(">b", v),
    b"B": lambda v: b"B" + struct.pack(">B", v),
    b"s": lambda v: b"s" + struct.pack(">h", v),
    b"u": lambda v: b"u" + struct.pack(">H", v),
    b"I": lambda v: b"I" + struct.pack(">i", v),
    b"i": lambda v: b"i" + struct.pack(">I", v),
    b"l": lambda v: b"l" + struct.pack(">q", v),
    b"f": lambda v: b"f" + struct.pack(">f", v),
    b"d": lambda v: b"d" + struct.pack(">d", v),
    b"D": lambda v: b"D" + struct.pack(">B", v[0]) + struct.pack(">i", v[1]),
    b"S": lambda v: b"S" + struct.pack(">I", len(v)) + v,
    b"x": lambda v: b"x" + struct.pack(">I", len(v)) + v,
    b"T": lambda v: b"T" + struct.pack(">Q", v),
    b"V": lambda v: b"V",
}


def envelope(wire_name: str, data: dict[str, Any], message_id: str | None = None) -> bytes:
    return json.dumps({
        "type": wire_name,
        "id": message_id or uuid.uuid4().hex,
        "created_at": time.time(),
        "correlation_id": None,
        "data": data,
    }).encode()


class HostileProducer:
    """Publishes with confirms; properties as given, header values possibly L{Raw}."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def declare_type(self, wire_name: str) -> str:
        exchange = f"scbus.type.{wire_name}"
        self.channel.exchange_declare(
            exchange, "fanout", durable=True, arguments={"alternate-exchange": "scbus.unrouted"}
        )
        return exchange

    def publish(self, exchange: str, body: bytes, routing_key: str = "", **properties: Any) -> None:
        with raw_header_values():
            self.channel.basic_publish(
                exchange, routing_key, body, pika.BasicProperties(**properties), mandatory=True
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()
