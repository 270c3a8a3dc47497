"""
Returns matched to their publish over a real node, both clients: publishes without a
message id (raw publishes, copies of foreign messages), some routed and some returned,
confirmed together by multiple acks: each returned one fails and each routed one is sent.
"""

from __future__ import annotations

import uuid

import pika
import pytest
from twisted.internet import threads
from twisted.python.failure import Failure
from twisted.trial import unittest

from scbus.transports.amqp.client import Properties
from scbus.transports.amqp.publisher import Outgoing

from ..contract.test_amqp_contract import connected, make_amqp_transport
from .amqp_client import eventually


class ReturnsAmongConfirms:
    client = "pika"
    timeout = 60

    async def test_publishes_without_an_id_are_not_blamed_for_each_other(self):
        transport = make_amqp_transport(self, self.rabbit.url, client=self.client)
        await connected(transport)
        queue = f"test.returns.{uuid.uuid4().hex[:8]}"

        def declare(delete=False):
            connection = pika.BlockingConnection(pika.URLParameters(self.rabbit.url))
            channel = connection.channel()
            channel.queue_delete(queue) if delete else channel.queue_declare(queue, auto_delete=False)
            connection.close()

        await threads.deferToThread(declare)
        self.addCleanup(threads.deferToThread, declare, True)
        outcomes: dict[int, object] = {}
        for n in range(400):
            # even: to the queue (transient, so confirmed at once); odd: to no queue
            routing_key = queue if n % 2 == 0 else f"{queue}.nowhere"
            out = Outgoing("", routing_key, f"body {n}".encode(), Properties(delivery_mode=1), None)
            transport._publisher.send(out).addBoth(lambda r, n=n: outcomes.__setitem__(n, r))
        await eventually(lambda: len(outcomes) == 400, timeout=30)
        def as_expected(n, outcome):
            if n % 2 == 0:
                return outcome is None
            return isinstance(outcome, Failure) and "returned" in outcome.getErrorMessage()

        self.assertEqual({n: o for n, o in outcomes.items() if not as_expected(n, o)}, {})


@pytest.mark.usefixtures("rabbit_for_class")
class PikaReturnsTests(ReturnsAmongConfirms, unittest.TestCase):
    client = "pika"


@pytest.mark.usefixtures("rabbit_for_class")
class TxamqpReturnsTests(ReturnsAmongConfirms, unittest.TestCase):
    client = "txamqp"
