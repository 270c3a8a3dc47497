"""
A slow idle run is never overlapped by the next one of its interval: not after a pause
and resume, not when the lease is lost and won back during the run (over the AMQP
transport's real lease, on the in-memory client), and an error in a run keeps its loop
going. A stop during a run leaves the run to finish and starts nothing after it.
"""

from datetime import timedelta

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock, deferLater

from scbus.appbus import ApplicationMessageBus
from scbus.idleloops import IdleLoops
from scbus.mainbus import MainMessageBus
from scbus.message import Message
from scbus.testing import BusHarness
from scbus.transports.local import LocalTransport
from scbus.testing.amqp import FakeChannel, FakeConnection, connected_transport
from scbus.transports.amqp.client import Properties, RawDelivery
from scbus.transports.amqp.idle_lease import REOPEN_DELAY, lease_queue

SECOND = timedelta(seconds=1)


class Done(Message, wire_name="unit.overlap.Done"):
    n: int


class SlowRuns:
    """An idle handler that takes C{seconds} on C{clock}; records every start and end."""

    def __init__(self, clock, seconds=3.0, result=None):
        self.clock = clock
        self.seconds = seconds
        self.result = result
        self.starts = []
        self.ends = []
        self.running = 0
        self.most_at_once = 0

    def __call__(self):
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.starts.append(self.clock.seconds())
        return deferLater(self.clock, self.seconds, self._end)

    def _end(self):
        self.running -= 1
        self.ends.append(self.clock.seconds())
        return self.result(len(self.ends)) if self.result else None

    def builder(self, name, root_config, config):
        return {SECOND: self}


def slow_harness(seconds=3.0, result=None):
    harness = BusHarness()
    runs = SlowRuns(harness.clock, seconds, result)
    harness.add_app("slow", runs.builder)
    harness.start()
    return harness, runs


def test_a_pause_and_resume_during_a_run_waits_for_it_before_the_next():
    harness, runs = slow_harness()
    harness.advance(1.5)  # the first run started at 1 and ends at 4
    harness.bus.pause("slow")
    harness.bus.resume("slow")
    harness.advance(8.0)
    assert runs.most_at_once == 1
    # The loop started again when the run ended (4), and runs on its interval from there.
    assert runs.starts == [1.0, 5.0, 9.0]
    assert runs.ends == [4.0, 8.0]


def test_without_a_pause_the_slow_run_sets_the_same_pace():
    harness, runs = slow_harness()
    harness.advance(9.5)
    assert runs.most_at_once == 1 and runs.starts == [1.0, 5.0, 9.0]


def test_pausing_twice_during_one_run_starts_one_loop_after_it():
    harness, runs = slow_harness()
    harness.advance(1.5)
    for _ in range(3):
        harness.bus.pause("slow")
        harness.bus.resume("slow")
        harness.advance(0.5)
    harness.advance(6.0)
    assert runs.most_at_once == 1 and runs.starts == [1.0, 5.0, 9.0]


def test_a_pause_during_a_run_lets_it_finish_and_send_and_starts_nothing():
    harness, runs = slow_harness(result=lambda n: Done(n=n))
    harness.advance(1.5)
    harness.bus.pause("slow")
    harness.advance(10.0)
    assert runs.starts == [1.0] and runs.ends == [4.0]
    assert [m.n for m in harness.sent_of(Done)] == [1]  # the pending run's result is sent
    assert not harness.status()[0].runs_idle
    harness.bus.resume("slow")  # after the run ended: on its interval from the resume
    harness.advance(1.0)
    assert runs.starts == [1.0, 12.5]


def test_a_resume_while_the_run_is_pending_shows_the_app_running_its_idle_handlers():
    harness, runs = slow_harness()
    harness.advance(1.5)
    harness.bus.pause("slow")
    harness.bus.resume("slow")
    assert harness.status()[0].runs_idle


def grace_bus(clock, grace):
    transport = LocalTransport(clock, record=True)
    runs = SlowRuns(clock, result=lambda n: Done(n=n))
    subs = runs.builder("slow", {}, {})
    bus = MainMessageBus("grace", transport, reactor=clock, grace_period=grace)
    bus.add_app("slow", ApplicationMessageBus("slow", subs, reactor=clock), subs)
    transport.startService()
    bus.startService()
    clock.pump([0.5] * 3)  # the first run started at 1 and ends at 4
    return bus, transport, runs


def test_a_bus_stop_during_a_run_waits_for_it_within_the_grace_period_and_sends_its_results():
    clock = Clock()
    bus, transport, runs = grace_bus(clock, grace=5.0)
    stopped = bus.stopService()
    clock.pump([0.5] * 4)  # to 3.5: the run is still under way
    assert not stopped.called
    clock.advance(0.5)  # 4.0: it ends
    assert stopped.called
    assert [m.n for m in transport.sent if isinstance(m, Done)] == [1]
    clock.pump([0.5] * 20)
    assert runs.starts == [1.0] and runs.ends == [4.0] and runs.most_at_once == 1


def test_a_run_still_under_way_when_the_grace_period_is_over_sends_nothing():
    clock = Clock()
    bus, transport, runs = grace_bus(clock, grace=1.0)
    stopped = bus.stopService()
    clock.pump([0.5] * 2)  # 2.5: the grace period is over
    assert stopped.called
    clock.pump([0.5] * 20)
    assert runs.ends == [4.0] and runs.starts == [1.0]
    assert [m for m in transport.sent if isinstance(m, Done)] == []


def test_a_run_left_over_from_an_earlier_stop_is_waited_for_by_the_next():
    clock = Clock()
    bus, transport, runs = grace_bus(clock, grace=0.5)
    bus.stopService()
    clock.advance(0.5)  # 2.0: the grace period is over; the run goes on to 4
    bus.startService()
    clock.advance(0)
    bus.grace_period = 5.0
    stopped = bus.stopService()
    clock.advance(1.5)
    assert not stopped.called
    clock.advance(0.5)  # 4.0
    assert stopped.called and runs.starts == [1.0]


def test_an_error_in_a_run_keeps_the_loop_going():
    def builder(name, root_config, config):
        calls = {"n": 0}

        def flaky():
            calls["n"] += 1
            if calls["n"] % 2:
                raise ValueError(f"run {calls['n']}")
            return Done(n=calls["n"])

        return {SECOND: flaky}

    harness = BusHarness()
    harness.add_app("flaky", builder)
    harness.start()
    harness.advance(4.0)
    assert [e.error for e in harness.errors] == ["run 1", "run 3"]
    assert [m.n for m in harness.sent_of(Done)] == [2, 4]


# --- the loops themselves ------------------------------------------------------------------


def loops_running(run, clock):
    loops = IdleLoops("a", [SECOND], run, clock, mode="every")
    loops.start(object())
    return loops


def test_a_run_that_raises_or_fails_does_not_stop_its_loop():
    clock = Clock()
    calls = []

    def run(interval):
        calls.append(clock.seconds())
        if len(calls) == 1:
            raise RuntimeError("raised")
        if len(calls) == 2:
            return fail(RuntimeError("failed"))
        return None

    loops_running(run, clock)
    clock.pump([1.0] * 4)
    assert calls == [1.0, 2.0, 3.0, 4.0]


def test_stop_fires_once_the_pending_run_has_ended():
    clock = Clock()
    pending = Deferred()
    loops = loops_running(lambda i: pending, clock)
    clock.advance(1.0)
    quiet = loops.stop()
    assert not quiet.called and not loops.running
    pending.callback(None)
    assert quiet.called
    assert loops.stop().called  # nothing pending now: at once


def test_a_start_while_a_run_is_pending_runs_on_its_interval_after_it():
    clock = Clock()
    runs = SlowRuns(clock, seconds=2.5)
    loops = loops_running(lambda i: runs(), clock)
    clock.advance(1.0)  # runs 1.0 to 3.5
    loops.stop()
    loops.start(object())
    clock.pump([0.5] * 14)
    assert runs.starts == [1.0, 4.5, 7.5] and runs.most_at_once == 1  # (paced from 3.5)


# --- the lease lost and won back during a run, over the AMQP transport ----------------------


class LeaseChannel(FakeChannel):
    """The in-memory channel, also taking the lease's token (a body that is no envelope)."""

    def publish(self, exchange, routing_key, body, properties, mandatory=False):
        if routing_key == lease_queue("slow"):
            self.log.append(("token", routing_key))
            return succeed(None)
        return super().publish(exchange, routing_key, body, properties, mandatory)


class LeaseConnection(FakeConnection):
    def channel(self):
        channel = LeaseChannel(self.log)
        self.channels.append(channel)
        return succeed(channel)


def token(channel, tag):
    return RawDelivery(channel, tag, False, "", lease_queue("slow"), Properties(content_type="application/json"), b"{}")


def lease_channel(connection):
    channels = [c for c in connection.channels if lease_queue("slow") in c.consuming]
    return channels[-1]


def test_the_lease_lost_and_won_back_during_a_run_waits_for_it():
    clock = Clock()
    connection = LeaseConnection()
    transport = connected_transport(connection, clock, {"heartbeat": 0})
    runs = SlowRuns(clock)
    subs = runs.builder("slow", {}, {})
    bus = MainMessageBus("lease", transport, reactor=clock, grace_period=0)
    bus.add_app("slow", ApplicationMessageBus("slow", subs, reactor=clock), subs, idle="one")
    bus.startService()
    clock.advance(0)
    channel = lease_channel(connection)
    channel.deliveries.put(token(channel, 1))
    clock.advance(0)
    assert bus._apps["slow"].idle.running  # holds the lease
    clock.pump([0.5] * 3)  # the first run started at 1 and ends at 4
    assert runs.starts == [1.0]

    # The broker closes the lease channel (the token goes to another consumer and back).
    channel.is_open = False
    channel.closed.callback(None)
    assert not bus._apps["slow"].idle.running
    clock.advance(REOPEN_DELAY)  # claimed again at 2.5 on a new channel
    again = lease_channel(connection)
    assert again is not channel
    again.deliveries.put(token(again, 1))
    clock.advance(0)
    assert bus._apps["slow"].idle.running  # won back while the first run is still pending

    clock.pump([0.5] * 14)  # to 9.5
    assert runs.most_at_once == 1
    assert runs.starts == [1.0, 5.0, 9.0] and runs.ends == [4.0, 8.0]
