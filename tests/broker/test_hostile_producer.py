"""
What a careless or hostile producer can publish, against a real node and both clients:
each case costs its own delivery (set aside with a reason), never the connection, and
no queue the bus reads can be wedged by one delivery.
"""

from __future__ import annotations

import uuid

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest

from scbus.message import AppErrorOccurredMessage, Message

from ..contract.test_amqp_contract import connected, make_amqp_transport
from .amqp_client import eventually
from .hostile import HostileProducer, envelope, nested_table, timestamp


class HostileOrder(Message, wire_name="hostile.Order"):
    n: int


@pytest.mark.usefixtures("rabbit_for_class")
class HostileProducerTests(unittest.TestCase):
    """Through pika, the default client."""

    timeout = 120
    client = "pika"
    #: Header values this client cannot decode (txAMQP reads a timestamp as an integer).
    undecodable = {
        "timestamp-past-9999": timestamp(2**64 - 1),
        "table-nested-3000-deep": nested_table(3000),
    }
    # (A field type the broker does not know never gets past it: it closes the
    # producer's connection with INTERNAL_ERROR.)

    async def start(self, app: str, types: list[type[Message]]):
        transport = make_amqp_transport(self, self.rabbit.url, client=self.client)
        await connected(transport)
        await transport.setup(app, types)
        producer = HostileProducer(self.rabbit.url)
        self.addCleanup(producer.close)
        return transport, producer

    async def dead_from(self, transport, app: str) -> list:
        return [e for e in await transport.set_aside("dead") if e.app_name == app]

    async def dead_count(self, transport, app: str, count: int) -> bool:
        return len(await self.dead_from(transport, app)) == count

    async def take(self, transport, app: str, count: int) -> list[int]:
        taken = []
        for _ in range(count):
            delivery = await transport.retrieve(app).addTimeout(20, reactor)
            taken.append(delivery.message.n)
            await delivery.ack()
        return taken

    async def test_undecodable_properties_cost_one_delivery_not_the_connection(self):
        app = f"hostile_props_{self.client}"
        transport, producer = await self.start(app, [HostileOrder])
        exchange = producer.declare_type(HostileOrder.wire_name)
        bodies = {}
        for n, (case, value) in enumerate(self.undecodable.items(), start=1):
            bodies[case] = envelope(HostileOrder.wire_name, {"n": n})
            producer.publish(exchange, bodies[case], headers={"case": value}, content_type="application/json")
        producer.publish(exchange, envelope(HostileOrder.wire_name, {"n": 0}), headers={"fine": 1})
        # Only the well-formed one reaches the app, on the connection it started with.
        self.assertEqual(await self.take(transport, app, 1), [0])
        await eventually(lambda: self.dead_count(transport, app, len(bodies)))
        dead = await self.dead_from(transport, app)
        self.assertEqual(sorted(e.body for e in dead), sorted(bodies.values()))
        self.assertEqual({e.code for e in dead}, {"bad-properties"})
        for entry in dead:
            self.assertIn("message properties cannot be decoded", entry.reason)
        self.assertEqual(transport.connections, 1)
        self.assertTrue(transport.connected)
        self.assertEqual(await transport.queue_depth(app), 0)

    async def test_a_content_type_that_is_not_utf8_is_set_aside_and_frees_its_slot(self):
        app = f"hostile_ctype_{self.client}"
        transport, producer = await self.start(app, [HostileOrder])
        exchange = producer.declare_type(HostileOrder.wire_name)
        for n in range(1, 13):  # more than the prefetch of 10
            producer.publish(exchange, envelope(HostileOrder.wire_name, {"n": n}),
                             content_type=b"\xff\xfeapplication/json")
        producer.publish(exchange, envelope(HostileOrder.wire_name, {"n": 0}), content_type="application/json")
        self.assertEqual(await self.take(transport, app, 1), [0])
        await eventually(lambda: self.dead_count(transport, app, 12))
        dead = await self.dead_from(transport, app)
        self.assertEqual({e.code for e in dead}, {"content-type"})
        self.assertIn("is not UTF-8 text", dead[0].reason)
        self.assertEqual(transport.connections, 1)

    async def test_non_finite_numbers_are_refused_at_decode(self):
        app = f"hostile_inf_{self.client}"
        transport, producer = await self.start(app, [HostileOrder])
        exchange = producer.declare_type(HostileOrder.wire_name)
        bodies = [
            b'{"type": "hostile.Order", "id": "inf-1", "created_at": 1e400, "data": {"n": 1}}',
            b'{"type": "hostile.Order", "id": "inf-2", "created_at": 1, "data": {"n": 1e999}}',
            b'{"type": "hostile.Order", "id": "inf-3", "created_at": 1, "data": {"n": Infinity}}',
            b'{"type": "hostile.Order", "id": "dup-1", "created_at": 1, "data": {"n": 1, "n": 2}}',
            b'{"type": "hostile.Order", "id": "deep", "created_at": 1, "data": {"n": 1, "x": '
            + b"[" * 100 + b"]" * 100 + b"}}",
        ]
        for body in bodies:
            producer.publish(exchange, body, content_type="application/json")
        producer.publish(exchange, envelope(HostileOrder.wire_name, {"n": 0}))
        self.assertEqual(await self.take(transport, app, 1), [0])
        await eventually(lambda: self.dead_count(transport, app, len(bodies)))
        dead = {e.body: e for e in await self.dead_from(transport, app)}
        self.assertEqual(set(dead), set(bodies))
        self.assertEqual({e.code for e in dead.values()}, {"malformed"})
        self.assertIn("out of range", dead[bodies[0]].reason)
        self.assertIn("duplicate key 'n'", dead[bodies[3]].reason)
        self.assertIn("nested deeper than 64 levels", dead[bodies[4]].reason)

    async def test_the_dead_watch_reports_what_it_can_and_is_never_wedged(self):
        collector = f"hostile_reports_{self.client}"
        transport, producer = await self.start(collector, [AppErrorOccurredMessage])
        victim = f"hostile_victim_{self.client}"
        death = [{"queue": f"scbus.app.{victim}", "reason": "delivery_limit", "count": 21}]
        # Poison for the watcher itself: properties it cannot decode, then a quarantined
        # body whose envelope cannot be embedded as it is (infinity, not JSON's).
        producer.publish("scbus.dead", b"{}", headers={"x-death": death, "t": nested_table(3000)})
        quarantined = b'{"type": "hostile.Order", "id": "q-1", "created_at": 1, "data": {"n": 1e999}}'
        producer.publish("scbus.dead", quarantined, headers={"x-death": death}, message_id="q-1")
        delivery = await transport.retrieve(collector).addTimeout(30, reactor)
        await delivery.ack()
        report = delivery.message
        self.assertEqual((report.app_name, report.error_type), (victim, "scbus.Quarantined"))
        self.assertEqual(report.message["type"], None)
        self.assertIn("cannot embed this message", report.message["unembeddable"])
        self.assertEqual(report.message["text"], quarantined.decode())

        def watch_drained():
            return producer.channel.queue_declare("scbus.dead.watch", passive=True).method.message_count == 0

        await eventually(watch_drained)
        self.assertEqual(transport.connections, 1)
        with self.assertRaises(defer.TimeoutError):  # reported once, not again and again
            await transport.retrieve(collector).addTimeout(3, reactor)

    async def test_the_control_queues_survive_what_anyone_publishes_there(self):
        transport, producer = await self.start(f"hostile_control_{self.client}", [HostileOrder])
        transport.serve_control(lambda request: {"answer": request.get("op")})
        reply_to = f"scbus.reply.{transport._process_id}"
        producer.publish("scbus.control", b'{"op": "status"}', headers={"t": nested_table(3000)}, reply_to=reply_to)
        producer.publish("scbus.control", b"[" * 5000, reply_to=reply_to, correlation_id="x")
        producer.publish("scbus.control", b'{"op": "status"}', reply_to=b"\xff", correlation_id=b"\xfe")
        producer.publish("", b"[" * 5000, routing_key=reply_to, correlation_id=str(uuid.uuid4()))
        answers = await transport.ask({"op": "ping"}, 2.0)
        self.assertEqual(answers, [{"answer": "ping"}])
        self.assertEqual(transport.connections, 1)


class TxAMQPHostileProducerTests(HostileProducerTests):
    """The same through txAMQP."""

    client = "txamqp"
    undecodable = {"table-nested-3000-deep": nested_table(3000)}
