"""
AMQPTransport: scbus over RabbitMQ, the way to outgrow one process or one machine.

Promises (each tested against a real broker):
- a message is persistent and ``send()`` fires only once the broker confirmed it; sends
  made while disconnected wait in a bounded buffer and go out after reconnecting;
- a delivery is acknowledged on the channel it came from, or not at all: after a
  reconnect the broker redelivers it (no ack on a channel that never saw the tag);
- undecodable bodies, unknown types and non-JSON content types are copied, with the
  reason in headers, to ``scbus.dead`` and acknowledged; the consumer goes on;
- messages nobody subscribes to land in ``scbus.unrouted`` (alternate exchange) and
  every bus process logs them.
"""

from __future__ import annotations

import itertools
import os
import socket
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ... import codec
from ...errors import (
    BadProperties,
    ContentTypeRefused,
    DecodeError,
    EncodeError,
    MalformedMessage,
    NotRunning,
    TransportError,
)
from ...interfaces import IDelivery, ITransport
from ...message import Message
from ...reactors import IBusReactor, running_reactor
from . import topology
from .connector import Reconnector
from .control_plane import ControlPlane
from .endpoints import broker_endpoint
from .holding import HoldingAreas
from .idle_lease import IdleLease, IdleLeases
from .pause import AppPauses
from .client import persistent_copy, reason_text, IAMQPChannel, IAMQPConnection, IAMQPConsumer, Properties, PublishRefused, PublishReturned, RawDelivery
from .settings import AMQPSettings

__all__ = ["AMQPTransport", "AMQPDelivery"]

log = Logger()



class _Refused(DecodeError):
    """A decoded message the app cannot take, set aside with the bus's own reason code."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.reason = code


@implementer(IDelivery)
class AMQPDelivery:
    __slots__ = ("_app", "raw", "message", "app_name", "redelivered", "received_at", "_settled")

    def __init__(self, app: _App, raw: RawDelivery, message: Message, received_at: float) -> None:
        self._app = app
        self.raw = raw
        self.message = message
        self.app_name = app.name
        self.redelivered = raw.redelivered
        self.received_at = received_at
        self._settled = False

    def _channel(self) -> IAMQPChannel | None:
        channel = self.raw.channel
        if self._settled or channel is not self._app.channel or not channel.is_open:
            return None
        return channel

    def ack(self) -> Deferred[None]:
        channel = self._channel()
        if channel is None:
            return fail(TransportError(
                f"{self.app_name}: the channel of delivery {self.raw.delivery_tag} is closed; "
                "the broker delivers it again"
            ))
        self._settled = True
        channel.ack(self.raw.delivery_tag)
        return succeed(None)

    def release(self) -> Deferred[None]:
        channel = self._channel()
        if channel is None:
            return succeed(None)  # the broker gives it back anyway
        self._settled = True
        channel.nack(self.raw.delivery_tag, requeue=True)
        return succeed(None)

    def reject(self, code: str, reason: str) -> Deferred[None]:
        if self._channel() is None:
            return succeed(None)
        self._settled = True
        return self._app.transport._dead_letter(self._app, self.raw, _Refused(code, reason))

    def __repr__(self) -> str:
        return f"<AMQPDelivery {self.app_name}#{self.raw.delivery_tag} {self.message!r}>"


class _App:
    def __init__(self, name: str, prefetch: int, transport: AMQPTransport) -> None:
        self.name = name
        self.transport = transport
        self.queue = topology.app_queue(name)
        self.prefetch = prefetch
        self.types: set[type[Message]] = set()
        self.channel: IAMQPChannel | None = None
        self.consumer: IAMQPConsumer | None = None
        self.session: int | None = None
        self.starting = False
        self.waiters: list[Deferred[AMQPDelivery]] = []
        self.inner: dict[int, Deferred[Any]] = {}
        self.setup_waiters: list[Deferred[None]] = []
        #: Wire names the queue is bound to on the current session.
        self.bound: set[str] = set()
        self.held = False  # paused: no consumer (see pause.py)


class _Outgoing:
    __slots__ = ("exchange", "routing_key", "body", "properties", "declare", "d", "deadline")
    deadline: float  # set when it is published

    def __init__(self, exchange: str, routing_key: str, body: bytes, properties: Properties, declare: str | None) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        self.declare = declare
        self.d: Deferred[None] = Deferred()


class _Session:
    def __init__(self, number: int, connection: IAMQPConnection) -> None:
        self.number = number
        self.connection = connection
        self.topology: IAMQPChannel | None = None
        self.publisher: IAMQPChannel | None = None
        self.exchanges: dict[str, Any] = {}  # name -> True, or the Deferreds waiting
        self.control: IAMQPChannel | None = None
        self.replies_queue = ""
        self.alive = True
        self.ready = False


class _DeclareFailed(TransportError):
    pass


class _Unencodable(TransportError):
    """The client raised while encoding a publish (properties it cannot write)."""


def _text_or_none(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


@implementer(ITransport)
class AMQPTransport(ControlPlane, HoldingAreas, Service):
    """
    RabbitMQ through a deferred-based client behind L{client.IAMQPChannel}.

    @param bus_name: names the connection in the broker's management view.
    """

    name = "transport"

    def __init__(
        self,
        settings: AMQPSettings,
        reactor: IBusReactor | None = None,
        *,
        bus_name: str = "scbus",
        client_factory: Any = None,
        endpoint: Any = None,
    ) -> None:
        if reactor is None:
            reactor = running_reactor()
        self.settings = settings
        self._reactor = reactor
        self._bus_name = bus_name
        self._client_factory = client_factory
        self._endpoint = endpoint
        self._apps: dict[str, _App] = {}
        self._session: _Session | None = None
        self._sessions = itertools.count(1)
        self._outbox: deque[_Outgoing] = deque()
        self._unconfirmed: dict[int, _Outgoing] = {}
        self._sweeper = LoopingCall(self._sweep_unconfirmed)
        self._sweeper.clock = reactor
        self._watchdog = LoopingCall.withCount(self._check_silence)
        self._watchdog.clock = reactor
        self._connector: Reconnector | None = None
        self._stopping = False
        self.connections = 0
        self._control: Any = None
        self._asks: dict[str, list[dict[str, Any]]] = {}
        self._process_id = uuid.uuid4().hex[:16]
        self._idle_leases = IdleLeases(reactor, settings.heartbeat, settings.queue_type)
        self._pauses = AppPauses(settings.queue_type, self._attach, f"{bus_name}@{socket.gethostname()}:{os.getpid()}")

    def __repr__(self) -> str:
        state = "connected" if self._session and self._session.ready else "disconnected"
        return f"<AMQPTransport {self.settings.describe()} {state}>"

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.ready

    # --- connecting ---------------------------------------------------------------------------

    def _make_endpoint(self) -> Any:
        return self._endpoint if self._endpoint is not None else broker_endpoint(self.settings, self._reactor)

    def _outgoing(self, exchange: str, routing_key: str, body: bytes, properties: Properties, declare: str | None) -> _Outgoing:
        return _Outgoing(exchange, routing_key, body, properties, declare)

    def _make_factory(self) -> Any:
        name = f"{self._bus_name}@{socket.gethostname()}:{os.getpid()}"
        if self._client_factory is not None:
            return self._client_factory(self.settings, self._reactor, name)
        if self.settings.client == "txamqp":
            from .txamqp_client import txamqp_factory

            return txamqp_factory(self.settings, self._reactor, name)
        from .pika_client import pika_factory

        return pika_factory(self.settings, self._reactor, name)

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._connector = Reconnector(
            self._make_endpoint(),
            self._make_factory(),
            self._prepare,
            self._reactor,
            max_delay=self.settings.reconnect_max_delay,
        )
        self._connector.start()
        self._sweeper.start(min(1.0, self.settings.confirm_timeout / 2), now=False)
        if self.settings.heartbeat > 0:
            self._watchdog.start(max(0.25, self.settings.heartbeat / 4), now=False)
        log.info("AMQP transport connecting to {broker}", broker=self.settings.describe())

    async def _stop(self) -> None:
        self._stopping = True
        self._idle_leases.disconnected()
        for loop in (self._sweeper, self._watchdog):
            if loop.running:
                loop.stop()
        session, self._session = self._session, None
        if session is not None:
            session.alive = False
        if self._connector is not None:
            await self._connector.stop()
        while self._outbox:
            self._outbox.popleft().d.errback(NotRunning("the transport stopped before this message was sent"))

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    def _prepare(self, connection: Any) -> Deferred[None]:
        """On each new connection: the AMQP handshake, then declare and consume."""
        d = connection.ready if connection.ready is not None else succeed(None)
        return d.addCallback(lambda _: Deferred.fromCoroutine(self._open_session(connection)))

    async def _open_session(self, connection: Any) -> None:
        if self._stopping:
            raise NotRunning("stopping")
        session = _Session(next(self._sessions), connection)
        await self._open_topology(session)
        await self._declare_holding_areas(session)
        await self._open_publisher(session)
        self._session = session
        connection.when_lost().addCallback(self._lost, session)
        for app in list(self._apps.values()):
            await self._start_app(session, app)
        await self._start_unrouted_log(session)
        await self._start_dead_watch(session)
        await self._start_control(session)
        self._idle_leases.connected(connection)
        self._pauses.recheck(connection, list(self._apps))
        session.ready = True
        self.connections += 1
        log.info("AMQP transport connected (session {n}) to {broker}", n=session.number, broker=self.settings.describe())
        self._flush_outbox()

    async def _open_topology(self, session: _Session) -> None:
        channel = await session.connection.channel()
        session.topology = channel
        channel.closed.addBoth(self._topology_closed, session, channel)

    def _topology_closed(self, reason: Any, session: _Session, channel: IAMQPChannel) -> None:
        # A refused declaration (say, an exchange that exists with other arguments)
        # closes the channel it was made on: open another for the next ones.
        if self._usable(session) and session.topology is channel:
            log.warn("AMQP declaring channel closed ({reason}); reopening", reason=reason_text(reason))
            session.exchanges = {k: v for k, v in session.exchanges.items() if v is True}
            Deferred.fromCoroutine(self._open_topology(session)).addErrback(self._session_broken, session)

    async def _open_publisher(self, session: _Session) -> None:
        publisher = await session.connection.channel()
        await publisher.confirm()
        session.publisher = publisher
        publisher.closed.addBoth(self._publisher_closed, session, publisher)

    def _publisher_closed(self, reason: Any, session: _Session, publisher: IAMQPChannel) -> None:
        if self._usable(session) and session.publisher is publisher:
            log.warn("AMQP publishing channel closed ({reason}); reopening", reason=reason_text(reason))
            session.ready = False
            d = Deferred.fromCoroutine(self._open_publisher(session))
            d.addCallbacks(lambda _: self._publisher_back(session), self._session_broken, errbackArgs=(session,))

    def _usable(self, session: _Session) -> bool:
        """The session's connection is up (a channel closing with it is not news)."""
        return session.alive and not self._stopping and bool(session.connection.is_open)

    def _publisher_back(self, session: _Session) -> None:
        if session.alive:
            session.ready = True
            self._flush_outbox()

    def _session_broken(self, failure: Failure, session: _Session) -> None:
        log.warn("AMQP session {n} cannot recover ({error}); reconnecting", n=session.number, error=failure.getErrorMessage())
        transport = getattr(session.connection, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _lost(self, reason: Any, session: _Session) -> None:
        session.alive = False
        self._idle_leases.disconnected(session.connection)
        if self._session is session:
            self._session = None
        for app in self._apps.values():
            if app.session == session.number:
                app.channel = app.consumer = None
                app.session = None
        if not self._stopping:
            log.warn(
                "AMQP connection lost ({reason}); deliveries in hand will come again; reconnecting",
                reason=reason_text(reason),
            )

    # --- apps -------------------------------------------------------------------------------

    def setup(self, app_name: str, message_types: Iterable[type[Message]]) -> Deferred[None]:
        app = self._apps.get(app_name)
        if app is None:
            prefetch = self.settings.app_prefetch.get(app_name, self.settings.prefetch)
            app = self._apps[app_name] = _App(app_name, prefetch, self)
        new = set(message_types) - app.types
        app.types.update(new)
        d: Deferred[None] = Deferred()
        app.setup_waiters.append(d)
        session = self._session
        if session is not None and session.alive and session.topology is not None:
            if app.session == session.number and app.channel is not None:
                # consuming already: bind what is new on its channel, no second consumer
                bound = Deferred.fromCoroutine(self._bind_types(session, app.channel, app))
                bound.addCallbacks(lambda _: self._fire_setup(app), self._bind_failed, errbackArgs=(app,))
            elif not app.starting:
                Deferred.fromCoroutine(self._start_app(session, app)).addErrback(
                    self._app_start_failed, session, app
                )
            # else: the set-up under way binds every type in app.types before it reports
        return d

    async def _bind_types(self, session: _Session, channel: IAMQPChannel, app: _App) -> None:
        """
        Bind the app's queue to every type in C{app.types} not bound yet on this session,
        including those added while this ran.
        """
        while True:
            pending = [cls for cls in topology.binding_types(app.types) if cls.wire_name not in app.bound]
            if not pending:
                return
            for cls in pending:
                await self._ensure_exchange(session, cls.wire_name)
                await channel.queue_bind(app.queue, topology.type_exchange(cls.wire_name))
                app.bound.add(cls.wire_name)

    def _bind_failed(self, failure: Failure, app: _App) -> None:
        waiters, app.setup_waiters = app.setup_waiters, []
        for d in waiters:
            d.errback(failure)

    def _fire_setup(self, app: _App) -> None:
        waiters, app.setup_waiters = app.setup_waiters, []
        for d in waiters:
            d.callback(None)

    async def _start_app(self, session: _Session, app: _App) -> None:
        if app.starting or not session.alive:
            return
        app.starting = True
        app.bound = set()
        try:
            channel = await session.connection.channel()
            await channel.qos(app.prefetch)
            await channel.queue_declare(
                app.queue, durable=True,
                arguments=topology.queue_arguments(self.settings.queue_type, self.settings.delivery_limit),
            )
            await self._bind_types(session, channel, app)
            consumer = await self._pauses.consume(session.connection, app, channel)
            await self._bind_types(session, channel, app)  # types added meanwhile
        finally:
            app.starting = False
        if not session.alive:
            return
        app.channel, app.consumer, app.session = channel, consumer, session.number
        channel.closed.addBoth(self._app_channel_closed, session, app, channel)
        log.info("{app}: consuming {queue} (prefetch {prefetch})", app=app.name, queue=app.queue, prefetch=app.prefetch)
        for waiter in list(app.waiters):
            if id(waiter) not in app.inner:
                self._attach(app, waiter)
        self._fire_setup(app)

    def _app_start_failed(self, failure: Failure, session: _Session, app: _App) -> None:
        log.failure("{app}: could not declare or consume its queue", failure, app=app.name)
        if session.alive and not self._stopping:
            self._reactor.callLater(2.0, self._retry_app, session, app)

    def _retry_app(self, session: _Session, app: _App) -> None:
        if session.alive and app.session != session.number and not self._stopping:
            Deferred.fromCoroutine(self._start_app(session, app)).addErrback(self._app_start_failed, session, app)

    def _app_channel_closed(self, reason: Any, session: _Session, app: _App, channel: IAMQPChannel) -> None:
        if app.channel is channel:
            app.channel = app.consumer = None
            app.session = None
        if self._usable(session):
            log.warn("{app}: channel closed ({reason}); consuming again", app=app.name, reason=reason_text(reason))
            self._reactor.callLater(0.5, self._retry_app, session, app)

    def idle_lease(self, app_name: str, on_change: Any) -> IdleLease:
        """Run C{app_name}'s idle handlers in one live process: see L{idle_lease}."""
        return self._idle_leases.want(app_name, on_change)

    def hold(self, app_name: str) -> Deferred[int]:
        """Paused: consume no more, give back what arrived and was not handed over."""
        return Deferred.fromCoroutine(self._pauses.hold(self._apps[app_name]))

    def unhold(self, app_name: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._pauses.unhold(self._apps[app_name]))

    def mark_paused(self, app_name: str, paused: bool) -> Deferred[None]:
        """Keep (or drop) an app's pause on the broker, for processes that start later."""
        session = self._session
        if session is None or not session.ready:
            return fail(TransportError("not connected to the broker"))
        return Deferred.fromCoroutine(self._pauses.write_mark(session.connection, app_name, paused))

    def watch_pause_marks(self, observer: Any) -> None:
        """C{observer(app_name, paused)} hears each change of an app's pause mark."""
        self._pauses.observe(observer)

    # --- retrieving ---------------------------------------------------------------------------

    def retrieve(self, app_name: str) -> Deferred[AMQPDelivery]:
        app = self._apps.get(app_name)
        if app is None:
            return fail(TransportError(f"no app {app_name!r} was set up"))
        waiter: Deferred[AMQPDelivery] = Deferred(lambda d: self._withdraw(app, d))
        app.waiters.append(waiter)
        if app.consumer is not None:
            self._attach(app, waiter)
        return waiter

    def _attach(self, app: _App, waiter: Deferred[AMQPDelivery]) -> None:
        consumer = app.consumer
        if consumer is None:
            return
        inner = consumer.get()
        app.inner[id(waiter)] = inner
        inner.addCallbacks(
            self._got_raw, self._get_failed,
            callbackArgs=(app, waiter, consumer), errbackArgs=(app, waiter, consumer),
        )

    def _withdraw(self, app: _App, waiter: Deferred[AMQPDelivery]) -> None:
        if waiter in app.waiters:
            app.waiters.remove(waiter)
        inner = app.inner.pop(id(waiter), None)
        if inner is not None and not inner.called:
            inner.cancel()

    def _got_raw(self, raw: RawDelivery, app: _App, waiter: Deferred[AMQPDelivery], consumer: IAMQPConsumer) -> None:
        app.inner.pop(id(waiter), None)
        if waiter.called or waiter not in app.waiters:
            # withdrawn just as the message arrived: give it back, lose nothing
            if raw.channel.is_open:
                raw.channel.nack(raw.delivery_tag, requeue=True)
            return
        try:
            message = self._decode(raw)
        except DecodeError as error:
            self._dead_letter(app, raw, error)
            if app.consumer is not None:
                self._attach(app, waiter)
            return
        app.waiters.remove(waiter)
        waiter.callback(AMQPDelivery(app, raw, message, self._reactor.seconds()))

    def _decode(self, raw: RawDelivery) -> Message:
        """
        The one place a delivery becomes a message. Raises L{DecodeError} only: whatever
        else goes wrong on the way is this delivery's problem, so it is set aside with a
        reason and its slot is free again, never left unsettled.
        """
        try:
            if raw.property_error is not None:
                raise BadProperties(raw.property_error)
            content_type = raw.properties.content_type
            if isinstance(content_type, (bytes, bytearray)):
                raise ContentTypeRefused(f"content type {bytes(content_type)!r} is not UTF-8 text")
            base = (content_type or "").split(";")[0].strip().lower()
            if base not in ("", codec.CONTENT_TYPE):
                raise ContentTypeRefused(f"content type {content_type!r} is not {codec.CONTENT_TYPE}")
            return codec.decode(raw.body, self.settings.max_message_size, self.settings.max_nesting)
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(f"cannot read this delivery: {type(e).__name__}: {e}"[:1000]) from None

    def _get_failed(self, failure: Failure, app: _App, waiter: Deferred[AMQPDelivery], consumer: IAMQPConsumer) -> None:
        app.inner.pop(id(waiter), None)
        if failure.check(CancelledError):
            return
        # The channel closed, or the broker cancelled the consumer: the waiter stays and
        # is served by the next consumer.
        if app.consumer is consumer and app.channel is not None and app.channel.is_open:
            log.warn("{app}: consumer cancelled ({error}); consuming again", app=app.name, error=failure.getErrorMessage())
            channel = app.channel
            app.consumer = None
            channel.close()

    def _dead_letter(self, app: _App, raw: RawDelivery, error: DecodeError) -> Deferred[None]:
        """
        Copy the delivery to scbus.dead with the reason in headers, then acknowledge it;
        if the copy cannot be made, reject it to the queue's dead-letter exchange. Never
        raises: whatever the delivery holds, it is settled.
        """
        try:
            props = raw.properties
            type_name = _text_or_none(props.type) or (
                codec.peek_type(raw.body) if len(raw.body) <= self.settings.max_message_size else None
            )
            message_id = _text_or_none(props.message_id)
            ours = {
                topology.REASON_HEADER: error.reason,
                topology.ERROR_HEADER: str(error)[:1000],
                topology.APP_HEADER: app.name,
            }
            if type_name:
                ours[topology.TYPE_HEADER] = type_name
            theirs = props.headers if isinstance(props.headers, dict) else {}
            copies = [persistent_copy(props, {**theirs, **ours}) for _ in range(1 if not theirs else 2)]
            if theirs:
                # Their headers may not survive encoding again: then ours alone.
                copies[1].headers = ours
        except Exception as e:  # properties too odd to read: the broker sets it aside
            type_name = message_id = None
            copies = []
            error = DecodeError(f"{error} (and its properties cannot be copied: {type(e).__name__})")
        log.error(
            "dead-lettered a message from {queue} (type {type}, id {id}) [{code}]: {reason}",
            queue=app.queue, type=type_name or "?", id=message_id, code=error.reason, reason=str(error),
        )
        settled: Deferred[None] = Deferred()

        def copy(remaining: list[Properties]) -> None:
            if not remaining:
                reject()
                return
            out = _Outgoing("", topology.DEAD_QUEUE, raw.body, remaining[0], None)
            self._send_outgoing(out).addCallbacks(copied, not_copied, errbackArgs=(remaining[1:],))

        def copied(_: Any) -> None:
            if raw.channel.is_open:
                raw.channel.ack(raw.delivery_tag)
            settled.callback(None)

        def not_copied(failure: Failure, remaining: list[Properties]) -> None:
            if remaining and failure.check(_Unencodable):
                copy(remaining)
                return
            # Let the broker dead-letter it instead (x-death says "rejected").
            log.warn("could not copy to {dead} ({error}); rejecting to the queue's dead-letter exchange",
                     dead=topology.DEAD_QUEUE, error=failure.getErrorMessage())
            reject()

        def reject() -> None:
            if raw.channel.is_open:
                raw.channel.nack(raw.delivery_tag, requeue=False)
            if not settled.called:
                settled.callback(None)

        copy(copies)
        return settled

    # --- publishing ---------------------------------------------------------------------------

    def send(self, message: Message) -> Deferred[None]:
        try:
            body = codec.encode(message)
        except EncodeError:
            return fail()
        if len(body) > self.settings.max_message_size:
            return fail(EncodeError(
                f"{message.wire_name}: {len(body)} bytes is over the limit of {self.settings.max_message_size}"
            ))
        properties = Properties(**topology.message_properties(message))
        out = _Outgoing(topology.type_exchange(message.wire_name), "", body, properties, message.wire_name)
        return self._send_outgoing(out)

    def publish_raw(self, body: bytes, type_name: str | None = None) -> Deferred[None]:
        body = bytes(body)
        name = type_name or codec.peek_type(body)
        if name is None:
            return fail(MalformedMessage("cannot tell the message type of this body; pass type_name"))
        properties = Properties(content_type=codec.CONTENT_TYPE, delivery_mode=2, type=name)
        return self._send_outgoing(_Outgoing(topology.type_exchange(name), "", body, properties, name))

    def _send_outgoing(self, out: _Outgoing) -> Deferred[None]:
        if not self.running or self._stopping:
            out.d.errback(NotRunning("the transport is stopped"))
            return out.d
        session = self._session
        if session is not None and session.ready and not self._outbox:
            self._dispatch(session, out)
        elif len(self._outbox) >= self.settings.send_buffer:
            out.d.errback(TransportError(
                f"not connected to the broker and the send buffer is full "
                f"({self.settings.send_buffer} messages waiting)"
            ))
        else:
            self._outbox.append(out)
        return out.d

    def _flush_outbox(self) -> None:
        session = self._session
        while self._outbox and session is not None and session.ready:
            self._dispatch(session, self._outbox.popleft())

    def _ensure_exchange(self, session: _Session, wire_name: str) -> Deferred[None]:
        """Declare a type's exchange once per session; concurrent callers share the wait."""
        name = topology.type_exchange(wire_name)
        state = session.exchanges.get(name)
        if state is True:
            return succeed(None)
        mine: Deferred[None] = Deferred()
        if state is not None:
            state.append(mine)
            return mine
        assert session.topology is not None
        waiting: list[Deferred[None]] = [mine]
        session.exchanges[name] = waiting
        declared = session.topology.exchange_declare(
            name, "fanout", durable=True, arguments=topology.exchange_arguments()
        )

        def done(result: Any) -> None:
            # (may run at once, for a client that answers synchronously)
            if isinstance(result, Failure):
                session.exchanges.pop(name, None)
                error = _DeclareFailed(f"cannot declare exchange {name}: {result.getErrorMessage()}")
                for w in waiting:
                    w.errback(error)
            else:
                session.exchanges[name] = True
                for w in waiting:
                    w.callback(None)

        declared.addBoth(done)
        return mine

    def _dispatch(self, session: _Session, out: _Outgoing) -> None:
        if out.declare is None or session.exchanges.get(topology.type_exchange(out.declare)) is True:
            self._publish_now(session, out)
            return
        d = self._ensure_exchange(session, out.declare)
        d.addCallbacks(
            lambda _: self._publish_now(session, out), self._publish_failed, errbackArgs=(session, out)
        )

    def _publish_now(self, session: _Session, out: _Outgoing) -> None:
        publisher = session.publisher
        if publisher is None or not publisher.is_open or not session.alive:
            self._publish_failed(Failure(TransportError("publishing channel closed")), session, out)
            return
        try:
            confirmed = publisher.publish(out.exchange, out.routing_key, out.body, out.properties, mandatory=True)
        except Exception as e:
            if publisher.is_open and session.alive:
                # Raised while the channel is up: these properties cannot be encoded, and
                # trying again would raise again.
                failure = Failure(_Unencodable(f"cannot publish: {type(e).__name__}: {e}"))
            else:
                failure = Failure()
            self._publish_failed(failure, session, out)
            return
        # A confirm that never comes must not leave send() hanging: the sweep fails it.
        out.deadline = self._reactor.seconds() + self.settings.confirm_timeout
        self._unconfirmed[id(out)] = out
        confirmed.addCallbacks(self._confirmed, self._not_confirmed, callbackArgs=(out,), errbackArgs=(session, out))

    def _confirmed(self, _: Any, out: _Outgoing) -> None:
        self._unconfirmed.pop(id(out), None)
        if not out.d.called:
            out.d.callback(None)

    def _not_confirmed(self, failure: Failure, session: _Session, out: _Outgoing) -> None:
        self._unconfirmed.pop(id(out), None)
        self._publish_failed(failure, session, out)

    def _check_silence(self, intervals: int) -> None:
        """
        A connection whose packets are silently dropped looks open forever. The broker
        sends a heartbeat at least every half heartbeat interval: silence for 1.5
        intervals means the connection is dead, so drop it and reconnect (the clients'
        own checks take up to twice the interval plus slack).
        """
        session = self._session
        if session is None or not session.alive:
            return
        if intervals > 1:
            # The reactor itself was late: data may be waiting unread. Look next round,
            # after it had a chance to read.
            return
        silent = self._reactor.seconds() - getattr(session.connection, "last_received", self._reactor.seconds())
        limit = 1.5 * self.settings.heartbeat
        if silent > limit:
            log.warn(
                "no data from the broker for {silent:.1f}s (heartbeat {heartbeat}s): the "
                "connection is dead; dropping it to reconnect",
                silent=silent, heartbeat=self.settings.heartbeat,
            )
            transport = getattr(session.connection, "transport", None)
            if transport is not None:
                transport.abortConnection()

    def _sweep_unconfirmed(self) -> None:
        now = self._reactor.seconds()
        late = [out for out in self._unconfirmed.values() if out.deadline <= now]
        for out in late:
            self._unconfirmed.pop(id(out), None)
            if not out.d.called:
                out.d.errback(TransportError(
                    f"the broker did not confirm within {self.settings.confirm_timeout}s"
                ))

    def _publish_failed(self, failure: Failure, session: _Session, out: _Outgoing) -> None:
        if out.d.called:
            return
        if failure.check(_Unencodable):
            out.d.errback(failure)
        elif failure.check(PublishRefused, PublishReturned, _DeclareFailed):
            out.d.errback(TransportError(failure.getErrorMessage()))
        elif self._stopping or not self.running:
            out.d.errback(NotRunning("the transport stopped before the broker confirmed this message"))
        else:
            # The channel or connection went away before the confirm: send it again on
            # the next session (the broker may have it already: at least once).
            self._outbox.appendleft(out)
            self._flush_outbox()

    # --- inspection ---------------------------------------------------------------------------

    def queue_depth(self, app_name: str) -> Deferred[int]:
        """Ready in the broker's queue (the broker counts prefetched ones as unacknowledged)."""
        return self._passive_count(topology.app_queue(app_name))

    def buffered(self, app_name: str) -> int:
        app = self._apps.get(app_name)
        consumer = app.consumer if app is not None else None
        return consumer.buffered if consumer is not None else 0

    def _passive_count(self, queue: str) -> Deferred[int]:
        session = self._session
        if session is None or not session.ready:
            return fail(TransportError("not connected to the broker"))
        return Deferred.fromCoroutine(self._count_on_fresh_channel(session, queue))

    async def _count_on_fresh_channel(self, session: _Session, queue: str) -> int:
        # A passive declare of a missing queue closes its channel: use a throwaway one.
        channel = await session.connection.channel()
        try:
            return await channel.queue_declare(queue, passive=True)
        finally:
            if channel.is_open:
                channel.close()
