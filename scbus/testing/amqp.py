"""
An in-memory AMQP client for the transport's seam (L{scbus.transports.amqp.client}):
every call answers at once, publishes are confirmed at once, and what the transport did
is recorded in order in C{connection.log}. With it the real L{AMQPTransport} runs with
no broker and a fake clock: hand an app deliveries with
C{connection.consuming("scbus.app.NAME").deliveries.put(raw)}, then C{clock.advance(0)}.

    connection = FakeConnection()
    transport = connected_transport(connection, clock)
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from .. import codec
from ..reactors import IBusReactor
from ..transports.amqp import AMQPTransport, parse_amqp_settings
from ..transports.amqp.client import IAMQPChannel, IAMQPConnection, IAMQPConsumer, RawDelivery

__all__ = ["FakeChannel", "FakeConnection", "FakeConsumer", "connected_transport"]

#: One entry of the log: what was done, then its arguments (("publish", exchange, message), ...).
LogEntry = tuple[Any, ...]


@implementer(IAMQPConsumer)
class FakeConsumer:
    """Deliveries put in C{queue} (a DeferredQueue) are what C{get()} answers, in order."""

    tag = "t"

    def __init__(self, queue: DeferredQueue[RawDelivery]) -> None:
        self.queue = queue

    @property
    def buffered(self) -> int:
        return len(self.queue.pending)

    def get(self) -> Deferred[RawDelivery]:
        return self.queue.get()

    def take(self) -> RawDelivery | None:
        pending = self.queue.pending
        return pending.pop(0) if pending else None

    def cancel(self) -> Deferred[list[RawDelivery]]:
        """The broker stops sending: what arrived and was not taken is handed back."""
        arrived, self.queue.pending = list(self.queue.pending), []
        return succeed(arrived)


@implementer(IAMQPChannel)
class FakeChannel:
    is_open = True

    def __init__(self, log: list[LogEntry]) -> None:
        self.closed: Deferred[Any] = Deferred()
        self.deliveries: DeferredQueue[RawDelivery] = DeferredQueue()
        self.log = log
        #: The queues consumed on this channel.
        self.consuming: list[str] = []

    def confirm(self) -> Deferred[None]:
        return succeed(None)

    def exchange_declare(
        self, name: str, kind: str, durable: bool = True, arguments: dict[str, Any] | None = None
    ) -> Deferred[None]:
        self.log.append(("exchange", name))
        return succeed(None)

    def queue_declare(
        self,
        name: str,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        passive: bool = False,
    ) -> Deferred[int]:
        return succeed(0)

    def queue_bind(self, queue: str, exchange: str, routing_key: str = "") -> Deferred[None]:
        self.log.append(("bind", queue, exchange))
        return succeed(None)

    def qos(self, prefetch_count: int) -> Deferred[None]:
        return succeed(None)

    def consume(self, queue: str, exclusive: bool = False) -> Deferred[FakeConsumer]:
        self.consuming.append(queue)
        return succeed(FakeConsumer(self.deliveries))

    def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool = False
    ) -> Deferred[None]:
        self.log.append(("publish", exchange, codec.decode(body)))
        return succeed(None)  # confirmed at once

    def get(self, queue: str) -> Deferred[RawDelivery | None]:
        return succeed(None)

    def ack(self, delivery_tag: int) -> None:
        self.log.append(("ack", delivery_tag))

    def nack(self, delivery_tag: int, requeue: bool = True) -> None:
        self.log.append(("nack", delivery_tag, requeue))

    def close(self) -> Deferred[None]:
        return succeed(None)


@implementer(IAMQPConnection)
class FakeConnection:
    #: The client's handshake: None means done (the transport then opens its session).
    ready: Deferred[None] | None = None
    is_open = True
    last_received = 0.0

    def __init__(self) -> None:
        self.log: list[LogEntry] = []
        self.channels: list[FakeChannel] = []

    def channel(self) -> Deferred[FakeChannel]:
        channel = FakeChannel(self.log)
        self.channels.append(channel)
        return succeed(channel)

    def consuming(self, queue: str) -> FakeChannel:
        """The channel that consumes C{queue}: put deliveries for it in its C{deliveries}."""
        [channel] = [c for c in self.channels if queue in c.consuming]
        return channel

    def when_lost(self) -> Deferred[Exception]:
        return Deferred()

    def close(self) -> Deferred[None]:
        return succeed(None)


def connected_transport(
    connection: FakeConnection, clock: IReactorTime, settings: dict[str, Any] | None = None
) -> AMQPTransport:
    """An L{AMQPTransport} whose session is open on C{connection}, as after connecting."""
    # It never connects (the session is opened on the fake), so time is all it uses.
    reactor = cast(IBusReactor, clock)
    transport = AMQPTransport(parse_amqp_settings({"url": "amqp://in-memory", **(settings or {})}), reactor)
    transport.running = True
    opened = Deferred.fromCoroutine(transport._open_session(connection))
    if not opened.called or not transport.connected:
        raise AssertionError(f"the session did not open on {connection!r}")
    return transport
