"""
MainMessageBus: the service that drives every app over a transport.

Per app it keeps up to C{max_in_flight} deliveries in hand, runs each through the app's
L{ApplicationMessageBus}, sends what comes out, and only then acknowledges. Idle handlers
run on a L{LoopingCall} each. Stopping stops taking deliveries, gives the ones in hand a
grace period, and leaves the rest unacknowledged for the transport to deliver again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, FirstError, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .appbus import ApplicationMessageBus, Subscriptions
from .appstate import AppCounters
from .errors import EncodeError, TransportError
from .idleloops import IdleLoops
from .interfaces import (
    IDelivery, IImmediateAck, IImmediateSend, IPauseMarks, IPrefetchHold, IReadyDeliveries, IReportedSend, ITransport,
    ITransactionalSettle,
)
from .message import Message, is_wire_id
from .reactors import running_reactor

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from .tracing import BusTracing

__all__ = ["MainMessageBus", "AppStatus"]

log = Logger()

#: Deliveries taken synchronously in one go before yielding to the reactor, so a deep
#: in-memory queue cannot starve timers, the console or other apps.
PUMP_BUDGET = 64

#: What sending a result answers when the transport reports the outcome itself.
_REPORTED: Any = object()

#: Default seconds a delivery may stay in flight before its app counts as stuck.
STUCK_AFTER = 300.0


@dataclasses.dataclass
class AppStatus:
    """A snapshot of one app, for the console and status requests."""

    name: str
    handled: int
    errors: int
    in_flight: int
    queued: int | None
    acked: int
    redelivered: int
    send_failures: int
    last_handled_at: float | None
    oldest_in_flight_age: float | None
    paused: bool
    threads: int
    max_in_flight: int
    idle: dict[str, float | None]
    last_error: str | None
    buffered: int = 0
    heartbeat_lag: float | None = None
    heartbeat_at: float | None = None
    stuck_after: float | None = None
    #: This process runs the app's idle handlers now (with idle = "one", only one does).
    runs_idle: bool = False
    #: Idle handler runs started in this process (they handle no message: not in handled).
    idle_runs: int = 0


class _App:
    """The main bus's bookkeeping for one app."""

    def __init__(
        self, name: str, bus: ApplicationMessageBus, max_in_flight: int, stuck_after: float | None,
        idle: IdleLoops,
    ) -> None:
        self.name = name
        self.bus = bus
        self.max_in_flight = max_in_flight
        self.stuck_after = stuck_after
        self.stuck = False
        self.waiting: set[Deferred[Any]] = set()
        self.in_flight: dict[IDelivery, float] = {}
        self.idle = idle
        self.ready = False
        self.paused = False
        self.pumping = False
        self.pump_call: Any = None
        #: The app's counts: the app bus's, which this bus adds its delivery counts to.
        self.counters: AppCounters = bus.counters


class MainMessageBus(Service):
    """
    The bus of one process: apps, a transport, the loop that joins them.

    @param grace_period: seconds that deliveries in hand get to finish when stopping.
    """

    def __init__(
        self,
        name: str,
        transport: ITransport,
        *,
        reactor: IReactorTime | None = None,
        grace_period: float = 10.0,
    ) -> None:
        if reactor is None:
            reactor = running_reactor()
        self.setName(name)
        self.transport = transport
        ready = IReadyDeliveries(transport, None)
        self._take_ready: Callable[[str], IDelivery | None] | None = (
            None if ready is None else ready.take_ready
        )
        immediate_ack = IImmediateAck(transport, None)
        self._ack_now: Callable[[IDelivery], None] | None = (
            immediate_ack.ack_now if immediate_ack is not None else None
        )
        immediate = IImmediateSend(transport, None)
        self._send_now: Callable[[Message], None] | None = (
            None if immediate is None else immediate.send_now
        )
        reported = IReportedSend(transport, None)
        self._send_reported: Callable[[Message, Callable[[Failure | None], object]], None] | None = (
            reported.send_reported if reported is not None and self._send_now is None else None
        )
        #: A transport that writes a handler's results and its input's acknowledgement in
        #: one transaction (exactly once inside it); None: sends, then an ack.
        self._transactional = ITransactionalSettle(transport, None)
        #: The hooks that make spans, while tracing is on (L{enable_tracing}); else None.
        self.tracing: BusTracing | None = None
        self.grace_period = grace_period
        self._reactor = reactor
        self._apps: dict[str, _App] = {}
        self._stopping = False
        self._abandoned = False
        self._drained: Deferred[None] | None = None
        #: Per app whose idle run was under way at stop: fires once the run has ended.
        self._idle_runs: list[Deferred[None]] = []
        self._stuck_watch = LoopingCall(self._watch_stuck)
        self._stuck_watch.clock = reactor
        self.started_at: float | None = None
        #: Callables C{observer(app_name, handling_seconds, queued_seconds, results)},
        #: called as a handler run's results go out (metrics, status pages). The timings
        #: are None for idle runs; C{queued_seconds} is from the message's creation to its
        #: handling. An observer must not raise.
        self.observers: list[Callable[[str, float | None, float | None, list[Message]], None]] = []

    def __repr__(self) -> str:
        return f"<MainMessageBus {self.name!r} apps={sorted(self._apps)} running={self.running}>"

    # --- apps -----------------------------------------------------------------------------

    def add_app(
        self,
        name: str,
        app_bus: ApplicationMessageBus,
        subscriptions: Subscriptions | None = None,
        *,
        max_in_flight: int = 10,
        stuck_after: float | None = STUCK_AFTER,
        idle: str = "one",
    ) -> None:
        """
        Run C{app_bus} under C{name}. C{subscriptions} (what the builder returned) is
        accepted for the seed's signature; the app bus has already checked it. An app
        whose oldest delivery has been in flight over C{stuck_after} seconds (None: never)
        is stuck: its status says so and the log warns, once per episode. C{idle}: "one"
        live process runs the idle handlers (over a shared transport), or "every".
        """
        if name in self._apps:
            raise ValueError(f"an app named {name!r} was already added")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        loops = IdleLoops(name, app_bus.intervals, lambda i: self._run_idle(app, i), self._reactor, idle)
        app = self._apps[name] = _App(name, app_bus, max_in_flight, stuck_after, loops)
        if self.running:
            self._start_app(app)
            self._start_stuck_watch()

    @property
    def clock(self) -> Any:
        """The reactor (or test clock) the bus runs on."""
        return self._reactor

    @property
    def apps(self) -> dict[str, ApplicationMessageBus]:
        return {name: app.bus for name, app in self._apps.items()}

    def pause(self, name: str) -> None:
        """Stop taking deliveries and running idle handlers for C{name}; in-flight finish."""
        app = self._app(name)
        app.paused = True
        self._withdraw(app)
        app.idle.pause()
        log.info("{app}: paused", app=name)
        hold = IPrefetchHold(self.transport, None)
        if hold is not None:
            self._told(hold.hold(name), name, "hold")

    def resume(self, name: str) -> None:
        app = self._app(name)
        app.paused = False
        log.info("{app}: resumed", app=name)
        if app.ready and self.running and not self._stopping:
            app.idle.start(self.transport)
        self._pump(app)
        hold = IPrefetchHold(self.transport, None)
        if hold is not None:
            self._told(hold.unhold(name), name, "unhold")

    def _told(self, d: Deferred[Any], name: str, verb: str) -> None:
        d.addErrback(lambda f: log.failure("{app}: {verb} failed", f, app=name, verb=verb))

    def _pause_marked(self, name: str, paused: bool) -> None:
        """The app was paused or resumed everywhere (the transport read its mark)."""
        if name in self._apps and self._apps[name].paused != paused:
            (self.pause if paused else self.resume)(name)

    def send(self, message: Message) -> Deferred[None]:
        """Send a message from outside any app (the console, a test)."""
        return self._send(message)

    def _send(self, message: Message) -> Deferred[None]:
        """L{ITransport.send}, in a span of its own while tracing."""
        return self.transport.send(message) if self.tracing is None else self.tracing.send(message)

    def enable_tracing(self, tracer_provider: TracerProvider | None = None) -> BusTracing:
        """
        Trace every send, handling and idle run from now on (L{scbus.tracing}), to
        C{tracer_provider} or the process's global one. Needs opentelemetry-api.
        """
        from .tracing import BusTracing

        tracing = self.tracing = BusTracing(self.transport, tracer_provider)
        # Every send goes through the traced path, which writes the trace context.
        self._send_reported = tracing.send_reported
        self._send_now = None
        return tracing

    # --- Service ----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._abandoned = False
        self.started_at = self._reactor.seconds()
        from . import __version__
        from .control import ControlResponder

        self.control = ControlResponder(self, __version__)
        self.transport.serve_control(self.control.handle)
        marks = IPauseMarks(self.transport, None)
        if marks is not None:
            marks.watch_pause_marks(self._pause_marked)
        for app in self._apps.values():
            self._start_app(app)
        self._start_stuck_watch()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        if self._stuck_watch.running:
            self._stuck_watch.stop()
        # An idle run under way gets the grace period too: its results are sent while the
        # transport is still up (an idle tick is not delivered again).
        idle_runs: list[Deferred[None]] = []
        for app in self._apps.values():
            self._withdraw(app)
            idle_runs.append(app.idle.stop())
        self._idle_runs = [d for d in idle_runs if not d.called]
        in_flight = sum(len(app.in_flight) for app in self._apps.values())
        if not in_flight and not self._idle_runs:
            self._stop_apps()
            return succeed(None)
        log.info(
            "stopping: {n} delivery(ies) in flight, {idle} app(s) running an idle handler, waiting up to {grace}s",
            n=in_flight,
            idle=len(self._idle_runs),
            grace=self.grace_period,
        )
        self._drained = Deferred()
        for run in self._idle_runs:
            run.addCallback(lambda _: self._maybe_drained())
        timer = self._reactor.callLater(self.grace_period, self._grace_over)
        marks = {app.name: (app.counters.acked, app.counters.send_failures) for app in self._apps.values()}
        self._drained.addBoth(lambda r: timer.cancel() if timer.active() else None)
        self._drained.addCallback(lambda _: self._log_drained(marks, in_flight))
        self._drained.addCallback(lambda _: self._stop_apps())
        return self._drained

    def _log_drained(self, marks: dict[str, tuple[int, int]], in_flight: int) -> None:
        acked = sum(app.counters.acked - marks[app.name][0] for app in self._apps.values())
        not_sent = sum(app.counters.send_failures - marks[app.name][1] for app in self._apps.values())
        log.info(
            "drained: of {n} delivery(ies) in flight at stop, {acked} acknowledged, "
            "{not_sent} not sent",
            n=in_flight,
            acked=acked,
            not_sent=not_sent,
        )

    def _maybe_drained(self) -> None:
        if (
            self._drained is not None
            and not any(a.in_flight for a in self._apps.values())
            and all(run.called for run in self._idle_runs)
        ):
            self._fire_drained()

    def _grace_over(self) -> None:
        left = {app.name: len(app.in_flight) for app in self._apps.values() if app.in_flight}
        idle = sum(not run.called for run in self._idle_runs)
        self._abandoned = True
        log.warn(
            "grace period over: leaving {left} unacknowledged, to be delivered again{idle}",
            left=left,
            idle=f"; the results of {idle} app(s)' idle runs still under way are not sent" if idle else "",
        )
        self._fire_drained()

    def _fire_drained(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None:
            drained.callback(None)

    def _stop_apps(self) -> None:
        for app in self._apps.values():
            app.bus.stop()

    def _start_app(self, app: _App) -> None:
        app.bus.start()
        d = self.transport.setup(app.name, app.bus.message_types)
        d.addCallbacks(self._app_ready, self._setup_failed, callbackArgs=(app,), errbackArgs=(app,))

    def _app_ready(self, _: Any, app: _App) -> None:
        if not self.running:
            return
        app.ready = True
        if not app.paused:
            app.idle.start(self.transport)
        log.info(
            "{app}: subscribed to {types}; {idle} idle handler(s)",
            app=app.name,
            types=", ".join(t.wire_name for t in app.bus.message_types),
            idle=len(app.idle.intervals),
        )
        self._pump(app)

    def _setup_failed(self, failure: Failure, app: _App) -> None:
        log.failure("{app}: could not set up its subscriptions", failure, app=app.name)

    # --- taking deliveries ------------------------------------------------------------------

    def _wants_more(self, app: _App) -> bool:
        return (
            app.ready
            and not app.paused
            and not self._stopping
            and len(app.waiting) + len(app.in_flight) < app.max_in_flight
        )

    def _pump(self, app: _App) -> None:
        if app.pumping or app.pump_call is not None:
            # (a pump scheduled for the next turn does it: this turn's budget is spent)
            return
        app.pumping = True
        try:
            budget = PUMP_BUDGET
            while self._wants_more(app):
                if budget == 0:
                    if app.pump_call is None:
                        app.pump_call = self._reactor.callLater(0, self._pump_later, app)
                    return
                budget -= 1
                if self._take_ready is not None:
                    delivery = self._take_ready(app.name)
                    if delivery is not None:
                        self._handle_delivery(delivery, app)
                        continue
                    if app.waiting:
                        # One retrieve waits for the next delivery; what comes with it
                        # is taken above when it fires, so one Deferred serves a batch.
                        return
                waiter = self.transport.retrieve(app.name)
                app.waiting.add(waiter)
                waiter.addCallbacks(
                    self._got_delivery,
                    self._retrieve_failed,
                    callbackArgs=(app, waiter),
                    errbackArgs=(app, waiter),
                )
        finally:
            app.pumping = False

    def _pump_later(self, app: _App) -> None:
        app.pump_call = None
        self._pump(app)

    def _withdraw(self, app: _App) -> None:
        waiting, app.waiting = app.waiting, set()
        for waiter in waiting:
            waiter.cancel()
        if app.pump_call is not None and app.pump_call.active():
            app.pump_call.cancel()
        app.pump_call = None

    def _retrieve_failed(self, failure: Failure, app: _App, waiter: Deferred[Any]) -> None:
        app.waiting.discard(waiter)
        if not failure.check(CancelledError):
            log.failure("{app}: retrieve failed", failure, app=app.name)

    def _got_delivery(self, delivery: IDelivery, app: _App, waiter: Deferred[Any]) -> None:
        app.waiting.discard(waiter)
        if self._take_ready is not None and app.pump_call is None:
            # A client hands over deliveries one by one as it reads them: the ones that
            # came with this one are taken at the end of the reactor turn, in one pump,
            # without a Deferred each.
            app.pump_call = self._reactor.callLater(0, self._pump_later, app)
        self._handle_delivery(delivery, app)

    def _handle_delivery(self, delivery: IDelivery, app: _App) -> None:
        if app.paused or self._stopping:
            delivery.release().addErrback(lambda f: None)
            return
        if delivery.redelivered:
            app.counters.redelivered += 1
        app.in_flight[delivery] = self._reactor.seconds()
        # The one place a delivery is settled: whatever happens while handling it and
        # sending what came out, at once or later, it ends acknowledged, released or set
        # aside, and its slot is freed.
        try:
            if self.tracing is None:
                d = self._handle(app, delivery)
            else:
                d = self.tracing.handle(app.name, delivery, self._handle, app, delivery)
        except Exception:
            d = fail()
        if d is None:
            # The synchronous fast path: handled at once with nothing to send, so
            # acknowledge now, with one Deferred (the transport's) instead of a chain.
            self._ack_then_finish(app, delivery)
            return
        if d is not _REPORTED:
            d.addBoth(self._settle, app, delivery)

    def _settle(self, outcome: Any, app: _App, delivery: IDelivery) -> None:
        """Acknowledge, or release or set aside, once handling and sending are over."""
        if outcome is _REPORTED:
            return  # _result_reported settles it
        try:
            if not isinstance(outcome, Failure):
                self._ack_then_finish(app, delivery)
                return
            settled = self._not_settled(outcome, app, delivery)
        except Exception:
            self._finished(Failure(), app, delivery)
            return
        if settled is None:
            self._finished(None, app, delivery)
        else:
            settled.addBoth(self._finished, app, delivery)

    def _handle(self, app: _App, delivery: IDelivery) -> Deferred[Any] | None:
        """Run the handler and send its results: None when all of it was done at once."""
        result = app.bus.handle_now(delivery.message, delivery.received_at)
        if result is None:
            return fail(_UnexpectedType())
        if type(result) is not list:  # (a Deferred: isinstance against it is a slow ABC check)
            return cast(Deferred, result).addCallback(self._send_results, app, delivery)
        return self._send_results(result, app, delivery)

    def _result_reported(self, message: Message, app: _App, delivery: IDelivery, outcome: Failure | None) -> None:
        if outcome is None:
            self._ack_then_finish(app, delivery)
        elif outcome.check(EncodeError):
            self._unsendable(outcome, message, app, delivery).addBoth(self._settle, app, delivery)
        else:
            self._settle(outcome, app, delivery)

    def _reject_unexpected(self, app: _App, delivery: IDelivery) -> Deferred[Any]:
        # It decoded, but as a type this app does not take (published under another
        # type's name): set it aside rather than acknowledge it unhandled.
        app.counters.rejected += 1
        reason = (
            f"{app.name} has no handler for {delivery.message.wire_name}; the body's type "
            "does not match the type it was published as"
        )
        log.error("{app}: {reason}", app=app.name, reason=reason)
        return delivery.reject("unexpected-type", reason).addErrback(lambda f: None)

    # --- sending and settling ---------------------------------------------------------------

    def _send_results(
        self, messages: list[Message], app: _App, delivery: IDelivery | None
    ) -> Deferred[Any] | None:
        if self._abandoned:
            raise _Abandoned()
        if self.observers:
            self._notify(app, delivery, messages)
        if not messages:
            return None
        if self.tracing is not None:
            return self.tracing.sending(app.name, delivery, messages, self._send_out, messages, app, delivery)
        return self._send_out(messages, app, delivery)

    def _send_out(self, messages: list[Message], app: _App, delivery: IDelivery | None) -> Deferred[Any] | None:
        if delivery is not None and self._transactional is not None:
            return self._send_with_ack(messages, app, delivery)
        if len(messages) == 1:
            if delivery is not None and self._send_reported is not None:
                # The usual case over a broker: the delivery is settled when the transport
                # reports the confirm, with no Deferred chain.
                self._send_reported(messages[0], partial(self._result_reported, messages[0], app, delivery))
                return _REPORTED
            return self._send_one(messages[0], app, delivery)
        sends = [self._send_one(m, app, delivery) for m in messages]
        waiting = [d for d in sends if d is not None]
        return gatherResults(waiting, consumeErrors=True) if waiting else None

    def _send_with_ack(self, messages: list[Message], app: _App, delivery: IDelivery) -> Any:
        """
        Results and acknowledgement in one transaction (L{ITransactionalSettle}). A result
        that cannot be encoded is replaced by the app's error report, as on other transports.
        """
        transactional = self._transactional
        assert transactional is not None
        prepared = []
        for message in messages:
            try:
                prepared.append(transactional.prepare(message))
            except EncodeError as e:
                report = app.bus.unsendable_report(str(e), delivery.message, message.correlation_id)
                prepared.append(transactional.prepare(report))
        transactional.ack_with(delivery, prepared, partial(self._acked_with, app, delivery))
        return _REPORTED

    def _acked_with(self, app: _App, delivery: IDelivery, outcome: Failure | None) -> None:
        if outcome is None:
            app.counters.acked += 1
            self._finished(None, app, delivery)
        else:
            self._settle(outcome, app, delivery)

    def _notify(self, app: _App, delivery: IDelivery | None, messages: list[Message]) -> None:
        handling = queued = None
        started = app.in_flight.get(delivery) if delivery is not None else None
        if started is not None and delivery is not None:
            handling = max(0.0, self._reactor.seconds() - started)
            queued = max(0.0, started - delivery.message.created_at)
        for observer in self.observers:
            observer(app.name, handling, queued, messages)

    def readiness(self) -> dict[str, str]:
        """Per app: C{consuming}, C{paused}, C{setting up} (subscriptions not in place) or C{stopping}."""
        return {
            name: "stopping" if self._stopping or not self.running
            else "setting up" if not app.ready
            else "paused" if app.paused
            else "consuming"
            for name, app in self._apps.items()
        }

    def _send_one(self, message: Message, app: _App, delivery: IDelivery | None) -> Deferred[Any] | None:
        """Send one result: None when it was sent at once, else a Deferred of the outcome."""
        if self._send_now is None:
            return self._send(message).addErrback(self._unsendable, message, app, delivery)
        try:
            self._send_now(message)
        except EncodeError:
            return self._unsendable(Failure(), message, app, delivery)
        except Exception:
            return fail()
        return None

    def _unsendable(
        self, failure: Failure, message: Message, app: _App, delivery: IDelivery | None
    ) -> Deferred[Any]:
        failure.trap(EncodeError)
        # The delivery is done: the app's error is reported instead of its result, under
        # the result's correlation id unless that is what cannot travel.
        incoming = delivery.message if delivery is not None else None
        correlation = message.correlation_id
        if correlation is not None and not is_wire_id(correlation):
            correlation = (incoming.correlation_id or incoming.id) if incoming is not None else None
        report = app.bus.unsendable_report(failure.getErrorMessage(), incoming, correlation)
        return self._send(report)

    def _ack_then_finish(self, app: _App, delivery: IDelivery) -> None:
        app.counters.acked += 1
        if self._ack_now is not None:
            try:
                self._ack_now(delivery)
            except Exception:
                self._ack_failed(Failure(), app, delivery)
            self._finished(None, app, delivery)
            return
        try:
            d = delivery.ack()
        except Exception:
            d = fail()
        d.addCallbacks(
            self._finished, self._ack_failed_then_finish,
            callbackArgs=(app, delivery), errbackArgs=(app, delivery),
        )

    def _ack_failed_then_finish(self, failure: Failure, app: _App, delivery: IDelivery) -> None:
        self._ack_failed(failure, app, delivery)
        self._finished(None, app, delivery)

    def _ack_failed(self, failure: Failure, app: _App, delivery: IDelivery) -> None:
        app.counters.acked -= 1
        log.info(
            "{app}: acknowledgement not taken ({error}); the message will come again",
            app=app.name,
            error=failure.getErrorMessage(),
        )

    def _not_settled(
        self, failure: Failure, app: _App, delivery: IDelivery
    ) -> Deferred[Any] | None:
        if failure.check(FirstError):
            failure = cast(FirstError, failure.value).subFailure
        if failure.check(_Abandoned):
            return None
        if self.tracing is not None:
            self.tracing.not_settled(delivery, failure)
        if failure.check(_UnexpectedType):
            return self._reject_unexpected(app, delivery)
        if failure.check(TransportError) and not failure.check(EncodeError):
            # The transport could not take the results now: the message comes again.
            # (Not for what cannot be encoded: that fails the same way every time.)
            app.counters.send_failures += 1
            # Expected when the broker is away or the bus stops: a warning that says why,
            # not a traceback (nothing is lost: the message comes again).
            log.warn(
                "{app}: results of {type} not sent ({why}); releasing it to be delivered again",
                app=app.name,
                type=delivery.message.wire_name,
                why=failure.getErrorMessage(),
            )
            return delivery.release().addErrback(lambda f: None)
        # Anything else (an error report that could not be built or encoded, a bug) would
        # fail the same way on every delivery: set aside, with its body, not released.
        app.counters.rejected += 1
        error = f"{type(failure.value).__name__}: {failure.getErrorMessage()}"[:500]
        where = failure.frames[-1] if failure.frames else None
        log.error(
            "{app}: could not finish handling {type} {id} ({error}, at {where}); "
            "set aside as handling-error",
            app=app.name,
            type=delivery.message.wire_name,
            id=delivery.message.id,
            error=error,
            where=f"{where[1]}:{where[2]} in {where[0]}" if where else "?",
        )
        reason = f"the bus could not finish handling it: {error}"
        return delivery.reject("handling-error", reason).addErrback(
            lambda f: log.failure("{app}: could not set a delivery aside", f, app=app.name)
        )

    def _finished(self, result: Any, app: _App, delivery: IDelivery) -> None:
        app.in_flight.pop(delivery, None)
        if self.tracing is not None:
            self.tracing.finished(delivery)
        if isinstance(result, Failure):
            log.failure("{app}: unexpected error settling a delivery", result, app=app.name)
        if self._stopping:
            self._maybe_drained()
            return
        self._pump(app)

    # --- idle handlers ----------------------------------------------------------------------

    def _run_idle(self, app: _App, interval: timedelta) -> Deferred[Any] | None:
        if app.paused or self._stopping or not app.idle.may_run():
            return None
        if self.tracing is not None:
            d = self.tracing.idle_run(app.name, interval, app.bus.idle, self._send_results, app, None)
        else:
            try:
                d = app.bus.idle(interval)
            except Exception:
                d = fail()  # a LoopingCall whose call raises would stop for good
            d.addCallback(self._send_results, app, None)
        d.addErrback(self._idle_not_sent, app, interval)
        return d

    def _idle_not_sent(self, failure: Failure, app: _App, interval: timedelta) -> None:
        if not failure.check(_Abandoned):
            log.failure(
                "{app}: results of idle {interval} not sent", failure, app=app.name, interval=interval
            )

    # --- stuck apps -------------------------------------------------------------------------

    def _start_stuck_watch(self) -> None:
        limits = [app.stuck_after for app in self._apps.values() if app.stuck_after is not None]
        if not limits:
            return
        interval = max(0.25, min(10.0, min(limits) / 4))
        if self._stuck_watch.running:
            if self._stuck_watch.interval is not None and self._stuck_watch.interval <= interval:
                return
            self._stuck_watch.stop()
        self._stuck_watch.start(interval, now=False).addErrback(
            lambda f: log.failure("the stuck-app watch died", f)
        )

    def _watch_stuck(self) -> None:
        """Warn once when an app's oldest delivery passes its limit; say when it clears."""
        now = self._reactor.seconds()
        for app in self._apps.values():
            if app.stuck_after is None:
                continue
            oldest = min(app.in_flight.items(), key=lambda item: item[1], default=None)
            age = None if oldest is None else now - oldest[1]
            if oldest is not None and age is not None and age > app.stuck_after:
                if not app.stuck:
                    app.stuck = True
                    message = oldest[0].message
                    log.warn(
                        "{app}: stuck: {type} {id} has been in flight for {age:.0f}s, over "
                        "stuck_after ({limit}s); its handler may never return (status "
                        "reports the app unhealthy until it does)",
                        app=app.name, type=message.wire_name, id=message.id, age=age,
                        limit=app.stuck_after,
                    )
            elif app.stuck:
                app.stuck = False
                log.info("{app}: no longer stuck", app=app.name)

    # --- status -----------------------------------------------------------------------------

    def status(self) -> Deferred[list[AppStatus]]:
        """A snapshot of every app, with queue depths asked of the transport."""
        names = list(self._apps)
        depths = [
            self.transport.queue_depth(name).addErrback(lambda f: None) for name in names
        ]
        return gatherResults(depths).addCallback(
            lambda queued: [self._status(self._apps[n], q) for n, q in zip(names, queued)]
        )

    def _status(self, app: _App, queued: int | None) -> AppStatus:
        now = self._reactor.seconds()
        oldest = min(app.in_flight.values(), default=None)
        counts = app.counters
        return AppStatus(
            name=app.name,
            handled=counts.handled,
            errors=counts.errors,
            in_flight=len(app.in_flight),
            queued=queued,
            acked=counts.acked,
            redelivered=counts.redelivered,
            send_failures=counts.send_failures,
            last_handled_at=counts.last_handled_at,
            oldest_in_flight_age=None if oldest is None else now - oldest,
            paused=app.paused,
            threads=app.bus.threads,
            max_in_flight=app.max_in_flight,
            idle={str(i): counts.idle_last_run.get(i) for i in app.bus.intervals},
            last_error=counts.last_error,
            buffered=self.transport.buffered(app.name),
            heartbeat_lag=counts.last_heartbeat_lag,
            heartbeat_at=counts.last_heartbeat_at,
            stuck_after=app.stuck_after,
            runs_idle=app.idle.running,
            idle_runs=counts.idle_runs,
        )

    def _app(self, name: str) -> _App:
        try:
            return self._apps[name]
        except KeyError:
            raise KeyError(f"no app named {name!r}; apps: {', '.join(sorted(self._apps))}") from None

    def app_names(self) -> Iterable[str]:
        return list(self._apps)


class _Abandoned(Exception):
    """The grace period ran out: the delivery is left for the transport to redeliver."""


class _UnexpectedType(Exception):
    """The app takes no message of the delivery's type."""
