"""
AMQPTransport's logic against an in-memory client seam that answers at once (no broker):
a client may answer synchronously and the transport must still set up, deliver, publish
and acknowledge in order.
"""

from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.internet.task import Clock

from scbus import codec
from scbus.appbus import ApplicationMessageBus
from scbus.mainbus import MainMessageBus
from scbus.message import Message
from scbus.transports.amqp import AMQPTransport, parse_amqp_settings
from scbus.transports.amqp.client import Properties, RawDelivery


class Order(Message, wire_name="unit.amqp.Order"):
    n: int


class Shipped(Message, wire_name="unit.amqp.Shipped"):
    n: int


class FakeConsumer:
    tag = "t"

    def __init__(self, queue):
        self.queue = queue

    @property
    def buffered(self):
        return len(self.queue.pending)

    def get(self):
        return self.queue.get()


class FakeChannel:
    is_open = True

    def __init__(self, log):
        self.closed = Deferred()
        self.deliveries = DeferredQueue()
        self.log = log

    def confirm(self):
        return succeed(None)

    def exchange_declare(self, name, kind, durable=True, arguments=None):
        self.log.append(("exchange", name))
        return succeed(None)

    def queue_declare(self, name, **kwargs):
        return succeed(0)

    def queue_bind(self, queue, exchange, routing_key=""):
        self.log.append(("bind", queue, exchange))
        return succeed(None)

    def qos(self, prefetch_count):
        return succeed(None)

    def consume(self, queue, exclusive=False):
        return succeed(FakeConsumer(self.deliveries))

    def publish(self, exchange, routing_key, body, properties, mandatory=False):
        self.log.append(("publish", exchange, codec.decode(body)))
        return succeed(None)  # confirmed at once

    def ack(self, tag, multiple=False):
        self.log.append(("ack", tag))

    def nack(self, tag, requeue=True):
        self.log.append(("nack", tag, requeue))

    def get(self, queue):
        return succeed(None)

    def close(self):
        return succeed(None)


class FakeConnection:
    ready = None
    is_open = True
    last_received = 0.0

    def __init__(self):
        self.log = []
        self.channels = []

    def channel(self):
        channel = FakeChannel(self.log)
        self.channels.append(channel)
        return succeed(channel)

    def when_lost(self):
        return Deferred()


def fake_bus(clock, connection):
    """A main bus with one app (Order -> Shipped) over AMQPTransport on C{connection}."""
    transport = AMQPTransport(parse_amqp_settings({"url": "amqp://unit"}), clock)
    transport.running = True
    opened = Deferred.fromCoroutine(transport._open_session(connection))
    assert opened.called and transport.connected
    bus = MainMessageBus("unit", transport, reactor=clock)
    subs = {Order: lambda m: Shipped(n=m.n)}
    bus.add_app("shop", ApplicationMessageBus("shop", subs, reactor=clock), subs)
    bus.startService()
    clock.advance(0)
    return bus, transport._apps["shop"]


def test_a_synchronous_client_sets_up_delivers_publishes_and_acks_in_order():
    clock = Clock()
    connection = FakeConnection()
    bus, app = fake_bus(clock, connection)
    assert app.consumer is not None, "set-up must finish although the client answered at once"
    assert ("bind", "scbus.app.shop", "scbus.type.unit.amqp.Order") in connection.log
    for tag in (1, 2, 3):
        raw = RawDelivery(app.channel, tag, False, "", "", Properties(content_type="application/json"),
                          codec.encode(Order(n=tag)))
        app.channel.deliveries.put(raw)
    clock.advance(0)
    events = [e for e in connection.log if e[0] in ("publish", "ack")]
    assert [(e[0], e[2].n if e[0] == "publish" else e[1]) for e in events] == [
        ("publish", 1), ("ack", 1), ("publish", 2), ("ack", 2), ("publish", 3), ("ack", 3)
    ]
    assert all(e[1] == "scbus.type.unit.amqp.Shipped" for e in events if e[0] == "publish")
