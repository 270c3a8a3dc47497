"""
Coroutine handlers: on an asyncio loop they await asyncio code and Deferreds alike and a
time limit cancels them inside; without one, asyncio gets one line naming the reactor.
"""

import asyncio
import logging
from datetime import timedelta

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock, deferLater

from scbus.appbus import ApplicationMessageBus
from scbus.coroutines import REACTOR_REQUIRED, event_loop_of
from scbus.message import AppErrorOccurredMessage, Message
from scbus.testing import ClockEventLoop, result_of

from .test_appbus import info_logging  # noqa: F401  (autouse: INFO records are captured)

log = logging.getLogger("tests.coroutines")


class Job(Message, wire_name="test.coro.Job"):
    n: int


class Done(Message, wire_name="test.coro.Done"):
    n: int
    note: str = ""


def on_loop(subscriptions, **options):
    """An app bus whose coroutines run on an asyncio loop on a fake clock."""
    clock = Clock()
    loop = ClockEventLoop(clock)
    app = ApplicationMessageBus("app", subscriptions, reactor=clock, event_loop=loop, **options)
    return app, clock, loop


# --- without an asyncio loop: the default reactor ------------------------------------------


async def sleeps():
    await asyncio.sleep(0.1)


async def reads_a_queue():
    await asyncio.Queue().get()


async def waits_for_an_event():
    await asyncio.Event().wait()


async def starts_a_task():
    await asyncio.create_task(asyncio.sleep(0))


async def times_out():
    await asyncio.wait_for(asyncio.sleep(1), 5)


async def awaits_a_future_of_another_loop():
    other = asyncio.new_event_loop()
    try:
        await other.create_future()
    finally:
        other.close()


@pytest.mark.filterwarnings("ignore:coroutine 'sleep' was never awaited")  # the app's own, refused
@pytest.mark.parametrize(
    "body", [sleeps, reads_a_queue, waits_for_an_event, starts_a_task, times_out, awaits_a_future_of_another_loop]
)
def test_asyncio_without_its_reactor_is_one_line_naming_it(body):
    async def on_job(job):
        log.info("about to await")
        await body()
        return Done(n=job.n)

    app = ApplicationMessageBus("app", {Job: on_job}, reactor=Clock())
    [report] = result_of(app.handle(Job(n=1)))
    assert isinstance(report, AppErrorOccurredMessage)
    assert report.error_type == "scbus.coroutines.AsyncioReactorRequired"
    assert report.error == REACTOR_REQUIRED
    assert "--reactor=asyncio" in report.error and "\n" not in report.error
    assert report.traceback[0]["function"] == "on_job"
    assert [r["message"] for r in report.log] == ["about to await"]
    assert asyncio._get_running_loop() is None  # the stand-in loop does not stay behind
    assert app.errors == 1


def test_an_idle_coroutine_without_its_reactor_gets_the_same_line():
    async def tick():
        await asyncio.sleep(1)

    app = ApplicationMessageBus("app", {timedelta(seconds=5): tick}, reactor=Clock())
    [report] = result_of(app.idle(timedelta(seconds=5)))
    assert report.error == REACTOR_REQUIRED and report.interval == 5.0


def test_without_asyncio_deferreds_and_sleep_zero_still_work():
    clock = Clock()

    async def on_job(job):
        await asyncio.sleep(0)  # a bare yield: no loop needed
        value = await deferLater(clock, 1, lambda: "later")
        try:
            await fail(ValueError("inner"))
        except ValueError as e:
            return Done(n=job.n, note=f"{value} {e}")

    app = ApplicationMessageBus("app", {Job: on_job}, reactor=clock)
    d = app.handle(Job(n=2))
    assert not d.called
    clock.advance(1)
    assert result_of(d) == [Done(n=2, note="later inner")]


def test_a_reactor_without_an_event_loop_is_none_and_a_loop_is_not_guessed():
    assert event_loop_of(Clock()) is None
    assert event_loop_of(object()) is None


# --- on an asyncio loop ---------------------------------------------------------------------


def test_a_coroutine_awaits_asyncio_and_deferreds_alike():
    queue = asyncio.Queue()
    clock_box = {}

    async def on_job(job):
        await asyncio.sleep(0.5)
        await queue.put(job.n * 10)
        got = await queue.get()
        later = await deferLater(clock_box["clock"], 0.25, lambda: "deferred")
        return Done(n=got, note=f"{later} at {asyncio.get_running_loop().time():.2f}")

    app, clock, loop = on_loop({Job: on_job})
    clock_box["clock"] = clock
    d = app.handle(Job(n=4))
    loop.advance(0.6)
    assert not d.called  # still awaiting the Deferred
    loop.advance(0.2)
    assert result_of(d) == [Done(n=40, note="deferred at 0.75")]
    assert app.handled == 1 and app.errors == 0


def test_a_failing_deferred_raises_inside_the_coroutine_and_an_error_is_reported():
    async def on_job(job):
        try:
            await fail(KeyError("gone"))
        except KeyError:
            log.info("caught it")
        await asyncio.sleep(0.1)
        raise ValueError(f"job {job.n}")

    app, clock, loop = on_loop({Job: on_job})
    d = app.handle(Job(n=3))
    loop.advance(0.2)
    [report] = result_of(d)
    assert (report.error_type, report.error) == ("ValueError", "job 3")
    assert [f["function"] for f in report.traceback] == ["on_job"]
    assert [r["message"] for r in report.log] == ["caught it"]


def test_a_time_limit_cancels_the_task_inside_the_coroutine_and_the_deferred_it_awaits():
    seen = []
    cancelled_deferreds = []
    pending = Deferred(lambda d: cancelled_deferreds.append(d))

    async def on_job(job):
        try:
            if job.n == 1:
                await asyncio.sleep(60)
            else:
                await pending
        except asyncio.CancelledError:
            seen.append(("cancelled", job.n))
            log.info("cleaning up %s", job.n)
            raise

    app, clock, loop = on_loop({Job: on_job}, time_limit=2)
    sleeping, waiting = app.handle(Job(n=1)), app.handle(Job(n=2))
    loop.advance(1.9)
    assert not sleeping.called and not waiting.called and seen == []
    loop.advance(0.2)
    reports = result_of(sleeping) + result_of(waiting)
    assert [r.error_type for r in reports] == ["scbus.errors.HandlerTimeout"] * 2
    assert all("time limit of 2" in r.error for r in reports)
    assert sorted(seen) == [("cancelled", 1), ("cancelled", 2)]
    assert [r.log[-1]["message"] for r in reports] == ["cleaning up 1", "cleaning up 2"]
    assert cancelled_deferreds == [pending]
    assert app.errors == 2
    assert result_of(pending) is None  # its CancelledError handled: no "Unhandled error in Deferred"


def test_log_capture_is_per_task_when_two_coroutines_interleave():
    gates = {1: asyncio.Event(), 2: asyncio.Event()}

    async def on_job(job):
        log.info("%s before", job.n)
        await gates[job.n].wait()
        log.info("%s after", job.n)
        raise RuntimeError(str(job.n))

    app, clock, loop = on_loop({Job: on_job})
    first, second = app.handle(Job(n=1)), app.handle(Job(n=2))
    loop.flush()
    log.info("outside any handler")
    gates[2].set()
    loop.flush()
    gates[1].set()
    loop.flush()
    for d, n in ((first, 1), (second, 2)):
        [report] = result_of(d)
        assert [r["message"] for r in report.log] == [f"{n} before", f"{n} after"]


def test_a_coroutine_is_retried_on_the_loop():
    attempts = []

    async def on_job(job):
        attempts.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.1)
        if len(attempts) == 1:
            raise ConnectionError("first try")
        return Done(n=len(attempts))

    app, clock, loop = on_loop({Job: on_job}, retries=1, retry_delay=1)
    app._random = lambda: 1.0  # the backoff at its ceiling: 1 s
    d = app.handle(Job(n=1))
    loop.advance(1.5)
    assert result_of(d) == [Done(n=2)]
    assert app.retried == 1 and attempts[0] == 0.0 and 1.0 <= attempts[1] <= 1.11


def test_an_idle_coroutine_runs_on_the_loop():
    async def tick():
        await asyncio.sleep(1)
        return Done(n=int(asyncio.get_running_loop().time()))

    app, clock, loop = on_loop({timedelta(seconds=5): tick})
    d = app.idle(timedelta(seconds=5))
    loop.advance(1)
    assert result_of(d) == [Done(n=1)]


def test_a_closed_loop_is_the_handlers_error_not_the_buses():
    async def on_job(job):
        return Done(n=job.n)

    app, clock, loop = on_loop({Job: on_job})
    loop.close()
    [report] = result_of(app.handle(Job(n=1)))
    assert report.error_type == "RuntimeError" and "closed" in report.error


def test_a_threaded_app_still_may_not_return_a_coroutine():
    from scbus.testing import SynchronousThreadPool, ThreadClock

    async def on_job(job):
        return None

    clock = ThreadClock()
    app = ApplicationMessageBus(
        "app", {Job: on_job}, reactor=clock, threads=1, thread_pool=SynchronousThreadPool(), event_loop=ClockEventLoop(clock)
    )
    app.start()
    d = app.handle(Job(n=1))
    clock.advance(0)
    [report] = result_of(d)
    assert report.error_type == "TypeError" and "thread-pool app" in report.error


def test_on_a_real_event_loop_a_coroutine_does_real_asyncio_io():
    """An aiohttp-style request: a real socket, on a stock asyncio loop."""
    loop = asyncio.new_event_loop()

    async def answer(reader, writer):
        line = await reader.readline()
        writer.write(b"echo " + line)
        await writer.drain()
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]

    async def on_job(job):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"{job.n}\n".encode())
        reply = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return Done(n=job.n, note=reply.decode().strip())

    try:
        app = ApplicationMessageBus("app", {Job: on_job}, reactor=Clock(), event_loop=loop)
        answer = loop.run_until_complete(asyncio.wait_for(app.handle(Job(n=9)).asFuture(loop), 10))
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
    assert answer == [Done(n=9, note="echo 9")]


def test_on_a_real_event_loop_the_answer_is_the_messages():
    loop = asyncio.new_event_loop()

    async def on_job(job):
        await asyncio.sleep(0.01)
        return [Done(n=job.n), Done(n=job.n + 1)]

    try:
        app = ApplicationMessageBus("app", {Job: on_job}, reactor=Clock(), event_loop=loop)
        answer = loop.run_until_complete(asyncio.wait_for(app.handle(Job(n=5)).asFuture(loop), 10))
    finally:
        loop.close()
    assert answer == [Done(n=5), Done(n=6)]
    assert all(m.correlation_id is not None for m in answer)


def test_a_deferred_awaited_deeper_down_and_in_tasks_started_by_hand():
    """A helper coroutine awaits a Deferred as the handler does; gather's tasks use asFuture."""
    box = {}

    async def helper(seconds, value):
        return await deferLater(box["clock"], seconds, lambda: value)

    async def on_job(job):
        first = await helper(1, "nested")
        loop = asyncio.get_running_loop()
        both = await asyncio.gather(
            deferLater(box["clock"], 1, lambda: "a").asFuture(loop),
            asyncio.create_task(helper_by_future(loop, "b")),
        )
        return Done(n=job.n, note=" ".join([first, *both]))

    async def helper_by_future(loop, value):
        return await deferLater(box["clock"], 2, lambda: value).asFuture(loop)

    app, clock, loop = on_loop({Job: on_job})
    box["clock"] = clock
    d = app.handle(Job(n=1))
    loop.advance(2.5)
    assert not d.called
    loop.advance(0.5)
    assert result_of(d) == [Done(n=1, note="nested a b")]
