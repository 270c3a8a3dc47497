"""
The AMQP side of the control plane (see scbus/control.py): a channel of its own per
session, an exclusive queue bound to the ``scbus.control`` exchange for requests and
another for the answers to this process's own requests.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ... import codec
from ...control import CONTROL_EXCHANGE
from ...errors import TransportError
from .client import IAMQPChannel, Properties, RawDelivery, reason_text
from .readloop import acknowledger, read_loop
from .session import Session

if TYPE_CHECKING:
    from ...reactors import IBusReactor

__all__ = ["ControlPlane"]

log = Logger()


class ControlPlane:
    """
    Serves control requests with a handler and asks every process, on the session's
    control channel.

    @param current: the session in use now, if any.
    @param usable: whether a session's connection is still up (a channel closing with
        it is not news).
    @param broken: called when the control channel cannot be opened again.
    """

    def __init__(
        self,
        process_id: str,
        clock: IBusReactor,
        current: Callable[[], Session | None],
        usable: Callable[[Session], bool],
        broken: Callable[[Failure, Session], None],
    ) -> None:
        self._process_id = process_id
        self._clock = clock
        self._current = current
        self._usable = usable
        self._broken = broken
        self._handler: Any = None
        self._asks: dict[str, list[dict[str, Any]]] = {}

    def serve(self, handler: Any) -> None:
        self._handler = handler

    async def start(self, session: Session) -> None:
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
        read_loop(requests_queue, requests, lambda raw: self._request(raw, channel), acknowledger(channel))
        read_loop(replies_queue, replies, lambda raw: self._reply(raw, channel), acknowledger(channel))

    def _control_closed(self, reason: Any, session: Session, channel: IAMQPChannel) -> None:
        if self._usable(session) and session.control is channel:
            log.warn("AMQP control channel closed ({reason}); reopening", reason=reason_text(reason))
            session.control = None
            Deferred.fromCoroutine(self.start(session)).addErrback(self._broken, session)

    def _request(self, raw: RawDelivery, channel: IAMQPChannel) -> None:
        channel.ack(raw.delivery_tag)
        reply_to = raw.properties.reply_to
        correlation_id = raw.properties.correlation_id
        request = _json_object(raw.body)
        if request is None:
            log.warn("control: ignored a request that is not a JSON object")
            return
        if self._handler is None or not isinstance(reply_to, str) or not reply_to:
            return
        d = maybeDeferred(self._handler, request)

        def answer(reply: Any) -> None:
            if reply is None or not channel.is_open:
                return
            body = json.dumps(reply, default=repr).encode("utf-8")
            props = Properties(
                content_type=codec.CONTENT_TYPE,
                correlation_id=correlation_id if isinstance(correlation_id, str) else None,
            )
            channel.publish("", reply_to, body, props)

        d.addCallback(answer).addErrback(lambda f: log.failure("control: answering failed", f))

    def _reply(self, raw: RawDelivery, channel: IAMQPChannel) -> None:
        channel.ack(raw.delivery_tag)
        correlation_id = raw.properties.correlation_id
        collected = self._asks.get(correlation_id) if isinstance(correlation_id, str) else None
        answer = _json_object(raw.body) if collected is not None else None
        if answer is not None and collected is not None:
            collected.append(answer)

    def ask(self, request: dict[str, Any], timeout: float) -> Deferred[list[dict[str, Any]]]:
        """Ask every live bus process (this one too); their answers after C{timeout} s."""
        session = self._current()
        if session is None or not session.ready or session.control is None:
            return fail(TransportError("not connected to the broker"))
        correlation = uuid.uuid4().hex
        self._asks[correlation] = []
        body = json.dumps(request).encode("utf-8")
        props = Properties(
            content_type=codec.CONTENT_TYPE, correlation_id=correlation, reply_to=session.replies_queue
        )
        session.control.publish(CONTROL_EXCHANGE, "", body, props)
        return deferLater(self._clock, timeout, self._asks.pop, correlation)


def _json_object(body: bytes) -> dict[str, Any] | None:
    """A control request or answer, if the body is one JSON object (anyone may publish here)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None

