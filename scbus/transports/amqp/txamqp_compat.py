"""
Fixes for txAMQP 0.8.2 (its last release) on Python 3, by subclassing and injecting:
nothing in the txamqp package is modified, so other users of it in the process are
unaffected. Each fix names the defect it repairs; tests/broker/test_txamqp_compat.py
shows each one.

The classes here are wired together by L{FixedClient}: it decodes frames with
L{FixedCodec} and the fixed payload classes, and its channels (L{FixedChannel}) encode
with them.
"""

from __future__ import annotations

import decimal
from io import BytesIO
from typing import Any

from twisted.internet import defer
from txamqp.client import TwistedDelegate
from txamqp.codec import Codec
from txamqp.connection import Body, Frame, Header, Heartbeat, Method
from txamqp.protocol import AMQChannel, AMQClient
from txamqp.queue import Closed as QueueClosed

from .client import property_error_text

#: The key, in a content header's properties, that says why they could not be decoded.
UNDECODABLE = "x-scbus-undecodable"

__all__ = [
    "UNDECODABLE", "FRAME_MAX_WHEN_UNLIMITED", "FixedCodec", "FixedMethod", "FixedHeader", "FixedBody",
    "FixedChannel", "FixedClient", "FixedDelegate", "header_size",
]

#: The frame size asked for when the broker offers no limit (frame_max = 0): pika's and
#: RabbitMQ's default.
FRAME_MAX_WHEN_UNLIMITED = 131_072


class FixedCodec(Codec):
    """
    Defect: C{enc_str} takes the length of a str before encoding it, so any non-ASCII
    short or long string (a header value, a password) gets a wrong length prefix and
    corrupts the frame. Fixed: encode first, then measure.

    Defect: field tables encode only str and int, and decode only S, I, F and t, while
    RabbitMQ sends booleans, void, arrays, longs, timestamps and nested tables (the
    ``x-death`` header of every dead-lettered message has most of them). Fixed: every
    AMQP 0-9-1 field type RabbitMQ uses, both ways.
    """

    def enc_str(self, fmt: str, s: Any) -> None:
        data = s if isinstance(s, bytes) else str(s).encode("utf-8")
        self.pack(fmt, len(data))
        self.write(data)

    def encode_table(self, tbl: dict[str, Any]) -> None:
        buf = BytesIO()
        inner = FixedCodec(buf)
        for key, value in (tbl or {}).items():
            inner.encode_shortstr(key)
            inner._encode_field(value)
        inner.flush()
        data = buf.getvalue()
        self.encode_long(len(data))
        self.write(data)

    def _encode_field(self, value: Any) -> None:
        if value is None:
            self.write(b"V")
        elif isinstance(value, bool):
            self.write(b"t")
            self.encode_octet(1 if value else 0)
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise ValueError(f"integer {value} does not fit an AMQP field (64 bits, signed)")
            if -(2**31) <= value < 2**31:
                self.write(b"I")
                self.pack("!i", value)
            else:
                self.write(b"l")
                self.pack("!q", value)
        elif isinstance(value, float):
            self.write(b"d")
            self.pack("!d", value)
        elif isinstance(value, decimal.Decimal):
            sign, digits, exponent = value.as_tuple()
            scale = max(0, -int(exponent))
            self.write(b"D")
            self.encode_octet(scale)
            self.pack("!i", int(value.scaleb(scale)))
        elif isinstance(value, str):
            self.write(b"S")
            self.enc_str("!L", value)
        elif isinstance(value, (bytes, bytearray)):
            self.write(b"x")
            self.pack("!L", len(value))
            self.write(bytes(value))
        elif isinstance(value, dict):
            self.write(b"F")
            self.encode_table(value)
        elif isinstance(value, (list, tuple)):
            buf = BytesIO()
            inner = FixedCodec(buf)
            for item in value:
                inner._encode_field(item)
            inner.flush()
            data = buf.getvalue()
            self.write(b"A")
            self.pack("!L", len(data))
            self.write(data)
        else:
            raise TypeError(f"cannot put a {type(value).__name__} in an AMQP field table")

    def decode_table(self) -> dict[str, Any]:
        size = self.decode_long()
        start = self.nread
        result = {}
        while self.nread - start < size:
            key = self.decode_shortstr()
            result[key if isinstance(key, str) else key.decode("utf-8", "replace")] = self._decode_field()
        return result

    def _decode_field(self) -> Any:
        kind = self.read(1)
        readers = {
            b"t": lambda: self.decode_octet() != 0,
            b"b": lambda: self.unpack("!b"),
            b"B": lambda: self.unpack("!B"),
            b"s": lambda: self.unpack("!h"),
            b"u": lambda: self.unpack("!H"),
            b"I": lambda: self.unpack("!i"),
            b"i": lambda: self.unpack("!I"),
            b"l": lambda: self.unpack("!q"),
            b"L": lambda: self.unpack("!Q"),
            b"f": lambda: self.unpack("!f"),
            b"d": lambda: self.unpack("!d"),
            b"T": lambda: self.unpack("!Q"),
            b"V": lambda: None,
            b"F": self.decode_table,
            b"S": self._decode_text,
            b"x": lambda: self.read(self.unpack("!L")),
            b"A": self._decode_array,
            b"D": self._decode_decimal,
        }
        reader = readers.get(kind)
        if reader is None:
            raise ValueError(f"unknown AMQP field type {kind!r}")
        return reader()

    def _decode_text(self) -> Any:
        data = self.read(self.unpack("!L"))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data

    def _decode_array(self) -> list[Any]:
        size = self.unpack("!L")
        start = self.nread
        items = []
        while self.nread - start < size:
            items.append(self._decode_field())
        return items

    def _decode_decimal(self) -> decimal.Decimal:
        scale = self.decode_octet()
        return decimal.Decimal(self.unpack("!i")).scaleb(-scale)


class FixedMethod(Method):
    """Method frames encoded and decoded with L{FixedCodec} (tables in method arguments)."""

    type = None  # registered in FixedClient's own decoder map, not in txamqp's global one

    def encode(self, enc: Any) -> None:
        buf = BytesIO()
        c = FixedCodec(buf)
        c.encode_short(self.method.klass.id)
        c.encode_short(self.method.id)
        for field, arg in zip(self.method.fields, self.args):
            c.encode(field.type, arg)
        c.flush()
        enc.encode_longbytes(buf.getvalue())

    @staticmethod
    def decode(spec: Any, dec: Any) -> Method:
        c = FixedCodec(BytesIO(dec.decode_longbytes()))
        klass = spec.classes.byid[c.decode_short()]
        meth = klass.methods.byid[c.decode_short()]
        return Method(meth, *[c.decode(f.type) for f in meth.fields])


FixedMethod.type = Frame.METHOD


def header_size(klass: Any, body_size: int, properties: dict[str, Any]) -> int:
    """
    Bytes of the content header txAMQP writes for these properties (a frame's payload:
    it must fit in frame_max less 8). Raises as writing it would.
    """
    buf = BytesIO()
    c = FixedCodec(buf)
    FixedHeader(klass, 0, body_size, **properties).encode(c)
    c.flush()
    return len(buf.getvalue()) - 4  # (written as long bytes: a 4-byte length, then the payload)


class FixedHeader(Header):
    """
    Content headers (message properties, the ``headers`` table) with L{FixedCodec}.
    Properties that cannot be decoded become L{UNDECODABLE} and its reason.
    """

    type = None

    def encode(self, enc: Any) -> None:
        # Header.encode builds its codec from the module it lives in: encode through a
        # copy of its logic with ours instead of touching that module.
        buf = BytesIO()
        c = FixedCodec(buf)
        c.encode_short(self.klass.id)
        c.encode_short(self.weight)
        c.encode_longlong(self.size)
        nprops = len(self.klass.fields)
        flags = 0
        for i in range(nprops):
            f = self.klass.fields.items[i]
            flags <<= 1
            if self.properties.get(f.name) is not None:
                flags |= 1
            if i > 0 and (i % 15) == 0:
                flags <<= 1
                if nprops > (i + 1):
                    flags |= 1
                    c.encode_short(flags)
                    flags = 0
        flags <<= (16 - (nprops % 15)) % 16
        c.encode_short(flags)
        for f in self.klass.fields:
            v = self.properties.get(f.name)
            if v is not None:
                c.encode(f.type, v)
        c.flush()
        enc.encode_longbytes(buf.getvalue())

    @staticmethod
    def decode(spec: Any, dec: Any) -> Header:
        c = FixedCodec(BytesIO(dec.decode_longbytes()))
        klass = spec.classes.byid[c.decode_short()]
        weight = c.decode_short()
        size = c.decode_longlong()
        bits = []
        while True:
            flags = c.decode_short()
            for i in range(15, 0, -1):
                bits.append(bool(flags >> i & 0x1))
            if flags & 0x1 == 0:
                break
        properties = {}
        try:
            for present, f in zip(bits, klass.fields):
                if present:
                    properties[str(f.name)] = c.decode(f.type)
        except Exception as e:
            # What a producer wrote must cost its own delivery, not the connection (an
            # exception here is raised in the frame reader): no properties, and why.
            properties = {UNDECODABLE: property_error_text(e)}
        return Header(klass, weight, size, **properties)


FixedHeader.type = Frame.HEADER


class FixedBody(Body):
    """
    Defect: body frames are decoded with C{dec_str}, which turns any chunk that happens
    to be valid UTF-8 into a str: a body becomes str or bytes by accident, and a
    multi-frame body mixes both (a non-ASCII UTF-8 JSON body killed the connection).
    Fixed: bodies are bytes, always.
    """

    type = None

    @staticmethod
    def decode(spec: Any, dec: Any) -> Body:
        return Body(dec.decode_longbytes())

    def encode(self, enc: Any) -> None:
        enc.encode_longbytes(self.content)


FixedBody.type = Frame.BODY

_DECODERS = {
    Frame.METHOD: FixedMethod,
    Frame.HEADER: FixedHeader,
    Frame.BODY: FixedBody,
    Frame.HEARTBEAT: Heartbeat,
}


class FixedChannel(AMQChannel):
    """
    Defect: C{invoke} decides whether to wait for a reply by a field named ``nowait``,
    but the 0-9-1 spec names it ``no-wait`` (``no_wait``): with no_wait=True it waits
    forever. Fixed: both names are honoured. Frames are built from the fixed payloads.
    """

    @defer.inlineCallbacks
    def invoke(self, method: Any, args: Any, content: Any = None) -> Any:
        from txamqp.content import Content
        from txamqp.message import Message
        from txamqp.protocol import read_content

        if self.closed:
            self._raise_closed(self.reason)
        frame = Frame(self.id, FixedMethod(method, *args))
        self.outgoing.put(frame)
        if method.content:
            self.write_content(method.klass, content if content is not None else Content(b""), self.outgoing)
        nowait = False
        for name in ("nowait", "no-wait"):
            f = method.fields.byname.get(name)
            if f is not None:
                nowait = bool(args[method.fields.index(f)])
                break
        try:
            if not nowait and method.responses:
                resp = (yield self.responses.get()).payload
                body = (yield read_content(self.responses)) if resp.method.content else None
                if resp.method in method.responses:
                    return Message(resp.method, resp.args, body)
                raise ValueError(resp)
        except QueueClosed:
            if self.closed:
                self._raise_closed(self.reason)
            raise

    def write_content(self, klass: Any, content: Any, queue: Any) -> None:
        body = content.body if isinstance(content.body, bytes) else str(content.body).encode("utf-8")
        queue.put(Frame(self.id, FixedHeader(klass, content.weight(), len(body), **content.properties)))
        for child in content.children:
            self.write_content(klass, child, queue)
        step = self.client.MAX_LENGTH - 8
        for i in range(0, len(body), step):
            queue.put(Frame(self.id, FixedBody(body[i:i + step])))


class FixedDelegate(TwistedDelegate):
    """
    Defect: C{connection_tune} takes the broker's frame_max as it is, and RabbitMQ may
    offer 0 (no limit): txAMQP then splits bodies in steps of -8 (no body frame is ever
    written, so the publish never completes) and counts every partial frame it reads
    as too long. Fixed: no limit offered, the usual 131,072 asked for.
    """

    def connection_tune(self, ch: Any, msg: Any) -> None:
        frame_max = msg.frame_max or FRAME_MAX_WHEN_UNLIMITED
        self.client.MAX_LENGTH = frame_max
        ch.connection_tune_ok(msg.channel_max, frame_max, self.client.heartbeatInterval)
        self.client.started.fire()


class FixedClient(AMQClient):
    """AMQClient whose frames go through the fixed codec and payloads."""

    channelClass = FixedChannel

    def _pack_frame(self, frame: Any) -> bytes:
        s = BytesIO()
        c = FixedCodec(s)
        c.encode_octet(self.spec.constants.bypyname[frame.payload.type].id)
        c.encode_short(frame.channel)
        frame.payload.encode(c)
        c.encode_octet(self.FRAME_END)
        return s.getvalue()

    def _unpack_frame(self, data: bytes) -> Frame:
        from txamqp.spec import pythonize

        c = FixedCodec(BytesIO(data))
        frame_type = pythonize(self.spec.constants.byid[c.decode_octet()].name)
        channel = c.decode_short()
        payload = _DECODERS[frame_type].decode(self.spec, c)
        end = c.decode_octet()
        if end != self.FRAME_END:
            raise ValueError(f"frame error: expected {self.FRAME_END!r}, got {end!r}")
        return Frame(channel, payload)

