"""
The AMQP client seam on pika's Twisted adapter (pika >= 1.4, < 2).

pika logs through stdlib logging (routed into twisted.logger by scbus.logs.bridge).
"""

from __future__ import annotations

import struct
from typing import Any

import pika
from pika import exceptions as pika_errors
from pika import frame as pika_frame
from pika import spec as pika_spec
from pika.adapters.twisted_connection import TwistedChannel, TwistedProtocolConnection
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from zope.interface import implementer

from ...reactors import IBusReactor
from .acks import CoalescedAcks
from .confirms import PublishConfirms
from .client import (
    ConnectionWatch,
    IAMQPChannel,
    IAMQPConnection,
    IAMQPConsumer,
    Properties,
    RawDelivery,
    property_error_text,
    reason_text,
)
from .pika_frames import publish_frames
from .settings import AMQPSettings

__all__ = ["PikaConnection", "pika_factory", "UndecodableProperties", "decode_frame"]


class UndecodableProperties(pika.BasicProperties):
    """Empty properties standing in for ones pika could not decode, saying why."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.undecodable = error


_FRAME_END = bytes([pika_spec.FRAME_END])
_CONTENT_HEADER = pika_spec.FRAME_HEADER
_HEADER_SIZE = pika_spec.FRAME_HEADER_SIZE
_pika_decode_frame = pika_frame.decode_frame


def decode_frame(data: bytes) -> tuple[int, Any]:
    """
    pika's C{frame.decode_frame}, except that a content header whose properties cannot
    be decoded (a header timestamp past year 9999, a table nested past the recursion
    limit, an unknown field type) becomes a header with L{UndecodableProperties}.

    Why: pika decodes properties while it reads frames, before any consumer sees the
    delivery, and an exception there drops the connection; the unacknowledged delivery
    then comes back on the next one, and drops it again. Here it costs that one
    delivery, which the transport sets aside.
    """
    if len(data) < _HEADER_SIZE or data[0] != _CONTENT_HEADER:
        return _pika_decode_frame(data)
    _, channel_number, frame_size = struct.unpack_from(">BHL", data)
    frame_end = pika_spec.FRAME_HEADER_SIZE + frame_size + pika_spec.FRAME_END_SIZE
    if frame_end > len(data):
        return 0, None
    if data[frame_end - 1:frame_end] != _FRAME_END:
        raise pika_errors.InvalidFrameError("Invalid FRAME_END marker")
    payload = data[pika_spec.FRAME_HEADER_SIZE:frame_end - 1]
    class_id, _, body_size = struct.unpack_from(">HHQ", payload)
    properties = pika_spec.props[class_id]()
    try:
        properties.decode(payload[12:])
    except Exception as e:  # whatever the producer wrote: this delivery only
        properties = UndecodableProperties(property_error_text(e))
    return frame_end, pika_frame.Header(channel_number, body_size, properties)


@implementer(IAMQPConsumer)
class _PikaConsumer:
    def __init__(self, channel: PikaChannel, queue_obj: Any, tag: str) -> None:
        self._channel = channel
        self._queue = queue_obj
        self.tag = tag

    @property
    def buffered(self) -> int:
        return len(self._queue.pending)

    def get(self) -> Deferred[RawDelivery]:
        return self._queue.get().addCallback(self._channel._wrap)

    def take(self) -> RawDelivery | None:
        pending = self._queue.pending
        return self._channel._wrap(pending.pop(0)) if pending else None

    def cancel(self) -> Deferred[list[RawDelivery]]:
        # pika empties the queue when the broker agrees by binding a new list: the one
        # held here keeps what arrived until then.
        arrived = self._queue.pending
        d = self._channel._channel.basic_cancel(self.tag)
        return d.addCallback(lambda _: [self._channel._wrap(item) for item in arrived])


@implementer(IAMQPChannel)
class PikaChannel:
    """
    pika's Twisted channel, except for publishing: a publish is written in one go
    (L{pika_frames}) and confirms are tracked here, in tag order, so that a multiple
    confirm answers its run without scanning every outstanding publish.
    """

    def __init__(self, channel: TwistedChannel, clock: IReactorTime) -> None:
        self._channel = channel
        self._impl = channel._channel  # pika's own channel, under the Twisted wrapper
        self.closed: Deferred[Any] = Deferred()
        self.acks = CoalescedAcks(self._write_ack, clock)
        self._selecting: Deferred[None] | None = None
        self._confirming = False
        self._confirms = PublishConfirms()
        channel.on_closed.addBoth(self._on_closed)

    def _on_closed(self, reason: Any) -> None:
        self.acks.discard()
        error = reason if isinstance(reason, Exception) else ConnectionError(reason_text(reason))
        selecting, self._selecting = self._selecting, None
        if selecting is not None and not selecting.called:
            selecting.errback(error)
        self._confirms.fail_all(error)
        self.closed.callback(reason)

    def _write_ack(self, delivery_tag: int, multiple: bool) -> None:
        if self._channel.is_open:
            self._channel.basic_ack(delivery_tag=delivery_tag, multiple=multiple)

    @property
    def is_open(self) -> bool:
        return self._channel.is_open

    def _wrap(self, received: Any) -> RawDelivery:
        method = received.method
        return RawDelivery(
            channel=self,
            delivery_tag=method.delivery_tag,
            redelivered=bool(method.redelivered),
            exchange=method.exchange,
            routing_key=method.routing_key,
            # pika's BasicProperties has every attribute of Properties: no copy needed.
            properties=received.properties,
            body=received.body,
            property_error=getattr(received.properties, "undecodable", None),
        )

    def confirm(self) -> Deferred[Any]:
        d: Deferred[None] = Deferred()

        def selected(_frame: Any) -> None:
            self._selecting = None
            self._confirming = True
            if not d.called:
                d.callback(None)

        try:
            self._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected)
            self._impl.add_on_return_callback(self._on_return)
        except Exception:
            return fail()
        self._selecting = d
        return d

    def _on_return(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._confirms.returned(getattr(properties, "message_id", None), method.exchange, method.routing_key, body)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        self._confirms.answer(method.delivery_tag, method.multiple, isinstance(method, pika_spec.Basic.Nack))

    def exchange_declare(self, name: str, kind: str, durable: bool = True, arguments: dict | None = None) -> Deferred[Any]:
        return self._channel.exchange_declare(
            exchange=name, exchange_type=kind, durable=durable, arguments=arguments
        )

    def queue_declare(
        self, name: str, durable: bool = True, exclusive: bool = False, auto_delete: bool = False,
        arguments: dict | None = None, passive: bool = False,
    ) -> Deferred[int]:
        d = self._channel.queue_declare(
            queue=name, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
            arguments=arguments, passive=passive,
        )
        return d.addCallback(lambda frame: frame.method.message_count)

    def queue_bind(self, queue: str, exchange: str, routing_key: str = "") -> Deferred[Any]:
        return self._channel.queue_bind(queue=queue, exchange=exchange, routing_key=routing_key)

    def qos(self, prefetch_count: int) -> Deferred[Any]:
        return self._channel.basic_qos(prefetch_count=prefetch_count)

    def consume(self, queue: str, exclusive: bool = False) -> Deferred[IAMQPConsumer]:
        d = self._channel.basic_consume(queue=queue, auto_ack=False, exclusive=exclusive)
        return d.addCallback(lambda result: _PikaConsumer(self, result[0], result[1]))

    def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties, mandatory: bool = False
    ) -> Deferred[Any]:
        impl = self._impl
        if not impl.is_open:
            return fail(ConnectionError("channel closed"))
        connection = impl.connection
        frames = publish_frames(
            impl.channel_number, exchange, routing_key, mandatory, properties, body, connection._body_max_length
        )
        connection._output_marshaled_frames((frames,))
        return self._confirms.expect(properties.message_id, exchange, routing_key, body) if self._confirming else succeed(None)

    def get(self, queue: str) -> Deferred[RawDelivery | None]:
        def wrap(result: Any) -> RawDelivery | None:
            if result is None:
                return None
            return self._wrap(result)

        return self._channel.basic_get(queue=queue, auto_ack=False).addCallback(wrap)

    def ack(self, delivery_tag: int) -> None:
        self.acks.ack(delivery_tag)

    def nack(self, delivery_tag: int, requeue: bool = True) -> None:
        self._channel.basic_nack(delivery_tag=delivery_tag, requeue=requeue)
        self.acks.settled(delivery_tag)

    def close(self) -> Deferred[Any]:
        if self._channel.is_open:
            self.acks.flush()
            self._channel.close()
        return self.closed if not self.closed.called else succeed(None)


@implementer(IAMQPConnection)
class PikaConnection(ConnectionWatch, TwistedProtocolConnection):
    """pika's protocol, speaking the seam. C{ready} fires after the AMQP handshake."""

    def __init__(self, parameters: pika.ConnectionParameters, reactor: IBusReactor) -> None:
        super().__init__(parameters, custom_reactor=reactor)
        self._channels: set[PikaChannel] = set()
        self._watch_start(reactor)
        # pika's connection reads every frame through this one method; the adapter
        # object is made inside pika's constructor, so the guard is set on it here.
        impl = self._impl
        impl._read_frame = lambda: decode_frame(impl._frame_buffer)

    def makeConnection(self, transport: Any) -> None:
        self._watch_connected(transport)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self._watch_received()
        super().dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self._watch_lost(reason)

    def channel(self, channel_number: int | None = None) -> Deferred[PikaChannel]:
        return super().channel(channel_number).addCallback(self._wrap_channel)

    def _wrap_channel(self, channel: TwistedChannel) -> PikaChannel:
        wrapper = PikaChannel(channel, self._watch_clock)
        self._channels.add(wrapper)
        wrapper.closed.addBoth(lambda _: self._channels.discard(wrapper))
        return wrapper

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown") -> Any:
        if self.transport is not None and not self._impl.is_closed and not self._impl.is_closing:
            for channel in list(self._channels):
                channel.acks.flush()  # the acks asked for go out before the goodbye
            super().close(reply_code, reply_text)
        return self.when_lost()


def pika_factory(settings: AMQPSettings, reactor: IBusReactor, connection_name: str) -> Factory:
    parameters = pika.ConnectionParameters(
        virtual_host=settings.vhost,
        credentials=pika.PlainCredentials(settings.username, settings.password),
        heartbeat=settings.broker_heartbeat,
        client_properties={"connection_name": connection_name, "product": "scbus"},
        connection_attempts=1,
    )
    return Factory.forProtocol(lambda: PikaConnection(parameters, reactor))
