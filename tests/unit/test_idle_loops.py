"""
Idle handlers in one process or in every one: the main bus runs an app's idle loops only
while the transport's lease says this process holds it, stops them the moment it is
lost, and skips a tick when the lease may be stale.
"""

from datetime import timedelta

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from scbus.appbus import ApplicationMessageBus
from scbus.config import parse_config
from scbus.errors import ConfigError
from scbus.interfaces import IIdleLease, IIdleLeases
from scbus.mainbus import MainMessageBus
from scbus.message import Message
from scbus.transports.amqp.idle_lease import IdleLeases, lease_arguments, lease_queue
from scbus.transports.local import LocalTransport


class Beat(Message, wire_name="unit.idle.Beat"):
    n: int


@implementer(IIdleLease)
class FakeLease:
    def __init__(self, on_change):
        self.on_change = on_change
        self.held = False
        self.fresh = True
        self.wanted = True

    def holds(self):
        return self.held and self.fresh

    def release(self):
        self.wanted = False
        self.held = False
        self.on_change(False)


@implementer(IIdleLeases)
class LeasingTransport(LocalTransport):
    """The in-memory transport, plus the lease a shared transport offers."""

    def __init__(self, clock):
        super().__init__(clock)
        self.leases = {}

    def idle_lease(self, app_name, on_change):
        lease = self.leases.setdefault(app_name, FakeLease(on_change))
        lease.wanted = True
        return lease

    def grant(self, app_name, held):
        lease = self.leases[app_name]
        lease.held = held
        lease.on_change(held)


def beating_bus(clock, transport, idle="one"):
    sent = []
    count = {"n": 0}

    def beat():
        count["n"] += 1
        sent.append(count["n"])
        return None

    subs = {timedelta(seconds=1): beat, Beat: lambda m: None}
    bus = MainMessageBus("unit", transport, reactor=clock)
    bus.add_app("beats", ApplicationMessageBus("beats", subs, reactor=clock), subs, idle=idle)
    bus.startService()
    clock.advance(0)
    return bus, sent


def runs_idle(bus):
    return bus._status(bus._apps["beats"], None).runs_idle


def test_without_a_lease_the_idle_handlers_run_in_this_process():
    clock = Clock()
    bus, sent = beating_bus(clock, LocalTransport(clock))
    clock.pump([1.0] * 3)
    assert sent == [1, 2, 3]
    assert runs_idle(bus)


def test_with_idle_one_they_run_only_while_the_lease_is_held():
    clock = Clock()
    transport = LeasingTransport(clock)
    bus, sent = beating_bus(clock, transport)
    clock.pump([1.0] * 3)
    assert sent == [] and not runs_idle(bus)
    transport.grant("beats", True)
    clock.pump([1.0] * 2)
    assert sent == [1, 2] and runs_idle(bus)
    transport.grant("beats", False)  # lost: stop at once, not at the next tick
    assert not runs_idle(bus)
    clock.pump([1.0] * 3)
    assert sent == [1, 2]


def test_a_tick_is_skipped_while_the_lease_may_be_stale():
    clock = Clock()
    transport = LeasingTransport(clock)
    bus, sent = beating_bus(clock, transport)
    transport.grant("beats", True)
    clock.advance(1.0)
    transport.leases["beats"].fresh = False
    clock.advance(1.0)
    assert sent == [1]


def test_with_idle_every_they_run_without_asking_for_the_lease():
    clock = Clock()
    transport = LeasingTransport(clock)
    bus, sent = beating_bus(clock, transport, idle="every")
    clock.pump([1.0] * 2)
    assert sent == [1, 2] and transport.leases == {}


def test_the_idle_key_takes_one_or_every_and_names_itself_when_wrong():
    config = parse_config({"apps": {"a": {"builder": "m:f", "idle": "every"}}})
    assert config.apps["a"].idle == "every"
    assert parse_config({"apps": {"a": {"builder": "m:f"}}}).apps["a"].idle == "one"
    with pytest.raises(ConfigError, match=r"apps\.a\.idle.*'one', 'every'"):
        parse_config({"apps": {"a": {"builder": "m:f", "idle": "all"}}})


# --- the lease itself, against an in-memory client seam ---------------------------------


class Consumer:
    def __init__(self):
        self.waiting = []

    def get(self):
        d = Deferred()
        self.waiting.append(d)
        return d


class Token:
    def __init__(self, channel, tag):
        self.channel = channel
        self.delivery_tag = tag


class Channel:
    def __init__(self, log):
        self.log = log
        self.is_open = True
        self.closed = Deferred()
        self.consumer = Consumer()

    def queue_declare(self, name, durable=True, arguments=None):
        self.log.append(("declare", name, arguments))
        return succeed(0)

    def qos(self, prefetch_count):
        self.log.append(("qos", prefetch_count))
        return succeed(None)

    def consume(self, queue):
        return succeed(self.consumer)

    def publish(self, exchange, routing_key, body, properties):
        self.log.append(("publish", routing_key))
        return succeed(None)

    def ack(self, tag):
        self.log.append(("ack", tag))

    def close(self):
        self.is_open = False
        self.closed.callback(None)

    def deliver(self, tag):
        self.consumer.waiting.pop(0).callback(Token(self, tag))


class Connection:
    def __init__(self, clock):
        self.is_open = True
        self.last_received = clock.seconds()
        self.log = []
        self.channels = []

    def channel(self):
        channel = Channel(self.log)
        self.channels.append(channel)
        return succeed(channel)


def test_the_lease_is_a_single_active_consumer_holding_one_token():
    clock = Clock()
    connection = Connection(clock)
    changes = []
    leases = IdleLeases(clock, heartbeat=2)
    lease = leases.want("clock", changes.append)
    leases.connected(connection)
    queue = lease_queue("clock")
    assert connection.log == [
        ("declare", queue, lease_arguments("classic")), ("qos", 1), ("publish", queue),
    ]
    assert lease_arguments("classic")["x-single-active-consumer"] is True
    channel = connection.channels[0]
    channel.deliver(1)
    assert changes == [True] and lease.holds()
    channel.deliver(2)  # a spare token is acknowledged; the first stays held
    assert ("ack", 2) in connection.log and ("ack", 1) not in connection.log
    clock.advance(2.5)  # nothing heard from the broker for longer than the heartbeat
    assert lease.held and not lease.holds()
    connection.last_received = clock.seconds()
    assert lease.holds()
    leases.disconnected(connection)
    assert changes == [True, False] and not lease.holds()


def test_a_lease_channel_closed_by_the_broker_gives_up_and_claims_again():
    clock = Clock()
    connection = Connection(clock)
    changes = []
    leases = IdleLeases(clock, heartbeat=2)
    leases.want("clock", changes.append)
    leases.connected(connection)
    connection.channels[0].deliver(1)
    connection.channels[0].close()
    assert changes == [True, False]
    clock.advance(1.0)
    assert len(connection.channels) == 2
    connection.channels[1].deliver(1)
    assert changes == [True, False, True]


def test_pausing_the_app_hands_the_lease_on_and_resuming_claims_it_again():
    clock = Clock()
    transport = LeasingTransport(clock)
    bus, sent = beating_bus(clock, transport)
    transport.grant("beats", True)
    clock.advance(1.0)
    bus.pause("beats")
    lease = transport.leases["beats"]
    assert not lease.wanted and not runs_idle(bus)  # another process may run them now
    clock.pump([1.0] * 2)
    assert sent == [1]
    bus.resume("beats")
    assert lease.wanted
    transport.grant("beats", True)
    clock.advance(1.0)
    assert sent == [1, 2]


def test_a_released_lease_closes_its_channel_and_is_claimed_again_when_wanted():
    clock = Clock()
    connection = Connection(clock)
    changes = []
    leases = IdleLeases(clock, heartbeat=2)
    lease = leases.want("clock", changes.append)
    leases.connected(connection)
    connection.channels[0].deliver(1)
    lease.release()
    assert changes == [True, False] and not connection.channels[0].is_open
    clock.advance(5.0)
    assert len(connection.channels) == 1  # not claimed again while released
    leases.want("clock", changes.append)
    assert len(connection.channels) == 2
