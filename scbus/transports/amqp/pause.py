"""
Pausing an app over RabbitMQ: a paused process holds nothing back, and a pause made
everywhere outlives the processes that heard it.

Holding. A paused app's consumer is cancelled (basic.cancel, so the broker sends no
more) and every delivery that had arrived but was not handed to a handler is given back
(basic.nack with requeue, on the channel it came on): the app's other processes take
them at once. Deliveries in flight finish and are acknowledged on their channel as
usual. Resuming consumes again on the same channel.

Marking. A pause everywhere is kept on the broker, where a process that starts later
finds it: the durable queue ``scbus.paused.<app>`` (``x-max-length = 1``) holds one
message while the app is paused. A process reads it (the ready count of an idempotent
declare) before it consumes an app's queue, and again once its control channel is up,
so a pause broadcast it missed while connecting is not lost; the observer hears every
change it reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .client import IAMQPChannel, IAMQPConnection, IAMQPConsumer, Properties

__all__ = ["AppPauses", "marker_queue", "marker_arguments"]

log = Logger()


def marker_queue(app_name: str) -> str:
    """The queue that holds one message while C{app_name} is paused everywhere."""
    return f"scbus.paused.{app_name}"


def marker_arguments(queue_type: str) -> dict[str, Any]:
    return {"x-queue-type": queue_type, "x-max-length": 1}


def marker_body(by: str) -> bytes:
    return json.dumps({"paused_by": by, "at": time.time()}).encode("utf-8")


class AppPauses:
    """
    The pause side of L{AMQPTransport}. It works on the transport's per-app records
    (C{channel}, C{consumer}, C{waiters}, C{held}) and asks it to hand deliveries to
    waiting requests again (C{attach}).
    """

    def __init__(self, queue_type: str, attach: Callable[[Any, Any], None], process: str) -> None:
        self.queue_type = queue_type
        self._attach = attach
        self._process = process
        self._observer: Callable[[str, bool], None] | None = None
        self._marked: dict[str, bool] = {}

    def observe(self, observer: Callable[[str, bool], None]) -> None:
        """C{observer(app_name, paused)} hears each change of an app's mark."""
        self._observer = observer

    # --- marks -------------------------------------------------------------------------------

    async def read_mark(self, connection: IAMQPConnection, app_name: str) -> bool:
        channel = await connection.channel()
        try:
            ready = await channel.queue_declare(
                marker_queue(app_name), durable=True, arguments=marker_arguments(self.queue_type)
            )
        finally:
            if channel.is_open:
                channel.close()
        self._note(app_name, ready > 0)
        return ready > 0

    def recheck(self, connection: IAMQPConnection, app_names: list[str]) -> None:
        """Read every app's mark again (once the control channel listens)."""
        for name in app_names:
            Deferred.fromCoroutine(self.read_mark(connection, name)).addErrback(
                lambda f, n: log.warn("{app}: could not read its pause mark ({error})", app=n, error=f.getErrorMessage()),
                name,
            )

    def _note(self, app_name: str, marked: bool) -> None:
        if self._marked.get(app_name, False) == marked:
            return
        self._marked[app_name] = marked
        if self._observer is not None:
            self._observer(app_name, marked)

    async def write_mark(self, connection: IAMQPConnection, app_name: str, paused: bool) -> None:
        """Pause (one persistent, confirmed message) or resume (take it away) everywhere."""
        channel = await connection.channel()
        try:
            queue = marker_queue(app_name)
            await channel.queue_declare(queue, durable=True, arguments=marker_arguments(self.queue_type))
            if paused:
                await channel.confirm()
                props = Properties(content_type="application/json", delivery_mode=2)
                await channel.publish("", queue, marker_body(self._process), props, mandatory=True)
            else:
                # The queue holds at most one ready mark (x-max-length 1): take that one.
                # Getting until empty would also take a pause written meanwhile by
                # another process, and leave it announced but not kept.
                raw = await channel.get(queue)
                if raw is not None:
                    channel.ack(raw.delivery_tag)
        finally:
            if channel.is_open:
                channel.close()
        self._note(app_name, paused)

    # --- holding -----------------------------------------------------------------------------

    async def consume(self, connection: IAMQPConnection, app: Any, channel: IAMQPChannel) -> IAMQPConsumer | None:
        """The app's consumer, or None while it is held (paused here, or marked paused)."""
        await self.read_mark(connection, app.name)
        if app.held:
            return None
        consumer = await channel.consume(app.queue)
        if app.held:  # paused while the broker answered
            await self._give_back(app, consumer)
            return None
        return consumer

    async def hold(self, app: Any) -> int:
        """Stop the app's consumer and give back what it received but did not hand over."""
        app.held = True
        consumer, app.consumer = app.consumer, None
        if consumer is None or app.channel is None or not app.channel.is_open:
            return 0
        return await self._give_back(app, consumer)

    async def _give_back(self, app: Any, consumer: IAMQPConsumer) -> int:
        arrived = await consumer.cancel()
        for raw in arrived:
            if raw.channel.is_open:
                raw.channel.nack(raw.delivery_tag, requeue=True)
        if arrived:
            log.info("{app}: paused; gave {n} prefetched delivery(ies) back to the queue", app=app.name, n=len(arrived))
        return len(arrived)

    async def unhold(self, app: Any) -> None:
        app.held = False
        channel = app.channel
        if channel is None or not channel.is_open or app.consumer is not None:
            return  # not consuming now: the next set-up consumes
        consumer = await channel.consume(app.queue)
        if app.held or app.channel is not channel:
            await self._give_back(app, consumer)
            return
        app.consumer = consumer
        for waiter in list(app.waiters):
            if id(waiter) not in app.inner:
                self._attach(app, waiter)

    def failed(self, failure: Failure, app_name: str, what: str) -> None:
        log.warn("{app}: {what} failed ({error})", app=app_name, what=what, error=failure.getErrorMessage())
