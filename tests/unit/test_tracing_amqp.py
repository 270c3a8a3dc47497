"""
Tracing over AMQPTransport on the in-memory client seam: the trace context goes out as
header-table entries only while tracing is on, comes back from a delivery's headers, and
the spans carry RabbitMQ's attributes.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from twisted.internet.task import Clock

from scbus import codec
from scbus.appbus import ApplicationMessageBus
from scbus.mainbus import MainMessageBus
from scbus.testing.amqp import FakeConnection, connected_transport
from scbus.transports.amqp.client import Properties, RawDelivery
from scbus.transports.amqp.pika_frames import publish_frames

from .test_amqp_transport_unit import Order, Shipped

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


def traced_bus(clock, connection, exporter=None):
    transport = connected_transport(connection, clock)
    bus = MainMessageBus("unit", transport, reactor=clock)
    if exporter is not None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        bus.enable_tracing(provider)
    subs = {Order: lambda m: Shipped(n=m.n)}
    bus.add_app("shop", ApplicationMessageBus("shop", subs, reactor=clock), subs)
    published = []
    channel = transport._session.publisher
    original = channel.publish

    def publish(exchange, routing_key, body, properties, mandatory=False):
        published.append((exchange, routing_key, properties))
        return original(exchange, routing_key, body, properties, mandatory)

    channel.publish = publish
    bus.startService()
    clock.advance(0)
    return bus, transport, transport._apps["shop"], published


def deliver(app, tag, headers=None, redelivered=False):
    properties = Properties(content_type="application/json", headers=headers)
    raw = RawDelivery(app.channel, tag, redelivered, "scbus.type.unit.amqp.Order", "", properties,
                      codec.encode(Order(n=tag)))
    app.channel.deliveries.put(raw)
    return raw


def test_a_delivery_is_handled_in_the_trace_its_headers_carry_and_its_result_carries_it_on(exporter):
    clock = Clock()
    bus, transport, app, published = traced_bus(clock, FakeConnection(), exporter)
    raw = deliver(app, 7, {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01".encode(), "other": 1})
    clock.advance(0)
    [handling] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    [send] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert format(handling.context.trace_id, "032x") == TRACE_ID
    assert format(handling.parent.span_id, "016x") == SPAN_ID and handling.parent.is_remote
    assert handling.name == "process scbus.type.unit.amqp.Order"
    attributes = dict(handling.attributes)
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.destination.name"] == "scbus.type.unit.amqp.Order"
    assert attributes["messaging.rabbitmq.message.delivery_tag"] == 7
    assert attributes["messaging.message.body.size"] == len(raw.body)
    assert "messaging.rabbitmq.destination.routing_key" not in attributes  # empty: left out
    assert send.name == "send scbus.type.unit.amqp.Shipped"
    assert send.parent.span_id == handling.context.span_id
    [(exchange, routing_key, properties)] = published
    assert (exchange, routing_key) == ("scbus.type.unit.amqp.Shipped", "")
    traceparent = properties.headers["traceparent"]
    assert traceparent == f"00-{TRACE_ID}-{format(send.context.span_id, '016x')}-01"
    frames = publish_frames(1, exchange, routing_key, True, properties, b"{}", 131064)
    assert traceparent.encode() in frames
    assert [e for e in transport._session.connection.log if e[0] == "ack"] == [("ack", 7)]


def test_a_delivery_without_a_context_starts_a_trace(exporter):
    clock = Clock()
    bus, transport, app, published = traced_bus(clock, FakeConnection(), exporter)
    deliver(app, 1, redelivered=True)
    clock.advance(0)
    [handling] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert handling.parent is None
    assert handling.attributes["scbus.redelivered"] is True


def test_with_tracing_off_no_header_is_written():
    clock = Clock()
    bus, transport, app, published = traced_bus(clock, FakeConnection())
    deliver(app, 1, {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"})
    clock.advance(0)
    [(exchange, routing_key, properties)] = published
    assert properties.headers is None
    assert b"traceparent" not in publish_frames(1, exchange, routing_key, True, properties, b"{}", 131064)


def test_a_delivery_hands_back_its_header_table_as_its_trace_context():
    clock = Clock()
    transport = connected_transport(FakeConnection(), clock)
    transport.setup("shop", [Order])
    clock.advance(0)
    app = transport._apps["shop"]
    deliver(app, 1, {"traceparent": "x"})
    deliver(app, 2, None)
    first, second = transport.take_ready("shop"), transport.take_ready("shop")
    assert first.trace_context == {"traceparent": "x"} and second.trace_context is None
