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
    note: str = ""


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


def one_order_handled(clock, transport, handler):
    """A bus with one app ("shop") running C{handler}; Order(n=1) delivered with tag 1."""
    bus = MainMessageBus("unit", transport, reactor=clock)
    subs = {Order: handler}
    bus.add_app("shop", ApplicationMessageBus("shop", subs, reactor=clock), subs)
    bus.startService()
    clock.advance(0)
    channel = transport._apps["shop"].channel
    channel.deliveries.put(RawDelivery(channel, 1, False, "", "", Properties(content_type="application/json"),
                                       codec.encode(Order(n=1))))
    clock.advance(0)
    return bus


def test_an_ack_on_a_channel_gone_meanwhile_is_not_counted_and_frees_the_slot():
    clock = Clock()
    connection = FakeConnection()
    transport = connected_transport(connection, clock)

    def handler(message):
        transport._apps["shop"].channel = None  # its channel closed while it was handled
        return Shipped(n=message.n)

    bus = one_order_handled(clock, transport, handler)
    assert [e[0] for e in connection.log if e[0] in ("publish", "ack")] == ["publish"]  # no ack on a dead channel
    assert bus.apps["shop"].counters.acked == 0
    assert bus._apps["shop"].in_flight == {}


def test_a_result_too_big_to_send_is_reported_as_the_apps_error_and_the_delivery_acknowledged():
    clock = Clock()
    connection = FakeConnection()
    transport = connected_transport(connection, clock)
    transport.settings.max_message_size = 2000
    bus = one_order_handled(clock, transport, lambda m: Shipped(n=m.n, note="x" * 5000))
    events = [e for e in connection.log if e[0] in ("publish", "ack")]
    assert [e[0] for e in events] == ["publish", "ack"]
    report = events[0][2]
    assert report.wire_name == "scbus.AppErrorOccurred" and report.error_type == "scbus.errors.EncodeError"
    assert events[1][1] == 1
    counters = bus.apps["shop"].counters
    assert counters.acked == 1 and bus._apps["shop"].in_flight == {}


def test_a_dead_letter_is_listed_with_the_time_it_was_set_aside():
    import datetime

    from scbus.transports.amqp.holding import set_aside_entry

    def entry(headers, timestamp=None):
        properties = Properties(content_type="application/json", headers=headers, timestamp=timestamp)
        return set_aside_entry("dead", RawDelivery(None, 1, False, "", "scbus.dead", properties, b"{bad"))

    # Written by the bus when it set the body aside: that, not the message's creation.
    assert entry({"x-scbus-reason": "malformed", "x-scbus-set-aside-at": 1700000123500}, timestamp=1600000000).at == 1700000123.5
    # Dead-lettered by the broker: x-death's time, as pika (a naive UTC datetime) and txAMQP (an int) give it.
    when = datetime.datetime(2024, 5, 1, 12, 0, 0)
    expected = when.replace(tzinfo=datetime.timezone.utc).timestamp()
    assert entry({"x-death": [{"reason": "delivery_limit", "queue": "scbus.app.shop", "time": when}]}).at == expected
    assert entry({"x-death": [{"reason": "rejected", "queue": "scbus.app.shop", "time": int(expected)}]}).at == expected
    # Nothing says when: the message's own time, else unknown.
    assert entry({"x-scbus-reason": "malformed"}, timestamp=1600000000).at == 1600000000.0
    assert entry({"x-scbus-reason": "malformed", "x-scbus-set-aside-at": "soon"}).at == 0.0
