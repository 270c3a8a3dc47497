"""MainMessageBus over LocalTransport with a fake clock."""

from datetime import timedelta

import pytest
from zope.interface import implementer_only
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from scbus import codec
from scbus.appbus import ApplicationMessageBus
from scbus.errors import TransportError
from scbus.interfaces import IImmediateSend, IReadyDeliveries, ITransport
from scbus.mainbus import PUMP_BUDGET, MainMessageBus
from scbus.message import AppErrorOccurredMessage, HeartbeatMessage, HeartbeatResponseMessage, Message
from scbus.servicetree import BusServiceTree
from scbus.testing import result_of
from scbus.transports.local import LocalTransport


class Job(Message, wire_name="test.mainbus.Job"):
    n: int


class Done(Message, wire_name="test.mainbus.Done"):
    n: int


class Weird(Message, wire_name="test.mainbus.Weird"):
    value: object


@implementer_only(ITransport, IReadyDeliveries)
class HoldingTransport(LocalTransport):
    """
    Sends wait until the test releases them, to show nothing is acked before. It sends
    through Deferreds only (not IImmediateSend), as a broker transport does.
    """

    def __init__(self, clock):
        super().__init__(clock, record=True)
        self.holding = []
        self.hold = False

    def send(self, message):
        if not self.hold:
            return super().send(message)
        d = Deferred()
        self.holding.append((message, d))
        return d

    def release_sends(self, error=None):
        held, self.holding = self.holding, []
        for message, d in held:
            if error is None:
                super().send(message)
                d.callback(None)
            else:
                d.errback(error)


class World:
    def __init__(self, transport_class=LocalTransport, grace=5.0):
        self.clock = Clock()
        self.transport = (
            transport_class(self.clock)
            if transport_class is HoldingTransport
            else transport_class(self.clock, record=True)
        )
        self.bus = MainMessageBus("main", self.transport, reactor=self.clock, grace_period=grace)

    def add(self, name, subscriptions, **kwargs):
        threads = kwargs.pop("threads", 0)
        app = ApplicationMessageBus(name, subscriptions, reactor=self.clock, threads=threads)
        self.bus.add_app(name, app, subscriptions, **kwargs)
        return app

    def start(self):
        self.transport.startService()
        self.bus.startService()
        self.flush()

    def flush(self):
        for _ in range(10000):
            if not any(c.getTime() <= self.clock.seconds() for c in self.clock.getDelayedCalls()):
                return
            self.clock.advance(0)
        raise AssertionError("never quiet")

    def send(self, *messages):
        for m in messages:
            result_of(self.transport.send(m))
        self.flush()

    def of(self, cls):
        return [m for m in self.transport.sent if isinstance(m, cls)]


def test_a_chain_of_apps_handles_sends_and_acknowledges():
    w = World()
    w.add("double", {Job: lambda m: Done(n=m.n * 2)})
    seen = []
    w.add("collect", {Done: lambda m: seen.append(m.n)})
    w.start()
    w.send(*[Job(n=i) for i in range(5)])
    assert sorted(seen) == [0, 2, 4, 6, 8]
    for app in ("double", "collect"):
        assert w.transport.unacked(app) == 0
        assert result_of(w.transport.queue_depth(app)) == 0
    statuses = {s.name: s for s in result_of(w.bus.status())}
    assert statuses["double"].handled == 5 and statuses["double"].acked == 5
    assert statuses["collect"].handled == 5


def test_acknowledged_only_after_the_results_were_sent():
    w = World(HoldingTransport)
    w.add("double", {Job: lambda m: Done(n=m.n)})
    w.start()
    w.send(Job(n=1))
    w.transport.hold = True
    result_of(w.transport.publish_raw(codec.encode(Job(n=2))))
    w.flush()
    assert len(w.transport.holding) == 1
    assert w.transport.unacked("double") == 1  # handled, not yet sent: not acked
    w.transport.release_sends()
    w.flush()
    assert w.transport.unacked("double") == 0


def test_a_failed_send_releases_the_delivery_to_come_again(logged):
    w = World(HoldingTransport)
    attempts = []
    w.add("double", {Job: lambda m: attempts.append(m.n) or Done(n=m.n)})
    w.transport.hold = True
    w.start()
    result_of(LocalTransport.send(w.transport, Job(n=9)))
    w.flush()
    w.transport.release_sends(TransportError("broker gone"))
    w.flush()
    assert attempts == [9, 9]  # delivered again after the failure
    w.transport.hold = False
    w.transport.release_sends()
    w.flush()
    status = result_of(w.bus.status())[0]
    assert status.send_failures == 1 and status.redelivered == 1
    # An expected condition (broker away, bus stopping): one warning naming why, no traceback.
    assert [line for line in logged("warn") if "not sent" in line] == [
        "double: results of test.mainbus.Job not sent (broker gone); releasing it to be delivered again"
    ]
    assert logged("critical") == [] and logged("error") == []


@pytest.mark.parametrize("answer", [None, Done(n=0)], ids=["nothing-to-send", "one-message"])
def test_an_acknowledgement_not_taken_leaves_the_message_to_come_again(answer):
    # The handler returns at once, so the bus settles without waiting (the synchronous
    # path when there is nothing to send): a refused ack must still free the slot and
    # not count as acknowledged.
    w = World()
    calls = []

    def handle(m):
        calls.append(m.n)
        if len(calls) == 1:
            w.transport.recover("a")  # the delivery in hand is no longer held: ack refused
        return answer

    w.add("a", {Job: handle}, max_in_flight=1)
    w.start()
    w.send(Job(n=7))
    assert calls == [7, 7]
    status = result_of(w.bus.status())[0]
    assert (status.acked, status.redelivered, status.in_flight) == (1, 1, 0)
    assert w.transport.unacked("a") == 0 and result_of(w.transport.queue_depth("a")) == 0


class CountingSettles(LocalTransport):
    """Counts the acknowledgements that go through a Deferred (LocalDelivery.ack)."""

    deferred_acks = 0

    def _settle(self, delivery, requeue):
        if not requeue:
            self.deferred_acks += 1
        return super()._settle(delivery, requeue)


def test_a_transport_that_acknowledges_at_once_is_acknowledged_without_a_deferred():
    w = World(CountingSettles)
    w.add("a", {Job: lambda m: Done(n=m.n)})
    w.add("b", {Done: lambda m: None})
    w.start()
    for n in range(3):
        w.send(Job(n=n))
    status = {s.name: s for s in result_of(w.bus.status())}
    assert (status["a"].acked, status["b"].acked) == (3, 3)
    assert w.transport.unacked("a") == w.transport.unacked("b") == 0
    assert w.transport.deferred_acks == 0


class RefusingTransport(LocalTransport):
    """Refuses the first C{refusals} immediate sends, as a stopped transport does."""

    refusals = 1

    def send_now(self, message):
        if isinstance(message, Done) and self.refusals:
            self.refusals -= 1
            raise TransportError("not now")
        super().send_now(message)


def test_a_send_refused_at_once_releases_the_delivery_to_come_again():
    w = World(RefusingTransport)
    assert IImmediateSend.providedBy(w.transport)
    attempts = []
    w.add("double", {Job: lambda m: attempts.append(m.n) or [Done(n=m.n), Done(n=-m.n)]})
    w.start()
    w.send(Job(n=3))
    assert attempts == [3, 3]
    status = result_of(w.bus.status())[0]
    assert (status.send_failures, status.redelivered, status.acked, status.in_flight) == (1, 1, 1, 0)
    # the second send of the first attempt went out; the retry sent both again
    assert sorted(m.n for m in w.of(Done)) == [-3, -3, 3]
    assert w.transport.unacked("double") == 0


def test_max_in_flight_is_respected():
    w = World()
    pending = []

    def slow(m):
        d = Deferred()
        pending.append(d)
        return d

    w.add("slow", {Job: slow}, max_in_flight=2)
    w.start()
    w.send(*[Job(n=i) for i in range(5)])
    assert len(pending) == 2
    assert result_of(w.transport.queue_depth("slow")) == 3
    pending[0].callback(None)
    w.flush()
    assert len(pending) == 3
    for d in pending[1:]:
        d.callback(None)
    w.flush()
    for d in pending[3:]:
        d.callback(None)
    w.flush()
    assert len(pending) == 5 and w.transport.unacked("slow") == 0


def test_a_deep_queue_does_not_starve_the_reactor():
    w = World()
    handled = []
    w.add("quick", {Job: lambda m: handled.append(m.n)}, max_in_flight=1)
    w.start()
    for i in range(PUMP_BUDGET * 3):
        result_of(w.transport.send(Job(n=i)))
    # One reactor turn runs the calls that were due when it began (task.Clock would also
    # run the ones they schedule, so run just those by hand).
    due = list(w.clock.getDelayedCalls())
    for call in due:
        w.clock.calls.remove(call)
        call.func(*call.args, **call.kw)
    assert 0 < len(handled) <= PUMP_BUDGET + 1
    assert w.clock.getDelayedCalls(), "the rest waits for the next turn"
    w.flush()
    assert handled == list(range(PUMP_BUDGET * 3))


def test_errors_become_messages_and_the_delivery_is_acknowledged():
    w = World()
    w.add("broken", {Job: lambda m: 1 / 0})
    reports = []
    w.add("errors", {AppErrorOccurredMessage: reports.append})
    w.start()
    w.send(Job(n=1))
    [report] = reports
    assert report.app_name == "broken" and report.error_type == "ZeroDivisionError"
    assert w.transport.unacked("broken") == 0


@pytest.mark.parametrize("transport_class", [LocalTransport, HoldingTransport], ids=["sent-at-once", "sent-later"])
def test_an_unencodable_result_is_the_apps_error(transport_class):
    w = World(transport_class)
    w.add("weird", {Job: lambda m: Weird(value={1, 2})})
    reports = []
    w.add("errors", {AppErrorOccurredMessage: reports.append})
    w.start()
    w.send(Job(n=1))
    [report] = reports
    assert report.error_type == "scbus.errors.EncodeError"
    assert "cannot encode" in report.error and report.message["data"] == {"n": 1}
    assert w.transport.unacked("weird") == 0


def test_idle_handlers_run_on_their_interval_and_survive_errors():
    w = World()
    runs = []

    def every_ten():
        runs.append(w.clock.seconds())
        if len(runs) == 2:
            raise RuntimeError("second run fails")
        return Done(n=len(runs))

    w.add("timer", {timedelta(seconds=10): every_ten})
    w.start()
    for _ in range(4):
        w.clock.advance(10)
        w.flush()
    assert runs == [10, 20, 30, 40]
    assert [d.n for d in w.of(Done)] == [1, 3, 4]
    assert len(w.of(AppErrorOccurredMessage)) == 1


def test_pause_and_resume():
    w = World()
    seen = []
    w.add("app", {Job: lambda m: seen.append(m.n), timedelta(seconds=1): lambda: seen.append("idle")})
    w.start()
    w.bus.pause("app")
    w.send(Job(n=1))
    w.clock.advance(1)
    w.flush()
    assert seen == []
    assert result_of(w.bus.status())[0].paused
    w.bus.resume("app")
    w.flush()
    assert seen == [1]
    with pytest.raises(KeyError, match="no app named 'nope'"):
        w.bus.pause("nope")


def test_heartbeats_pass_through_the_queue():
    w = World()
    w.add("app", {Job: lambda m: None})
    answers = []
    w.add("monitor", {HeartbeatResponseMessage: answers.append})
    w.start()
    w.send(HeartbeatMessage(app_name="app"))
    assert [a.app_name for a in answers] == ["app"]


def test_stop_waits_for_in_flight_within_the_grace_period():
    w = World(grace=5.0)
    pending = {}

    def slow(m):
        pending[m.n] = Deferred()
        return pending[m.n]

    w.add("slow", {Job: slow}, max_in_flight=3)
    w.start()
    w.send(Job(n=1), Job(n=2), Job(n=3), Job(n=4))
    stopped = w.bus.stopService()
    assert not stopped.called
    pending[1].callback(None)  # finishes in time: acknowledged
    w.flush()
    w.clock.advance(5)  # 2 and 3 are still running: left unacknowledged
    assert stopped.called
    assert w.transport.unacked("slow") == 2
    pending[2].callback(Done(n=2))  # finishing late sends nothing and acks nothing
    w.flush()
    assert w.of(Done) == []
    assert w.transport.unacked("slow") == 2
    w.transport.stopService()  # the connection closes: they go back to the queue
    assert result_of(w.transport.queue_depth("slow")) == 3


def test_stop_with_nothing_in_flight_is_immediate():
    w = World()
    w.add("app", {Job: lambda m: None})
    w.start()
    assert w.bus.stopService().called


def test_apps_added_while_running_start_at_once():
    w = World()
    w.add("first", {Job: lambda m: None})
    w.start()
    seen = []
    w.add("late", {Done: seen.append})
    w.flush()
    w.send(Done(n=1))
    assert [d.n for d in seen] == [1]
    with pytest.raises(ValueError, match="already added"):
        w.add("late", {Done: seen.append})


def test_setup_failure_is_logged_not_raised():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        w = World()
        w.transport.setup = lambda name, types: fail(TransportError("no broker"))
        w.add("app", {Job: lambda m: None})
        w.start()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not w.bus._apps["app"].ready
    failures = [(formatEvent(e), e["log_failure"].value) for e in events if "log_failure" in e]
    assert [(text, type(error), str(error)) for text, error in failures] == [
        ("app: could not set up its subscriptions", TransportError, "no broker")
    ]


def test_the_service_tree_stops_the_transport_and_listeners_after_the_bus_drained():
    w = World(grace=5.0)
    pending = []
    w.add("slow", {Job: lambda m: pending.append(Deferred()) or pending[-1].addCallback(lambda _: Done(n=m.n))})
    stops = []

    class Listener(Service):
        def stopService(self):
            stops.append("listener")
            return super().stopService()

    tree = BusServiceTree(w.transport, w.bus)
    tree.add_listener(Listener())
    tree.startService()
    w.flush()
    w.send(Job(n=1), Job(n=2))
    stopped = tree.stopService()
    w.clock.advance(1)
    assert not stopped.called and stops == [] and w.transport.running
    for d in pending:
        d.callback(None)
    w.flush()
    assert stopped.called and stops == ["listener"] and not w.transport.running
    assert sorted(m.n for m in w.of(Done)) == [1, 2]  # sent while draining
    assert w.transport.unacked("slow") == 0  # and acknowledged: nothing comes back
    assert result_of(w.transport.queue_depth("slow")) == 0


def _deep_body(depth):
    value = "[" * depth + "1" + "]" * depth
    return (
        '{"type": "test.mainbus.Weird", "id": "deep1", "created_at": 1, "correlation_id": null, '
        f'"data": {{"value": {value}}}}}'
    ).encode()


def test_a_deeply_nested_payload_with_a_raising_handler_is_settled(logged):
    """Building the error report hits the recursion limit: the delivery is set aside."""
    w = World()
    w.add("app", {Weird: lambda m: 1 / 0, Job: lambda m: Done(n=m.n)}, max_in_flight=1)
    w.start()
    result_of(w.transport.publish_raw(_deep_body(500)))
    w.flush()
    assert w.transport.unacked("app") == 0 and result_of(w.transport.queue_depth("app")) == 0
    # Set aside whole, to replay (whether refused at decode or after the handler failed).
    assert [d.body for d in w.transport.dead_letters] == [_deep_body(500)]
    assert result_of(w.bus.status())[0].in_flight == 0
    w.send(Job(n=7))  # the app's only slot was freed
    assert [d.n for d in w.of(Done)] == [7]


class Fragile(Message, wire_name="test.mainbus.Fragile"):
    n: int


def test_any_error_while_reporting_sets_the_delivery_aside_and_logs_it(logged, monkeypatch):
    w = World()
    w.add("app", {Fragile: lambda m: 1 / 0}, max_in_flight=1)
    w.start()
    result_of(w.transport.send(Fragile(n=1)))

    def broken(report):
        raise RuntimeError("the report is broken")

    monkeypatch.setattr(AppErrorOccurredMessage, "__post_init__", broken)
    w.flush()
    monkeypatch.undo()
    assert w.transport.unacked("app") == 0 and result_of(w.transport.queue_depth("app")) == 0
    [dead] = w.transport.dead_letters
    assert dead.code == "handling-error" and "RuntimeError: the report is broken" in dead.reason
    assert any("could not finish handling test.mainbus.Fragile" in line and "set aside" in line
               for line in logged("error")), logged()
    assert result_of(w.bus.status())[0].in_flight == 0


def test_a_failure_that_is_not_the_transports_sets_aside_instead_of_looping():
    w = World(HoldingTransport)
    attempts = []
    w.add("double", {Job: lambda m: attempts.append(m.n) or [Done(n=m.n), Done(n=-m.n)]})
    w.transport.hold = True
    w.start()
    result_of(LocalTransport.send(w.transport, Job(n=3)))
    w.flush()
    w.transport.release_sends(RuntimeError("a bug in a send path"))
    w.flush()
    assert attempts == [3]  # not released to fail the same way again
    assert [d.code for d in w.transport.dead_letters] == ["handling-error"]
    assert w.transport.unacked("double") == 0


def test_an_idle_handler_whose_report_cannot_be_built_keeps_its_loop(logged, monkeypatch):
    w = World()
    runs = []
    w.add("app", {timedelta(seconds=1): lambda: runs.append(1) or 1 / 0})
    w.start()
    monkeypatch.setattr("scbus.appbus.AppErrorOccurredMessage", None)  # building the report raises
    w.clock.advance(1)
    w.clock.advance(1)
    assert len(runs) == 2


def test_a_stuck_app_is_logged_at_warn_once_per_episode(logged):
    w = World()
    pending = []
    w.add("app", {Job: lambda m: pending.append(Deferred()) or pending[-1]}, stuck_after=8)
    w.add("other", {Done: lambda m: None})  # no limit given: the default applies
    w.start()
    w.send(Job(n=1))
    for _ in range(30):
        w.clock.advance(1)

    def warnings():
        return [line for line in logged("warn") if "stuck" in line]

    assert len(warnings()) == 1
    assert warnings()[0].startswith("app: stuck: test.mainbus.Job ") and "over stuck_after (8" in warnings()[0]
    pending[0].callback(None)
    w.clock.advance(2)
    assert "app: no longer stuck" in logged("info")
    w.send(Job(n=2))
    for _ in range(10):
        w.clock.advance(1)
    assert len(warnings()) == 2  # a new episode
    [status] = [s for s in result_of(w.bus.status()) if s.name == "other"]
    assert status.stuck_after == 300.0


# --- a result the transport cannot encode -------------------------------------------------------


def _held_job(n):
    """A world whose app answers a Job with a Done, its sends held; the Job delivered."""
    w = World(HoldingTransport)
    attempts = []
    w.add("app", {Job: lambda m: attempts.append(m.n) or Done(n=m.n)}, max_in_flight=1)
    reports = []
    w.add("errors", {AppErrorOccurredMessage: reports.append})
    w.transport.hold = True
    w.start()
    result_of(LocalTransport.send(w.transport, Job(n=n)))
    w.flush()
    return w, attempts, reports


def test_a_result_the_client_cannot_encode_is_reported_once_not_released():
    # What the AMQP publisher answers when the client raises while encoding a publish
    # (a property past its limit, a content header over one frame).
    from scbus.transports.amqp.publisher import Unencodable

    w, attempts, reports = _held_job(4)
    w.transport.release_sends(Unencodable("cannot publish: ShortStringTooLong: ..."))
    w.flush()
    w.transport.hold = False
    w.transport.release_sends()  # the report of it
    w.flush()
    assert attempts == [4]  # never delivered again for it
    [report] = reports
    assert report.app_name == "app" and report.error_type == "scbus.errors.EncodeError"
    assert "ShortStringTooLong" in report.error and report.message["data"] == {"n": 4}
    status = result_of(w.bus.status())[0]
    assert (status.in_flight, status.redelivered, status.send_failures, status.acked) == (0, 0, 0, 1)
    assert w.transport.unacked("app") == 0 and list(w.transport.dead_letters) == []


def test_a_result_whose_report_cannot_be_encoded_either_is_set_aside_once():
    from scbus.transports.amqp.publisher import Unencodable

    w, attempts, reports = _held_job(5)
    w.transport.release_sends(Unencodable("cannot publish: the result"))
    w.flush()
    w.transport.release_sends(Unencodable("cannot publish: its report"))
    w.flush()
    assert attempts == [5] and reports == []
    [dead] = w.transport.dead_letters
    assert dead.code == "handling-error" and "its report" in dead.reason
    assert result_of(w.bus.status())[0].in_flight == 0 and w.transport.unacked("app") == 0


@pytest.mark.parametrize("transport_class", [LocalTransport, HoldingTransport], ids=["sent-at-once", "sent-later"])
@pytest.mark.parametrize("field, value", [
    ("created_at", -1.0), ("created_at", 2.0**64), ("id", "x" * 256), ("correlation_id", "é" * 128),
])
def test_a_result_spoiled_after_it_was_built_is_the_apps_error_reported_under_the_inputs_conversation(
    transport_class, field, value
):
    def spoiled(job):
        done = Done(n=job.n)
        setattr(done, field, value)
        return done

    w = World(transport_class)
    attempts = []
    w.add("app", {Job: lambda m: attempts.append(m.n) or spoiled(m)})
    reports = []
    w.add("errors", {AppErrorOccurredMessage: reports.append})
    w.start()
    job = Job(n=6)
    w.send(job)
    if transport_class is HoldingTransport:
        w.transport.release_sends()
        w.flush()
    assert attempts == [6]
    [report] = reports
    assert f"'{field}'" in report.error and report.error_type == "scbus.errors.EncodeError"
    assert report.correlation_id == job.id  # the input's, even when the result's cannot travel
    assert w.of(Done) == [] and w.transport.unacked("app") == 0
