"""
Pausing: a paused app's prefetched deliveries go back to the broker, a pause kept on the
broker pauses a process as it starts, and the control plane pauses every process.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from scbus import codec
from scbus.appbus import ApplicationMessageBus
from scbus.mainbus import MainMessageBus
from scbus.pausing import pause_everywhere
from scbus.transports.amqp import AMQPTransport, parse_amqp_settings
from scbus.transports.amqp.client import Properties, RawDelivery
from scbus.testing.amqp import FakeConsumer
from scbus.transports.amqp.pause import marker_queue
from scbus.transports.local import LocalTransport

from .test_amqp_transport_unit import FakeChannel, FakeConnection, Order, Shipped


class CancellableConsumer(FakeConsumer):
    def __init__(self, queue, log):
        super().__init__(queue)
        self.log = log

    def cancel(self):
        self.log.append(("cancel",))
        arrived, self.queue.pending = list(self.queue.pending), []
        return succeed(arrived)


class Channel(FakeChannel):
    def __init__(self, log, marked):
        super().__init__(log)
        self.marked = marked

    def queue_declare(self, name, **kwargs):
        return succeed(1 if name in self.marked else 0)

    def consume(self, queue, exclusive=False):
        self.log.append(("consume", queue))
        return succeed(CancellableConsumer(self.deliveries, self.log))


class Connection(FakeConnection):
    def __init__(self, marked=()):
        super().__init__()
        self.marked = set(marked)

    def channel(self):
        channel = Channel(self.log, self.marked)
        self.channels.append(channel)
        return succeed(channel)


def started_bus(clock, connection, in_flight=2):
    transport = AMQPTransport(parse_amqp_settings({"url": "amqp://unit"}), clock)
    transport.running = True
    opened = Deferred.fromCoroutine(transport._open_session(connection))
    assert opened.called and transport.connected
    bus = MainMessageBus("unit", transport, reactor=clock)
    handled = []
    pending = []

    def ship(message):
        handled.append(message.n)
        d = Deferred()
        pending.append(d)
        return d.addCallback(lambda _: Shipped(n=message.n))

    subs = {Order: ship}
    bus.add_app("shop", ApplicationMessageBus("shop", subs, reactor=clock), subs, max_in_flight=in_flight)
    bus.startService()
    clock.advance(0)
    return bus, transport._apps["shop"], handled, pending


def deliver(app, tag):
    raw = RawDelivery(app.channel, tag, False, "", "", Properties(content_type="application/json"),
                      codec.encode(Order(n=tag)))
    app.channel.deliveries.put(raw)


def test_pause_gives_prefetched_deliveries_back_and_lets_in_flight_finish():
    clock = Clock()
    connection = Connection()
    bus, app, handled, pending = started_bus(clock, connection, in_flight=2)
    for tag in (1, 2, 3, 4):  # the broker sent more than the bus has taken
        deliver(app, tag)
    clock.advance(0)
    assert handled == [1, 2]
    bus.pause("shop")
    clock.advance(0)
    assert ("cancel",) in connection.log
    assert ("nack", 3, True) in connection.log and ("nack", 4, True) in connection.log
    assert app.consumer is None and bus.transport.buffered("shop") == 0
    for d in pending:
        d.callback(None)
    clock.advance(0)
    assert ("ack", 1) in connection.log and ("ack", 2) in connection.log
    assert handled == [1, 2]
    consumes = connection.log.count(("consume", app.queue))
    bus.resume("shop")
    clock.advance(0)
    assert connection.log.count(("consume", app.queue)) == consumes + 1
    deliver(app, 5)
    clock.advance(0)
    assert handled == [1, 2, 5]


def test_a_process_that_starts_while_the_app_is_marked_paused_starts_paused():
    clock = Clock()
    connection = Connection(marked={marker_queue("shop")})
    bus, app, handled, _ = started_bus(clock, connection)
    assert bus._apps["shop"].paused
    assert ("consume", app.queue) not in connection.log
    connection.marked.clear()  # resumed elsewhere while this process was connecting
    bus.transport._pauses.recheck(connection, ["shop"])
    clock.advance(0)
    assert not bus._apps["shop"].paused
    assert ("consume", app.queue) in connection.log


def test_the_control_plane_pauses_and_resumes_every_process_that_runs_the_app():
    clock = Clock()
    transport = LocalTransport(clock)
    bus = MainMessageBus("unit", transport, reactor=clock)
    subs = {Order: lambda m: None}
    bus.add_app("shop", ApplicationMessageBus("shop", subs, reactor=clock), subs)
    bus.startService()
    clock.advance(0)
    said = []
    pause_everywhere(bus, "shop", True).addCallback(said.append)
    assert bus._apps["shop"].paused
    assert said[0].startswith("shop: paused in 1 process(es)\n  unit@")
    assert bus.control.handle({"op": "pause", "app": "other"}).result is None
    answer = bus.control.handle({"op": "resume", "app": "shop"}).result
    assert answer["app"] == "shop" and answer["paused"] is False
    assert not bus._apps["shop"].paused
    failed = []
    pause_everywhere(bus, "nope", True).addErrback(failed.append)
    assert "no app named 'nope'" in str(failed[0].value)
