"""
Tracing over a real RabbitMQ node, on both clients: a chain of three apps is one trace,
its context carried in the AMQP headers; the spans carry RabbitMQ's attributes; a
replayed unrouted message is a new trace linked to its first send.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from twisted.trial import unittest

from scbus.appbus import ApplicationMessageBus
from scbus.mainbus import MainMessageBus
from scbus.message import Message

from ..contract.test_amqp_contract import connected, make_amqp_transport
from .amqp_client import eventually
from .test_status import fresh_vhost


class Placed(Message, wire_name="traced.Placed"):
    sku: str


class Packed(Message, wire_name="traced.Packed"):
    sku: str


class Sent(Message, wire_name="traced.Sent"):
    sku: str


class Lost(Message, wire_name="traced.Lost"):
    n: int


def spans_named(exporter):
    found = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


@pytest.mark.usefixtures("rabbit_for_class")
class TracingOverRabbitMQ(unittest.TestCase):
    timeout = 60
    client = "pika"

    def traced_bus(self, vhost):
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        url = fresh_vhost(self.rabbit, f"{vhost}-{self.client}")
        transport = make_amqp_transport(self, url, client=self.client)
        bus = MainMessageBus("traced", transport, grace_period=1)
        bus.enable_tracing(provider)
        return bus, transport, exporter

    def start(self, bus):
        bus.startService()
        self.addCleanup(bus.stopService)

    async def test_a_chain_of_three_apps_is_one_trace_through_the_broker(self):
        bus, transport, exporter = self.traced_bus("trace-chain")
        done = []
        apps = {
            "tr_pack": {Placed: lambda m: Packed(sku=m.sku)},
            "tr_send": {Packed: lambda m: Sent(sku=m.sku)},
            "tr_book": {Sent: done.append},
        }
        for name, subs in apps.items():
            bus.add_app(name, ApplicationMessageBus(name, subs), subs)
        self.start(bus)
        await connected(transport)
        await eventually(lambda: all(a.ready for a in bus._apps.values()))
        placed = Placed(sku="tea")
        await bus.send(placed)
        await eventually(lambda: len(done) == 1 and len(exporter.get_finished_spans()) == 6)

        spans = spans_named(exporter)
        order = [
            "send scbus.type.traced.Placed", "process scbus.type.traced.Placed",
            "send scbus.type.traced.Packed", "process scbus.type.traced.Packed",
            "send scbus.type.traced.Sent", "process scbus.type.traced.Sent",
        ]
        chained = [spans[name][0] for name in order]
        assert all(len(spans[name]) == 1 for name in order), sorted(spans)
        assert len({s.context.trace_id for s in chained}) == 1
        assert chained[0].parent is None
        for parent, child in zip(chained, chained[1:]):
            assert child.parent.span_id == parent.context.span_id, (parent.name, child.name)
        # a handling's parent came through the broker, in the message's headers
        assert all(s.parent.is_remote for s in chained[1::2])
        assert [s.kind for s in chained] == [SpanKind.PRODUCER, SpanKind.CONSUMER] * 3

        port = int(self.rabbit.url.rsplit(":", 1)[1].split("/")[0])
        send, handling = chained[0], chained[1]
        assert dict(send.attributes) == {
            "messaging.system": "rabbitmq",
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "messaging.destination.name": "scbus.type.traced.Placed",
            "messaging.message.id": placed.id,
            "scbus.message.type": "traced.Placed",
            "server.address": "127.0.0.1",
            "server.port": port,
        }
        attributes = dict(handling.attributes)
        assert attributes["messaging.destination.name"] == "scbus.type.traced.Placed"
        assert attributes["messaging.consumer.group.name"] == "tr_pack"
        assert attributes["messaging.message.id"] == placed.id
        assert isinstance(attributes["messaging.rabbitmq.message.delivery_tag"], int)
        assert attributes["messaging.message.body.size"] > 0
        assert chained[3].attributes["messaging.message.conversation_id"] == placed.id

    async def test_a_replayed_unrouted_message_is_linked_to_its_first_send(self):
        bus, transport, exporter = self.traced_bus("trace-replay")
        got = []
        subs = {Placed: lambda m: None}
        bus.add_app("tr_first", ApplicationMessageBus("tr_first", subs), subs)
        self.start(bus)
        await connected(transport)
        await eventually(lambda: all(a.ready for a in bus._apps.values()))
        lost = Lost(n=3)
        await bus.send(lost)
        [first] = spans_named(exporter)["send scbus.type.traced.Lost"]
        await eventually(lambda: transport.set_aside("unrouted").addCallback(
            lambda entries: any(e.id == lost.id for e in entries)
        ))
        late = {Lost: got.append}
        bus.add_app("tr_late", ApplicationMessageBus("tr_late", late), late)
        await eventually(lambda: bus._apps["tr_late"].ready)
        assert await transport.replay("unrouted", lost.id) is True
        await eventually(lambda: got and "process scbus.type.traced.Lost" in spans_named(exporter))
        spans = spans_named(exporter)
        [replay] = spans["replay scbus.type.traced.Lost"]
        [handling] = spans["process scbus.type.traced.Lost"]
        assert replay.kind is SpanKind.PRODUCER
        assert [(link.context.trace_id, link.context.span_id) for link in replay.links] == [
            (first.context.trace_id, first.context.span_id)
        ]
        assert replay.context.trace_id != first.context.trace_id
        assert handling.parent.span_id == replay.context.span_id
        assert replay.attributes["messaging.destination.name"] == "scbus.type.traced.Lost"
        assert replay.attributes["scbus.set_aside.kind"] == "unrouted"
        assert [m.n for m in got] == [3]


class TracingOverRabbitMQWithTxAMQP(TracingOverRabbitMQ):
    client = "txamqp"
