"""AMQPTransport.setup(): every type asked for is bound before set-up reports success."""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from scbus.message import Message
from scbus.transports.amqp import AMQPTransport, parse_amqp_settings

from .test_amqp_transport_unit import FakeChannel, FakeConnection, FakeConsumer


class First(Message, wire_name="unit.setup.First"):
    n: int


class Second(Message, wire_name="unit.setup.Second"):
    n: int


class GatedChannel(FakeChannel):
    """basic.consume answers only when the test says so: the app is being set up meanwhile."""

    gate: Deferred | None = None

    def consume(self, queue, exclusive=False):
        if queue.startswith("scbus.app.") and GatedChannel.gate is not None:
            self.log.append(("consume", queue))
            return GatedChannel.gate.addCallback(lambda _: FakeConsumer(self.deliveries))
        return super().consume(queue, exclusive)


class GatedConnection(FakeConnection):
    def channel(self):
        channel = GatedChannel(self.log)
        self.channels.append(channel)
        return succeed(channel)


def connected_transport(connection):
    transport = AMQPTransport(parse_amqp_settings({"url": "amqp://unit"}), Clock())
    transport.running = True
    opened = Deferred.fromCoroutine(transport._open_session(connection))
    assert opened.called and transport.connected
    return transport


def binds(connection, queue):
    return [e[2] for e in connection.log if e[0] == "bind" and e[1] == queue]


def test_types_added_while_an_app_is_being_set_up_are_bound_before_it_reports():
    connection = GatedConnection()
    transport = connected_transport(connection)
    GatedChannel.gate = Deferred()
    try:
        first = transport.setup("gated", [First])
        second = transport.setup("gated", [Second])  # while basic.consume is unanswered
        assert not first.called and not second.called
        GatedChannel.gate.callback(None)
    finally:
        GatedChannel.gate = None
    assert first.called and second.called
    assert sorted(binds(connection, "scbus.app.gated")) == [
        "scbus.type.unit.setup.First", "scbus.type.unit.setup.Second",
    ]


def test_types_added_to_a_consuming_app_are_bound_without_a_second_consumer():
    connection = GatedConnection()
    transport = connected_transport(connection)
    assert transport.setup("later", [First]).called
    consumer = transport._apps["later"].consumer
    assert transport.setup("later", [Second]).called
    assert transport._apps["later"].consumer is consumer
    assert sorted(binds(connection, "scbus.app.later")) == [
        "scbus.type.unit.setup.First", "scbus.type.unit.setup.Second",
    ]
    assert transport.setup("later", [First, Second]).called
    assert len(binds(connection, "scbus.app.later")) == 2
