"""
One live process runs an app's idle handlers: a lease held through RabbitMQ's single
active consumer.

Per app, a durable lock queue ``scbus.idle.<app>`` declared with
``x-single-active-consumer`` (the broker hands messages to one consumer only) and
``x-max-length = 1`` (tokens never pile up: only ready messages count). Every process
consumes it with prefetch 1 and publishes one token on each connection. Only the active
consumer receives a token, and it keeps it unacknowledged for as long as it lives:
holding the token is holding the lease. When its channel or connection closes (the
process died, or stopped answering and the broker's heartbeat check dropped it), the
broker requeues the token and makes the next consumer active, which receives it.

A process that loses its connection gives the lease up at once: it cannot know whether
it still holds it. Before each run it also checks that the broker was heard from within
the heartbeat, so a process that was stopped (SIGSTOP) and wakes up does not run a tick
it no longer owns before it has read that its connection is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ...interfaces import IIdleLease
from .client import IAMQPChannel, IAMQPConnection, IAMQPConsumer, Properties, RawDelivery, reason_text

__all__ = ["IdleLeases", "IdleLease", "lease_queue"]

log = Logger()

#: Seconds before a lease channel that closed on its own (not with the connection) is reopened.
REOPEN_DELAY = 1.0


def lease_queue(app_name: str) -> str:
    """The lock queue whose active consumer runs C{app_name}'s idle handlers."""
    return f"scbus.idle.{app_name}"


def lease_arguments(queue_type: str) -> dict[str, Any]:
    return {"x-queue-type": queue_type, "x-single-active-consumer": True, "x-max-length": 1}


@implementer(IIdleLease)
class IdleLease:
    """This process's claim on one app's lease; C{on_change(held)} hears every change."""

    def __init__(self, owner: IdleLeases, app_name: str, on_change: Callable[[bool], None]) -> None:
        self._owner = owner
        self.app_name = app_name
        self.queue = lease_queue(app_name)
        self._on_change = on_change
        self._held = False
        self._channel: IAMQPChannel | None = None
        self._connection: IAMQPConnection | None = None
        self.wanted = True

    @property
    def held(self) -> bool:
        """This process holds the token (whatever the connection's freshness)."""
        return self._held

    def holds(self) -> bool:
        """Hold the token, on an open channel, of a connection heard from within the heartbeat."""
        channel, connection = self._channel, self._connection
        if not self._held or channel is None or connection is None or not channel.is_open:
            return False
        heartbeat = self._owner.heartbeat
        if heartbeat <= 0:
            return True
        silent = self._owner.clock.seconds() - getattr(connection, "last_received", self._owner.clock.seconds())
        return silent <= heartbeat

    def _set(self, held: bool) -> None:
        if held == self._held:
            return
        self._held = held
        log.info(
            "{app}: {what}", app=self.app_name,
            what="this process runs the idle handlers" if held else "idle handlers given up by this process",
        )
        try:
            self._on_change(held)
        except Exception:
            log.failure("{app}: the idle lease observer failed", app=self.app_name)

    # --- on the broker ----------------------------------------------------------------------

    def start(self, connection: IAMQPConnection) -> None:
        if not self.wanted:
            return
        self._connection = connection
        Deferred.fromCoroutine(self._claim(connection)).addErrback(self._claim_failed, connection)

    async def _claim(self, connection: IAMQPConnection) -> None:
        channel = await connection.channel()
        if self._connection is not connection:
            channel.close()
            return
        self._channel = channel
        channel.closed.addBoth(self._closed, connection, channel)
        await channel.queue_declare(self.queue, durable=True, arguments=lease_arguments(self._owner.queue_type))
        await channel.qos(1)
        consumer = await channel.consume(self.queue)
        self._next(channel, consumer)
        # A token for the queue: with x-max-length 1 the newest ready one is kept, and the
        # one the holder keeps unacknowledged comes back to the queue when it goes.
        await channel.publish("", self.queue, b"{}", Properties(content_type="application/json"))

    def _claim_failed(self, failure: Failure, connection: IAMQPConnection) -> None:
        if self._connection is connection and connection.is_open:
            log.warn("{app}: could not claim the idle lease ({error}); trying again",
                     app=self.app_name, error=failure.getErrorMessage())
            channel, self._channel = self._channel, None
            if channel is not None and channel.is_open:
                channel.close()
            self._owner.clock.callLater(REOPEN_DELAY, self._retry, connection)

    def _retry(self, connection: IAMQPConnection) -> None:
        if self.wanted and self._connection is connection and connection.is_open and self._channel is None:
            self.start(connection)

    def _next(self, channel: IAMQPChannel, consumer: IAMQPConsumer) -> None:
        consumer.get().addCallbacks(
            self._token, self._consumer_gone, callbackArgs=(channel, consumer), errbackArgs=(channel,)
        )

    def _token(self, raw: RawDelivery, channel: IAMQPChannel, consumer: IAMQPConsumer) -> None:
        if channel is not self._channel:
            return
        if self._held:
            channel.ack(raw.delivery_tag)  # a spare token: one is enough
        else:
            self._set(True)
        self._next(channel, consumer)

    def _consumer_gone(self, failure: Failure, channel: IAMQPChannel) -> None:
        # The broker cancelled the consumer (the queue was deleted): start over.
        if channel is self._channel and channel.is_open:
            log.warn("{app}: idle lease consumer cancelled ({error})", app=self.app_name, error=failure.getErrorMessage())
            channel.close()

    def _closed(self, reason: Any, connection: IAMQPConnection, channel: IAMQPChannel) -> None:
        if channel is not self._channel:
            return
        self._channel = None
        self._set(False)
        if self.wanted and self._connection is connection and connection.is_open:
            log.warn("{app}: idle lease channel closed ({reason}); claiming again",
                     app=self.app_name, reason=reason_text(reason))
            self._owner.clock.callLater(REOPEN_DELAY, self._retry, connection)

    def release(self) -> None:
        """Hand the lease to another process (this one paused the app): close its channel."""
        self.wanted = False
        channel, self._channel = self._channel, None
        self._connection = None
        self._set(False)
        if channel is not None and channel.is_open:
            channel.close()

    def lost(self) -> None:
        """The connection is gone: give the lease up now."""
        self._connection = None
        self._channel = None
        self._set(False)


class IdleLeases:
    """The idle leases of one process, claimed again on every new connection."""

    def __init__(self, clock: IReactorTime, heartbeat: float, queue_type: str = "classic") -> None:
        self.clock = clock
        self.heartbeat = heartbeat
        self.queue_type = queue_type
        self._leases: dict[str, IdleLease] = {}
        self._connection: IAMQPConnection | None = None

    def want(self, app_name: str, on_change: Callable[[bool], None]) -> IdleLease:
        """Claim C{app_name}'s lease (now if connected, else on connecting)."""
        lease = self._leases.get(app_name)
        if lease is None:
            lease = self._leases[app_name] = IdleLease(self, app_name, on_change)
        elif lease.wanted:
            return lease
        lease.wanted = True
        if self._connection is not None and self._connection.is_open:
            lease.start(self._connection)
        return lease

    def get(self, app_name: str) -> IdleLease | None:
        return self._leases.get(app_name)

    def connected(self, connection: IAMQPConnection) -> None:
        self._connection = connection
        for lease in self._leases.values():
            lease.start(connection)

    def disconnected(self, connection: IAMQPConnection | None = None) -> None:
        """C{connection} (or, with None, whichever was in use) is gone or going."""
        if connection is not None and connection is not self._connection:
            return
        self._connection = None
        for lease in self._leases.values():
            lease.lost()
