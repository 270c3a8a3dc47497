"""The transport contract, against AMQPTransport on a real RabbitMQ node."""

import pytest
from twisted.internet import reactor, task
from twisted.trial import unittest

from scbus.transports.amqp import AMQPTransport, parse_amqp_settings

from .transport_contract import TransportContract


async def connected(transport, timeout=30.0):
    deadline = reactor.seconds() + timeout
    while not transport.connected:
        if reactor.seconds() > deadline:
            raise AssertionError(f"{transport!r} did not connect within {timeout}s")
        await task.deferLater(reactor, 0.05, lambda: None)


def make_amqp_transport(test, url, **options):
    settings = parse_amqp_settings({"url": url, "heartbeat": 10, **options})
    transport = AMQPTransport(settings, bus_name="contract")
    transport.startService()
    test.addCleanup(transport.stopService)
    return transport


@pytest.mark.usefixtures("rabbit_for_class")
class AMQPTransportContractTests(TransportContract, unittest.TestCase):
    timeout = 120

    async def make_transport(self):
        transport = make_amqp_transport(self, self.rabbit.url)
        await connected(transport)
        return transport

    def lose_consumers(self, transport, app_name):
        # What a dropped channel does: the broker takes back what was not acknowledged.
        channel = transport._apps[app_name].channel
        channel.close()
        return channel.closed


@pytest.mark.usefixtures("rabbit_for_class")
class TxAMQPTransportContractTests(AMQPTransportContractTests):
    """The same contract through the txAMQP client."""

    async def make_transport(self):
        transport = make_amqp_transport(self, self.rabbit.url, client="txamqp")
        await connected(transport)
        return transport
