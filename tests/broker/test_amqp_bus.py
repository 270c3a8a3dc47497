"""The main bus over AMQPTransport, in process, against the test RabbitMQ node."""

from __future__ import annotations

import pytest
from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from scbus.appbus import ApplicationMessageBus
from scbus.errors import EncodeError, NotRunning, TransportError
from scbus.mainbus import MainMessageBus
from scbus.message import AppErrorOccurredMessage, Message
from scbus.transports.amqp import AMQPTransport, parse_amqp_settings

from ..contract.test_amqp_contract import connected, make_amqp_transport
from .amqp_client import Producer, eventually


class Order(Message, wire_name="bus.Order"):
    item: str
    quantity: int


class Shipped(Message, wire_name="bus.Shipped"):
    item: str


class Mismatch(Message, wire_name="bus.Mismatch"):
    n: int


class Lonely(Message, wire_name="bus.Lonely"):
    note: str


@pytest.mark.usefixtures("rabbit_for_class")
class MainBusOverAMQPTests(unittest.TestCase):
    timeout = 120

    async def test_a_chain_with_an_error_over_the_broker(self):
        transport = make_amqp_transport(self, self.rabbit.url)
        bus = MainMessageBus("it", transport, grace_period=5)
        shipped, errors = [], []

        def on_order(order):
            if order.quantity < 0:
                raise ValueError(f"cannot ship {order.quantity} {order.item}")
            return Shipped(item=order.item)

        apps = {
            "it_shop": {Order: on_order},
            "it_ship": {Shipped: shipped.append},
            "it_errors": {AppErrorOccurredMessage: errors.append},
        }
        for name, subs in apps.items():
            bus.add_app(name, ApplicationMessageBus(name, subs), subs)
        bus.startService()
        self.addCleanup(bus.stopService)
        await connected(transport)
        await eventually(lambda: all(a.ready for a in bus._apps.values()))
        for i in range(20):
            await transport.send(Order(item=f"tea-{i}", quantity=1))
        await transport.send(Order(item="nothing", quantity=-1))
        await eventually(lambda: len(shipped) == 20 and len(errors) == 1)
        self.assertEqual(sorted(s.item for s in shipped), sorted(f"tea-{i}" for i in range(20)))
        [report] = errors
        self.assertEqual((report.app_name, report.error_type), ("it_shop", "ValueError"))
        self.assertEqual(report.message["data"], {"item": "nothing", "quantity": -1})
        statuses = {s.name: s for s in await bus.status()}
        self.assertEqual(statuses["it_shop"].handled, 21)
        self.assertEqual(statuses["it_shop"].queued, 0)
        self.assertEqual(statuses["it_shop"].in_flight, 0)

    async def test_sends_before_the_connection_wait_and_go_out(self):
        transport = make_amqp_transport(self, self.rabbit.url)
        self.assertFalse(transport.connected)
        sent = [transport.send(Order(item="early", quantity=i)) for i in range(5)]
        await transport.setup("it_early", [Order])
        await defer.gatherResults(sent)
        got = []
        for _ in range(5):
            delivery = await transport.retrieve("it_early").addTimeout(10, reactor)
            got.append(delivery.message.quantity)
            await delivery.ack()
        self.assertEqual(sorted(got), [0, 1, 2, 3, 4])

    async def test_an_unreachable_broker_fills_a_bounded_buffer_then_refuses(self):
        settings = parse_amqp_settings({"url": "amqp://guest:guest@127.0.0.1:1/%2F", "send_buffer": 3})
        transport = AMQPTransport(settings)
        transport.startService()
        waiting = [transport.send(Order(item="x", quantity=i)) for i in range(3)]
        for d in waiting:
            self.assertFalse(d.called)
        with self.assertRaises(TransportError) as info:
            await transport.send(Order(item="x", quantity=3))
        self.assertIn("send buffer is full (3 messages waiting)", str(info.exception))
        await transport.stopService()
        for d in waiting:
            with self.assertRaises(NotRunning):
                await d

    async def test_a_refused_declaration_is_an_error_and_the_transport_goes_on(self):
        foreign = Producer(self.rabbit.url)
        foreign.channel.exchange_declare("scbus.type.bus.Mismatch", "direct", durable=True)
        foreign.close()
        transport = make_amqp_transport(self, self.rabbit.url)
        await connected(transport)
        with self.assertRaises(TransportError) as info:
            await transport.send(Mismatch(n=1))
        self.assertIn("cannot declare exchange scbus.type.bus.Mismatch", str(info.exception))
        await transport.setup("it_after", [Order])
        await transport.send(Order(item="still", quantity=1))
        delivery = await transport.retrieve("it_after").addTimeout(10, reactor)
        self.assertEqual(delivery.message.item, "still")
        await delivery.ack()

    async def test_an_unencodable_or_oversized_message_fails_send(self):
        transport = make_amqp_transport(self, self.rabbit.url, **{})
        transport.settings.max_message_size = 100
        await connected(transport)
        with self.assertRaises(EncodeError) as info:
            await transport.send(Order(item="x" * 200, quantity=1))
        self.assertIn("over the limit of 100", str(info.exception))

    async def test_credentials_never_reach_the_log(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        secret = "s3cr3t-pa55word"
        self.rabbit.ctl("add_user", "scbus_it", secret) if "scbus_it" not in self.rabbit.ctl("list_users") else None
        self.rabbit.ctl("set_permissions", "scbus_it", ".*", ".*", ".*")
        self.rabbit.ctl("set_user_tags", "scbus_it")
        good = make_amqp_transport(self, self.rabbit.url.replace("guest:guest", f"scbus_it:{secret}"))
        await connected(good)
        self.assertNotIn(secret, repr(good))
        bad = make_amqp_transport(self, self.rabbit.url.replace("guest:guest", "scbus_it:wrong-" + secret))
        await task.deferLater(reactor, 2, lambda: None)
        self.assertFalse(bad.connected)
        from twisted.logger import formatEvent

        text = "\n".join(formatEvent(e) + repr(e) for e in events)
        self.assertIn("AMQP transport connected", text)
        self.assertNotIn(secret, text)


@pytest.mark.usefixtures("rabbit_for_class")
class QuorumAndUnroutedTests(unittest.TestCase):
    timeout = 120

    async def test_a_message_that_keeps_killing_its_consumer_is_set_aside(self):
        transport = make_amqp_transport(self, self.rabbit.url, queue_type="quorum", delivery_limit=2)
        await connected(transport)
        app = "it_poison"
        await transport.setup(app, [Order])
        poison = Order(item="poison", quantity=1)
        await transport.send(poison)
        deliveries = 0
        for _ in range(5):
            try:
                delivery = await transport.retrieve(app).addTimeout(3, reactor)
            except defer.TimeoutError:
                break
            self.assertEqual(delivery.message.id, poison.id)
            deliveries += 1
            # the consumer "dies" holding it: its channel closes without an ack
            channel = transport._apps[app].channel
            channel.close()
            await channel.closed
            await eventually(lambda: transport._apps[app].consumer is not None)
        self.assertEqual(deliveries, 3)  # the first delivery and two more, then set aside
        dead = [e for e in await transport.set_aside("dead") if e.id == poison.id]
        self.assertEqual(len(dead), 1)
        self.assertEqual(dead[0].code, "delivery_limit")
        self.assertEqual(dead[0].app_name, app)
        # and it can be put back once the cause is fixed
        self.assertTrue(await transport.replay("dead", poison.id))
        delivery = await transport.retrieve(app).addTimeout(10, reactor)
        self.assertEqual(delivery.message.id, poison.id)
        await delivery.ack()

    async def test_unrouted_messages_are_logged_with_their_type(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        transport = make_amqp_transport(self, self.rabbit.url)
        await connected(transport)
        lonely = Lonely(note="to nobody")
        await transport.send(lonely)
        from twisted.logger import formatEvent

        def logged():
            return any("unrouted: no app subscribes to bus.Lonely" in formatEvent(e) and lonely.id in formatEvent(e) for e in events)

        await eventually(logged)
        kept = [e for e in await transport.set_aside("unrouted") if e.id == lonely.id]
        self.assertEqual([e.type_name for e in kept], ["bus.Lonely"])
