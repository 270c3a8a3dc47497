"""
The AMQP side of the control plane (see scbus/control.py): a channel of its own per
session, an exclusive queue bound to the ``scbus.control`` exchange for requests and
another for the answers to this process's own requests.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ... import codec
from ...control import CONTROL_EXCHANGE
from ...errors import TransportError
from .client import IAMQPChannel, IAMQPConsumer, Properties, RawDelivery, reason_text

__all__ = ["ControlPlane"]

log = Logger()


class ControlPlane:
    """Mixed into AMQPTransport: serve_control() and ask()."""

    def serve_control(self, handler: Any) -> None:
        self._control = handler

    async def _start_control(self, session: Any) -> None:
        """
        A channel of its own, an exclusive queue bound to the control exchange for
        requests, another for answers to our own requests: nothing here waits behind
        app messages.
        """
        channel = await session.connection.channel()
        await channel.exchange_declare(CONTROL_EXCHANGE, "fanout", durable=True)
        requests_queue = f"scbus.control.{self._process_id}"
        replies_queue = f"scbus.reply.{self._process_id}"
        for queue in (requests_queue, replies_queue):
            await channel.queue_declare(queue, durable=False, exclusive=True, auto_delete=True)
        await channel.queue_bind(requests_queue, CONTROL_EXCHANGE)
        requests = await channel.consume(requests_queue, exclusive=True)
        replies = await channel.consume(replies_queue, exclusive=True)
        session.control = channel
        session.replies_queue = replies_queue
        channel.closed.addBoth(self._control_closed, session, channel)
        self._next_request(session, channel, requests)
        self._next_reply(channel, replies)

    def _control_closed(self, reason: Any, session: Any, channel: IAMQPChannel) -> None:
        if self._usable(session) and session.control is channel:
            log.warn("AMQP control channel closed ({reason}); reopening", reason=reason_text(reason))
            session.control = None
            Deferred.fromCoroutine(self._start_control(session)).addErrback(self._session_broken, session)

    def _next_request(self, session: Any, channel: IAMQPChannel, consumer: IAMQPConsumer) -> None:
        consumer.get().addCallbacks(self._request, lambda f: None, callbackArgs=(session, channel, consumer))

    def _request(self, raw: RawDelivery, session: Any, channel: IAMQPChannel, consumer: IAMQPConsumer) -> None:
        channel.ack(raw.delivery_tag)
        self._next_request(session, channel, consumer)
        reply_to = raw.properties.reply_to
        try:
            request = json.loads(raw.body)
        except ValueError:
            log.warn("control: ignored a request that is not JSON")
            return
        if self._control is None or not reply_to:
            return
        d = maybeDeferred(self._control, request)

        def answer(reply: Any) -> None:
            if reply is None or not channel.is_open:
                return
            body = json.dumps(reply, default=repr).encode("utf-8")
            props = Properties(content_type=codec.CONTENT_TYPE, correlation_id=raw.properties.correlation_id)
            channel.publish("", reply_to, body, props)

        d.addCallback(answer).addErrback(lambda f: log.failure("control: answering failed", f))

    def _next_reply(self, channel: IAMQPChannel, consumer: IAMQPConsumer) -> None:
        consumer.get().addCallbacks(self._reply, lambda f: None, callbackArgs=(channel, consumer))

    def _reply(self, raw: RawDelivery, channel: IAMQPChannel, consumer: IAMQPConsumer) -> None:
        channel.ack(raw.delivery_tag)
        self._next_reply(channel, consumer)
        collected = self._asks.get(raw.properties.correlation_id or "")
        if collected is not None:
            try:
                collected.append(json.loads(raw.body))
            except ValueError:
                pass

    def ask(self, request: dict[str, Any], timeout: float) -> Deferred[list[dict[str, Any]]]:
        """Ask every live bus process (this one too); their answers after C{timeout} s."""
        session = self._session
        if session is None or not session.ready or session.control is None:
            return fail(TransportError("not connected to the broker"))
        correlation = uuid.uuid4().hex
        self._asks[correlation] = []
        body = json.dumps(request).encode("utf-8")
        props = Properties(
            content_type=codec.CONTENT_TYPE, correlation_id=correlation, reply_to=session.replies_queue
        )
        session.control.publish(CONTROL_EXCHANGE, "", body, props)
        return deferLater(self._reactor, timeout, self._asks.pop, correlation)
