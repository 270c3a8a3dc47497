"""
The AMQP client seam on txAMQP (``[transport] client = "txamqp"``), the pure-Twisted
client, made correct by L{txamqp_compat} and completed here with publisher confirms,
returns and broker-side consumer cancellation.

txAMQP ships no spec XML: it reads RabbitMQ's extended AMQP 0-9-1 spec (which has
``confirm.select`` and ``basic.nack``) from Debian's amqp-specs package, or from
``transport.txamqp_spec``.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from txamqp.client import Closed
from txamqp.content import Content
from txamqp.queue import TimeoutDeferredQueue
from zope.interface import implementer

from ...reactors import IBusReactor
from .acks import CoalescedAcks
from .confirms import PublishConfirms
from .pika_frames import HeaderTooLarge, publish_frames
from .client import ConnectionWatch, IAMQPChannel, IAMQPConnection, IAMQPConsumer, Properties, RawDelivery
from .settings import AMQPSettings
from .txamqp_compat import UNDECODABLE, FixedClient, FixedDelegate, header_size
from .txamqp_spec import DEFAULT_SPEC, load_spec

__all__ = ["DEFAULT_SPEC", "load_spec", "txamqp_factory", "TxConnection"]

log = Logger()


_PROPERTY_NAMES = {
    "content_type": "content-type",
    "delivery_mode": "delivery-mode",
    "message_id": "message-id",
    "correlation_id": "correlation-id",
    "timestamp": "timestamp",
    "type": "type",
    "app_id": "app-id",
    "reply_to": "reply-to",
    "headers": "headers",
}


def _to_content(body: bytes, props: Properties, klass: Any, max_header: int) -> Content:
    """
    The content to publish. @raise ValueError: a property that cannot be encoded, or a
    content header over C{max_header} bytes (given the spec's basic C{klass}), raised
    here, at publish, not later in txAMQP's writer loop, where it would stop the
    connection's every later frame, or for the broker to close the connection.
    """
    properties = {}
    for attr, wire in _PROPERTY_NAMES.items():
        value = getattr(props, attr)
        if value is None:
            continue
        if isinstance(value, (str, bytes)) and len(value.encode("utf-8") if isinstance(value, str) else value) > 255:
            raise ValueError(f"property {wire} is longer than 255 bytes")
        properties[wire] = value
    if props.headers:
        # (encodes the header table: raises if it cannot be)
        size = header_size(klass, len(body), properties)
        if size > max_header:
            raise HeaderTooLarge.of(size, max_header)
    return Content(body, properties=properties)


def _from_content(content: Any) -> tuple[bytes, Properties, str | None]:
    body = content.body if isinstance(content.body, bytes) else str(content.body).encode("utf-8")
    p = content.properties
    properties = Properties(**{attr: p.get(wire) for attr, wire in _PROPERTY_NAMES.items()})
    return body, properties, p.get(UNDECODABLE)


def _closed_meanwhile(failure: Any) -> None:
    """
    An ack, nack or publish made just as the connection went: the wrapper learns of the
    loss a moment later. Nothing is lost (the broker redelivers what was not
    acknowledged; an unconfirmed publish fails through its confirm), so not an error.
    """
    failure.trap(Closed)


class _Delegate(FixedDelegate):
    """What the broker sends that txAMQP's delegate does not handle."""

    def basic_ack(self, ch: Any, msg: Any) -> None:
        # Defect: no handler for the broker's confirm basic.ack (the worker died on it).
        self.client._confirmed(ch.id, msg.delivery_tag, msg.multiple, refused=False)

    def basic_nack(self, ch: Any, msg: Any) -> None:
        self.client._confirmed(ch.id, msg.delivery_tag, msg.multiple, refused=True)

    def basic_return_(self, ch: Any, msg: Any) -> None:
        content = getattr(msg, "content", None)
        properties = getattr(content, "properties", None) or {}
        body = getattr(content, "body", b"")
        self.client._returned(
            ch.id, properties.get("message-id"), msg.exchange, msg.routing_key,
            body if isinstance(body, bytes) else str(body).encode("utf-8"),
        )

    def basic_cancel(self, ch: Any, msg: Any) -> None:
        # The broker cancelled a consumer (its queue was deleted, a node went away).
        self.client._consumer_cancelled(msg.consumer_tag)

    def connection_blocked(self, ch: Any, msg: Any) -> None:
        log.warn("broker blocked the connection: {reason}", reason=getattr(msg, "reason", ""))

    def connection_unblocked(self, ch: Any, msg: Any) -> None:
        log.info("broker unblocked the connection")


@implementer(IAMQPConsumer)
class _Consumer:
    def __init__(self, channel: TxChannel, queue: Any, tag: str) -> None:
        self._channel = channel
        self._queue = queue
        self.tag = tag

    @property
    def buffered(self) -> int:
        return len(self._queue.pending)

    def get(self) -> Deferred[RawDelivery]:
        return self._queue.get().addCallback(self._channel._delivery)

    def take(self) -> RawDelivery | None:
        pending = self._queue.pending
        if not pending or pending[0] is TimeoutDeferredQueue.END:
            return None  # (the end mark stays: get() reports the close)
        return self._channel._delivery(pending.pop(0))

    def cancel(self) -> Deferred[list[RawDelivery]]:
        async def cancelled() -> list[RawDelivery]:
            await self._channel._call("basic_cancel", consumer_tag=self.tag)
            self._channel._consumers.pop(self.tag, None)
            arrived, self._queue.pending = list(self._queue.pending), []
            return [self._channel._delivery(item) for item in arrived if item is not TimeoutDeferredQueue.END]

        return Deferred.fromCoroutine(cancelled())


@implementer(IAMQPChannel)
class TxChannel:
    def __init__(self, connection: TxConnection, channel: Any) -> None:
        self._connection = connection
        self._channel = channel
        self.closed: Deferred[Any] = Deferred()
        self._open = True
        self._confirming = False
        self._confirms = PublishConfirms()
        self.acks = CoalescedAcks(self._write_ack, connection._watch_clock)
        self._consumers: dict[str, Any] = {}

    @property
    def is_open(self) -> bool:
        return self._open

    def _was_closed(self, reason: Any) -> None:
        if not self._open:
            return
        self._open = False
        error = reason if isinstance(reason, Exception) else ConnectionError(str(reason))
        self.acks.discard()
        self._confirms.fail_all(error)
        for queue in self._consumers.values():
            queue.close()
        self.closed.callback(reason)

    def _call(self, method: str, **kwargs: Any) -> Deferred[Any]:
        if not self._open:
            return fail(ConnectionError("channel closed"))
        return getattr(self._channel, method)(**kwargs)

    def confirm(self) -> Deferred[Any]:
        def on(_: Any) -> None:
            self._confirming = True

        return self._call("confirm_select", nowait=False).addCallback(on)

    def exchange_declare(self, name: str, kind: str, durable: bool = True, arguments: dict | None = None) -> Deferred[Any]:
        return self._call("exchange_declare", exchange=name, type=kind, durable=durable, arguments=arguments or {})

    def queue_declare(
        self, name: str, durable: bool = True, exclusive: bool = False, auto_delete: bool = False,
        arguments: dict | None = None, passive: bool = False,
    ) -> Deferred[int]:
        d = self._call(
            "queue_declare", queue=name, passive=passive, durable=durable, exclusive=exclusive,
            auto_delete=auto_delete, arguments=arguments or {},
        )
        return d.addCallback(lambda reply: reply.message_count)

    def queue_bind(self, queue: str, exchange: str, routing_key: str = "") -> Deferred[Any]:
        return self._call("queue_bind", queue=queue, exchange=exchange, routing_key=routing_key, arguments={})

    def qos(self, prefetch_count: int) -> Deferred[Any]:
        return self._call("basic_qos", prefetch_count=prefetch_count)

    def consume(self, queue: str, exclusive: bool = False) -> Deferred[IAMQPConsumer]:
        tag = f"scbus-{uuid.uuid4().hex[:12]}"

        async def start() -> IAMQPConsumer:
            await self._call("basic_consume", queue=queue, consumer_tag=tag, no_ack=False, exclusive=exclusive)
            delivered = await self._connection.queue(tag)
            self._consumers[tag] = delivered
            return _Consumer(self, delivered, tag)

        return Deferred.fromCoroutine(start())

    def _delivery(self, message: Any) -> RawDelivery:
        body, properties, property_error = _from_content(message.content)
        return RawDelivery(
            channel=self,
            delivery_tag=message.delivery_tag,
            redelivered=bool(message.redelivered),
            exchange=message.exchange,
            routing_key=message.routing_key,
            properties=properties,
            body=body,
            property_error=property_error,
        )

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: Properties, mandatory: bool = False) -> Deferred[Any]:
        if not self._open:
            return fail(ConnectionError("channel closed"))
        client = self._connection
        if not properties.headers and not client.outgoing.pending and client.transport is not None:
            # The usual publish (no header table), with txAMQP's writer idle: its frames
            # in one write, built as pika builds them (txAMQP's codec costs more than the
            # rest of the bus per message). Header tables keep txAMQP's own encoding.
            client.transport.write(publish_frames(
                self._channel.id, exchange, routing_key, mandatory, properties, body, client.MAX_LENGTH - 8
            ))
        else:
            content = _to_content(body, properties, client.spec.classes.byname["basic"], client.MAX_LENGTH - 8)
            self._channel.basic_publish(
                exchange=exchange, routing_key=routing_key, mandatory=mandatory, content=content
            ).addErrback(_closed_meanwhile)
        return self._confirms.expect(properties.message_id, exchange, routing_key, body) if self._confirming else succeed(None)

    def _confirmed(self, tag: int, multiple: bool, refused: bool) -> None:
        self._confirms.answer(tag, multiple, refused)

    def get(self, queue: str) -> Deferred[RawDelivery | None]:
        def wrap(reply: Any) -> RawDelivery | None:
            if reply.method.name == "get-empty":
                return None
            return self._delivery(reply)

        return self._call("basic_get", queue=queue, no_ack=False).addCallback(wrap)

    def ack(self, delivery_tag: int) -> None:
        if self._open:
            self.acks.ack(delivery_tag)

    def _write_ack(self, delivery_tag: int, multiple: bool) -> None:
        if self._open:
            self._channel.basic_ack(delivery_tag=delivery_tag, multiple=multiple).addErrback(_closed_meanwhile)

    def nack(self, delivery_tag: int, requeue: bool = True) -> None:
        if self._open:
            self._channel.basic_nack(delivery_tag=delivery_tag, multiple=False, requeue=requeue).addErrback(_closed_meanwhile)
            self.acks.settled(delivery_tag)

    def close(self) -> Deferred[Any]:
        if not self._open:
            return succeed(None)
        self.acks.flush()
        d = self._channel.channel_close(reply_code=200, reply_text="closed by scbus", class_id=0, method_id=0)

        def done(_: Any) -> None:
            self._channel.close(ConnectionError("channel closed by scbus"))
            self._was_closed(ConnectionError("channel closed by scbus"))

        d.addBoth(done)
        return self.closed


@implementer(IAMQPConnection)
class TxConnection(ConnectionWatch, FixedClient):
    """txAMQP's client, speaking the seam. C{ready} fires after login and connection.open."""

    def __init__(self, settings: AMQPSettings, reactor: IBusReactor, spec: Any) -> None:
        super().__init__(_Delegate(), settings.vhost, spec, heartbeat=settings.broker_heartbeat, clock=reactor)
        self._settings = settings
        self._watch_start(reactor)
        self.ready: Deferred[None] | None = Deferred()
        self._ids = itertools.count(1)
        self._wrappers: dict[int, TxChannel] = {}
        self._shutting = False

    def connectionMade(self) -> None:
        self._watch_connected(self.transport)
        super().connectionMade()
        d = self.authenticate(self._settings.username, self._settings.password, mechanism="PLAIN")

        def opened(_: Any) -> None:
            ready, self.ready = self.ready, None
            if ready is not None:
                ready.callback(None)

        def refused(failure: Any) -> None:
            ready, self.ready = self.ready, None
            if ready is not None:
                ready.errback(ConnectionError(f"the broker refused the connection: {failure.getErrorMessage()}"))

        d.addCallbacks(opened, refused)

    @property
    def is_open(self) -> bool:
        return not self.closed and not self._shutting and self._lost_reason is None

    def dataReceived(self, data: bytes) -> Any:
        self._watch_received()
        return super().dataReceived(data)

    def channel(self, id: int | None = None) -> Deferred[Any]:  # noqa: A002 - txAMQP's name
        if id is not None:
            return super().channel(id)  # txAMQP's own lookup, used for every frame
        return Deferred.fromCoroutine(self._open_channel())

    async def _open_channel(self) -> TxChannel:
        if not self.is_open:
            raise ConnectionError("the connection is closed")
        number = next(self._ids)
        channel = await super().channel(number)
        await channel.channel_open()
        wrapper = TxChannel(self, channel)
        self._wrappers[number] = wrapper
        wrapper.closed.addBoth(self._forget_channel, number)
        return wrapper

    def _forget_channel(self, reason: Any, number: int) -> Any:
        self._wrappers.pop(number, None)
        return reason

    def channel_failed(self, channel: Any, reason: Any) -> None:
        wrapper = self._wrappers.pop(channel.id, None)
        if wrapper is not None:
            wrapper._was_closed(getattr(reason, "value", reason))

    def _confirmed(self, channel_id: int, tag: int, multiple: bool, refused: bool) -> None:
        wrapper = self._wrappers.get(channel_id)
        if wrapper is not None:
            wrapper._confirmed(tag, multiple, refused)

    def _returned(self, channel_id: int, message_id: Any, exchange: str, routing_key: str, body: bytes) -> None:
        wrapper = self._wrappers.get(channel_id)
        if wrapper is not None:
            wrapper._confirms.returned(message_id, exchange, routing_key, body)

    def _consumer_cancelled(self, tag: str) -> None:
        queue = self.queues.get(tag)
        if queue is not None:
            queue.close()

    def close(self, reason: Any = None, within: Any = None) -> Any:
        if reason is None and within is None:
            for wrapper in list(self._wrappers.values()):
                wrapper.acks.flush()  # the acks asked for go out before the goodbye
            # the seam's close: say goodbye properly, give the broker 2 s to answer
            super().close(None, 2)
            return self.when_lost()
        return super().close(reason, within or 0)

    def do_close(self, reason: Any) -> None:
        """
        txAMQP's shutdown (the broker's connection.close, or the connection lost): from
        its first step the connection is not open, so a channel closing in it is not
        taken for one to open again, and every channel's callers hear of it now, not
        only once the socket is gone.
        """
        self._shutting = True
        try:
            super().do_close(reason)
        finally:
            self._close_wrappers(reason)

    def _close_wrappers(self, reason: Any) -> Exception:
        value = getattr(reason, "value", reason)
        error = value if isinstance(value, Exception) else ConnectionError(str(value))
        wrappers, self._wrappers = list(self._wrappers.values()), {}
        for wrapper in wrappers:
            wrapper._was_closed(error)
        return error

    def connectionLost(self, reason: Any) -> None:
        self._shutting = True
        try:
            super().connectionLost(reason)
        finally:
            error = self._close_wrappers(reason)
            ready, self.ready = self.ready, None
            if ready is not None:
                ready.errback(error)
            self._watch_lost(reason)


def txamqp_factory(settings: AMQPSettings, reactor: IBusReactor, connection_name: str) -> Factory:
    spec = load_spec(settings.txamqp_spec)
    return Factory.forProtocol(lambda: TxConnection(settings, reactor, spec))

