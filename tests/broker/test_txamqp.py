"""The txAMQP client's fixes against the real broker."""

from __future__ import annotations

import uuid

import pytest
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.trial import unittest

from scbus.transports.amqp.client import Properties

from ..contract.test_amqp_contract import connected, make_amqp_transport
from ..unit.test_txamqp_compat import EVERY_TYPE


@pytest.mark.usefixtures("rabbit_for_class")
class TxAMQPBrokerTests(unittest.TestCase):
    timeout = 60

    async def session(self):
        transport = make_amqp_transport(self, self.rabbit.url, client="txamqp")
        await connected(transport)
        return transport._session

    async def test_a_header_table_with_every_type_crosses_the_broker(self):
        session = await self.session()
        channel = await session.connection.channel()
        await channel.queue_declare("tx.headers", durable=False, auto_delete=False)
        await channel.publish("", "tx.headers", "José".encode(), Properties(headers=dict(EVERY_TYPE), content_type="text/plain"))
        raw = None
        for _ in range(50):
            raw = await channel.get("tx.headers")
            if raw is not None:
                break
        channel.ack(raw.delivery_tag)
        self.assertEqual(raw.body, "José".encode())
        headers = raw.properties.headers
        # RabbitMQ keeps every value; it stores byte arrays as they came
        self.assertEqual(headers, EVERY_TYPE)

    async def test_confirms_arrive_for_a_burst_and_resolve_every_publish(self):
        session = await self.session()
        publisher = session.publisher
        # A queue of this run only (gone with the connection): what it counts, this test sent.
        queue = f"tx.burst.{uuid.uuid4().hex}"
        await session.topology.queue_declare(queue, durable=False, exclusive=True)
        sent = [publisher.publish("", queue, b"{}", Properties(delivery_mode=2)) for _ in range(500)]
        await gatherResults(sent).addTimeout(20, reactor)
        self.assertEqual(await session.topology.queue_declare(queue, passive=True), 500)

    async def test_no_wait_does_not_wait_forever(self):
        session = await self.session()
        channel = await session.connection.channel()
        d = channel._channel.queue_declare(queue="tx.nowait", durable=False, no_wait=True)
        await d.addTimeout(5, reactor)
        self.assertEqual(await channel.queue_declare("tx.nowait", passive=True), 0)
