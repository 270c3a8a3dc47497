"""
The seam between the AMQP transport and an AMQP client library.

The transport speaks only these interfaces, so a second client (txAMQP) can plug in
beside pika's Twisted adapter. Everything is deferred-based; a channel's Deferreds fail
when the channel or connection closes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime

__all__ = [
    "reason_text",
    "property_error_text",
    "ConnectionWatch",
    "Properties",
    "persistent_copy",
    "RawDelivery",
    "IAMQPConnection",
    "IAMQPChannel",
    "IAMQPConsumer",
    "PublishRefused",
    "PublishReturned",
]


class PublishRefused(Exception):
    """The broker answered a publish with basic.nack."""


class PublishReturned(Exception):
    """The broker returned a mandatory publish: nothing could route it."""


@dataclasses.dataclass
class Properties:
    """The basic properties scbus reads and writes."""

    content_type: str | None = None
    delivery_mode: int | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    timestamp: int | None = None
    type: str | None = None
    app_id: str | None = None
    reply_to: str | None = None
    headers: dict[str, Any] | None = None


def persistent_copy(props: Any, headers: dict[str, Any] | None) -> Properties:
    """Received properties (ours or a client's), persistent, with other headers."""
    return Properties(
        content_type=props.content_type,
        delivery_mode=2,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        timestamp=props.timestamp,
        type=props.type,
        app_id=props.app_id,
        headers=headers or None,
    )


@dataclasses.dataclass
class RawDelivery:
    """
    A message as the broker handed it over, before decoding. C{properties} has the
    attributes of L{Properties} (a client may hand over its own properties object).
    """

    channel: IAMQPChannel
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: Any
    body: bytes
    #: Why the client could not decode the message's properties (then C{properties} is
    #: empty): the delivery is set aside, the connection stays up.
    property_error: str | None = None


def property_error_text(error: BaseException) -> str:
    """One line saying why a client could not decode a delivery's properties."""
    text = f"{type(error).__name__}: {error}"
    return "message properties cannot be decoded: " + (text if len(text) <= 200 else text[:197] + "...")


class IAMQPConnection(Interface):
    def when_lost() -> Deferred[Exception]:
        """A new Deferred that fires, with the reason (an exception), when the connection is gone."""

    is_open = Attribute("True while the connection can open channels.")
    last_received = Attribute("Reactor time at which data last arrived from the broker.")

    def channel() -> Deferred[Any]:
        """Open a channel. Answers a Deferred of an L{IAMQPChannel}."""

    def close() -> Deferred[Any]:
        """Close the connection. Answers a Deferred."""


class IAMQPConsumer(Interface):
    tag = Attribute("The consumer tag.")
    buffered = Attribute("How many deliveries arrived (prefetch) and wait for get().")

    def get() -> Deferred[RawDelivery]:
        """
        Answers a cancellable Deferred of the next L{RawDelivery}; fails when the channel
        closes or the broker cancels the consumer.
        """

    def take() -> RawDelivery | None:
        """
        The next delivery if one has arrived and waits (C{buffered}), without a
        Deferred; else None. Deliveries are handed out in order by get() and take() alike.
        """

    def cancel() -> Deferred[list[RawDelivery]]:
        """
        Ask the broker to send no more (basic.cancel). Answers a Deferred firing, once it
        agreed, with the deliveries that arrived and were not taken by get(): they stay
        unacknowledged on the channel for the caller to settle.
        """


class IAMQPChannel(Interface):
    is_open = Attribute("True until the channel closes.")
    closed = Attribute("A Deferred that fires (with the reason) when the channel closes.")

    def confirm() -> Deferred[None]:
        """Turn on publisher confirms. Answers a Deferred."""

    def exchange_declare(
        name: str, kind: str, durable: bool = True, arguments: dict[str, Any] | None = None
    ) -> Deferred[None]:
        """Answers a Deferred."""

    def queue_declare(
        name: str,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        passive: bool = False,
    ) -> Deferred[int]:
        """Answers a Deferred firing with the queue's message count."""

    def queue_bind(queue: str, exchange: str, routing_key: str = "") -> Deferred[None]:
        """Answers a Deferred."""

    def qos(prefetch_count: int) -> Deferred[None]:
        """Answers a Deferred."""

    def consume(queue: str, exclusive: bool = False) -> Deferred[Any]:
        """Answers a Deferred of an L{IAMQPConsumer}."""

    def publish(
        exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool = False
    ) -> Deferred[None]:
        """
        Answers a Deferred that fires when the broker confirmed the message (on a channel
        with confirms), and fails with L{PublishRefused} or L{PublishReturned}.
        """

    def get(queue: str) -> Deferred[RawDelivery | None]:
        """basic.get: answers a Deferred of a L{RawDelivery}, or None when the queue is empty."""

    def ack(delivery_tag: int) -> None:
        """
        Acknowledge (no answer: AMQP does not confirm acks). The clients coalesce: acks
        go out at the end of the reactor turn, a run of tags as one multiple ack
        (see L{scbus.transports.amqp.acks}); close() writes them first.
        """

    def nack(delivery_tag: int, requeue: bool = True) -> None:
        """Give a delivery back (requeue) or dead-letter it (no requeue), at once."""

    def close() -> Deferred[Any]:
        """Close the channel; unacknowledged deliveries go back to their queues."""


def reason_text(reason: Any) -> str:
    """A connection or channel close reason (a Failure, an exception, a frame) as text."""
    message = getattr(reason, "getErrorMessage", None)
    return message() if callable(message) else str(reason)


class ConnectionWatch:
    """
    Mixed into a client's protocol: what the transport needs to see of the connection
    itself. Small frames go out at once (no Nagle delay on confirms and acks), the time
    data last arrived is kept (to notice a dead path), and every observer of the loss
    gets its own Deferred.
    """

    def _watch_start(self, clock: IReactorTime) -> None:
        self._watch_clock = clock
        self.last_received = clock.seconds()
        self._lost_reason: Exception | None = None
        self._lost_observers: list[Any] = []

    def _watch_connected(self, transport: Any) -> None:
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass

    def _watch_received(self) -> None:
        self.last_received = self._watch_clock.seconds()

    def when_lost(self) -> Any:
        from twisted.internet.defer import Deferred, succeed

        if self._lost_reason is not None:
            return succeed(self._lost_reason)
        d: Deferred[Exception] = Deferred()
        self._lost_observers.append(d)
        return d

    def _watch_lost(self, reason: Any) -> Exception:
        value = getattr(reason, "value", reason)
        self._lost_reason = value if isinstance(value, Exception) else ConnectionError(str(value))
        observers, self._lost_observers = self._lost_observers, []
        for d in observers:
            d.callback(self._lost_reason)
        return self._lost_reason
