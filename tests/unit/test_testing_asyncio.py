"""
The harness runs coroutine handlers that await asyncio code on an asyncio loop on its
fake clock: deterministic, and not a real second of waiting.
"""

import asyncio
import os
import re
import time
from datetime import timedelta

from twisted.internet.task import deferLater

from scbus.message import Message
from scbus.testing import BusHarness, ClockEventLoop, run_handler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Order(Message, wire_name="test.aio.Order"):
    n: int


class Shipped(Message, wire_name="test.aio.Shipped"):
    n: int
    at: float
    via: str = ""


def make_shop(name, root_config, config):
    """An idle producer and a handler that meet on an asyncio.Queue, with sleeps between."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    made = {"n": 0}

    async def take_orders():
        made["n"] += 1
        await asyncio.sleep(0.5)
        await queue.put(made["n"])
        return Order(n=made["n"])

    async def on_order(order):
        ticket = await queue.get()
        await asyncio.sleep(config.get("packing", 1.0))
        if order.n == config.get("stuck"):
            await asyncio.sleep(3600)
        via = await asyncio.to_thread(lambda: "van")
        return Shipped(n=ticket, at=asyncio.get_running_loop().time(), via=via)

    return {timedelta(seconds=10): take_orders, Order: on_order}


def test_coroutines_meet_on_a_queue_and_sleep_on_the_harness_clock():
    harness = BusHarness()
    harness.add_app("shop", make_shop, config={"packing": 2.0})
    harness.start()
    started = time.monotonic()
    harness.advance(30)
    assert time.monotonic() - started < 5  # fake time: no real sleeping
    # Each order is made at 10.5, 20.5, ... and packed for 2 s.
    assert [(s.n, s.at, s.via) for s in harness.sent_of(Shipped)] == [(1, 12.5, "van"), (2, 22.5, "van")]
    assert harness.errors == []
    harness.advance(3)
    assert [s.at for s in harness.sent_of(Shipped)] == [12.5, 22.5, 32.5]


def test_a_time_limit_cancels_a_coroutine_under_the_harness():
    harness = BusHarness()
    harness.add_app("shop", make_shop, config={"stuck": 2}, time_limit=5)
    harness.start()
    harness.advance(42)
    assert [(s.n, s.at) for s in harness.sent_of(Shipped)] == [(1, 11.5), (3, 31.5), (4, 41.5)]
    [report] = harness.errors
    assert report.error_type == "scbus.errors.HandlerTimeout" and report.message["data"] == {"n": 2}
    [status] = harness.status()
    assert (status.in_flight, status.handled, status.errors) == (0, 4, 1)


def test_the_same_run_twice_is_the_same():
    def run():
        harness = BusHarness()
        harness.add_app("shop", make_shop, config={"packing": 0.3, "stuck": 3}, time_limit=2)
        harness.start()
        harness.advance(50)
        return [(type(m).__name__, m.to_dict()) for m in harness.sent if not m.wire_name.startswith("scbus.")]

    def without_ids(sent):
        return [(kind, {k: v for k, v in d.items() if k not in ("id", "created_at", "correlation_id")}) for kind, d in sent]

    assert without_ids(run()) == without_ids(run())


def test_run_handler_runs_a_coroutine_to_its_end_on_a_fake_clock():
    async def on_order(order):
        await asyncio.sleep(3600)
        try:
            await asyncio.wait_for(asyncio.Event().wait(), timeout=60)
        except asyncio.TimeoutError:
            pass
        return Shipped(n=order.n, at=asyncio.get_running_loop().time())

    started = time.monotonic()
    [shipped] = run_handler(lambda *_: {Order: on_order}, Order(n=7))
    assert (shipped.n, shipped.at) == (7, 3660.0)
    assert time.monotonic() - started < 5


def test_twisted_delayed_calls_and_asyncio_timers_run_in_the_order_they_fall_due():
    from twisted.internet.task import Clock

    clock = Clock()
    loop = ClockEventLoop(clock)
    order = []
    clock.callLater(2, order.append, "twisted 2")
    loop.call_later(1, order.append, "asyncio 1")
    loop.call_later(3, order.append, "asyncio 3")
    deferLater(clock, 2.5, order.append, "deferred 2.5")
    loop.advance(2.9)
    assert order == ["asyncio 1", "twisted 2", "deferred 2.5"]
    assert clock.seconds() == 2.9
    loop.advance(0.1)
    assert order[-1] == "asyncio 3"


def test_real_io_under_the_harness_is_an_error_the_docs_name():
    async def on_order(order):
        await asyncio.open_connection("127.0.0.1", 9)
        return None

    [report] = run_handler(lambda *_: {Order: on_order}, Order(n=1))
    assert report.error_type == "NotImplementedError"


def test_the_readmes_fetcher_example_runs_as_written():
    """The README's coroutine app and its test, taken from the README itself."""
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("### Coroutine handlers and asyncio", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    [app] = [b for b in blocks if "def make_fetcher" in b]
    [test] = [b for b in blocks if "def test_the_fetcher" in b]
    namespace: dict = {}
    exec(compile("from scbus.testing import BusHarness, run_handler\n" + app + test, "README.md", "exec"), namespace)
    namespace["test_the_fetcher_ships_after_its_sleep"]()
