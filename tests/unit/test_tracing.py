"""
OpenTelemetry tracing on the in-memory transport: the spans a chain of apps makes, read
back through the SDK's in-memory exporter, their names, kinds, attributes and links.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from twisted.internet.task import Clock, deferLater
from zope.interface import implementer_only

from scbus import AppErrorOccurredMessage, Message
from scbus.interfaces import (
    IBoundedSetAside, IImmediateAck, IImmediateSend, IReadyDeliveries, ITraceCarrier, ITransport,
)
from scbus.mainbus import MainMessageBus
from scbus.testing import BusHarness, result_of
from scbus.transports.local import LocalTransport


class Order(Message, wire_name="trace.Order"):
    sku: str


class Picked(Message, wire_name="trace.Picked"):
    sku: str


class Shipped(Message, wire_name="trace.Shipped"):
    sku: str


class Tick(Message, wire_name="trace.Tick"):
    n: int


class Stray(Message, wire_name="trace.Stray"):
    n: int


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def chain(harness, shipped):
    harness.add_app("picker", lambda *a: {Order: lambda m: Picked(sku=m.sku)})
    harness.add_app("shipper", lambda *a: {Picked: lambda m: Shipped(sku=m.sku)})
    harness.add_app("ledger", lambda *a: {Shipped: shipped.append})


def by_name(spans):
    found = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


def parent_of(span):
    return span.parent.span_id if span.parent is not None else None


def test_a_chain_of_three_apps_is_one_trace_of_sends_and_their_handlings(provider, exporter):
    shipped = []
    harness = BusHarness(tracer_provider=provider)
    chain(harness, shipped)
    harness.start()
    order = Order(sku="tea")
    harness.send(order)
    assert [s.sku for s in shipped] == ["tea"]

    spans = by_name(exporter.get_finished_spans())
    [send_order] = spans["send trace.Order"]
    [picker] = spans["process trace.Order"]
    [send_picked] = spans["send trace.Picked"]
    [shipper] = spans["process trace.Picked"]
    [send_shipped] = spans["send trace.Shipped"]
    [ledger] = spans["process trace.Shipped"]
    chained = [send_order, picker, send_picked, shipper, send_shipped, ledger]
    assert {s.context.trace_id for s in chained} == {send_order.context.trace_id}
    assert send_order.parent is None
    for parent, child in zip(chained, chained[1:]):
        assert parent_of(child) == parent.context.span_id, (parent.name, child.name)
    assert [s.kind for s in chained] == [SpanKind.PRODUCER, SpanKind.CONSUMER] * 3

    assert dict(send_order.attributes) == {
        "messaging.system": "scbus",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "trace.Order",
        "messaging.message.id": order.id,
        "scbus.message.type": "trace.Order",
    }
    [picked] = harness.sent_of(Picked)
    assert dict(shipper.attributes) == {
        "messaging.system": "scbus",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "trace.Picked",
        "messaging.message.id": picked.id,
        "messaging.message.conversation_id": order.id,
        "messaging.consumer.group.name": "shipper",
        "scbus.app": "shipper",
        "scbus.message.type": "trace.Picked",
    }
    assert send_picked.attributes["messaging.message.conversation_id"] == order.id
    # a handling ends once its results are sent and it is acknowledged
    assert picker.end_time >= send_picked.end_time
    assert all(s.status.status_code is StatusCode.UNSET for s in chained)


def test_results_that_come_later_are_children_of_their_handling_too(provider, exporter):
    harness = BusHarness(tracer_provider=provider)
    inside = []

    async def pick(order):
        inside.append(trace.get_current_span().get_span_context().span_id)
        await asyncio.sleep(5)
        return Picked(sku=order.sku)

    def pick_later(order):
        return deferLater(harness.clock, 3, lambda: Picked(sku=order.sku + "-later"))

    harness.add_app("picker", lambda *a: {Order: pick})
    harness.add_app("slow", lambda *a: {Order: pick_later})
    harness.add_app("shipper", lambda *a: {Picked: lambda m: None})
    harness.start()
    harness.send(Order(sku="tea"))
    assert "send trace.Picked" not in by_name(exporter.get_finished_spans())
    harness.advance(5)
    spans = by_name(exporter.get_finished_spans())
    handlings = {s.attributes["scbus.app"]: s for s in spans["process trace.Order"]}
    sends = spans["send trace.Picked"]
    assert sorted(parent_of(s) for s in sends) == sorted(h.context.span_id for h in handlings.values())
    # the coroutine ran with its handling's span current
    assert inside == [handlings["picker"].context.span_id]
    assert len(spans["process trace.Picked"]) == 2


def test_an_idle_run_is_a_span_whose_sends_are_its_children(provider, exporter):
    harness = BusHarness(tracer_provider=provider)
    counts = iter(range(1, 100))

    def tick_later():
        n = next(counts)
        return deferLater(harness.clock, 0.5, lambda: Tick(n=n))

    harness.add_app("clock", lambda *a: {timedelta(seconds=2): tick_later})
    harness.add_app("watch", lambda *a: {Tick: lambda m: None})
    harness.start()
    harness.advance(2)
    harness.advance(0.5)
    spans = by_name(exporter.get_finished_spans())
    [idle] = spans["idle clock"]
    [send] = spans["send trace.Tick"]
    [watch] = spans["process trace.Tick"]
    assert idle.parent is None and idle.kind is SpanKind.INTERNAL
    assert dict(idle.attributes) == {"scbus.app": "clock", "scbus.idle.interval": 2.0}
    assert parent_of(send) == idle.context.span_id
    assert parent_of(watch) == send.context.span_id
    assert idle.end_time >= send.end_time


def test_a_handlers_error_is_on_its_span_with_the_exception_and_the_log_lines(provider, exporter):
    harness = BusHarness(tracer_provider=provider)
    logger = logging.getLogger("trace.picker")

    def pick(order):
        logger.info("looking for %s", order.sku)
        logger.warning("shelf %d is empty", 7)
        raise LookupError(f"no {order.sku} left")

    harness.add_app("picker", lambda *a: {Order: pick})
    harness.add_app("errors", lambda *a: {AppErrorOccurredMessage: lambda m: None})
    harness.start()
    harness.send(Order(sku="tea"))
    [report] = harness.errors
    spans = by_name(exporter.get_finished_spans())
    [handling] = spans["process trace.Order"]
    assert handling.status.status_code is StatusCode.ERROR
    assert handling.status.description == "LookupError: no tea left"
    assert handling.attributes["error.type"] == "LookupError"
    exception, *logs = handling.events
    assert exception.name == "exception"
    assert exception.attributes["exception.type"] == "LookupError"
    assert exception.attributes["exception.message"] == "no tea left"
    assert 'raise LookupError(f"no {order.sku} left")' in exception.attributes["exception.stacktrace"]
    assert [(e.name, e.attributes["log.severity"], e.attributes["log.message"]) for e in logs] == [
        ("log", "info", "looking for tea"), ("log", "warning", "shelf 7 is empty"),
    ]
    assert {e.attributes["log.logger"] for e in logs} == {"trace.picker"}
    assert [r["message"] for r in report.log] == ["looking for tea", "shelf 7 is empty"]
    # the report is one of the handling's results, so a child of it
    [send_report] = spans["send scbus.AppErrorOccurred"]
    assert parent_of(send_report) == handling.context.span_id
    [collected] = spans["process scbus.AppErrorOccurred"]
    assert collected.status.status_code is StatusCode.UNSET


def test_an_idle_handlers_error_is_on_the_idle_span(provider, exporter):
    harness = BusHarness(tracer_provider=provider)

    def tick():
        raise RuntimeError("the clock stopped")

    harness.add_app("clock", lambda *a: {timedelta(seconds=1): tick})
    harness.start()
    harness.advance(1)
    [idle] = by_name(exporter.get_finished_spans())["idle clock"]
    assert idle.status.status_code is StatusCode.ERROR
    assert [e.attributes["exception.message"] for e in idle.events] == ["the clock stopped"]


def test_a_message_a_handler_returns_is_not_its_handlings_error(provider, exporter):
    harness = BusHarness(tracer_provider=provider)

    def relay(order):  # a report of some other app's error, passed on: data, not this app's error
        return AppErrorOccurredMessage(
            app_name="relay", message=None, error="elsewhere", error_type="X", traceback=[], log=[], handler="h",
        )

    harness.add_app("relay", lambda *a: {Order: relay})
    harness.start()
    harness.send(Order(sku="tea"))
    [handling] = by_name(exporter.get_finished_spans())["process trace.Order"]
    assert handling.status.status_code is StatusCode.UNSET and not handling.events


def test_a_replayed_unrouted_message_is_a_new_trace_linked_to_its_first_send(provider, exporter):
    harness = BusHarness(tracer_provider=provider)
    harness.add_app("picker", lambda *a: {Order: lambda m: None})
    harness.start()
    harness.send(Stray(n=1))
    [first_send] = by_name(exporter.get_finished_spans())["send trace.Stray"]
    [entry] = harness.transport.unrouted
    assert entry.trace_context["traceparent"].split("-")[2] == format(first_send.context.span_id, "016x")

    strays = []
    harness.add_app("strays", lambda *a: {Stray: strays.append})
    harness.flush()
    assert result_of(harness.transport.replay("unrouted", entry.id)) is True
    harness.flush()
    assert [s.n for s in strays] == [1]
    spans = by_name(exporter.get_finished_spans())
    [replay] = spans["replay trace.Stray"]
    [handling] = spans["process trace.Stray"]
    assert replay.kind is SpanKind.PRODUCER
    assert replay.context.trace_id != first_send.context.trace_id
    assert [link.context.span_id for link in replay.links] == [first_send.context.span_id]
    assert [link.context.trace_id for link in replay.links] == [first_send.context.trace_id]
    assert replay.attributes["messaging.operation.name"] == "replay"
    assert replay.attributes["messaging.message.id"] == entry.id
    assert replay.attributes["scbus.set_aside.kind"] == "unrouted"
    assert parent_of(handling) == replay.context.span_id
    assert handling.context.trace_id == replay.context.trace_id


def test_a_replayed_dead_letter_links_to_the_send_of_the_message_set_aside(provider, exporter):
    harness = BusHarness(tracer_provider=provider)
    taken = []
    harness.add_app("picker", lambda *a: {Order: taken.append})
    harness.start()
    harness.bus.pause("picker")  # so that the test takes the delivery, not the bus
    harness.send(Order(sku="tea"))
    delivery = harness.transport.take_ready("picker")
    [send] = by_name(exporter.get_finished_spans())["send trace.Order"]
    delivery.reject("unexpected-type", "refused for the test")
    harness.flush()
    [entry] = harness.transport.dead_letters
    assert entry.trace_context == delivery.trace_context and entry.trace_context["traceparent"]
    harness.bus.resume("picker")
    harness.transport.replay("dead", entry.id)
    harness.flush()
    assert [o.sku for o in taken] == ["tea"]
    spans = by_name(exporter.get_finished_spans())
    [replay] = spans["replay trace.Order"]
    assert [link.context.span_id for link in replay.links] == [send.context.span_id]
    [handling] = spans["process trace.Order"]
    assert parent_of(handling) == replay.context.span_id


def test_a_thread_pool_handler_runs_with_its_span_current(provider, exporter):
    harness = BusHarness(tracer_provider=provider)
    inside = []

    def pick(order):
        inside.append(trace.get_current_span().get_span_context().span_id)

    harness.add_app("picker", lambda *a: {Order: pick}, threads=2)
    harness.start()
    harness.send(Order(sku="tea"))
    harness.advance(0)
    [handling] = by_name(exporter.get_finished_spans())["process trace.Order"]
    assert inside == [handling.context.span_id]


def test_an_unsendable_result_fails_its_send_span_and_is_reported_under_the_handling(provider, exporter):
    harness = BusHarness(tracer_provider=provider, max_message_size=800)
    harness.add_app("picker", lambda *a: {Order: lambda m: Picked(sku="x" * 1000)})
    harness.start()
    harness.send(Order(sku="tea"))
    spans = by_name(exporter.get_finished_spans())
    [handling] = spans["process trace.Order"]
    [failed] = spans["send trace.Picked"]
    [report] = spans["send scbus.AppErrorOccurred"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "EncodeError"
    assert re.fullmatch(r"EncodeError: trace\.Picked: \d+ bytes is over the limit of 800", failed.status.description)
    assert handling.status.status_code is StatusCode.UNSET  # the app's error is its report's business
    assert parent_of(failed) == parent_of(report) == handling.context.span_id


def test_with_tracing_off_nothing_is_kept_beside_the_body(exporter):
    shipped = []
    harness = BusHarness()
    chain(harness, shipped)
    harness.start()
    assert harness.bus.tracing is None
    harness.bus.pause("picker")
    harness.send(Order(sku="tea"))
    [(_, _, _, kept)] = harness.transport._queue("picker").ready
    assert kept is None
    assert harness.transport.take_ready("picker").trace_context is None
    assert exporter.get_finished_spans() == ()


@implementer_only(ITransport, IReadyDeliveries, IImmediateSend, IImmediateAck, IBoundedSetAside)
class Uncarrying(LocalTransport):
    """A transport that carries no trace context."""


def test_without_a_carrier_handlings_start_their_own_traces(provider, exporter):
    from twisted.logger import globalLogPublisher

    clock = Clock()
    transport = Uncarrying(clock)
    assert not ITraceCarrier.providedBy(transport)
    bus = MainMessageBus("t", transport, reactor=clock, grace_period=0)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        bus.enable_tracing(provider)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any("carries no trace context" in str(e.get("log_format")) for e in events)
    from scbus.appbus import ApplicationMessageBus

    subs = {Order: lambda m: Picked(sku=m.sku)}
    bus.add_app("picker", ApplicationMessageBus("picker", subs, reactor=clock), subs)
    transport.startService()
    bus.startService()
    clock.advance(0)
    bus.send(Order(sku="tea"))
    clock.advance(0)
    spans = by_name(exporter.get_finished_spans())
    [send] = spans["send trace.Order"]
    [handling] = spans["process trace.Order"]
    [result] = spans["send trace.Picked"]
    assert handling.parent is None and handling.context.trace_id != send.context.trace_id
    assert parent_of(result) == handling.context.span_id


# --- switching it on ---------------------------------------------------------------------

APP = {"apps": {"a": {"builder": "m:f"}}}


def built(tracing):
    from scbus.config import parse_config
    from scbus.tap import make_bus_service

    config = parse_config({**APP, "bus": {"tracing": tracing}})
    return make_bus_service(config, {"a": {Order: lambda m: None}}, reactor=Clock()).bus


def test_bus_tracing_is_off_unless_the_config_says_otherwise():
    from scbus.config import parse_config
    from twisted.logger import globalLogPublisher

    assert parse_config(APP).bus.tracing == "off"
    assert built("off").tracing is None
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        assert built("on").tracing is not None
    finally:
        globalLogPublisher.removeObserver(events.append)
    # with no SDK set up in the process, the log says where the spans go: nowhere
    assert any("no tracer provider is set" in str(e.get("log_format")) for e in events)


def test_a_bad_bus_tracing_is_one_line():
    from scbus.config import parse_config
    from scbus.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config({**APP, "bus": {"tracing": True}}, "bus.toml")
    assert str(info.value) == "bus.toml: bus.tracing: must be one of 'off', 'on', 'auto', got bool True"


def test_tracing_on_without_opentelemetry_stops_start_up_naming_the_extra(monkeypatch):
    import scbus.config
    from scbus.errors import ConfigError

    monkeypatch.setattr(scbus.config, "opentelemetry_installed", lambda: False)
    with pytest.raises(ConfigError) as info:
        scbus.config.parse_config({**APP, "bus": {"tracing": "on"}}, "bus.toml")
    assert str(info.value) == (
        "bus.toml: bus.tracing: \"on\" needs the opentelemetry-api package: pip install 'scbus[otel]'"
    )
    # auto is no error: without opentelemetry it stays off
    assert scbus.config.parse_config({**APP, "bus": {"tracing": "auto"}}).bus.tracing == "auto"


def test_auto_traces_only_once_a_tracer_provider_is_set(monkeypatch, provider):
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # none in this process
    assert built("auto").tracing is None
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    assert built("auto").tracing is not None
