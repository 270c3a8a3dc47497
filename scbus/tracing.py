"""
OpenTelemetry tracing of the bus: a PRODUCER span for every send, a CONSUMER span for
every handling and a span for every idle run, named and attributed after the messaging
semantic conventions, with the W3C trace context carried beside each message so that a
chain of apps, over any number of processes, is one trace.

Why a module of its own: tracing is off by default and must cost nothing then. The main
bus holds a L{BusTracing} only when it is on (C{bus.tracing}), tests C{if self.tracing is
not None} once per message, and nothing imports this module or opentelemetry otherwise.
It needs C{opentelemetry-api} alone (C{pip install 'scbus[otel]'}); where the spans go is
the tracer provider's business (the SDK's, set up by C{opentelemetry-instrument} or by
code of the process's own), or the one given to L{MainMessageBus.enable_tracing}.

The trace context crosses the transport through L{ITraceCarrier}: what a transport must
do is written there. Without it, sends and handlings are still spans, but each handling
starts a trace of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from .interfaces import IDelivery, IImmediateSend, IReportedSend, ISetAside, ITraceCarrier, ITransport
from .logs.errorlog import format_traceback
from .message import AppErrorOccurredMessage, Message

__all__ = ["BusTracing", "MODES", "tracing_wanted", "SCBUS_SYSTEM"]

log = Logger()

#: C{bus.tracing}: never, always (opentelemetry-api must be installed), or when a tracer
#: provider is set by the time the bus is built (C{opentelemetry-instrument}, say).
MODES = ("off", "on", "auto")

#: C{messaging.system} where scbus itself holds the messages (in memory, in a file).
SCBUS_SYSTEM = "scbus"

SYSTEM = "messaging.system"
OPERATION_NAME = "messaging.operation.name"
OPERATION_TYPE = "messaging.operation.type"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
CONVERSATION_ID = "messaging.message.conversation_id"
CONSUMER_GROUP = "messaging.consumer.group.name"
ERROR_TYPE = "error.type"
APP = "scbus.app"
MESSAGE_TYPE = "scbus.message.type"

Report = Callable[[Failure | None], object]


def tracing_wanted(mode: str) -> bool:
    """
    Whether C{bus.tracing = mode} turns tracing on now: C{auto} does when a tracer
    provider has been set (a process that set none would only make spans nobody
    records, at a cost per message).
    """
    if mode == "on":
        return True
    return mode == "auto" and not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads a kept context: text, or the bytes a client decoded a header table entry into."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", "replace")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key for key in carrier if isinstance(key, str)]


_getter = _HeaderGetter()


def _extract(kept: Any) -> Context:
    """The context a message was sent in, or an empty one (never the caller's)."""
    if not isinstance(kept, Mapping) or not kept:
        return Context()
    return propagate.extract(kept, context=Context(), getter=_getter)


def _record_failure(span: Span, failure: Failure) -> None:
    error = failure.value if failure.value is not None else Exception(failure.getErrorMessage())
    name = type(error).__qualname__
    span.record_exception(error, attributes={"exception.stacktrace": failure.getTraceback()})
    span.set_attribute(ERROR_TYPE, name)
    span.set_status(Status(StatusCode.ERROR, f"{name}: {failure.getErrorMessage()}"[:500]))


def _record_report(span: Span, report: AppErrorOccurredMessage) -> None:
    """A handler's error on its span: the exception, then each log line the bus captured."""
    error_type, error = report.error_type or "Exception", report.error or ""
    span.add_event("exception", {
        "exception.type": error_type,
        "exception.message": error,
        "exception.stacktrace": format_traceback(report.traceback or [], error_type, error),
    })
    for record in report.log or []:
        if not isinstance(record, dict):
            continue
        at = record.get("time")
        span.add_event(
            "log",
            {
                "log.severity": str(record.get("level", "")),
                "log.logger": str(record.get("logger", "")),
                "log.message": str(record.get("message", "")),
            },
            timestamp=int(at * 1e9) if isinstance(at, (int, float)) and at > 0 else None,
        )
    span.set_attribute(ERROR_TYPE, error_type)
    if report.attempts is not None and report.attempts > 1:
        span.set_attribute("scbus.attempts", report.attempts)
    span.set_status(Status(StatusCode.ERROR, f"{error_type}: {error}"[:500]))


def _is_report_of(message: Message, app_name: str, incoming: Message | None, interval: float | None) -> bool:
    """The error report the app bus made for this very call (not one a handler returned)."""
    if type(message) is not AppErrorOccurredMessage or message.app_name != app_name or not message.handler:
        return False
    if incoming is None:
        return message.message is None and message.interval == interval
    embedded = message.message
    return isinstance(embedded, dict) and embedded.get("id") == incoming.id


class BusTracing:
    """
    The spans of one main bus. Made by L{MainMessageBus.enable_tracing}; every method is
    a hook the bus calls only while tracing is on.

    @param transport: the bus's transport; with L{ITraceCarrier} the trace context travels
        with each message, and its spans get the transport's attributes.
    @param tracer_provider: where the spans go; by default the process's global provider.
    """

    def __init__(self, transport: ITransport, tracer_provider: trace.TracerProvider | None = None) -> None:
        from . import __version__

        self._tracer = trace.get_tracer("scbus", __version__, tracer_provider=tracer_provider)
        self.carrier = ITraceCarrier(transport, None)
        self.system = self.carrier.messaging_system if self.carrier is not None else SCBUS_SYSTEM
        self._transport = transport
        reported = IReportedSend(transport, None)
        immediate = IImmediateSend(transport, None)
        self._send_reported = reported.send_reported if reported is not None else None
        self._send_now = immediate.send_now if immediate is not None else None
        #: Deliveries in hand: their handling span and the context it makes current.
        self._handling: dict[IDelivery, tuple[Span, Context]] = {}
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            log.warn(
                "tracing: on, but no tracer provider is set (opentelemetry-instrument, or "
                "opentelemetry.trace.set_tracer_provider in an app's module): spans are recorded "
                "nowhere until one is"
            )
        else:
            log.info("tracing: on, spans to {provider}", provider=type(provider).__name__)
        if self.carrier is not None:
            self.carrier.trace_replays(self._replaying)
        else:
            log.warn(
                "tracing: {transport} carries no trace context (it provides no ITraceCarrier): "
                "sends and handlings are spans, but each handling starts a trace of its own",
                transport=type(transport).__name__,
            )

    # --- sending ------------------------------------------------------------------------

    def send(self, message: Message) -> Deferred[None]:
        """L{ITransport.send} in a PRODUCER span, a child of the current context."""
        d: Deferred[None] = Deferred()
        self.send_reported(message, lambda outcome: d.callback(None) if outcome is None else d.errback(outcome))
        return d

    def send_reported(self, message: Message, report: Report) -> None:
        """
        L{IReportedSend.send_reported} in a PRODUCER span. The span ends with the outcome;
        C{report} then runs in the context the send was made in, so what it sends in turn
        (an error report) is a child of the same handling.
        """
        attributes = self._attributes(message, None, "send")
        destination = attributes.get(DESTINATION)
        parent = otel_context.get_current()
        span = self._tracer.start_span(
            f"send {destination}" if destination else "send", kind=SpanKind.PRODUCER, attributes=attributes,
        )
        carried: dict[str, str] = {}
        propagate.inject(carried, context=trace.set_span_in_context(span, parent))
        sent = _Sent(span, parent, report)
        try:
            self._submit(message, carried, sent)
        except Exception:
            sent(Failure())

    def _submit(self, message: Message, carried: dict[str, str], sent: Report) -> None:
        if self.carrier is not None:
            self.carrier.send_traced(message, carried, sent)
        elif self._send_reported is not None:
            self._send_reported(message, sent)
        elif self._send_now is not None:
            self._send_now(message)
            sent(None)
        else:
            self._transport.send(message).addBoth(lambda r: sent(r if isinstance(r, Failure) else None))

    # --- handling -----------------------------------------------------------------------

    def handle(self, app_name: str, delivery: IDelivery, handle: Callable[..., Any], *args: Any) -> Any:
        """
        C{handle(*args)} in the delivery's CONSUMER span (a child of the span that sent
        it, when the transport carried its context), current while the handler runs.
        """
        message = delivery.message
        parent = _extract(getattr(delivery, "trace_context", None))
        attributes = self._attributes(message, delivery, "process")
        attributes[CONSUMER_GROUP] = app_name
        attributes[APP] = app_name
        if delivery.redelivered:
            attributes["scbus.redelivered"] = True
        destination = attributes.get(DESTINATION)
        span = self._tracer.start_span(
            f"process {destination}" if destination else "process",
            context=parent, kind=SpanKind.CONSUMER, attributes=attributes,
        )
        current = trace.set_span_in_context(span, parent)
        self._handling[delivery] = (span, current)
        token = otel_context.attach(current)
        try:
            return handle(*args)
        finally:
            otel_context.detach(token)

    def sending(
        self, app_name: str, delivery: IDelivery | None, messages: list[Message], send: Callable[..., Any], *args: Any
    ) -> Any:
        """
        C{send(*args)} sends a handler's results: in the context of its handling, whenever
        they come, so that they are its children; its error report, if it is one, is
        recorded on the handling's span first.
        """
        handling = self._handling.get(delivery) if delivery is not None else None
        if handling is None or delivery is None:
            return send(*args)  # an idle run's: its span is current (idle_run)
        span, current = handling
        for message in messages:
            if _is_report_of(message, app_name, delivery.message, None):
                _record_report(span, message)  # type: ignore[arg-type]  # (checked: exactly that type)
        token = otel_context.attach(current)
        try:
            return send(*args)
        finally:
            otel_context.detach(token)

    def not_settled(self, delivery: IDelivery, failure: Failure) -> None:
        """Handling or sending failed in the bus (released or set aside): on the span."""
        handling = self._handling.get(delivery)
        if handling is not None:
            _record_failure(handling[0], failure)

    def finished(self, delivery: IDelivery) -> None:
        """The delivery is settled: its span ends."""
        handling = self._handling.pop(delivery, None)
        if handling is not None:
            handling[0].end()

    # --- idle runs ----------------------------------------------------------------------

    def idle_run(
        self,
        app_name: str,
        interval: timedelta,
        idle: Callable[[timedelta], Deferred[list[Message]]],
        send: Callable[..., Any],
        *send_args: Any,
    ) -> Deferred[Any]:
        """
        C{idle(interval)}, then C{send(results, *send_args)}, in one span that starts a
        trace: what the run sends are its children. It ends once they are sent.
        """
        seconds = interval.total_seconds()
        span = self._tracer.start_span(
            f"idle {app_name}", context=Context(), kind=SpanKind.INTERNAL,
            attributes={APP: app_name, "scbus.idle.interval": seconds},
        )
        current = trace.set_span_in_context(span, Context())
        token = otel_context.attach(current)
        try:
            try:
                d = idle(interval)
            except Exception:
                d = fail()
        finally:
            otel_context.detach(token)
        d.addCallback(self._idle_results, span, current, app_name, seconds, send, send_args)
        return d.addBoth(self._idle_ended, span)

    def _idle_results(
        self, messages: list[Message], span: Span, current: Context, app_name: str, seconds: float,
        send: Callable[..., Any], send_args: tuple[Any, ...],
    ) -> Any:
        for message in messages:
            if _is_report_of(message, app_name, None, seconds):
                _record_report(span, message)  # type: ignore[arg-type]  # (checked: exactly that type)
        token = otel_context.attach(current)
        try:
            return send(messages, *send_args)
        finally:
            otel_context.detach(token)

    @staticmethod
    def _idle_ended(result: Any, span: Span) -> Any:
        if isinstance(result, Failure):
            _record_failure(span, result)
        span.end()
        return result

    # --- replays ------------------------------------------------------------------------

    def _replaying(
        self, kind: str, entry: ISetAside, kept: Any, attributes: dict[str, Any]
    ) -> tuple[dict[str, str], Callable[[Failure | None], None]]:
        """
        A set-aside message sent again: a PRODUCER span of its own, in the current context,
        linked to the span that first sent it; its handling is the replay's child.
        """
        original = trace.get_current_span(_extract(kept)).get_span_context()
        links = [Link(original, {"scbus.link": "replay of"})] if original.is_valid else []
        every = {
            SYSTEM: self.system,
            OPERATION_NAME: "replay",
            OPERATION_TYPE: "send",
            MESSAGE_ID: entry.id,
            "scbus.set_aside.kind": kind,
            "scbus.set_aside.code": entry.code,
            **({MESSAGE_TYPE: entry.type_name} if entry.type_name else {}),
            **attributes,
        }
        destination = every.get(DESTINATION)
        span = self._tracer.start_span(
            f"replay {destination}" if destination else "replay", kind=SpanKind.PRODUCER, attributes=every, links=links,
        )
        carried: dict[str, str] = {}
        propagate.inject(carried, context=trace.set_span_in_context(span))

        def ended(outcome: Failure | None) -> None:
            if outcome is not None:
                _record_failure(span, outcome)
            span.end()

        return carried, ended

    # --- attributes ---------------------------------------------------------------------

    def _attributes(self, message: Message, delivery: IDelivery | None, operation: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            SYSTEM: self.system,
            OPERATION_NAME: operation,
            OPERATION_TYPE: operation,
            MESSAGE_ID: message.id,
            MESSAGE_TYPE: message.wire_name,
        }
        if message.correlation_id is not None:
            attributes[CONVERSATION_ID] = message.correlation_id
        if self.carrier is not None:
            attributes.update(self.carrier.trace_attributes(message, delivery))
        else:
            attributes[DESTINATION] = message.wire_name
        return attributes


class _Sent:
    """A send's outcome: the PRODUCER span ends, then the bus hears it in the sender's context."""

    __slots__ = ("span", "parent", "report", "done")

    def __init__(self, span: Span, parent: Context, report: Report) -> None:
        self.span = span
        self.parent = parent
        self.report = report
        self.done = False

    def __call__(self, outcome: Failure | None) -> None:
        if self.done:
            return
        self.done = True
        if outcome is not None:
            _record_failure(self.span, outcome)
        self.span.end()
        token = otel_context.attach(self.parent)
        try:
            self.report(outcome)
        finally:
            otel_context.detach(token)
