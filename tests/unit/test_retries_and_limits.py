"""Retry policy and handler time limits, on a fake clock."""

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from scbus.appbus import ApplicationMessageBus
from scbus.config import parse_config
from scbus.errors import ConfigError
from scbus.message import AppErrorOccurredMessage, Message
from scbus.testing import BusHarness, result_of


class Job(Message, wire_name="test.retry.Job"):
    n: int


class Done(Message, wire_name="test.retry.Done"):
    n: int


def flaky(failures):
    calls = []

    def handler(job):
        calls.append(job.n)
        if len(calls) <= failures:
            raise ConnectionError(f"attempt {len(calls)} failed")
        return Done(n=job.n)

    return handler, calls


def test_a_transient_failure_is_retried_with_backoff():
    clock = Clock()
    handler, calls = flaky(2)
    app = ApplicationMessageBus("app", {Job: handler}, reactor=clock, retries=3, retry_delay=1.0)
    app._random = lambda: 1.0  # no jitter: delays are the ceilings 1, 2, 4...
    d = app.handle(Job(n=1))
    assert calls == [1] and not d.called
    clock.advance(0.99)
    assert calls == [1]
    clock.advance(0.01)
    assert calls == [1, 1]
    clock.advance(2.0)
    assert calls == [1, 1, 1]
    assert result_of(d) == [Done(n=1)]
    assert app.retried == 2 and app.errors == 0


def test_jitter_keeps_delays_between_half_and_full_ceiling():
    app = ApplicationMessageBus("app", {Job: print}, reactor=Clock(), retry_delay=2.0, retry_max_delay=5.0)
    app._random = lambda: 0.0
    assert [app.retry_delay(a) for a in (1, 2, 3, 4)] == [1.0, 2.0, 2.5, 2.5]
    app._random = lambda: 1.0
    assert [app.retry_delay(a) for a in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]


def test_after_the_last_attempt_the_error_is_reported_once():
    clock = Clock()
    handler, calls = flaky(10)
    app = ApplicationMessageBus("app", {Job: handler}, reactor=clock, retries=2, retry_delay=0.5)
    d = app.handle(Job(n=7))
    for _ in range(10):
        clock.advance(1)
    [report] = result_of(d)
    assert isinstance(report, AppErrorOccurredMessage)
    assert report.attempts == 3 and report.error == "attempt 3 failed" and len(calls) == 3
    assert app.errors == 1


def test_retries_do_not_block_other_deliveries():
    h = BusHarness()
    handler, calls = flaky(1)
    seen = []

    def on_job(job):
        if job.n == 0:
            return handler(job)
        seen.append(job.n)

    h.add_app("app", lambda n, r, c: {Job: on_job}, max_in_flight=2, retries=1, retry_delay=30)
    h.start()
    h.send(Job(n=0))
    for n in (1, 2, 3):
        h.send(Job(n=n))
    assert seen == [1, 2, 3]  # handled while job 0 waits for its retry
    assert h.status()[0].in_flight == 1
    h.advance(30)
    assert [d.n for d in h.sent_of(Done)] == [0] and h.status()[0].in_flight == 0


def test_a_coroutine_past_its_time_limit_is_cancelled_and_reported():
    clock = Clock()
    never = Deferred()

    async def stuck(job):
        await never

    app = ApplicationMessageBus("app", {Job: stuck}, reactor=clock, time_limit=5)
    d = app.handle(Job(n=1))
    clock.advance(5)
    [report] = result_of(d)
    assert report.error_type == "scbus.errors.HandlerTimeout"
    assert "time limit of 5" in report.error


def test_a_blocking_handler_past_its_limit_is_reported():
    clock = Clock()

    def slow(job):
        clock.advance(3)  # stands for three seconds of blocking work
        return Done(n=job.n)

    app = ApplicationMessageBus("app", {Job: slow}, reactor=clock, time_limit=2)
    [report] = result_of(app.handle(Job(n=1)))
    assert report.error_type == "scbus.errors.HandlerTimeout" and "give the app threads" in report.error


def test_retry_config_is_checked_against_the_consumer_timeout():
    config = parse_config({"apps": {"a": {"builder": "m:f", "retries": 3, "retry_delay": 2, "time_limit": 10}}})
    app = config.apps["a"]
    assert (app.retries, app.retry_delay, app.time_limit) == (3, 2.0, 10.0)
    with pytest.raises(ConfigError, match="apps.a.retries: retries could hold a delivery for"):
        parse_config({"apps": {"a": {"builder": "m:f", "retries": 20, "retry_delay": 60, "retry_max_delay": 600}}})


def test_a_thread_past_its_time_limit_is_reported_and_its_late_result_ignored():
    import threading

    from ..helpers import ThreadedClock

    clock = ThreadedClock()
    release = threading.Event()

    def blocking(job):
        release.wait(10)
        return Done(n=job.n)

    app = ApplicationMessageBus("app", {Job: blocking}, reactor=clock, threads=1, time_limit=1)
    app.start()
    try:
        d = app.handle(Job(n=1))
        clock.advance(1)  # the limit passes while the thread is still blocked
        [report] = result_of(d)
        assert report.error_type == "scbus.errors.HandlerTimeout"
        release.set()
        # the thread's late result arrives and is ignored (no second answer, no error)
        f, args, kwargs = clock.from_threads.get(timeout=10)
        f(*args, **kwargs)
        assert app.errors == 1
    finally:
        release.set()
        app.stop()
