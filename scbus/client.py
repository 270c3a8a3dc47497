"""
Publishing into a bus from a program that is not one: a script, a Flask or Django view,
a Twisted service. Both publishers declare and publish exactly as the bus does (the
topology module is the one source of exchange names, arguments and properties), and a
publish returns only once the broker confirmed it.

Blocking::

    from scbus.client import Publisher
    with Publisher("amqp://guest:guest@localhost:5672/%2F") as publisher:
        publisher.publish(Tick(count=1))          # answers the message id, once confirmed

Twisted::

    publisher = TwistedPublisher("amqp://...")
    d = publisher.publish(Tick(count=1))          # fires with the id once confirmed
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pika
from pika import exceptions as pika_errors
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from . import codec
from .broker_connection import BrokerUnreachable, connect_blocking
from .errors import EncodeError
from .message import Message
from .reactors import IBusReactor, running_reactor
from .transports.amqp import topology
from .transports.amqp.client import Properties, PublishRefused, PublishReturned
from .transports.amqp.settings import AMQPSettings, parse_amqp_settings

__all__ = [
    "Publisher",
    "TwistedPublisher",
    "BrokerUnreachable",
    "PublishRefused",
    "PublishReturned",
    "settings_from_url",
    "connect_blocking",
]


def settings_from_url(url: str) -> AMQPSettings:
    """Settings for one broker URL (C{amqp://user:password@host:port/vhost}, or amqps)."""
    return parse_amqp_settings({"url": url}, "<url>")


def _settings(url: str | None, settings: AMQPSettings | None) -> AMQPSettings:
    if (url is None) == (settings is None):
        raise TypeError("give a broker url or settings, not both or neither")
    return settings if settings is not None else settings_from_url(url)  # type: ignore[arg-type]


def _encode(message: Message, settings: AMQPSettings) -> bytes:
    body = codec.encode(message)
    if len(body) > settings.max_message_size:
        raise EncodeError(
            f"{message.wire_name}: {len(body)} bytes is over the limit of {settings.max_message_size}"
        )
    return body


# Errors after which the connection is unusable and a new one may succeed.
_CONNECTION_ERRORS = (
    pika_errors.AMQPConnectionError,
    pika_errors.ConnectionWrongStateError,
    pika_errors.ChannelWrongStateError,
    pika_errors.ChannelClosed,
    pika_errors.StreamLostError,
)


class Publisher:
    """
    A blocking, confirmed publisher on pika's BlockingConnection.

    Thread use: a Publisher is one AMQP connection, and pika's blocking connection is not
    thread-safe. Make one per thread (a C{threading.local}), or share one behind your own
    lock; using one from two threads at once raises C{RuntimeError} rather than corrupting
    the connection. An idle connection the broker dropped (its heartbeat went unanswered
    while nothing was published) is reopened by the next publish.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: AMQPSettings | None = None,
        connect_timeout: float = 10.0,
        connection_name: str = "scbus publisher",
    ) -> None:
        self.settings = _settings(url, settings)
        self._timeout = connect_timeout
        self._name = connection_name
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._declared: set[str] = set()
        self._busy = threading.Lock()

    def __enter__(self) -> Publisher:
        with self._in_use():
            self._open()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def _in_use(self) -> Iterator[None]:
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(
                "this Publisher is in use by another thread: make one per thread, or guard it with a lock"
            )
        try:
            yield
        finally:
            self._busy.release()

    def _open(self) -> Any:
        connection = self._connection
        if connection is not None and connection.is_open and self._channel is not None and self._channel.is_open:
            try:
                connection.process_data_events(0)  # answers heartbeats; notices a dropped connection
                if self._channel.is_open:
                    return self._channel
            except _CONNECTION_ERRORS:
                pass
        self._drop()
        self._connection = connect_blocking(self.settings, self._timeout, self._name)
        self._channel = self._connection.channel()
        self._channel.confirm_delivery()
        return self._channel

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._declared.clear()
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:
                pass

    def publish(self, message: Message) -> str:
        """
        Publish C{message} to its type's exchange and wait for the broker's confirm.
        Answers the message id.

        @raise EncodeError: a value cannot travel (one JSON cannot carry; an id or
            correlation id over 255 bytes of UTF-8, a created_at outside the AMQP
            timestamp range), or the body is too large. Nothing is sent then.
        @raise PublishReturned: nothing routes it (no bus has declared scbus.unrouted yet).
        @raise PublishRefused: the broker refused it.
        @raise BrokerUnreachable: no broker accepted the connection.
        """
        body = _encode(message, self.settings)
        properties = pika.BasicProperties(**topology.message_properties(message))
        with self._in_use():
            try:
                self._send(message.wire_name, body, properties)
            except _CONNECTION_ERRORS:
                # The connection went away under us; the broker may or may not have the
                # message (at least once: consumers tolerate a duplicate). Try once more.
                self._drop()
                self._send(message.wire_name, body, properties)
        return message.id

    def _send(self, wire_name: str, body: bytes, properties: pika.BasicProperties) -> None:
        channel = self._open()
        exchange = topology.type_exchange(wire_name)
        if exchange not in self._declared:
            channel.exchange_declare(exchange, "fanout", durable=True, arguments=topology.exchange_arguments())
            self._declared.add(exchange)
        try:
            channel.basic_publish(exchange, "", body, properties, mandatory=True)
        except pika_errors.UnroutableError:
            raise PublishReturned(
                f"the broker returned {wire_name}: nothing routes it (has a bus declared its topology?)"
            ) from None
        except pika_errors.NackError:
            raise PublishRefused(f"the broker refused {wire_name} (basic.nack)") from None

    def close(self) -> None:
        """Close the connection (publishing again opens a new one)."""
        self._drop()


class TwistedPublisher:
    """
    A confirmed publisher for Twisted programs, on the transport's own pika client and
    broker endpoint (TLS and cluster addresses as the bus uses them). It connects on the
    first publish and again after a lost connection; publishes made meanwhile wait for it.
    Use it from the reactor thread.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: AMQPSettings | None = None,
        reactor: IBusReactor | None = None,
        connection_name: str = "scbus publisher",
    ) -> None:
        if reactor is None:
            reactor = running_reactor()
        self.settings = _settings(url, settings)
        self._reactor = reactor
        self._name = connection_name
        self._connection: Any = None
        self._channel: Any = None
        self._declared: set[str] = set()
        self._waiters: list[Deferred[Any]] | None = None

    def publish(self, message: Message) -> Deferred[str]:
        """Fires with the message id once the broker confirmed it; fails as L{Publisher.publish} raises."""
        try:
            body = _encode(message, self.settings)
        except EncodeError:
            return fail()
        return Deferred.fromCoroutine(self._publish(message, body))

    async def _publish(self, message: Message, body: bytes) -> str:
        channel = await self._open()
        exchange = topology.type_exchange(message.wire_name)
        if exchange not in self._declared:
            await channel.exchange_declare(exchange, "fanout", durable=True, arguments=topology.exchange_arguments())
            if channel is self._channel:
                self._declared.add(exchange)
        await channel.publish(exchange, "", body, Properties(**topology.message_properties(message)), mandatory=True)
        return message.id

    def _open(self) -> Deferred[Any]:
        """The open confirmed channel; concurrent callers share one connection attempt."""
        if self._channel is not None and self._channel.is_open:
            return succeed(self._channel)
        waiter: Deferred[Any] = Deferred()
        if self._waiters is None:
            self._waiters = [waiter]
            Deferred.fromCoroutine(self._connect()).addBoth(self._opened)
        else:
            self._waiters.append(waiter)
        return waiter

    def _opened(self, result: Any) -> None:
        waiters, self._waiters = self._waiters or [], None
        failed = isinstance(result, Failure)
        if not failed:
            self._channel = result
            self._declared = set()
        for waiter in waiters:
            waiter.errback(result) if failed else waiter.callback(result)

    async def _connect(self) -> Any:
        from .transports.amqp.endpoints import broker_endpoint
        from .transports.amqp.pika_client import pika_factory

        connection = self._connection
        if connection is None or not connection.is_open:
            endpoint = broker_endpoint(self.settings, self._reactor)
            errors = []
            for _ in self.settings.addresses:  # the endpoint tries the next address each time
                try:
                    connection = await endpoint.connect(pika_factory(self.settings, self._reactor, self._name))
                    break
                except Exception as e:
                    errors.append(f"{type(e).__name__} {e}".strip())
            else:
                raise BrokerUnreachable("; ".join(errors))
            if connection.ready is not None:
                await connection.ready
            self._connection = connection
            connection.when_lost().addCallback(self._lost, connection)
        channel = await connection.channel()
        await channel.confirm()
        return channel

    def _lost(self, reason: Any, connection: Any) -> None:
        if self._connection is connection:
            self._connection = None
            self._channel = None

    def close(self) -> Deferred[Any]:
        """Close the connection; fires when it is gone."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is None:
            return succeed(None)
        return connection.close()
