"""
The holding areas every bus shares on the broker: ``scbus.unrouted`` (messages no app
subscribes to) and ``scbus.dead`` (bodies set aside with their reason); each process's
log of what lands in the first, the report of what the broker sets aside on its own in
the second, and listing and replaying both from the console.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ... import codec
from ...errors import EncodeError, NotRunning, ReplayRefused, TransportError
from ...interfaces import ISetAside, ISetAsideStores
from ...message import AppErrorOccurredMessage, Message
from ..setaside import DEAD, UNROUTED, SetAsideMessage, replay_refusal
from . import topology
from .client import IAMQPChannel, RawDelivery, persistent_copy
from .publisher import Outgoing
from .readloop import acknowledger, read_loop
from .session import Session, passive_count

if TYPE_CHECKING:
    from .settings import AMQPSettings

__all__ = ["HoldingAreas", "SET_ASIDE_LIMIT"]

log = Logger()

#: How many set-aside messages one listing or replay looks through.
SET_ASIDE_LIMIT = 500


@implementer(ISetAsideStores)
class HoldingAreas:
    """
    Declares the holding areas on each session, logs and reports what lands in them,
    and lists and replays their contents.

    @param publish: sends an L{Outgoing} (the transport's publisher).
    @param send: sends a message (for the reports of what the broker set aside).
    @param current: the session in use now, if any.
    @param process_id: names this process's own queues.
    @param subscribed: whether an app of this process takes a class (a replay of an
        unrouted message nobody here takes is refused unless forced).
    """

    def __init__(
        self,
        settings: AMQPSettings,
        publish: Callable[[Outgoing], Deferred[None]],
        send: Callable[[Message], Deferred[None]],
        current: Callable[[], Session | None],
        process_id: str,
        subscribed: Callable[[type[Message]], bool] = lambda cls: False,
    ) -> None:
        self.settings = settings
        self._subscribed = subscribed
        self._process_id = process_id
        self._publish = publish
        self._send = send
        self._current = current
        #: While tracing: makes a replay's span and the context it goes with (ITraceCarrier).
        self.replay_hook: Any = None

    async def declare(self, session: Session) -> None:
        """
        scbus.unrouted and scbus.dead. They are shared by every app and process, so one
        that exists is used as it is (whatever its queue type); a missing one is made.
        And this process's scbus.discard.<process>, which keeps heartbeat answers no app takes out of the first.
        """
        channel = session.topology
        assert channel is not None
        qtype = self.settings.queue_type
        for exchange, queue in (
            (topology.UNROUTED_EXCHANGE, topology.UNROUTED_QUEUE),
            (topology.DEAD_EXCHANGE, topology.DEAD_QUEUE),
            (topology.DEAD_EXCHANGE, topology.DEAD_WATCH_QUEUE),
        ):
            await channel.exchange_declare(exchange, "fanout", durable=True)
            try:
                await passive_count(session, queue)
            except Exception:
                await channel.queue_declare(queue, durable=True, arguments=topology.holding_queue_arguments(qtype))
            await channel.queue_bind(queue, exchange)
        discard = f"{topology.DISCARD_QUEUE}.{self._process_id}"
        await channel.queue_declare(
            discard, durable=False, exclusive=True, auto_delete=True, arguments=topology.discard_queue_arguments()
        )
        for wire_name in topology.DISCARDED_WHEN_UNROUTED:
            exchange = topology.type_exchange(wire_name)
            await channel.exchange_declare(exchange, "fanout", durable=True, arguments=topology.exchange_arguments())
            await channel.queue_bind(discard, exchange)

    async def start_unrouted_log(self, session: Session) -> None:
        """Every process logs what lands in scbus.unrouted, from its own transient queue."""
        channel = await session.connection.channel()
        name = f"scbus.unrouted.log.{uuid.uuid4().hex[:12]}"
        await channel.queue_declare(name, durable=False, exclusive=True, auto_delete=True, arguments={"x-max-length": 1000})
        await channel.queue_bind(name, topology.UNROUTED_EXCHANGE)
        consumer = await channel.consume(name, exclusive=True)
        read_loop("unrouted log", consumer, lambda raw: self._log_unrouted(raw, channel), acknowledger(channel))

    def _log_unrouted(self, raw: RawDelivery, channel: IAMQPChannel) -> None:
        channel.ack(raw.delivery_tag)
        type_name = _text(raw.properties.type) or codec.peek_type(raw.body) or "?"
        log.warn(
            "unrouted: no app subscribes to {type} (id {id}); kept in queue {queue} "
            "(list and replay it from the console)",
            type=type_name, id=_text(raw.properties.message_id), queue=topology.UNROUTED_QUEUE,
        )

    async def start_dead_watch(self, session: Session) -> None:
        channel = await session.connection.channel()
        await channel.qos(10)
        consumer = await channel.consume(topology.DEAD_WATCH_QUEUE)
        read_loop(topology.DEAD_WATCH_QUEUE, consumer, lambda raw: self._watch_dead(raw, channel), acknowledger(channel))

    def _watch_dead(self, raw: RawDelivery, channel: IAMQPChannel) -> None:
        """
        The broker dead-lettered a message on its own (a quorum queue's delivery limit: its
        consumer died or hung on it every time). Say so, once, as an error message.

        This queue holds copies (scbus.dead has the original), so a copy that cannot be
        reported is acknowledged, never handed back to come round again.
        """
        headers = raw.properties.headers if isinstance(raw.properties.headers, dict) else {}
        deaths = headers.get("x-death") or []
        report = None
        if raw.property_error is not None:
            log.error("{queue}: a dead letter whose properties cannot be decoded ({error}); kept in {dead}",
                      queue=topology.DEAD_WATCH_QUEUE, error=raw.property_error, dead=topology.DEAD_QUEUE)
        elif deaths and topology.REASON_HEADER not in headers:
            death = deaths[0]
            queue = _text(death.get("queue")) or ""
            app = queue[len("scbus.app."):] if queue.startswith("scbus.app.") else queue
            reason = _text(death.get("reason")) or "?"
            if reason == "delivery_limit":
                text = (
                    f"quarantined: delivered more than {self.settings.delivery_limit} times without "
                    "being acknowledged (its consumer died or hung on it each time); set aside in "
                    f"{topology.DEAD_QUEUE}, replay it from the console once the cause is fixed"
                )
            else:
                text = f"dead-lettered by the broker ({reason}); set aside in {topology.DEAD_QUEUE}"
            log.error("{app}: {text} (id {id})", app=app, text=text, id=_text(raw.properties.message_id))
            report = AppErrorOccurredMessage(
                app_name=app,
                message=codec.embeddable(raw.body, max_bytes=self.settings.max_message_size // 2),
                error=text,
                error_type="scbus.Quarantined" if reason == "delivery_limit" else "scbus.DeadLettered",
                traceback=[],
                log=[],
            )
        if report is None:
            channel.ack(raw.delivery_tag)
            return

        def not_sent(failure: Failure) -> None:
            if not channel.is_open:
                return  # the broker gives it back to whoever reads next
            if failure.check(NotRunning) or (failure.check(TransportError) and not failure.check(EncodeError)):
                channel.nack(raw.delivery_tag, requeue=True)  # the broker is away: report it later
                return
            log.error("{queue}: could not report a dead letter ({error}); it stays in {dead}",
                      queue=topology.DEAD_WATCH_QUEUE, error=failure.getErrorMessage(), dead=topology.DEAD_QUEUE)
            channel.ack(raw.delivery_tag)

        self._send(report).addCallbacks(lambda _: channel.ack(raw.delivery_tag) if channel.is_open else None, not_sent)

    def set_aside(self, kind: str) -> Deferred[list[ISetAside]]:
        return Deferred.fromCoroutine(self._browse(kind, None))

    def replay(self, kind: str, entry_id: str, force: bool = False) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._browse(kind, entry_id, force))

    async def _browse(self, kind: str, replay_id: str | None, force: bool = False) -> Any:
        queue = {UNROUTED: topology.UNROUTED_QUEUE, DEAD: topology.DEAD_QUEUE}.get(kind)
        if queue is None:
            raise ValueError(f"kind must be {UNROUTED!r} or {DEAD!r}, not {kind!r}")
        session = self._current()
        if session is None or not session.ready:
            raise TransportError("not connected to the broker")
        channel = await session.connection.channel()
        entries: list[SetAsideMessage] = []
        try:
            for _ in range(SET_ASIDE_LIMIT):
                raw = await channel.get(queue)
                if raw is None:
                    break
                entry = set_aside_entry(kind, raw)
                if replay_id is None:
                    entries.append(entry)
                    continue
                if entry.id != replay_id:
                    continue
                refusal = None if force else replay_refusal(
                    kind, entry, self._subscribed, self.settings.max_message_size, self.settings.max_nesting
                )
                if refusal is not None:
                    raise ReplayRefused(refusal)  # the channel closes: it goes back to its queue
                await self._republish(kind, raw, entry)
                channel.ack(raw.delivery_tag)
                return True
        finally:
            if channel.is_open:
                # Whatever was looked at goes back to the queue, before the next listing
                # looks (one right after this one found the queue empty otherwise).
                await channel.close().addErrback(lambda f: None)
        return entries if replay_id is None else False

    async def _republish(self, kind: str, raw: RawDelivery, entry: SetAsideMessage) -> None:
        clean = persistent_copy(raw.properties, topology.replay_headers(raw.properties.headers))
        route = topology.replay_route(kind, entry.type_name, entry.app_name)
        if route is None:
            raise TransportError(f"cannot tell the type of {entry.id}; it stays in {kind}")
        exchange, routing_key = route
        declare = entry.type_name if exchange else None
        if self.replay_hook is None:
            await self._publish(Outgoing(exchange, routing_key, raw.body, clean, declare))
            return
        attributes: dict[str, Any] = {"messaging.destination.name": exchange}
        if routing_key:
            attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
        context, ended = self.replay_hook(kind, entry, raw.properties.headers, attributes)
        kept = {k: v for k, v in (clean.headers or {}).items() if k not in ("traceparent", "tracestate")}
        clean.headers = {**kept, **context} or None
        try:
            await self._publish(Outgoing(exchange, routing_key, raw.body, clean, declare))
        except Exception:
            ended(Failure())
            raise
        ended(None)



def _text(value: Any) -> str | None:
    """A property or header value as text for logs and reports, whatever a producer put there."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def set_aside_entry(kind: str, raw: RawDelivery) -> SetAsideMessage:
    try:
        return _read_entry(kind, raw)
    except Exception as e:  # headers no scbus process wrote: list it all the same
        return SetAsideMessage(
            body=raw.body, reason=f"its headers cannot be read ({type(e).__name__})", code=kind,
            type_name=None, at=0.0, id=hashlib.sha1(raw.body).hexdigest()[:16],
        )


def _read_entry(kind: str, raw: RawDelivery) -> SetAsideMessage:
    headers = raw.properties.headers if isinstance(raw.properties.headers, dict) else {}
    type_name = headers.get(topology.TYPE_HEADER) or raw.properties.type or codec.peek_type(raw.body)
    app_name = headers.get(topology.APP_HEADER)
    code: str | None
    reason: str | None
    if kind == UNROUTED:
        code, reason = UNROUTED, f"no app subscribes to {type_name}"
    else:
        code = headers.get(topology.REASON_HEADER)
        reason = headers.get(topology.ERROR_HEADER)
        deaths = headers.get("x-death") or []
        if code is None and deaths:
            first = deaths[0]
            code = str(first.get("reason", "dead"))
            reason = f"dead-lettered by the broker ({code}) from {first.get('queue')}"
            queue = str(first.get("queue", ""))
            if queue.startswith("scbus.app."):
                app_name = queue[len("scbus.app."):]
        code = code or "dead"
        reason = reason or "dead-lettered"
    entry_id = raw.properties.message_id or hashlib.sha1(raw.body).hexdigest()[:16]
    at = _set_aside_at(headers) or (float(raw.properties.timestamp) if raw.properties.timestamp else 0.0)
    return SetAsideMessage(
        body=raw.body, reason=str(reason), code=str(code), type_name=type_name,
        app_name=str(app_name) if app_name else None, at=at, id=entry_id,
    )


def _set_aside_at(headers: dict[str, Any]) -> float | None:
    """
    When it was set aside: the time the bus wrote, or when the broker dead-lettered it
    (x-death's time); None for an unrouted message (its age counts from its creation).
    """
    written = headers.get(topology.SET_ASIDE_AT_HEADER)  # milliseconds
    if isinstance(written, int) and not isinstance(written, bool) and written > 0:
        return written / 1000
    deaths = headers.get("x-death") or []
    moment = deaths[0].get("time") if deaths and isinstance(deaths[0], dict) else None
    if isinstance(moment, datetime.datetime):  # pika gives AMQP timestamps as naive UTC datetimes
        return moment.replace(tzinfo=moment.tzinfo or datetime.timezone.utc).timestamp()
    if isinstance(moment, (int, float)) and not isinstance(moment, bool) and moment > 0:
        return float(moment)
    return None
