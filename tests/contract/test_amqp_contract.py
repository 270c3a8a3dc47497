"""The transport contract, against AMQPTransport on a real RabbitMQ node."""

import pytest
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from scbus.transports.amqp import AMQPTransport, parse_amqp_settings
from scbus.transports.amqp.client import IAMQPChannel, IAMQPConnection, IAMQPConsumer

from .trace_carrier_contract import TraceCarrierContract
from .transport_contract import Note, TransportContract


async def connected(transport, timeout=30.0):
    deadline = reactor.seconds() + timeout
    while not transport.connected:
        if reactor.seconds() > deadline:
            raise AssertionError(f"{transport!r} did not connect within {timeout}s")
        await task.deferLater(reactor, 0.05, lambda: None)


def _delete_queues(url, queues):
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for queue in queues:
            connection.channel().queue_delete(queue)
    finally:
        connection.close()


def make_amqp_transport(test, url, **options):
    """A started transport; its apps' queues are deleted after the test (the broker is shared)."""
    admin_url = options.pop("admin_url", None)
    settings = parse_amqp_settings({"url": url, "heartbeat": 10, **options})
    options["admin_url"] = admin_url or url
    transport = AMQPTransport(settings, bus_name="contract")
    transport.startService()

    async def cleanup():
        await transport.stopService()
        queues = [app.queue for app in transport._apps.values()]
        if queues:
            await threads.deferToThread(_delete_queues, options.get("admin_url", url), queues)

    test.addCleanup(lambda: defer.Deferred.fromCoroutine(cleanup()))
    return transport


@pytest.mark.usefixtures("rabbit_for_class")
class AMQPTransportContractTests(TransportContract, TraceCarrierContract, unittest.TestCase):
    timeout = 120

    async def make_transport(self):
        transport = make_amqp_transport(self, self.rabbit.url)
        await connected(transport)
        return transport

    async def test_the_client_objects_provide_the_seam(self):
        # The transport speaks only the seam's interfaces: the client library's objects
        # (and scbus.testing.amqp's fakes, in the unit tests) must provide all of them.
        t = await self.start()
        a = self.app("a")
        await t.setup(a, [Note])
        session = t._session
        for interface, thing in (
            (IAMQPConnection, session.connection),
            (IAMQPChannel, session.topology),
            (IAMQPChannel, session.publisher),
            (IAMQPChannel, t._apps[a].channel),
            (IAMQPConsumer, t._apps[a].consumer),
        ):
            self.assertTrue(verifyObject(interface, thing))

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
