"""ApplicationMessageBus: dispatch, return shapes, log capture, errors, idle, heartbeats."""

import logging
import threading
from datetime import timedelta

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger

from scbus import codec
from scbus.appbus import ApplicationMessageBus
from scbus.errors import InvalidSubscriptions
from scbus.message import (
    AppErrorOccurredMessage,
    HeartbeatMessage,
    HeartbeatResponseMessage,
    Message,
)
from scbus.testing import result_of

from ..helpers import ThreadedClock

stdlib_log = logging.getLogger("tests.appbus")
twisted_log = Logger(namespace="tests.appbus")


class Animal(Message, wire_name="test.Animal"):
    name: str


class Dog(Animal, wire_name="test.Dog"):
    pass


class Puppy(Dog, wire_name="test.Puppy"):
    pass


class Cat(Animal, wire_name="test.Cat"):
    pass


class Said(Message, wire_name="test.Said"):
    text: str


@pytest.fixture(autouse=True)
def info_logging():
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(old)


def make_bus(subscriptions, **kwargs):
    return ApplicationMessageBus("app", subscriptions, reactor=kwargs.pop("reactor", Clock()), **kwargs)


def test_dispatch_by_class_then_base_classes():
    seen = []
    bus = make_bus(
        {
            Animal: lambda m: seen.append(("animal", m.name)),
            Dog: lambda m: seen.append(("dog", m.name)),
        }
    )
    for message in (Animal(name="a"), Dog(name="d"), Puppy(name="p"), Cat(name="c")):
        assert result_of(bus.handle(message)) == []
    assert seen == [("animal", "a"), ("dog", "d"), ("dog", "p"), ("animal", "c")]
    assert bus.handler_for(Puppy) is bus.handler_for(Dog)
    assert bus.handled == 4 and bus.errors == 0


def said(*texts):
    return [Said(text=t) for t in texts]


async def async_said(d):
    value = await d
    return said(value)


def gen_said():
    yield Said(text="g1")
    yield Said(text="g2")


@pytest.mark.parametrize(
    "returned, texts",
    [
        (lambda m: None, []),
        (lambda m: Said(text="one"), ["one"]),
        (lambda m: said("a", "b"), ["a", "b"]),
        (lambda m: tuple(said("t")), ["t"]),
        (lambda m: gen_said(), ["g1", "g2"]),
        (lambda m: succeed(said("d")), ["d"]),
        (lambda m: succeed(None), []),
        (lambda m: succeed(Said(text="single")), ["single"]),
    ],
)
def test_every_accepted_return_shape_becomes_a_list(returned, texts):
    bus = make_bus({Animal: returned})
    out = result_of(bus.handle(Animal(name="x")))
    assert [m.text for m in out] == texts


def test_deferred_and_coroutine_results_arrive_later():
    waiting = Deferred()
    bus = make_bus({Dog: lambda m: waiting, Cat: lambda m: async_said(waiting2)})
    waiting2 = Deferred()
    d1, d2 = bus.handle(Dog(name="d")), bus.handle(Cat(name="c"))
    assert not d1.called and not d2.called
    waiting.callback(said("late"))
    waiting2.callback("coro")
    assert [m.text for m in result_of(d1)] == ["late"]
    assert [m.text for m in result_of(d2)] == ["coro"]


@pytest.mark.parametrize(
    "bad, text",
    [
        ("a string", "it returned str 'a string'"),
        ({"a": 1}, "it returned dict"),
        (42, "it returned int 42"),
        ([Said(text="ok"), "not a message"], "holding str 'not a message'"),
    ],
)
def test_other_return_values_are_reported_as_errors(bad, text):
    bus = make_bus({Animal: lambda m: bad})
    [report] = result_of(bus.handle(Animal(name="x")))
    assert isinstance(report, AppErrorOccurredMessage)
    assert report.error_type == "TypeError" and text in report.error
    assert bus.errors == 1


def test_an_exception_becomes_an_error_message_with_data_only():
    def on_animal(message):
        stdlib_log.info("looking at %s", message.name)
        twisted_log.warn("twisted says {what}", what="hello")
        raise ValueError(f"cannot handle {message.name}")

    bus = make_bus({Animal: on_animal})
    incoming = Dog(name="rex")
    [report] = result_of(bus.handle(incoming))
    assert isinstance(report, AppErrorOccurredMessage)
    assert report.app_name == "app"
    assert report.message == incoming.to_dict()
    assert report.error == "cannot handle rex"
    assert report.error_type == "ValueError"
    assert report.handler.endswith("on_animal")
    assert report.correlation_id == incoming.id
    frame = report.traceback[-1]
    assert frame["function"] == "on_animal"
    assert frame["file"] == __file__
    assert frame["source"] == 'raise ValueError(f"cannot handle {message.name}")'
    assert isinstance(frame["line"], int)
    # only the app's frames: none of the bus's plumbing (nor Twisted's)
    assert {f["file"] for f in report.traceback} == {__file__}
    assert [(r["level"], r["logger"], r["message"]) for r in report.log] == [
        ("info", "tests.appbus", "looking at rex"),
        ("warn", "tests.appbus", "twisted says hello"),
    ]
    # It crosses the wire as plain data and comes back equal.
    back = codec.decode(codec.encode(report))
    assert back.to_dict() == report.to_dict()


def test_custom_exception_type_names_its_module():
    class Oops(Exception):
        pass

    bus = make_bus({Animal: lambda m: (_ for _ in ()).throw(Oops("x"))})
    [report] = result_of(bus.handle(Animal(name="x")))
    assert report.error_type == f"{__name__}.test_custom_exception_type_names_its_module.<locals>.Oops"


def test_log_capture_is_per_call_when_two_handlers_are_in_flight():
    gates = {"first": Deferred(), "second": Deferred()}

    async def on_animal(message):
        stdlib_log.info("%s: before", message.name)
        twisted_log.info("{name}: twisted before", name=message.name)
        await gates[message.name]
        stdlib_log.info("%s: after", message.name)
        raise RuntimeError(message.name)

    bus = make_bus({Animal: on_animal})
    d1 = bus.handle(Animal(name="first"))
    d2 = bus.handle(Animal(name="second"))
    stdlib_log.info("outside any handler")
    gates["second"].callback(None)
    gates["first"].callback(None)
    for d, name in ((d1, "first"), (d2, "second")):
        [report] = result_of(d)
        assert [r["message"] for r in report.log] == [
            f"{name}: before",
            f"{name}: twisted before",
            f"{name}: after",
        ]


def test_log_capture_is_bounded():
    from scbus.logs.capture import MAX_RECORDS

    def chatty(message):
        for i in range(MAX_RECORDS + 5):
            stdlib_log.info("line %d", i)
        raise ValueError("chatty")

    [report] = result_of(make_bus({Animal: chatty}).handle(Animal(name="x")))
    assert len(report.log) == MAX_RECORDS + 1
    assert report.log[-1]["message"] == f"5 more record(s) dropped (limit {MAX_RECORDS})"


def test_failure_of_a_deferred_result_is_reported():
    d = Deferred()
    bus = make_bus({Animal: lambda m: d})
    out = bus.handle(Animal(name="x"))
    d.errback(KeyError("gone"))
    [report] = result_of(out)
    assert report.error_type == "KeyError" and "gone" in report.error


def test_correlation_id_is_carried_to_results():
    bus = make_bus({Animal: lambda m: said("a", "b")})
    first = Animal(name="x")
    out = result_of(bus.handle(first))
    assert {m.correlation_id for m in out} == {first.id}
    chained = Animal(name="y", correlation_id="root")
    assert {m.correlation_id for m in result_of(bus.handle(chained))} == {"root"}
    explicit = Said(text="mine", correlation_id="kept")
    bus2 = make_bus({Animal: lambda m: explicit})
    assert result_of(bus2.handle(first))[0].correlation_id == "kept"


def test_idle_handlers_run_with_the_same_rules():
    clock = Clock()
    calls = []

    def every_minute():
        calls.append(clock.seconds())
        return Said(text="tick")

    def every_hour():
        stdlib_log.info("about to fail")
        raise OSError("disk full")

    bus = make_bus(
        {timedelta(minutes=1): every_minute, timedelta(hours=1): every_hour}, reactor=clock
    )
    assert set(bus.intervals) == {timedelta(minutes=1), timedelta(hours=1)}
    assert [m.text for m in result_of(bus.idle(timedelta(minutes=1)))] == ["tick"]
    [report] = result_of(bus.idle(timedelta(hours=1)))
    assert report.message is None and report.interval == 3600.0
    assert report.error_type == "OSError" and report.log[0]["message"] == "about to fail"
    with pytest.raises(KeyError, match="no idle handler"):
        bus.idle(timedelta(seconds=3))


def test_heartbeat_is_answered_by_the_bus_with_the_lag():
    clock = Clock()
    clock.advance(1000)
    bus = make_bus({Animal: lambda m: None}, reactor=clock)
    assert HeartbeatMessage in bus.message_types
    beat = HeartbeatMessage(created_at=990.0)
    [answer] = result_of(bus.handle(beat))
    assert isinstance(answer, HeartbeatResponseMessage)
    assert answer.app_name == "app" and answer.heartbeat_id == beat.id
    assert answer.queued_seconds == pytest.approx(10.0)
    assert result_of(bus.handle(HeartbeatMessage(app_name="someone-else"))) == []


def test_an_error_while_handling_an_error_report_is_not_reported_again():
    def on_error(report):
        raise ValueError("collector broken")

    bus = make_bus({AppErrorOccurredMessage: on_error})
    report = AppErrorOccurredMessage(
        app_name="x", message=None, error="e", error_type="E", traceback=[], log=[]
    )
    assert result_of(bus.handle(report)) == []
    assert bus.errors == 1


@pytest.mark.parametrize(
    "subscriptions, text",
    [
        ([], "must return a dict"),
        ({}, "no subscriptions"),
        ({"Tick": print}, "neither a Message class nor a datetime.timedelta"),
        ({Animal: "not callable"}, "not callable"),
        ({timedelta(0): print}, "must be positive"),
    ],
)
def test_bad_subscriptions_are_refused(subscriptions, text):
    with pytest.raises(InvalidSubscriptions, match=text):
        make_bus(subscriptions)


def test_threaded_app_runs_handlers_off_the_reactor_thread_and_captures_logs():
    clock = ThreadedClock()
    threads = []

    def blocking(message):
        threads.append(threading.current_thread().name)
        stdlib_log.info("in a thread")
        if message.name == "bad":
            raise ValueError("bad one")
        return Said(text=message.name)

    bus = make_bus({Animal: blocking}, reactor=clock, threads=2)
    bus.start()
    try:
        assert [m.text for m in clock.wait_for(bus.handle(Animal(name="ok")))] == ["ok"]
        [report] = clock.wait_for(bus.handle(Animal(name="bad")))
        assert report.error == "bad one" and report.log[0]["message"] == "in a thread"
        assert report.traceback[-1]["function"] == "blocking"
        wrong = make_bus({Animal: lambda m: succeed(None)}, reactor=clock, threads=1)
        wrong.start()
        [report] = clock.wait_for(wrong.handle(Animal(name="x")))
        assert "threaded handlers must return plain values" in report.error
        wrong.stop()
    finally:
        bus.stop()
    assert threads and all(name != threading.main_thread().name for name in threads)


def test_a_handlers_traceback_reaches_the_log_with_the_count_of_captured_lines(logged):
    def on_dog(msg):
        stdlib_log.info("looking at %s", msg.name)
        twisted_log.info("still looking")
        raise ValueError(f"{msg.name} bites")

    bus = make_bus({Dog: on_dog})
    [report] = result_of(bus.handle(Dog(name="rex")))
    assert isinstance(report, AppErrorOccurredMessage)
    [entry] = [line for line in logged("warn") if "failed on test.Dog" in line]
    lines = entry.splitlines()
    assert lines[0].endswith("ValueError: rex bites (2 log line(s) captured)")
    assert any(line.endswith(", in on_dog") for line in lines)
    assert '    raise ValueError(f"{msg.name} bites")' in lines
    assert lines[-1] == "ValueError: rex bites"


def test_handler_errors_in_the_log_are_limited_per_error_type_and_the_rest_counted(logged):
    clock = Clock()
    bus = make_bus({Dog: lambda m: 1 / 0, Cat: lambda m: [][1]}, reactor=clock)
    reports = [result_of(bus.handle(Dog(name=str(i)))) for i in range(12)]
    reports += [result_of(bus.handle(Cat(name=str(i)))) for i in range(3)]
    assert all(isinstance(r[0], AppErrorOccurredMessage) for r in reports)  # every one reported
    entries = [line for line in logged("warn") if "failed on" in line]
    assert len([e for e in entries if "ZeroDivisionError" in e]) == 5
    assert len([e for e in entries if "IndexError" in e]) == 3
    assert not any("not logged in full" in line for line in logged())
    clock.advance(60)
    [summary] = [line for line in logged("warn") if "not logged in full" in line]
    assert summary.startswith("app: 7 more ZeroDivisionError error(s) not logged in full in the last 60s")
    result_of(bus.handle(Dog(name="again")))  # a new window logs in full again
    assert len([e for e in logged("warn") if "failed on test.Dog" in e]) == 6
