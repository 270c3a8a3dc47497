"""
Keep one AMQP connection up: connect, set the session up, and on any failure or loss try
again with exponential backoff and jitter, across the configured broker addresses.

Twisted's ClientService is not used: when its prepareConnection hook fails (a refused
login, a refused declaration) and the connection then closes, its state machine raises
NoTransition for _clientDisconnected in the Waiting state. This loop is small enough to
own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["Reconnector"]

log = Logger()


class Reconnector:
    """
    @param on_connect: called with each new protocol; its Deferred fires when the session
        is ready (or fails, and the connection is dropped and retried).
    """

    def __init__(
        self,
        endpoint: Any,
        factory: Any,
        on_connect: Callable[[Any], Any],
        clock: IReactorTime,
        *,
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
    ) -> None:
        self._endpoint = endpoint
        self._factory = factory
        self._on_connect = on_connect
        self._clock = clock
        self._policy = backoffPolicy(initialDelay=initial_delay, maxDelay=max_delay)
        self._failures = 0
        self._running = False
        self._pending: Any = None
        self._connecting: Deferred[Any] | None = None
        self.protocol: Any = None

    def start(self) -> None:
        self._running = True
        self._attempt()

    def _attempt(self) -> None:
        self._pending = None
        if not self._running:
            return
        self._connecting = self._endpoint.connect(self._factory)
        self._connecting.addCallbacks(self._connected, self._connect_failed)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if self._running:
            log.info("AMQP connection attempt failed: {error}", error=failure.getErrorMessage())
            self._retry()

    def _connected(self, protocol: Any) -> None:
        self._connecting = None
        self.protocol = protocol
        protocol.when_lost().addCallback(self._lost, protocol)
        if not self._running:
            protocol.close()
            return
        maybeDeferred(self._on_connect, protocol).addCallbacks(
            self._ready, self._setup_failed, errbackArgs=(protocol,)
        )

    def _ready(self, _: Any) -> None:
        self._failures = 0

    def _setup_failed(self, failure: Failure, protocol: Any) -> None:
        if self._running:
            log.warn("AMQP session set-up failed: {error}", error=failure.getErrorMessage())
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _lost(self, reason: Any, protocol: Any) -> None:
        if self.protocol is protocol:
            self.protocol = None
        if self._running:
            self._retry()

    def _retry(self) -> None:
        if self._pending is not None:
            return
        delay = self._policy(self._failures)
        self._failures += 1
        log.info("AMQP: reconnecting in {delay:.1f}s (attempt {n})", delay=delay, n=self._failures)
        self._pending = self._clock.callLater(delay, self._attempt)

    def stop(self) -> Deferred[Any]:
        """Stop retrying; close the connection gracefully. Fires when it is gone."""
        self._running = False
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        protocol = self.protocol
        if protocol is None:
            return succeed(None)
        lost = protocol.when_lost()
        protocol.close()
        timer = self._clock.callLater(5, self._abort, protocol)
        lost.addBoth(lambda r: timer.cancel() if timer.active() else None)
        return lost

    @staticmethod
    def _abort(protocol: Any) -> None:
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abortConnection()
