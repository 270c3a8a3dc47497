"""The AMQP transport's publisher: what waits for the broker is counted where status reads it."""

from twisted.internet.task import Clock

from scbus.message import Message
from scbus.transports.amqp import AMQPTransport, parse_amqp_settings
from scbus.web.snapshot import send_buffer


class Parcel(Message, wire_name="unit.publisher.Parcel"):
    n: int


def test_sends_waiting_for_the_broker_are_counted_for_status():
    transport = AMQPTransport(parse_amqp_settings({"url": "amqp://unit", "send_buffer": 5}), Clock())
    transport.running = True  # started, never connected
    waiting = [transport.send(Parcel(n=n)) for n in range(3)]
    assert not any(d.called for d in waiting)
    assert transport.waiting_to_send == 3 and send_buffer(transport) == 3
