"""
AMQPTransport: scbus over RabbitMQ, the way to outgrow one process or one machine.

Promises (each tested against a real broker):
- a message is persistent and ``send()`` fires only once the broker confirmed it; sends
  made while disconnected wait in a bounded buffer and go out after reconnecting, and so
  do those whose channel or connection went away before their confirm;
- an exchange deleted from outside is declared again, and the apps' queues bound to it
  again, when the publishing channel its 404 closed is reopened;
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
from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ... import codec
from ...errors import EncodeError, MalformedMessage, NotRunning, TransportError
from ...interfaces import (
    IConnectionState, IDelivery, IIdleLeases, IImmediateAck, IPauseMarks, IPrefetchHold, IReadyDeliveries,
    IReportedSend, ISetAside, ITraceCarrier, ITransport,
)
from ...message import Message
from ...reactors import IBusReactor, running_reactor
from . import topology
from .connector import Reconnector
from .consumer import AMQPDelivery, AppConsumer
from .control_plane import ControlPlane
from .endpoints import broker_endpoint
from .holding import HoldingAreas
from .publisher import Outgoing, Publisher, ensure_type_exchange
from .session import Session, passive_count
from .idle_lease import IdleLease, IdleLeases
from .pause import AppPauses
from .client import reason_text, IAMQPChannel, Properties
from .settings import AMQPSettings

__all__ = ["AMQPTransport", "AMQPDelivery"]

log = Logger()



@implementer(
    ITransport, IReadyDeliveries, IImmediateAck, IReportedSend, IPrefetchHold, IPauseMarks, IIdleLeases,
    IConnectionState, ITraceCarrier,
)
class AMQPTransport(Service):
    """
    RabbitMQ through a deferred-based client behind L{client.IAMQPChannel}.

    @param bus_name: names the connection in the broker's management view.
    """

    name = "transport"
    #: ITraceCarrier: the spans follow RabbitMQ's semantic conventions.
    messaging_system = "rabbitmq"

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
        self._apps: dict[str, AppConsumer] = {}
        self._session: Session | None = None
        #: While tracing: the current session's broker address, as span attributes.
        self._peer: tuple[Session, dict[str, Any]] | None = None
        self._sessions = itertools.count(1)
        self._publisher = Publisher(
            settings, reactor, lambda: self._session, lambda: bool(self.running) and not self._stopping
        )
        self._watchdog = LoopingCall.withCount(self._check_silence)
        self._watchdog.clock = reactor
        self._connector: Reconnector | None = None
        self._stopping = False
        self.connections = 0
        self._process_id = uuid.uuid4().hex[:16]
        self._holding = HoldingAreas(
            settings, self._publisher.send, self.send, lambda: self._session, self._process_id,
            lambda cls: any(issubclass(cls, tuple(app.types)) for app in self._apps.values()),
        )
        self._control_plane = ControlPlane(
            self._process_id, reactor, lambda: self._session, self._usable, self._session_broken
        )
        self._idle_leases = IdleLeases(reactor, settings.heartbeat, settings.queue_type)
        self._pauses = AppPauses(settings.queue_type, lambda app, waiter: app.attach(waiter), f"{bus_name}@{socket.gethostname()}:{os.getpid()}")

    def __repr__(self) -> str:
        state = "connected" if self._session and self._session.ready else "disconnected"
        return f"<AMQPTransport {self.settings.describe()} {state}>"

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.ready

    @property
    def problem(self) -> str | None:
        """L{IConnectionState}: the broker is away (the reconnect loop logs each attempt's reason)."""
        return None if self.connected else "not connected to the broker"

    @property
    def waiting_to_send(self) -> int:
        """Messages in the send buffer, waiting for the broker."""
        return self._publisher.waiting

    # --- connecting ---------------------------------------------------------------------------

    def _make_endpoint(self) -> Any:
        return self._endpoint if self._endpoint is not None else broker_endpoint(self.settings, self._reactor)

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
        self._publisher.start()
        if self.settings.heartbeat > 0:
            self._watchdog.start(max(0.25, self.settings.heartbeat / 4), now=False)
        log.info("AMQP transport connecting to {broker}", broker=self.settings.describe())

    async def _stop(self) -> None:
        self._stopping = True
        self._idle_leases.disconnected()
        if self._watchdog.running:
            self._watchdog.stop()
        session, self._session = self._session, None
        if session is not None:
            session.alive = False
        if self._connector is not None:
            await self._connector.stop()
        self._publisher.stop()

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
        session = Session(next(self._sessions), connection)
        await self._open_topology(session)
        await self._holding.declare(session)
        await self._open_publisher(session)
        self._session = session
        connection.when_lost().addCallback(self._lost, session)
        for app in list(self._apps.values()):
            await self._start_app(session, app)
        await self._holding.start_unrouted_log(session)
        await self._holding.start_dead_watch(session)
        await self._control_plane.start(session)
        self._idle_leases.connected(connection)
        self._pauses.recheck(connection, list(self._apps))
        session.ready = True
        self.connections += 1
        log.info("AMQP transport connected (session {n}) to {broker}", n=session.number, broker=self.settings.describe())
        self._publisher.flush()

    async def _open_topology(self, session: Session) -> None:
        channel = await session.connection.channel()
        session.topology = channel
        channel.closed.addBoth(self._topology_closed, session, channel)

    def _topology_closed(self, reason: Any, session: Session, channel: IAMQPChannel) -> None:
        # A refused declaration (say, an exchange that exists with other arguments)
        # closes the channel it was made on: open another for the next ones.
        if self._usable(session) and session.topology is channel:
            log.warn("AMQP declaring channel closed ({reason}); reopening", reason=reason_text(reason))
            session.exchanges = {k: v for k, v in session.exchanges.items() if v is True}
            Deferred.fromCoroutine(self._open_topology(session)).addErrback(self._session_broken, session)

    async def _open_publisher(self, session: Session) -> None:
        publisher = await session.connection.channel()
        await publisher.confirm()
        session.publisher = publisher
        publisher.closed.addBoth(self._publisher_closed, session, publisher)

    def _publisher_closed(self, reason: Any, session: Session, publisher: IAMQPChannel) -> None:
        if self._usable(session) and session.publisher is publisher:
            log.warn("AMQP publishing channel closed ({reason}); reopening", reason=reason_text(reason))
            session.ready = False
            # What closes it while the connection stays up is mostly a publish to an
            # exchange that is gone (404, deleted from outside): what this session
            # declared is not known to exist any more.
            session.exchanges = {}
            Deferred.fromCoroutine(self._reopen_publisher(session)).addErrback(self._session_broken, session)

    async def _reopen_publisher(self, session: Session) -> None:
        await self._open_publisher(session)
        # The apps' queues were bound to the exchanges that may be gone: bind them again
        # (declaring each exchange again) before anything is published to them.
        for app in list(self._apps.values()):
            channel = app.channel
            if app.session != session.number or channel is None or not channel.is_open:
                continue  # set up again when consuming starts again
            app.bound = set()
            try:
                await self._bind_types(session, channel, app)
            except Exception as e:
                log.warn("{app}: could not bind its queue again ({error})", app=app.name, error=str(e))
        self._publisher_back(session)

    def _usable(self, session: Session) -> bool:
        """The session's connection is up (a channel closing with it is not news)."""
        return session.alive and not self._stopping and bool(session.connection.is_open)

    def _publisher_back(self, session: Session) -> None:
        if session.alive:
            session.ready = True
            self._publisher.flush()

    def _session_broken(self, failure: Failure, session: Session) -> None:
        log.warn("AMQP session {n} cannot recover ({error}); reconnecting", n=session.number, error=failure.getErrorMessage())
        transport = getattr(session.connection, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _lost(self, reason: Any, session: Session) -> None:
        session.alive = False
        self._idle_leases.disconnected(session.connection)
        if self._session is session:
            self._session = None
        for app in self._apps.values():
            if app.session == session.number:
                if app.channel is not None:
                    app.channel_gone(app.channel)
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
            app = self._apps[app_name] = AppConsumer(app_name, prefetch, self.settings, self._reactor, self._publisher.send)
        new = set(message_types) - app.types
        app.types.update(new)
        d: Deferred[None] = Deferred()
        app.setup_waiters.append(d)
        session = self._session
        if session is not None and session.alive and session.topology is not None:
            if app.session == session.number and app.channel is not None:
                # consuming already: bind what is new on its channel, no second consumer
                bound = Deferred.fromCoroutine(self._bind_types(session, app.channel, app))
                bound.addCallbacks(lambda _: app.fire_setup(), app.fail_setup)
            elif not app.starting:
                Deferred.fromCoroutine(self._start_app(session, app)).addErrback(
                    self._app_start_failed, session, app
                )
            # else: the set-up under way binds every type in app.types before it reports
        return d

    async def _bind_types(self, session: Session, channel: IAMQPChannel, app: AppConsumer) -> None:
        """
        Bind the app's queue to every type in C{app.types} not bound yet on this session,
        including those added while this ran.
        """
        while True:
            pending = [cls for cls in topology.binding_types(app.types) if cls.wire_name not in app.bound]
            if not pending:
                return
            for cls in pending:
                await ensure_type_exchange(session, cls.wire_name)
                await channel.queue_bind(app.queue, topology.type_exchange(cls.wire_name))
                app.bound.add(cls.wire_name)

    async def _start_app(self, session: Session, app: AppConsumer) -> None:
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
                app.attach(waiter)
        app.fire_setup()

    def _app_start_failed(self, failure: Failure, session: Session, app: AppConsumer) -> None:
        log.failure("{app}: could not declare or consume its queue", failure, app=app.name)
        if session.alive and not self._stopping:
            self._reactor.callLater(2.0, self._retry_app, session, app)

    def _retry_app(self, session: Session, app: AppConsumer) -> None:
        if session.alive and app.session != session.number and not self._stopping:
            Deferred.fromCoroutine(self._start_app(session, app)).addErrback(self._app_start_failed, session, app)

    def _app_channel_closed(self, reason: Any, session: Session, app: AppConsumer, channel: IAMQPChannel) -> None:
        app.channel_gone(channel)
        if app.channel is channel:
            app.channel = app.consumer = None
            app.session = None
        if self._usable(session):
            log.warn("{app}: channel closed ({reason}); consuming again", app=app.name, reason=reason_text(reason))
            self._reactor.callLater(0.5, self._retry_app, session, app)

    def idle_lease(self, app_name: str, on_change: Callable[[bool], None]) -> IdleLease:
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

    def watch_pause_marks(self, observer: Callable[[str, bool], None]) -> None:
        """C{observer(app_name, paused)} hears each change of an app's pause mark."""
        self._pauses.observe(observer)

    # --- retrieving ---------------------------------------------------------------------------

    def ack_now(self, delivery: IDelivery) -> None:
        cast(AMQPDelivery, delivery).ack_now()

    def take_ready(self, app_name: str) -> AMQPDelivery | None:
        app = self._apps.get(app_name)
        return app.take_ready() if app is not None else None

    def retrieve(self, app_name: str) -> Deferred[IDelivery]:
        app = self._apps.get(app_name)
        if app is None:
            return fail(TransportError(f"no app {app_name!r} was set up"))
        return cast("Deferred[IDelivery]", app.retrieve())


    # --- publishing ---------------------------------------------------------------------------

    def send(self, message: Message) -> Deferred[None]:
        try:
            out = self._outgoing(message)
        except EncodeError:
            return fail()
        return self._publisher.send(out)

    def send_reported(self, message: Message, report: Callable[[Failure | None], object]) -> None:
        try:
            out = self._outgoing(message, report)
        except EncodeError:
            report(Failure())
            return
        self._publisher.submit(out)

    # --- ITraceCarrier: the context travels as header-table entries ------------------------

    def send_traced(
        self, message: Message, trace_context: dict[str, str], report: Callable[[Failure | None], object]
    ) -> None:
        try:
            out = self._outgoing(message, report)
        except EncodeError:
            report(Failure())
            return
        out.properties.headers = dict(trace_context) if trace_context else None
        self._publisher.submit(out)

    def trace_attributes(self, message: Message, delivery: IDelivery | None) -> dict[str, Any]:
        """RabbitMQ's: the exchange, the routing key when there is one, the delivery tag."""
        if delivery is None:
            attributes: dict[str, Any] = {"messaging.destination.name": topology.type_exchange(message.wire_name)}
        else:
            raw = cast(AMQPDelivery, delivery).raw
            attributes = {
                "messaging.destination.name": raw.exchange,
                "messaging.rabbitmq.message.delivery_tag": raw.delivery_tag,
                "messaging.message.body.size": len(raw.body),
            }
            if raw.routing_key:
                attributes["messaging.rabbitmq.destination.routing_key"] = raw.routing_key
        attributes.update(self._peer_attributes())
        return attributes

    def _peer_attributes(self) -> dict[str, Any]:
        """The broker node of the current session (looked up once per session)."""
        session = self._session
        if session is None:
            return {}
        known = self._peer
        if known is not None and known[0] is session:
            return known[1]
        transport = getattr(session.connection, "transport", None)
        peer = transport.getPeer() if transport is not None else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        found = {"server.address": host, "server.port": port} if isinstance(host, str) and isinstance(port, int) else {}
        self._peer = (session, found)
        return found

    def trace_replays(self, hook: Any) -> None:
        self._holding.replay_hook = hook

    def _outgoing(self, message: Message, report: Callable[[Failure | None], object] | None = None) -> Outgoing:
        body = codec.encode(message, self.settings.max_message_size)
        properties = Properties(**topology.message_properties(message))
        return Outgoing(topology.type_exchange(message.wire_name), "", body, properties, message.wire_name, report)

    def publish_raw(self, body: bytes, type_name: str | None = None) -> Deferred[None]:
        body = bytes(body)
        name = type_name or codec.peek_type(body)
        if name is None:
            return fail(MalformedMessage("cannot tell the message type of this body; pass type_name"))
        properties = Properties(content_type=codec.CONTENT_TYPE, delivery_mode=2, type=name)
        return self._publisher.send(Outgoing(topology.type_exchange(name), "", body, properties, name))

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

    # --- the holding areas (holding.py) -------------------------------------------------------

    def set_aside(self, kind: str) -> Deferred[list[ISetAside]]:
        return self._holding.set_aside(kind)

    def replay(self, kind: str, entry_id: str, force: bool = False) -> Deferred[bool]:
        return self._holding.replay(kind, entry_id, force)

    # --- the control plane (control_plane.py) ------------------------------------------------

    def serve_control(self, handler: Any) -> None:
        self._control_plane.serve(handler)

    def ask(self, request: dict[str, Any], timeout: float) -> Deferred[list[dict[str, Any]]]:
        """Ask every live bus process (this one too); their answers after C{timeout} s."""
        return self._control_plane.ask(request, timeout)

    # --- inspection ---------------------------------------------------------------------------

    def queue_depth(self, app_name: str) -> Deferred[int]:
        """Ready in the broker's queue (the broker counts prefetched ones as unacknowledged)."""
        return self._passive_count(topology.app_queue(app_name))

    def buffered(self, app_name: str) -> int:
        app = self._apps.get(app_name)
        return app.buffered() if app is not None else 0

    def _passive_count(self, queue: str) -> Deferred[int]:
        session = self._session
        if session is None or not session.ready:
            return fail(TransportError("not connected to the broker"))
        return Deferred.fromCoroutine(passive_count(session, queue))
