"""
What scbus.testing ships: a harness that runs thread-pool apps deterministically, an
in-memory AMQP client for the transport's seam, and every implementation and fake of the
project's interfaces checked against them.
"""

import threading
from datetime import timedelta

import pytest
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from zope.interface import providedBy
from zope.interface.verify import verifyObject

from scbus import codec
from scbus.message import Message
from scbus.testing import BusHarness, SynchronousThreadPool, ThreadClock, result_of, run_handler
from scbus.testing.amqp import FakeChannel, FakeConnection, FakeConsumer, connected_transport
from scbus.transports.amqp.client import IAMQPChannel, IAMQPConnection, IAMQPConsumer, Properties, RawDelivery
from scbus.transports.local import LocalTransport
from scbus.transports.setaside import SetAsideMessage

from .test_mainbus import HoldingTransport


class Ask(Message, wire_name="test.testing.Ask"):
    n: int


class Answer(Message, wire_name="test.testing.Answer"):
    n: int
    thread: str


def make_threaded(name, root_config, config):
    def on_ask(message):
        if message.n < 0:
            raise ValueError("negative")
        return Answer(n=message.n * 2, thread=threading.current_thread().name)

    return {Ask: on_ask, timedelta(seconds=5): lambda: Ask(n=100)}


def test_a_thread_pool_app_runs_under_the_harness():
    harness = BusHarness()
    app = harness.add_app("doubler", make_threaded, threads=2)
    harness.start()
    harness.send(Ask(n=3))
    harness.send(Ask(n=-1))
    assert [a.n for a in harness.sent_of(Answer)] == [6]
    assert [e.error for e in harness.errors] == ["negative"]
    harness.advance(5)  # the idle handler runs in the pool too, and what it sends is handled
    assert [a.n for a in harness.sent_of(Answer)] == [6, 200]
    assert {a.thread for a in harness.sent_of(Answer)} == {threading.current_thread().name}
    assert app._pool is not None and app._pool.calls == 4
    [status] = harness.status()
    assert (status.handled, status.errors, status.in_flight) == (3, 1, 0)
    harness.stop()


def test_a_thread_result_arrives_only_when_the_clock_runs():
    clock = ThreadClock()
    pool = SynchronousThreadPool(name="test")
    pool.start()
    ran = []
    d = deferToThreadPool(clock, pool, lambda: ran.append("ran") or "done")
    assert ran == ["ran"] and not d.called  # worked at once, answered through the clock
    clock.advance(0)
    assert result_of(d) == "done"
    failing = deferToThreadPool(clock, pool, lambda: 1 / 0)
    clock.advance(0)
    with pytest.raises(ZeroDivisionError):
        result_of(failing)
    pool.stop()
    late = deferToThreadPool(clock, pool, ran.append, "after stop")
    clock.advance(0)
    assert ran == ["ran"] and not late.called  # a stopped pool runs nothing, as a real one


def test_the_in_memory_amqp_client_carries_a_delivery_through_the_transport():
    clock = ThreadClock()
    connection = FakeConnection()
    transport = connected_transport(connection, clock)
    result_of(transport.setup("app", [Ask]))
    assert ("bind", "scbus.app.app", "scbus.type.test.testing.Ask") in connection.log
    channel = connection.consuming("scbus.app.app")
    channel.deliveries.put(RawDelivery(channel, 7, False, "", "", Properties(content_type="application/json"),
                                       codec.encode(Ask(n=1))))
    clock.advance(0)
    delivery = result_of(transport.retrieve("app"))
    assert delivery.message.n == 1
    result_of(delivery.ack())
    result_of(transport.send(Answer(n=2, thread="x")))
    assert [e for e in connection.log if e[0] in ("ack", "publish")] == [
        ("ack", 7), ("publish", "scbus.type.test.testing.Answer", Answer(n=2, thread="x"))
    ]


def _every_implementation():
    """One object of each implementation and fake of the project's interfaces."""
    clock = ThreadClock()
    local = LocalTransport(clock)
    local.startService()
    local.setup("app", [Ask])
    local.send(Ask(n=1))
    connection = FakeConnection()
    amqp = connected_transport(connection, clock)
    result_of(amqp.setup("app", [Ask]))
    channel = connection.consuming("scbus.app.app")
    channel.deliveries.put(RawDelivery(channel, 1, False, "", "", Properties(content_type="application/json"),
                                       codec.encode(Ask(n=1))))
    clock.advance(0)
    return {
        "LocalTransport": local,
        "LocalDelivery": result_of(local.retrieve("app")),
        "AMQPTransport": amqp,
        "AMQPDelivery": result_of(amqp.retrieve("app")),
        "SetAsideMessage": SetAsideMessage(body=b"{}", reason="test", code="unrouted"),
        "HoldingTransport (tests)": HoldingTransport(clock),
        "FakeConnection": connection,
        "FakeChannel": FakeChannel([]),
        "FakeConsumer": FakeConsumer(channel.deliveries),
        "ThreadClock": clock,
    }


@pytest.mark.parametrize("name", sorted(_every_implementation()))
def test_every_implementation_and_fake_provides_its_interfaces(name):
    thing = _every_implementation()[name]
    interfaces = list(providedBy(thing))
    assert interfaces, f"{name} declares no interface"
    for interface in interfaces:
        verifyObject(interface, thing)


def test_the_fakes_provide_the_seam_and_the_clock_the_reactor_interfaces():
    everything = _every_implementation()
    assert IAMQPConnection.providedBy(everything["FakeConnection"])
    assert IAMQPChannel.providedBy(everything["FakeChannel"])
    assert IAMQPConsumer.providedBy(everything["FakeConsumer"])
    for interface in (IReactorTime, IReactorThreads):
        verifyObject(interface, everything["ThreadClock"])


def _chatty(name, root, config):
    import logging

    from twisted.logger import Logger

    def on_order(order):
        logging.getLogger("shop.stdlib").info("looked at %s", order.item)
        Logger(namespace="shop.twisted").info("and again {item}", item=order.item)
        logging.getLogger("shop.stdlib").debug("not kept at info")
        raise ValueError("no")

    return {_Order: on_order}


class _Order(Message, wire_name="test.testing.ChattyOrder"):
    item: str


def test_info_records_are_captured_as_under_twistd(monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)  # Python's default
    harness = BusHarness()
    harness.add_app("shop", _chatty)
    harness.start()
    harness.send(_Order(item="tea"))
    [error] = harness.errors
    assert [(r["level"], r["logger"], r["message"]) for r in error.log] == [
        ("info", "shop.stdlib", "looked at tea"), ("info", "shop.twisted", "and again tea"),
    ]
    [report] = run_handler(_chatty, _Order(item="cake"), log_level="debug")
    assert [r["message"] for r in report.log] == ["looked at cake", "and again cake", "not kept at info"]
