"""
An in-memory client seam whose channels and connection can go away as a real client's
do: a channel confirms only when told (or at once, if its connection says so), and
closing it fails what it has outstanding first (publishes, consumers' waiting gets)
and then fires C{closed}, as pika and txAMQP do. A publish to an exchange deleted "from
outside" closes its channel at the end of the turn, as the broker's 404 does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from scbus import codec
from scbus.testing.amqp import FakeChannel, FakeConnection


class ChannelClosedByBroker(Exception):
    """Stands in for a client's channel-close error."""


class LossyChannel(FakeChannel):
    def __init__(self, connection: LossyConnection) -> None:
        super().__init__(connection.log)
        self.connection = connection
        self.is_open = True
        self.unconfirmed: list[Deferred[None]] = []

    def exchange_declare(self, name: str, kind: str, durable: bool = True, arguments: Any = None) -> Deferred[None]:
        if not self.is_open:
            return fail(ChannelClosedByBroker("channel closed"))
        self.connection.deleted.discard(name)
        return super().exchange_declare(name, kind, durable, arguments)

    def queue_bind(self, queue: str, exchange: str, routing_key: str = "") -> Deferred[None]:
        if not self.is_open:
            return fail(ChannelClosedByBroker("channel closed"))
        return super().queue_bind(queue, exchange, routing_key)

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool = False) -> Deferred[None]:
        if not self.is_open:
            return fail(ChannelClosedByBroker("channel closed"))
        self.log.append(("publish", exchange, codec.decode(body)))
        if exchange in self.connection.deleted:
            self.connection.clock.callLater(0, self.close_now, ChannelClosedByBroker(f"404 NOT_FOUND - no exchange '{exchange}'"))
        if self.connection.auto_confirm and exchange not in self.connection.deleted:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self.unconfirmed.append(d)
        return d

    def confirm_all(self) -> None:
        pending, self.unconfirmed = self.unconfirmed, []
        for d in pending:
            d.callback(None)

    def close_now(self, reason: Exception) -> None:
        """The broker closed it, or its connection went: what waits fails, then C{closed}."""
        if not self.is_open:
            return
        self.is_open = False
        pending, self.unconfirmed = self.unconfirmed, []
        for d in pending:
            d.errback(reason)
        waiting, self.deliveries.waiting = list(self.deliveries.waiting), []
        for d in waiting:
            d.errback(reason)
        self.closed.callback(reason)

    def close(self) -> Deferred[None]:
        self.close_now(ChannelClosedByBroker("closed by the client"))
        return succeed(None)


class LossyConnection(FakeConnection):
    def __init__(self, clock: Any, auto_confirm: bool = True) -> None:
        super().__init__()
        self.clock = clock
        self.auto_confirm = auto_confirm
        self.is_open = True
        self.deleted: set[str] = set()
        self._lost: list[Deferred[Exception]] = []

    def channel(self) -> Deferred[Any]:
        if not self.is_open:
            return fail(ConnectionError("the connection is closed"))
        channel = LossyChannel(self)
        self.channels.append(channel)
        return succeed(channel)

    def when_lost(self) -> Deferred[Exception]:
        d: Deferred[Exception] = Deferred()
        self._lost.append(d)
        return d

    def lose(self, reason: Exception | None = None) -> None:
        """The connection is gone: the client closes every channel, then says so."""
        reason = reason or ConnectionError("connection lost")
        self.is_open = False
        for channel in list(self.channels):
            channel.close_now(reason)
        lost, self._lost = self._lost, []
        for d in lost:
            d.callback(reason)

    def published(self) -> list[Any]:
        return [entry[2] for entry in self.log if entry[0] == "publish"]
