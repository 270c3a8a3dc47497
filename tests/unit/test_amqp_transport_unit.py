"""
AMQPTransport's logic against an in-memory client seam that answers at once (no broker):
a client may answer synchronously and the transport must still set up, deliver, publish
and acknowledge in order.
"""

from twisted.internet.task import Clock

from scbus import codec
from scbus.appbus import ApplicationMessageBus
from scbus.mainbus import MainMessageBus
from scbus.message import Message
from scbus.testing.amqp import FakeChannel, FakeConnection, FakeConsumer, connected_transport
from scbus.transports.amqp.client import Properties, RawDelivery

__all__ = ["FakeChannel", "FakeConnection", "FakeConsumer", "Order", "Shipped", "fake_bus"]


class Order(Message, wire_name="unit.amqp.Order"):
    n: int


class Shipped(Message, wire_name="unit.amqp.Shipped"):
    n: int


def fake_bus(clock, connection):
    """A main bus with one app (Order -> Shipped) over AMQPTransport on C{connection}."""
    transport = connected_transport(connection, clock)
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


def test_deliveries_that_arrive_together_are_taken_with_one_waiting_retrieve():
    clock = Clock()
    connection = FakeConnection()
    bus, app = fake_bus(clock, connection)
    consumer = app.consumer
    gets = []
    original_get = consumer.get
    consumer.get = lambda: gets.append(1) or original_get()
    assert len(app.waiters) == 1  # not one per in-flight slot

    def raw(tag):
        return RawDelivery(app.channel, tag, False, "", "", Properties(content_type="application/json"),
                           codec.encode(Order(n=tag)))

    # A client hands deliveries over one by one as it reads them from one chunk of data.
    for tag in range(1, 6):
        app.channel.deliveries.put(raw(tag))
    clock.advance(0)
    acked = [e[1] for e in connection.log if e[0] == "ack"]
    assert acked == [1, 2, 3, 4, 5]
    assert bus.apps["shop"].counters.acked == 5
    # the first woke the waiting retrieve; the other four were taken without one each
    assert len(gets) == 1 and len(app.waiters) == 1
