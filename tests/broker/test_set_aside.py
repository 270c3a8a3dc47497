"""The broker's holding areas: what is kept, what is not, and what the log says."""

from __future__ import annotations

import pytest
from twisted.internet import defer, reactor, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from scbus.message import HeartbeatResponseMessage, Message

from ..contract.test_amqp_contract import connected, make_amqp_transport
from .amqp_client import eventually


class Unwanted(Message, wire_name="setaside.Unwanted"):
    n: int


@pytest.mark.usefixtures("rabbit_for_class")
class SetAsideTests(unittest.TestCase):
    timeout = 120
    client = "pika"

    async def transport(self):
        transport = make_amqp_transport(self, self.rabbit.url, client=self.client)
        await connected(transport)
        return transport

    async def test_heartbeat_answers_nobody_takes_are_not_kept(self):
        transport = await self.transport()
        answer = HeartbeatResponseMessage(app_name="a", heartbeat_id="h")
        unwanted = Unwanted(n=1)
        await transport.send(answer)
        await transport.send(unwanted)
        kept = [e.id for e in await transport.set_aside("unrouted")]
        self.assertIn(unwanted.id, kept)
        self.assertNotIn(answer.id, kept)
        # an app that asks for them gets them
        app = f"setaside_monitor_{self.client}"
        await transport.setup(app, [HeartbeatResponseMessage])
        wanted = HeartbeatResponseMessage(app_name="a", heartbeat_id="h2")
        await transport.send(wanted)
        delivery = await transport.retrieve(app).addTimeout(20, reactor)
        await delivery.ack()
        self.assertEqual(delivery.message.id, wanted.id)
        self.assertNotIn(wanted.id, [e.id for e in await transport.set_aside("unrouted")])

    async def test_a_dead_letter_log_line_carries_the_reason_code(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        transport = await self.transport()
        app = f"setaside_dead_{self.client}"
        await transport.setup(app, [Unwanted])
        await transport.publish_raw(b'{"type": "setaside.Unwanted", "id": "u1", "created_at": 1, "data": {"n": 1e999}}', "setaside.Unwanted")
        waiting = transport.retrieve(app)  # the bad one is set aside on the way
        waiting.addErrback(lambda f: f.trap(defer.CancelledError))
        self.addCleanup(waiting.cancel)

        def logged():
            return [formatEvent(e) for e in events if "dead-lettered a message from" in formatEvent(e)]

        await eventually(logged)
        [line] = logged()
        self.assertIn(f"from scbus.app.{app} (type setaside.Unwanted, id None) [malformed]: body is not acceptable JSON", line)


    def on_broker(self, *steps):
        """Run C{steps(channel)} on a blocking connection of their own, in a thread; the last result."""
        import pika

        def run():
            connection = pika.BlockingConnection(pika.URLParameters(self.rabbit.url))
            try:
                channel = connection.channel()
                return [step(channel) for step in steps][-1]
            finally:
                connection.close()

        return threads.deferToThread(run)

    async def test_the_dead_exchange_carries_what_the_broker_dead_letters_not_the_bus_copies(self):
        # What docs/wire.md says of scbus.dead: the exchange, and so a queue of one's own
        # bound to it, carries the broker's dead letters; the bus's own go to the queue alone.
        transport = await self.transport()
        app = f"setaside_exchange_{self.client}"
        monitor, expiring = f"setaside_monitor_{self.client}", f"setaside_expiring_{self.client}"
        await self.on_broker(
            lambda ch: ch.queue_declare(monitor), lambda ch: ch.queue_bind(monitor, "scbus.dead"),
            lambda ch: ch.queue_purge(monitor),
        )
        self.addCleanup(self.on_broker, lambda ch: ch.queue_delete(monitor), lambda ch: ch.queue_delete(expiring))

        def in_monitor():
            return self.on_broker(lambda ch: ch.queue_declare(monitor, passive=True).method.message_count)

        await transport.setup(app, [Unwanted])
        marker = f"the bus's own copy {self.client}".encode()
        await transport.publish_raw(b"not json: " + marker, "setaside.Unwanted")
        waiting = transport.retrieve(app)  # the bad one is set aside on the way
        waiting.addErrback(lambda f: f.trap(defer.CancelledError))
        self.addCleanup(waiting.cancel)

        async def copied():
            return any(marker in bytes(e.body) for e in await transport.set_aside("dead"))

        await eventually(copied)
        self.assertEqual(await in_monitor(), 0)

        # A message that expires in a queue whose dead-letter exchange is scbus.dead, as
        # every app queue's is: the broker dead-letters it through the exchange.
        import pika

        await self.on_broker(
            lambda ch: ch.queue_declare(expiring, arguments={"x-dead-letter-exchange": "scbus.dead", "x-message-ttl": 1}),
            lambda ch: ch.basic_publish("", expiring, b'{"expired": true}', pika.BasicProperties(message_id="expiring-1")),
        )

        async def one_in_monitor():
            return await in_monitor() == 1

        await eventually(one_in_monitor)
        await eventually(lambda: transport.set_aside("dead").addCallback(lambda es: "expiring-1" in [e.id for e in es]))


class TxAMQPSetAsideTests(SetAsideTests):
    client = "txamqp"
