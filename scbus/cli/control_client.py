"""
A plain blocking client of the control plane, for the ``scbus status`` and ``scbus ping``
commands: it needs no reactor and no running bus of its own.

It stops waiting as soon as the caller has every answer it expects, so a health check
costs milliseconds of broker time, not its whole timeout.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from ..broker_connection import BrokerUnreachable, connect_blocking
from ..control import CONTROL_EXCHANGE
from ..transports.amqp import topology
from ..transports.amqp.settings import AMQPSettings

__all__ = ["ControlClient", "BrokerUnreachable"]

Answer = tuple[float, dict[str, Any]]


class ControlClient:
    def __init__(self, settings: AMQPSettings, connect_timeout: float = 5.0) -> None:
        self.settings = settings
        self._connection = connect_blocking(settings, connect_timeout, "scbus status")

    def close(self) -> None:
        try:
            self._connection.close()
        except Exception:
            pass

    def ask(
        self,
        request: dict[str, Any],
        timeout: float,
        enough: Callable[[list[Answer]], bool] | None = None,
    ) -> list[Answer]:
        """
        The answers within C{timeout} seconds, each with its round trip in seconds; once
        C{enough(answers)} is true, those that came until a short quiet spell.
        """
        channel = self._connection.channel()
        channel.exchange_declare(CONTROL_EXCHANGE, "fanout", durable=True)
        reply_queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        correlation = uuid.uuid4().hex
        answers: list[Answer] = []
        start = time.monotonic()

        def on_reply(ch: Any, method: Any, props: Any, body: bytes) -> None:
            if props.correlation_id == correlation:
                try:
                    answers.append((time.monotonic() - start, json.loads(body)))
                except ValueError:
                    pass

        channel.basic_consume(reply_queue, on_reply, auto_ack=True)
        channel.basic_publish(
            CONTROL_EXCHANGE, "", json.dumps(request).encode("utf-8"),
            pika.BasicProperties(content_type="application/json", correlation_id=correlation, reply_to=reply_queue),
        )
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            if enough is not None and enough(answers):
                # Stragglers the caller could not count (a paused app's processes hold no
                # consumer; processes of other apps): a short quiet spell after the last
                # answer, a few times the round trip, ends the wait.
                last = answers[-1][0] if answers else 0.0
                quiet_until = start + last + min(1.0, max(0.1, 3 * last))
                left = min(left, quiet_until - time.monotonic())
                if left <= 0:
                    break
            # Returns as soon as a reply is ready to dispatch, or after the limit.
            self._connection.process_data_events(time_limit=min(0.5, left))
        channel.close()
        return answers

    def mark_paused(self, app: str, paused: bool, by: str = "scbus pause") -> None:
        """Keep (or drop) an app's pause on the broker (see transports/amqp/pause.py)."""
        from ..transports.amqp.pause import marker_arguments, marker_body, marker_queue

        channel = self._connection.channel()
        queue = marker_queue(app)
        channel.queue_declare(queue, durable=True, arguments=marker_arguments(self.settings.queue_type))
        if paused:
            channel.confirm_delivery()
            channel.basic_publish(
                "", queue, marker_body(by),
                pika.BasicProperties(content_type="application/json", delivery_mode=2), mandatory=True,
            )
        else:
            channel.queue_purge(queue)
        channel.close()

    def queue_facts(self, apps: list[str]) -> tuple[dict[str, int | None], dict[str, int | None]]:
        """(ready messages, consumers) of each app's queue; None where it does not exist."""
        queued: dict[str, int | None] = {}
        consumers: dict[str, int | None] = {}
        for app in apps:
            channel = self._connection.channel()
            try:
                frame = channel.queue_declare(topology.app_queue(app), passive=True)
                queued[app] = frame.method.message_count
                consumers[app] = frame.method.consumer_count
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:
                queued[app] = consumers[app] = None
        return queued, consumers
