"""The control plane's answers and health assessment, on the in-memory transport."""

import json
import os

from twisted.internet.defer import Deferred

from scbus.appbus import ApplicationMessageBus
from scbus.control import assess, process_name, render
from scbus.console import make_namespace
from scbus.message import HeartbeatMessage, Message
from scbus.testing import BusHarness, result_of


class Job(Message, wire_name="test.control.Job"):
    n: int


def harness():
    h = BusHarness()
    h.add_app("worker", lambda name, root, config: {Job: lambda m: None})
    h.add_app("other", lambda name, root, config: {Job: lambda m: None})
    h.start()
    return h


def test_status_answer_names_the_process_and_describes_each_app():
    h = harness()
    h.send(Job(n=1))
    h.clock.advance(3)
    [answer] = result_of(h.transport.ask({"op": "status"}, 1.0))
    assert answer["process"] == process_name("test") and answer["pid"] == os.getpid()
    assert answer["bus"] == "test" and answer["apps"] == ["other", "worker"]
    assert answer["uptime"] is not None and answer["version"]
    worker = next(s for s in answer["app_status"] if s["name"] == "worker")
    for key in ("queued", "in_flight", "handled", "errors", "redelivered", "last_handled_at",
                "oldest_in_flight_age", "paused", "idle", "heartbeat_lag"):
        assert key in worker
    assert worker["handled"] == 1 and worker["queued"] == 0
    json.dumps(answer)  # it crosses the wire as JSON


def test_ping_and_targets():
    h = harness()
    [pong] = result_of(h.transport.ask({"op": "ping"}, 1.0))
    assert pong["pong"] is True
    assert result_of(h.transport.ask({"op": "ping", "target": {"app": "worker"}}, 1.0))
    assert result_of(h.transport.ask({"op": "ping", "target": {"app": "absent"}}, 1.0)) == []
    assert result_of(h.transport.ask({"op": "ping", "target": {"process": str(os.getpid())}}, 1.0))
    assert result_of(h.transport.ask({"op": "ping", "target": {"process": "x@y:1"}}, 1.0)) == []
    [bad] = result_of(h.transport.ask({"op": "reboot"}, 1.0))
    assert "unknown request" in bad["error"]


def test_heartbeat_lag_shows_in_status():
    h = harness()
    h.bus.pause("worker")
    h.send(HeartbeatMessage(app_name="worker", created_at=h.clock.seconds()))
    h.advance(7)
    h.bus.resume("worker")
    h.flush()
    worker = next(s for s in h.status() if s.name == "worker")
    assert worker.heartbeat_lag == 7.0


def test_assess_finds_missing_and_wedged_processes():
    answer = {"process": "bus@h:1", "apps": ["a"], "app_status": []}
    assert assess([answer], {"a": 1}, {"a": 1}).healthy
    health = assess([answer], {"a": 2, "b": 1}, {"a": 3})
    assert health.problems == [
        "app a: 1 live process(es) answered, 2 expected",
        "app b: no live process answered",
        "app a: 3 consumer(s) on its queue but 1 process(es) answered: a process is not answering (wedged or overloaded); answered: bus@h:1",
    ]
    text = render(health)
    assert "bus@h:1" in text and "PROBLEM: app b: no live process answered" in text


def test_console_processes_and_lag():
    h = harness()
    ns = make_namespace(h.bus)
    view = ns["processes"]()  # in memory the answer is there at once
    assert view.health.healthy and "worker" in repr(view)
    d = ns["lag"]("worker", wait=1.0)
    h.advance(1.0)
    assert "heartbeat lag" in repr(result_of(d))


def test_an_app_whose_oldest_delivery_is_past_stuck_after_is_unhealthy():
    h = BusHarness()
    pending = []
    subscriptions = {Job: lambda m: pending.append(Deferred()) or pending[-1]}
    app = ApplicationMessageBus("wedged", subscriptions, reactor=h.clock)
    h.bus.add_app("wedged", app, subscriptions, stuck_after=5)
    h.start()
    h.send(Job(n=1))
    h.advance(4)

    def health():
        return assess(result_of(h.transport.ask({"op": "status"}, 1.0)), {"wedged": 1})

    assert health().healthy
    h.advance(2)
    found = health()
    assert found.problems == [
        f"app wedged in {process_name('test')}: stuck: a delivery has been in flight for 6s, "
        "over stuck_after (5s)"
    ]
    assert f"PROBLEM: app wedged in {process_name('test')}: stuck" in render(found)
    pending[0].callback(None)
    h.flush()
    assert health().healthy


class Unwanted(Message, wire_name="test.control.Unwanted"):
    n: int


def test_a_full_set_aside_store_shows_what_it_dropped_in_status_and_the_console():
    from twisted.internet.task import Clock

    from scbus.mainbus import MainMessageBus
    from scbus.transports.local import LocalTransport

    clock = Clock()
    transport = LocalTransport(clock, set_aside_limit=2)
    bus = MainMessageBus("full", transport, reactor=clock, grace_period=0)
    subs = {Job: lambda m: None}
    bus.add_app("worker", ApplicationMessageBus("worker", subs, reactor=clock), subs)
    transport.startService()
    bus.startService()
    ns = make_namespace(bus)
    assert "dropped" not in repr(ns["unrouted"]()) and "dropped" not in repr(ns["status"]())
    for n in range(5):
        bus.send(Unwanted(n=n))
    clock.advance(1)
    [answer] = result_of(transport.ask({"op": "status"}, 1.0))
    assert answer["set_aside_dropped"] == {"unrouted": 3, "dead": 0}
    shown = render(assess([answer], ["worker"]))
    assert "set-aside stores full, oldest dropped: 3 unrouted (transport.set_aside_limit)" in shown
    listing = ns["unrouted"]()
    assert len(listing) == 2
    assert repr(listing).endswith("(3 older entries dropped: transport.set_aside_limit)")
    assert "dropped" not in repr(ns["dead_letters"]())
    assert repr(ns["status"]()).splitlines()[-1] == (
        "set-aside stores full, oldest dropped: 3 unrouted (transport.set_aside_limit)"
    )
    json.dumps(answer)
