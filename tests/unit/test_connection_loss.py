"""
A publishing channel or connection that goes away with sends outstanding, on the real
AMQPTransport over an in-memory seam whose channels close as a client's do (see
lossy_amqp): every send settles, what was not confirmed is kept and written on the next
session (never again on the one that failed it), the exchange cache goes with the
channel, in-flight slots come back, idle loops keep their interval and POST /messages
answers.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from scbus import codec
from scbus.appbus import ApplicationMessageBus
from scbus.mainbus import MainMessageBus
from scbus.message import Message
from scbus.testing.amqp import connected_transport
from scbus.transports.amqp.client import Properties, RawDelivery
from scbus.web import BusWeb

from .lossy_amqp import LossyConnection

EXCHANGE = "scbus.type.unit.loss.Parcel"


class Parcel(Message, wire_name="unit.loss.Parcel"):
    n: int


class Wrapped(Message, wire_name="unit.loss.Wrapped"):
    n: int


class Tick(Message, wire_name="unit.loss.Tick"):
    n: int


def outcomes_of(transport, count):
    outcomes: dict[int, object] = {}
    for n in range(count):
        transport.send(Parcel(n=n)).addBoth(lambda r, n=n: outcomes.__setitem__(n, r))
    return outcomes


def reconnect(transport, clock):
    """The connector's next connection: a new session on a fresh connection."""
    connection = LossyConnection(clock)
    Deferred.fromCoroutine(transport._open_session(connection))
    assert transport.connected
    return connection


def failures_logged():
    events: list[dict] = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("isError"):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    return events, lambda: globalLogPublisher.removeObserver(observe)


def started_bus(clock, transport, app, subs, **options):
    bus = MainMessageBus("unit", transport, reactor=clock)
    if subs:
        bus.add_app(app, ApplicationMessageBus(app, subs, reactor=clock), subs, **options)
    bus.startService()
    clock.advance(0)
    return bus


def parcels(connection):
    return [m.n for m in connection.published() if isinstance(m, Parcel)]


def test_sends_outstanding_when_the_connection_is_lost_are_kept_and_sent_on_the_next_session():
    clock = Clock()
    first = LossyConnection(clock, auto_confirm=False)
    transport = connected_transport(first, clock)
    errors, stop_watching = failures_logged()
    try:
        outcomes = outcomes_of(transport, 200)
        assert parcels(first) == list(range(200))
        first.lose()
        clock.advance(0)
        assert outcomes == {}  # none failed, none was forgotten
        assert transport.waiting_to_send == 200
        second = reconnect(transport, clock)
        assert parcels(second) == list(range(200))  # in order, once each
        assert outcomes == {n: None for n in range(200)}
        assert transport.waiting_to_send == 0 and transport._publisher._unconfirmed == {}
        assert errors == []
    finally:
        stop_watching()


def test_a_publishing_channel_closed_by_the_broker_is_reopened_and_its_sends_written_again():
    clock = Clock()
    connection = LossyConnection(clock, auto_confirm=False)
    transport = connected_transport(connection, clock)
    outcomes = outcomes_of(transport, 50)
    closed = transport._session.publisher
    connection.auto_confirm = True
    closed.close_now(RuntimeError("406 PRECONDITION_FAILED"))
    clock.advance(0)
    assert transport._session.publisher is not closed and transport.connected
    assert parcels(connection) == list(range(50)) * 2
    assert outcomes == {n: None for n in range(50)}


def test_a_send_that_closes_every_channel_it_is_written_on_fails_in_the_end():
    clock = Clock()
    connection = LossyConnection(clock, auto_confirm=False)
    transport = connected_transport(connection, clock)
    outcomes = outcomes_of(transport, 1)
    for _ in range(10):
        transport._session.publisher.close_now(RuntimeError("406 PRECONDITION_FAILED - message too large"))
        clock.advance(0)
    [failure] = outcomes.values()
    assert isinstance(failure, Failure)
    assert "closed 5 times with this message written" in failure.getErrorMessage()
    assert transport.connected


def test_an_exchange_deleted_from_outside_is_declared_and_bound_again():
    clock = Clock()
    connection = LossyConnection(clock)
    transport = connected_transport(connection, clock)
    transport.setup("shop", [Parcel])
    clock.advance(0)
    outcomes_of(transport, 1)
    connection.deleted.add(EXCHANGE)  # as `rabbitmqctl delete_exchange`: the 404 comes at the next publish
    mark = len(connection.log)
    outcomes = outcomes_of(transport, 3)
    clock.advance(0)
    after = connection.log[mark:]
    assert outcomes == {0: None, 1: None, 2: None}
    assert ("exchange", EXCHANGE) in after and ("bind", "scbus.app.shop", EXCHANGE) in after
    # declared and bound before the three were written again
    first_publish_after_close = max(i for i, e in enumerate(after) if e[0] == "publish") - 2
    assert after.index(("bind", "scbus.app.shop", EXCHANGE)) < first_publish_after_close
    assert EXCHANGE not in connection.deleted


def test_in_flight_returns_to_zero_when_results_wait_for_the_next_session():
    clock = Clock()
    first = LossyConnection(clock, auto_confirm=False)
    transport = connected_transport(first, clock)
    bus = started_bus(clock, transport, "wrap", {Parcel: lambda m: Wrapped(n=m.n)}, max_in_flight=5)
    app = transport._apps["wrap"]
    for tag in range(1, 6):
        app.channel.deliveries.put(RawDelivery(
            app.channel, tag, False, "", "", Properties(content_type="application/json"), codec.encode(Parcel(n=tag)),
        ))
    clock.advance(0)
    assert len(bus._apps["wrap"].in_flight) == 5  # results written, not confirmed
    first.lose()
    clock.advance(0)
    second = reconnect(transport, clock)
    clock.advance(0)
    assert sorted(m.n for m in second.published() if isinstance(m, Wrapped)) == [1, 2, 3, 4, 5]
    assert bus._apps["wrap"].in_flight == {}
    assert [e for e in second.log if e[0] == "ack"] == []  # their channel is gone: they come again
    bus.stopService()


def test_a_delivery_waiting_on_its_dead_letter_copy_frees_its_slot_when_its_channel_goes():
    clock = Clock()
    connection = LossyConnection(clock, auto_confirm=False)
    transport = connected_transport(connection, clock)
    bus = started_bus(clock, transport, "wrap", {Parcel: lambda m: None})
    app = transport._apps["wrap"]
    # decodes, but as a type the app does not take: set aside (copied to scbus.dead)
    app.channel.deliveries.put(RawDelivery(
        app.channel, 1, False, "", "", Properties(content_type="application/json"), codec.encode(Wrapped(n=1)),
    ))
    clock.advance(0)
    assert len(bus._apps["wrap"].in_flight) == 1
    app.channel.close_now(RuntimeError("consumer channel closed"))
    clock.advance(0)
    assert bus._apps["wrap"].in_flight == {}
    bus.stopService()


def test_an_idle_loop_keeps_its_interval_across_a_lost_connection():
    clock = Clock()
    first = LossyConnection(clock, auto_confirm=False)
    transport = connected_transport(first, clock)
    runs: list[float] = []

    def tick():
        runs.append(clock.seconds())
        return Tick(n=len(runs))

    bus = started_bus(clock, transport, "clock", {timedelta(seconds=1): tick}, idle="every")
    clock.advance(1)
    assert runs == [1.0]  # its Tick written, not confirmed
    first.lose()
    clock.advance(0.5)
    reconnect(transport, clock)  # at 1.5 s: the Tick is written again and confirmed
    clock.pump([0.5] * 8)
    assert runs == [1.0, 2.0, 3.0, 4.0, 5.0]
    bus.stopService()


def test_post_messages_during_a_drop_answers_once_sent_and_loses_nothing():
    clock = Clock()
    first = LossyConnection(clock, auto_confirm=False)
    transport = connected_transport(first, clock)
    bus = started_bus(clock, transport, "", {})
    web = BusWeb(bus, token="t", token_env=None, max_message_size=None, expected={})
    request = DummyRequest([b"messages"])
    request.method = b"POST"
    request.content = io.BytesIO(json.dumps({"type": "unit.loss.Parcel", "data": {"n": 7}}).encode())
    request.requestHeaders.addRawHeader(b"authorization", b"Bearer t")
    web.render(request)
    clock.advance(0)
    assert not request.finished  # written, waiting for its confirm
    first.lose()
    clock.advance(0)
    second = reconnect(transport, clock)
    clock.advance(0)
    assert request.finished and request.responseCode == 202
    answer = json.loads(b"".join(request.written))
    assert [m.id for m in second.published() if isinstance(m, Parcel)] == [answer["id"]]
    bus.stopService()
